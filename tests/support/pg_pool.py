"""PostgreSQL test databases used again: a test's database, once the test is over, is emptied and kept
for a later test instead of dropped, when nothing but rows changed in it.

Copying the migrated template (CREATE DATABASE ... TEMPLATE) costs about 0.25 s on the 2-core machines
this suite runs on (PostgreSQL copies and syncs every catalog file), and the default run makes some 450
PostgreSQL databases. Emptying one costs a few milliseconds:

1. every connection to it is ended (a server the test left behind, a killed process's backend);
2. its schema is checked against the template's: the migration version, every relation, column,
   constraint, function and privilege in ``public``, and the database's own privileges and settings. A
   test that changed any of them (dropped a table, renamed the database, revoked a grant) leaves a
   database that is dropped, as before;
3. every table but alembic_version is emptied (DELETE with the foreign-key triggers off; TRUNCATE costs
   twenty times more) and its sequences set back to their start;
4. the database is renamed, so that a process the test left behind and that connects again finds no
   database, as it would after a DROP, rather than the next test's.

A database that fails any step is dropped. Tests that read plans or statistics (which rows deleted but
not vacuumed would change) keep getting fresh copies: the caller decides, by not calling ``take``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

# One query: everything a test could change in a database besides its rows, as text to compare.
_SIGNATURE = """
SELECT concat_ws(E'\\n',
  (SELECT string_agg(version_num, ',') FROM alembic_version),
  (SELECT string_agg(concat_ws(' ', c.relname, c.relkind, c.relpersistence, c.relacl::text,
                               c.reloptions::text, c.relhastriggers, c.relrowsecurity),
                     ',' ORDER BY c.relname)
     FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace),
  (SELECT string_agg(concat_ws(' ', c.relname, a.attname, a.atttypid, a.attnotnull, a.atthasdef,
                               a.attisdropped), ',' ORDER BY c.relname, a.attnum)
     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0),
  (SELECT string_agg(concat_ws(' ', conname, contype, pg_get_constraintdef(oid)), ',' ORDER BY conname)
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
  (SELECT string_agg(concat_ws(' ', proname, md5(prosrc)), ',' ORDER BY proname)
     FROM pg_proc WHERE pronamespace = 'public'::regnamespace),
  (SELECT string_agg(nspname || ' ' || coalesce(nspacl::text, ''), ',' ORDER BY nspname)
     FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'),
  (SELECT concat_ws(' ', datacl::text, pg_get_userbyid(datdba), datallowconn, datconnlimit)
     FROM pg_database WHERE datname = current_database()),
  (SELECT string_agg(array_to_string(setconfig, ';'), ',') FROM pg_db_role_setting
     WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())))
"""
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
_SEQUENCES = "SELECT sequencename, start_value FROM pg_sequences WHERE schemaname = 'public'"
_END_CONNECTIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
)


class DatabasePool:
    """Emptied databases, ready for a test; made from the template named by ``template``."""

    def __init__(self, admin_url: str, url_of: Any) -> None:
        self.admin_url = admin_url  # a database of the same server to run CREATE/DROP/ALTER from
        self.url_of = url_of  # database name -> its URL
        self.free: list[str] = []
        self._signature: str | None = None

    def take(self) -> str | None:
        """A database emptied by an earlier test, or None if there is none."""
        return self.free.pop() if self.free else None

    def give_back(self, name: str, template: str) -> None:
        """Empties ``name`` for a later test, or drops it if it cannot be used again."""
        kept = asyncio.run(self._recycle(name, template))
        if kept is not None:
            self.free.append(kept)

    def close(self) -> None:
        """Drops every database still in the pool."""

        async def drop_all() -> None:
            admin = await _connect(self.admin_url)
            try:
                for name in self.free:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

        if self.free:
            asyncio.run(drop_all())
        self.free.clear()

    async def _recycle(self, name: str, template: str) -> str | None:
        admin = await _connect(self.admin_url)
        try:
            try:
                if self._signature is None:
                    self._signature = await self._signature_of(template)
                await admin.execute(_END_CONNECTIONS, name)
                conn = await _connect(self.url_of(name))
                try:
                    if await conn.fetchval(_SIGNATURE) != self._signature:
                        raise LookupError("its schema changed")
                    await _empty(conn)
                finally:
                    await conn.close()
                await admin.execute(_END_CONNECTIONS, name)
                fresh = f"jobpulse_test_{uuid.uuid4().hex[:12]}"
                await admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"')
                return fresh
            except Exception:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return None
        finally:
            await admin.close()

    async def _signature_of(self, database: str) -> str:
        conn = await _connect(self.url_of(database))
        try:
            return str(await conn.fetchval(_SIGNATURE))
        finally:
            await conn.close()


async def _empty(conn: Any) -> None:
    """Every row gone but alembic_version's, the sequences back at their start, in one transaction."""
    tables = [r[0] for r in await conn.fetch(_TABLES)]
    sequences = await conn.fetch(_SEQUENCES)
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # the FK triggers off
        for table in tables:
            await conn.execute(f'DELETE FROM "{table}"')
        for seq, start in sequences:
            await conn.execute("SELECT setval($1::regclass, $2, false)", f'"{seq}"', start)


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
