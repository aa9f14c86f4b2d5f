"""Engine, transactions and schema migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction, create_async_engine

from jobpulse_server.domain.changes import CHANNEL, Changes, encode
from jobpulse_server.store import sqlite_inline

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Maps the user-facing URL forms to async drivers.

    ``sqlite:///path`` -> aiosqlite; ``postgresql://`` (or ``postgres://``) -> asyncpg;
    explicit ``postgresql+asyncpg://`` and ``postgresql+psycopg://`` are kept.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ValueError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("sqlite needs a file path, e.g. sqlite:///jobpulse.db")
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        driver = driver or "asyncpg"
        if driver not in ("asyncpg", "psycopg"):
            raise ValueError(f"unsupported PostgreSQL driver {driver!r}: use asyncpg or psycopg")
        return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def existing_sqlite_file(path: str) -> str:
    """A sqlite3 URI (``uri=True``) opening ``path`` read-write without ever creating it. Only start-up
    creates the database: a file removed under a running server must make calls fail
    (DATABASE_UNAVAILABLE, health NOT_SERVING), not quietly open a new, empty database in its place."""
    return f"file:{quote(str(Path(path).expanduser()))}?mode=rw"


async def send(conn: AsyncConnection, changes: Changes, replica: str) -> None:
    """NOTIFY inside the caller's transaction."""
    for payload in encode(changes, replica):
        await conn.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )


@dataclass
class UnitOfWork:
    """One write transaction and the changes it will publish once committed."""

    conn: AsyncConnection
    changes: Changes
    dialect: str

    def changed(self, job_id: str, revision: int) -> None:
        self.changes.jobs[job_id] = max(revision, self.changes.jobs.get(job_id, 0))


