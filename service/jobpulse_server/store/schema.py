"""The database URL a server accepts, and the schema at start-up: Alembic migrations over SQLAlchemy,
the only place SQLAlchemy runs (tables.py declares the schema the migrations build)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """``sqlite:///PATH``, or ``postgresql://...`` (``postgres://`` and ``postgresql+asyncpg://`` mean the
    same). ``postgresql+psycopg://`` is refused: jobpulse talks to PostgreSQL through asyncpg only, one
    driver held to one conformance suite (an adapter for a second brought no user anything asyncpg does
    not)."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ValueError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("sqlite needs a file path, e.g. sqlite:///jobpulse.db")
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "asyncpg"):
            raise ValueError(
                f"the PostgreSQL driver {driver!r} is not supported: jobpulse uses asyncpg; "
                "write the URL as postgresql://..."
            )
        return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def sqlite_path(url: str) -> str:
    path = make_url(url).database
    assert path is not None
    return str(Path(path).expanduser())


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_sqlite_file(url: str) -> None:
    """Makes the SQLite file (and its folder) if missing: the one place the file is created. Every
    connection after this opens it as it exists."""
    path = Path(sqlite_path(url))
    path.resolve().parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(path).close()


@asynccontextmanager
async def schema_connection(url: str) -> AsyncIterator[Callable[[Callable[[Connection], T]], Any]]:
    """Runs functions of a SQLAlchemy connection on the database (committed at the end): what Alembic and
    the schema tests need, at start-up only. Yields ``run(fn)``, awaitable."""
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # The transaction is ours to begin (below), so DDL runs inside it too; another process
            # (a serving replica) may hold the write lock for a moment.
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:

            def in_thread(fn: Callable[[Connection], T]) -> Any:
                def call() -> T:
                    with engine.begin() as conn:
                        return fn(conn)

                return asyncio.to_thread(call)

            yield in_thread
        finally:
            engine.dispose()
        return
    aengine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with aengine.connect() as aconn:

            async def on_loop(fn: Callable[[Connection], T]) -> T:
                result = await aconn.run_sync(fn)
                await aconn.commit()
                return result

            yield on_loop
    finally:
        await aengine.dispose()


async def migrate(url: str) -> None:
    """Brings the schema to the newest migration (idempotent)."""
    async with schema_connection(url) as run:
        await run(_upgrade_to_head)


def _upgrade_to_head(sync_conn: Connection) -> None:
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


def current_schema_version(sync_conn: Connection) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()
