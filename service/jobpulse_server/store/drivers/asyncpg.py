"""PostgreSQL through asyncpg: one pool per server (``pool_size`` connections, 10 by default), statements
prepared once per connection (asyncpg's statement cache).

With the change listener's own connection (events/pg_listener.py) a replica holds at most
``pool_size`` + 1 connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from jobpulse_server.store.drivers import Aborted, Conflict
from jobpulse_server.store.statements import NO_PARAMS, for_postgres

# Deadlock and serialization failure: the transaction was rolled back and may run again.
_ABORTED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_CONFLICT = (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError)


def _translated(exc: asyncpg.PostgresError) -> Exception:
    if isinstance(exc, _ABORTED):
        return Aborted(str(exc.sqlstate), str(exc))
    if isinstance(exc, _CONFLICT):
        return Conflict(str(exc))
    return exc


# The flusher's connection (pinned_rows): each statement planned once, generically, and kept; no bitmap
# scans, which a generic plan of a claim of many slots chose to read a candidate job's every pending
# chunk and sort them, where ix_chunks_claim gives them in order (store/batch/sql.py _picked;
# tests/integration/test_worker_plans.py).
_FLUSHER = {"plan_cache_mode": "force_generic_plan", "enable_bitmapscan": "off"}
FLUSHER_SETTINGS = "; ".join(f"SET {name} = {value}" for name, value in _FLUSHER.items())
_FLUSHER_RESET = "; ".join(f"RESET {name}" for name in _FLUSHER)


class PgConn:
    """``Conn`` over one pooled asyncpg connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> list[Sequence[Any]]:
        r = for_postgres(sql)
        try:
            return await self.conn.fetch(r.sql, *r.values(params))  # type: ignore[no-any-return]
        except (*_ABORTED, *_CONFLICT) as exc:
            raise _translated(exc) from exc

    async def fetchrow(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Sequence[Any] | None:
        r = for_postgres(sql)
        try:
            return await self.conn.fetchrow(r.sql, *r.values(params))  # type: ignore[no-any-return]
        except (*_ABORTED, *_CONFLICT) as exc:
            raise _translated(exc) from exc

    async def fetchval(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Any:
        r = for_postgres(sql)
        try:
            return await self.conn.fetchval(r.sql, *r.values(params))
        except (*_ABORTED, *_CONFLICT) as exc:
            raise _translated(exc) from exc

    async def execute(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> int:
        r = for_postgres(sql)
        try:
            status = await self.conn.execute(r.sql, *r.values(params))
        except (*_ABORTED, *_CONFLICT) as exc:
            raise _translated(exc) from exc
        # A command tag such as "UPDATE 3" or "INSERT 0 1": the last word is the row count.
        last = str(status).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        r = for_postgres(sql)
        try:
            await self.conn.executemany(r.sql, list(map(r.values, rows)))
        except (*_ABORTED, *_CONFLICT) as exc:
            raise _translated(exc) from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The store leaves no session state behind (no LISTEN, advisory locks, SET or cursors), so the reset
    asyncpg runs on every release, a round trip of its own, is not needed."""
    return None


class PgDriver:
    """Read snapshots, write transactions and single statements on an asyncpg pool."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.init = init
        self._pool: asyncpg.Pool | None = None
        # The group-commit flusher's own connection (store/batch/), taken from the pool at its first
        # flush and kept, with generic plans: its statements take arrays, which custom plans re-plan on
        # every call for nothing (a generic plan doubled the group statement's throughput and cut its
        # database CPU 2.5x in the measurements behind it).
        self._pinned: asyncpg.Connection | None = None
        self._pinned_stale = False  # set by ``dispose``: the flusher lets it go before its next statement

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            statement_cache_size=256,
            reset=_no_reset,
            init=self.init,
        )

    async def _unpin(self) -> None:
        conn, self._pinned = self._pinned, None
        if conn is not None and self._pool is not None:
            if conn.is_closed():
                await self._pool.release(conn)
            else:
                # The flusher's settings are this connection's alone: the next user gets it as the pool
                # gave it.
                try:
                    await conn.execute(_FLUSHER_RESET)
                except (asyncpg.PostgresError, OSError):
                    conn.terminate()
                await self._pool.release(conn)

    async def close(self) -> None:
        await self._unpin()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def dispose(self) -> None:
        """Closes the pooled connections as they come back, so the next calls connect afresh."""
        self._pinned_stale = True  # the flusher may be using it now: it lets it go itself
        if self._pool is not None:
            await self._pool.expire_connections()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store not started")
        return self._pool

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[PgConn]:
        """A snapshot (REPEATABLE READ, read only); with ``consistent`` false, no transaction: each
        statement on its own, two round trips fewer for a caller that runs one statement."""
        async with self.pool.acquire() as conn:
            if not consistent:
                yield PgConn(conn)
                return
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield PgConn(conn)

    def write(self, *, bulk: bool = False, then: Callable[[], object] | None = None) -> _Writing:
        """A write transaction (READ COMMITTED, row locks), committed when the block ends; ``then`` runs
        right after the commit."""
        return _Writing(self.pool, then)

    async def analyze(self, table: str) -> int:
        """Refreshes the planner's statistics of ``table``; the rows it now believes the table holds."""
        async with self.pool.acquire() as conn:
            await conn.execute(f"ANALYZE {table}")
            found = await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = $1", table)
        return int(found or 0)

    async def statement(self, sql: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """One statement, its own transaction (no BEGIN and COMMIT round trips); its first row."""
        async with self.pool.acquire() as conn:
            return await PgConn(conn).fetchrow(sql, params)

    async def pinned_rows(self, sql: str, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        """One statement, its own transaction, on the flusher's connection (generic plans); all its
        rows. A connection that failed is given back, and the next flush takes another."""
        if self._pinned_stale:
            self._pinned_stale = False
            await self._unpin()
        if self._pinned is None:
            conn = await self.pool.acquire()
            try:
                await conn.execute(FLUSHER_SETTINGS)
            except BaseException:
                await self.pool.release(conn)
                raise
            self._pinned = conn
        try:
            return await PgConn(self._pinned).fetch(sql, params)
        except (Aborted, Conflict):
            raise
        except BaseException:
            await self._unpin()
            raise


class _Writing:
    """``PgDriver.write()``: a pooled connection in a transaction (a class rather than a generator-based
    context manager: every write goes through it)."""

    __slots__ = ("_conn", "_pool", "_then", "_tx")

    def __init__(self, pool: asyncpg.Pool, then: Callable[[], object] | None) -> None:
        self._pool = pool
        self._then = then

    async def __aenter__(self) -> PgConn:
        conn = self._conn = await self._pool.acquire()
        try:
            self._tx = conn.transaction()
            await self._tx.start()
        except BaseException:
            await self._pool.release(conn)
            raise
        return PgConn(conn)

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            if kind is None:
                await self._tx.commit()  # a serialization failure may be found only here
            else:
                await self._tx.rollback()
        except _ABORTED as exc:
            raise _translated(exc) from exc
        finally:
            await self._pool.release(self._conn)
        if kind is None and self._then is not None:
            self._then()
