"""The Alembic migrations build exactly the schema the code declares, and re-running them is harmless."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from jobpulse_server.store import schema
from jobpulse_server.store.schema import current_schema_version, head_schema_version
from jobpulse_server.store.tables import POSTGRES_ONLY_INDEXES, metadata


async def _migrated(database_url: str) -> str:
    url = schema.normalize_url(database_url)
    if url.startswith("sqlite"):
        schema.create_sqlite_file(url)
    await schema.migrate(url)
    return url


# ix_jobs_own_expiry is an expression index, which autogenerate skips with these warnings; it is
# checked on its own below.
@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:.*expression-based index:sqlalchemy.exc.SAWarning")
def _context(conn: Any) -> MigrationContext:
    """A comparison that leaves out, on SQLite, the indexes only PostgreSQL has."""
    sqlite = conn.dialect.name == "sqlite"

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (sqlite and type_ == "index" and name in POSTGRES_ONLY_INDEXES)

    return MigrationContext.configure(conn, opts={"include_object": include})


async def test_migrated_schema_matches_tables(database_url: str) -> None:
    url = await _migrated(database_url)
    await schema.migrate(url)  # a second run on a migrated database changes nothing
    async with schema.schema_connection(url) as run:
        assert await run(lambda conn: compare_metadata(_context(conn), metadata)) == []
        assert await run(current_schema_version) == head_schema_version()


async def test_migrations_make_the_expression_index_of_expiry(database_url: str) -> None:
    # Alembic cannot compare expression indexes (it skips them, with a warning), so this one is
    # checked by name and definition: the expiry sweep of jobs with a ttl of their own reads it.
    url = await _migrated(database_url)
    if url.startswith("postgresql"):
        q = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_own_expiry'"
    else:
        q = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_jobs_own_expiry'"
    async with schema.schema_connection(url) as run:
        found = await run(lambda conn: conn.execute(text(q)).scalar_one())
    assert "end_time + ttl" in found and "ttl > 0" in found, found
