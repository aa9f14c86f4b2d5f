"""The Alembic migrations build exactly the schema the code declares, and re-running them is harmless."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from support.sql import insert_generated, series

from jobpulse_server.store import schema
from jobpulse_server.store.schema import current_schema_version, head_schema_version
from jobpulse_server.store.tables import POSTGRES_ONLY_INDEXES, chunks, jobs, metadata

# Each test migrates a database itself, from nothing.
pytestmark = pytest.mark.empty_database


async def _migrated(database_url: str) -> str:
    url = schema.normalize_url(database_url)
    if url.startswith("sqlite"):
        schema.create_sqlite_file(url)
    await schema.migrate(url)
    return url


def _context(conn: Any) -> MigrationContext:
    """A comparison that leaves out, on SQLite, the indexes only PostgreSQL has."""
    sqlite = conn.dialect.name == "sqlite"

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (sqlite and type_ == "index" and name in POSTGRES_ONLY_INDEXES)

    return MigrationContext.configure(conn, opts={"include_object": include})


# ix_jobs_own_expiry is an expression index, which autogenerate skips with these warnings; it is
# checked on its own below.
@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning")
@pytest.mark.filterwarnings("ignore:.*expression-based index:sqlalchemy.exc.SAWarning")
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


def upgrade_to(revision: str) -> Any:
    """Runs the migrations up to ``revision`` on a schema connection."""

    def run_it(conn: Any) -> None:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(schema.MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    return run_it


async def test_migration_0013_gives_pending_chunks_their_jobs_priority(database_url: str) -> None:
    """A PostgreSQL claim finds a job's pending chunks under the job's priority (ix_jobs_claimable, then
    ix_chunks_claim by priority and job): a pending chunk whose priority differed from its job's would
    never be claimed, so the migration that brought that claim in brings such chunks in line (pending
    ones only) and builds the index."""
    if not database_url.startswith("postgresql"):
        pytest.skip("ix_jobs_claimable and the claim that reads it are PostgreSQL's")
    url = schema.normalize_url(database_url)
    job = insert_generated(
        jobs,
        {
            "id": "'J' || g",
            "kind": "'k'",
            "state": "2",
            "priority": "5",
            "n_pending": "2",
            "labels": "'{}'",
            "job_metadata": "'{}'",
        },
        series(True, 1, 1),
    )
    chunk = insert_generated(
        chunks,
        {"id": "'J1-' || g", "job_id": "'J1'", "idx": "g", "state": "CASE WHEN g < 3 THEN 1 ELSE 2 END"},
        series(True, 1, 3),
    )
    async with schema.schema_connection(url) as run:
        await run(upgrade_to("0012"))
        await run(lambda conn: conn.execute(text(job)))
        await run(lambda conn: conn.execute(text(chunk)))  # priority 0, its job's is 5
        await run(upgrade_to("head"))
        rows = await run(
            lambda conn: conn.execute(text("SELECT idx, priority FROM chunks ORDER BY idx")).all()
        )
        indexes = await run(
            lambda conn: conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).all()
        )
    assert [tuple(r) for r in rows] == [(1, 5), (2, 5), (3, 0)]  # the running chunk keeps its own
    assert ("ix_jobs_claimable",) in [tuple(r) for r in indexes]


async def test_migration_0014_keeps_chunks_in_a_backoff_waiting(database_url: str) -> None:
    """Chunks waiting out a retry backoff leave the claim index (store/waiting.py): the migration that
    brought that in marks every pending chunk with a next_attempt_time as waiting until then, and no
    other chunk, so none is claimed early and none is lost from the claim order."""
    url = schema.normalize_url(database_url)
    if url.startswith("sqlite"):
        schema.create_sqlite_file(url)
    postgres = url.startswith("postgresql")
    job = insert_generated(
        jobs,
        {"id": "'J' || g", "kind": "'k'", "state": "2", "labels": "'{}'", "job_metadata": "'{}'"},
        series(postgres, 1, 1),
    )
    # idx 1: pending, in a backoff; 2: pending; 3: running, its old next_attempt_time left over.
    chunk = insert_generated(
        chunks,
        {
            "id": "'J1-' || g",
            "job_id": "'J1'",
            "idx": "g",
            "state": "CASE WHEN g < 3 THEN 1 ELSE 2 END",
            "next_attempt_time": "CASE WHEN g = 2 THEN NULL ELSE 1000 + g END",
        },
        series(postgres, 1, 3),
    )
    async with schema.schema_connection(url) as run:
        await run(upgrade_to("0013"))
        await run(lambda conn: conn.execute(text(job)))
        await run(lambda conn: conn.execute(text(chunk)))
        await run(upgrade_to("head"))
        rows = await run(
            lambda conn: conn.execute(text("SELECT idx, retry_at FROM chunks ORDER BY idx")).all()
        )
    assert [tuple(r) for r in rows] == [(1, 1001), (2, None), (3, None)]


async def test_migration_0026_counts_the_chunks_already_failed(database_url: str) -> None:
    """SummarizeFailures reads job_failures and failure_counts, not the chunks: the migration that
    brought them in counts the chunks FAILED for good before it by job, kind and reason (each row the
    job's owner and creation, the last end_time), then by owner, kind and reason, and no chunk in
    another state."""
    url = schema.normalize_url(database_url)
    if url.startswith("sqlite"):
        schema.create_sqlite_file(url)
    postgres = url.startswith("postgresql")
    job = insert_generated(
        jobs,
        {
            "id": "'J' || g",
            "owner": "'team-' || g",
            "kind": "'k'",
            "state": "4",
            "create_time": "100 * g",
            "labels": "'{}'",
            "job_metadata": "'{}'",
        },
        series(postgres, 1, 2),
    )
    # J1: chunks 1-3 FAILED (A, A, B), 4 COMPLETED; J2: chunk 1 FAILED (A), of another kind.
    chunk = insert_generated(
        chunks,
        {
            "id": "'J' || (CASE WHEN g < 5 THEN 1 ELSE 2 END) || '-' || g",
            "job_id": "'J' || (CASE WHEN g < 5 THEN 1 ELSE 2 END)",
            "idx": "g",
            "kind": "CASE WHEN g < 5 THEN 'k' ELSE 'fin' END",
            "state": "CASE WHEN g = 4 THEN 3 ELSE 4 END",
            "error_reason": "CASE WHEN g = 3 THEN 'B' WHEN g = 4 THEN '' ELSE 'A' END",
            "end_time": "1000 + g",
        },
        series(postgres, 1, 5),
    )
    async with schema.schema_connection(url) as run:
        await run(upgrade_to("0025"))
        await run(lambda conn: conn.execute(text(job)))
        await run(lambda conn: conn.execute(text(chunk)))
        await run(upgrade_to("head"))
        rows = await run(
            lambda conn: conn.execute(
                text(
                    "SELECT job_id, kind, error_reason, owner, create_time, chunks, last_time "
                    "FROM job_failures ORDER BY job_id, error_reason"
                )
            ).all()
        )
        counts = await run(
            lambda conn: conn.execute(
                text(
                    "SELECT owner, kind, error_reason, chunks, jobs, last_time FROM failure_counts "
                    "ORDER BY owner, error_reason"
                )
            ).all()
        )
    assert [tuple(r) for r in rows] == [
        ("J1", "k", "A", "team-1", 100, 2, 1002),
        ("J1", "k", "B", "team-1", 100, 1, 1003),
        ("J2", "fin", "A", "team-2", 200, 1, 1005),
    ]
    assert [tuple(r) for r in counts] == [
        ("team-1", "k", "A", 2, 1, 1002),
        ("team-1", "k", "B", 1, 1, 1003),
        ("team-2", "fin", "A", 1, 1, 1005),
    ]
