"""The Alembic migrations build exactly the schema the code declares, and re-running them is harmless."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from jobpulse_server.store.engine import Database, current_schema_version, head_schema_version
from jobpulse_server.store.tables import metadata


# ix_jobs_own_expiry is an expression index, which autogenerate skips with these warnings; it is
# checked on its own below.
@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:.*expression-based index:sqlalchemy.exc.SAWarning")
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


async def test_migrations_make_the_expression_index_of_expiry(database_url: str) -> None:
    # Alembic cannot compare expression indexes (it skips them, with a warning), so this one is
    # checked by name and definition: the expiry sweep of jobs with a ttl of their own reads it.
    db = Database(database_url)
    await db.start()
    try:
        async with db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                q = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_own_expiry'"
            else:
                q = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_jobs_own_expiry'"
            found = (await conn.execute(text(q))).scalar_one()
        assert "end_time + ttl" in found and "ttl > 0" in found, found
    finally:
        await db.close()