class Database:
    """Owns the engine; hands out read snapshots and serialised write transactions."""

    def __init__(
        self,
        url: str,
        on_commit: Callable[[Changes], None] | None = None,
        *,
        sqlite_on_loop: bool = True,
    ) -> None:
        self.url = normalize_url(url)
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self.sqlite_on_loop = sqlite_on_loop and self.dialect == "sqlite"
        self._on_commit = on_commit
        self._engine: AsyncEngine | None = None
        # SQLite on the loop: an engine whose statements run on aiosqlite's worker threads, for bulk
        # work that would stall the loop (``off_loop``); made on first use.
        self._threaded: AsyncEngine | None = None
        # SQLite has one writer at a time: queue writers here instead of on the file lock.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        # Names this server in change notifications (several replicas may share a database).
        self.replica_id = secrets.token_hex(6)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("database not started")
        return self._engine

    async def start(self, migrate: bool = True) -> None:
        """Creates the engine and brings the schema to the newest migration."""
        if self.dialect == "sqlite":
            path = make_url(self.url).database
            assert path is not None
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (start-up only)
            # The one place the file is created; every connection after this opens it as it exists.
            sqlite3.connect(Path(path).expanduser()).close()  # noqa: ASYNC240 (start-up only)
            uri = existing_sqlite_file(path)
            if self.sqlite_on_loop:

                async def open_inline() -> Any:
                    return await sqlite_inline.connect(uri, uri=True)

                engine = create_async_engine(self.url, async_creator=open_inline)
                # A lock held by another process must not stall the event loop: wait briefly
                # in SQLite, and let writers retry BEGIN IMMEDIATE asynchronously (_begin_write).
                # Checkpoints run on the store's thread (store.sqlite), not in commits on the loop.
                _configure_sqlite(engine, busy_timeout_ms=SQLITE_LOOP_BUSY_MS, autocheckpoint=0)
            else:
                engine = self._threaded_sqlite_engine()
                _configure_sqlite(engine, busy_timeout_ms=30_000)
        else:
            engine = create_async_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self._engine = engine
        if migrate:
            await self.migrate()

    async def migrate(self) -> None:
        """Applies pending Alembic migrations (idempotent)."""
        async with self.engine.connect() as conn:
            await conn.run_sync(_upgrade_to_head)
            await conn.commit()

    async def ping(self) -> None:
        """Raises unless the database answers a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._threaded is not None:
            await self._threaded.dispose()
            self._threaded = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _threaded_sqlite_engine(self) -> AsyncEngine:
        """An engine on aiosqlite's worker threads over the existing SQLite file."""
        path = make_url(self.url).database
        assert path is not None
        uri = existing_sqlite_file(path)

        def open_threaded() -> Any:
            connection = aiosqlite.connect(uri, uri=True, timeout=30)
            # As SQLAlchemy does for the connections it opens itself: its worker never holds up exit.
            thread = getattr(connection, "_thread", None)
            if thread is not None:
                thread.daemon = True
            return connection

        return create_async_engine(self.url, async_creator=open_threaded)

    def _engine_for(self, off_loop: bool) -> AsyncEngine:
        """The engine, or with ``off_loop`` on SQLite on the loop the threaded one."""
        if not (off_loop and self.sqlite_on_loop):
            return self.engine
        if self._threaded is None:
            engine = self._threaded_sqlite_engine()
            # As the loop's own connections: no checkpoint in commits (the store's thread does them).
            # Waiting for a lock happens on the worker thread, so it may be long.
            _configure_sqlite(engine, busy_timeout_ms=30_000, autocheckpoint=0)
            self._threaded = engine
        return self._threaded

    @asynccontextmanager
    async def read(self, *, off_loop: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction that sees one consistent snapshot (``off_loop``: see ``write``)."""
        if off_loop and self.sqlite_on_loop:
            async with self._engine_for(True).connect() as conn, conn.begin():
                yield conn
            return
        if self.sqlite_on_loop:
            # Closing runs on this thread and never suspends, so it needs none of the shielded close
            # task SQLAlchemy's ``async with`` makes to survive cancellation. Without that task a
            # read is done in the caller's own step: watchers woken by one change then find the
            # shared read finished instead of each waiting for it (one wake-up per stream, not two).
            conn = await self.engine.connect()
            try:
                async with conn.begin():
                    yield conn
            finally:
                await conn.close()
            return
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    def write_lock(self) -> asyncio.Lock | contextlib.nullcontext[None]:
        """What serialises this process's writers (SQLite); nothing on PostgreSQL."""
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    def write_locked(self) -> bool:
        """Whether a writer of this process is in a transaction (SQLite)."""
        return self._write_lock is not None and self._write_lock.locked()

    def publish(self, changes: Changes) -> None:
        """Hands what a committed write changed to the change hub."""
        if self._on_commit is not None and (
            changes.jobs or changes.deleted or changes.new_work or changes.webhooks
        ):
            self._on_commit(changes)

    @asynccontextmanager
    async def write(self, *, off_loop: bool = False) -> AsyncIterator[UnitOfWork]:
        """A write transaction; its changes are published after it commits. ``off_loop``: on SQLite on
        the loop, its statements run on a worker thread (the loop serves calls meanwhile; the other
        writers of this process wait for it on the write lock, as for any writer)."""
        changes = Changes()
        async with self._write_ctx(changes, self._engine_for(off_loop)) as uow:
            yield uow
        self.publish(changes)

    @asynccontextmanager
    async def _write_ctx(self, changes: Changes, engine: AsyncEngine) -> AsyncIterator[UnitOfWork]:
        lock = self._write_lock
        if lock is not None:
            await lock.acquire()
        try:
            async with engine.connect() as conn:
                if self.dialect == "sqlite":
                    conn = await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                trans = await self._begin_write(conn)
                try:
                    yield UnitOfWork(conn=conn, changes=changes, dialect=self.dialect)
                    if self.dialect == "postgresql" and (changes.jobs or changes.deleted or changes.new_work):
                        # Other replicas learn of the change when (and only if) it commits.

                        await send(conn, changes, self.replica_id)
                except BaseException as exc:
                    await trans.__aexit__(type(exc), exc, exc.__traceback__)  # rolls back
                    raise
                await trans.__aexit__(None, None, None)  # commits
        finally:
            if lock is not None:
                lock.release()

    async def _begin_write(self, conn: AsyncConnection) -> AsyncTransaction:
        """Starts a write transaction; on SQLite, waits (without blocking the loop) while another
        process holds the database's write lock, for up to SQLITE_WRITE_WAIT seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SQLITE_WRITE_WAIT
        delay = 0.002
        while True:
            trans = conn.begin()
            try:
                await trans.start()
                return trans
            except OperationalError as exc:
                locked = self.dialect == "sqlite" and "locked" in str(exc.orig).lower()
                if not locked or loop.time() + delay > deadline:
                    raise
            if conn.in_transaction():
                await conn.rollback()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


# SQLite: how long a statement on the event loop may wait for another process's lock (ms), and
# how long a writer keeps retrying BEGIN IMMEDIATE, asynchronously, before giving up (s).
SQLITE_LOOP_BUSY_MS = 20
SQLITE_WRITE_WAIT = 30.0


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, autocheckpoint: int = 1000) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def _upgrade_to_head(sync_conn: Any) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def head_schema_version() -> str:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def current_schema_version(sync_conn: Any) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()
