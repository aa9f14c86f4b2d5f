"""The Alembic migrations build exactly the schema the code declares, and re-running them is harmless."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobpulse_server.store.engine import Database, current_schema_version, head_schema_version
from jobpulse_server.store.tables import metadata


async def test_migrated_schema_matches_tables(database_url: str) -> None:
    db = Database(database_url)
    await db.start()
    await db.migrate()  # a second run on a migrated database changes nothing
    try:
        async with db.engine.connect() as conn:

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                return compare_metadata(MigrationContext.configure(sync_conn), metadata)

            assert await conn.run_sync(diff) == []
            assert await conn.run_sync(current_schema_version) == head_schema_version()
    finally:
        await db.close()
