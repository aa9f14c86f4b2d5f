"""A job's save writes what changed, however it is narrowed.

On SQLite ``SqlTx.save`` leaves out of its UPDATE the indexed columns whose value the transaction has not
seen change (``rows.JOB_INDEXED``): SQLite rewrites the entry of every index a SET column belongs to, so
setting all of them on every chunk change wrote 10 pages per commit where 4 do. These tests hold that
narrowing to the plain "the row is the last object saved": the list of indexed columns against the
migrated schema, and random edits saved one after another in one transaction (some after reading the
job again, some after the job was read twice), read back afterwards, on both databases, with SQLite's
own integrity check of every index against the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobpulse_server.domain import ids
from jobpulse_server.domain.model import Job, JobState
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.rows import JOB_INDEXED, JOB_SAVED

NOW = 1_800_000_000_000_000


def test_the_indexed_columns_are_those_the_migrated_schema_indexes(tmp_path: Path) -> None:
    """A column added to an index of ``jobs`` without being added to JOB_INDEXED would keep a stale index
    entry whenever only it changed: this fails first."""
    path = tmp_path / "schema.db"

    async def migrate() -> None:
        store = SqlStore(f"sqlite:///{path}")
        await store.start()
        await store.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(path)
    try:
        indexed: set[str] = set()
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
        ):
            for row in conn.execute(f"PRAGMA index_xinfo({name})"):
                if row[5] and row[2]:  # a key column given by name
                    indexed.add(row[2])
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
            if sql:  # expressions and partial-index conditions name their columns only in the SQL
                indexed.update(w for w in re.findall(r"[a-z_]+", sql) if w in JOB_SAVED)
    finally:
        conn.close()
    assert indexed & set(JOB_SAVED) == set(JOB_INDEXED)
    assert "state" in indexed and "update_time" in indexed  # the check reads the schema at all


@pytest.fixture
def store(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, SqlStore]]:
    loop = asyncio.new_event_loop()
    s = SqlStore(database_url)
    loop.run_until_complete(s.start())
    try:
        yield loop, s
    finally:
        loop.run_until_complete(s.close())
        loop.close()


# One edit: a field and a value for it, indexed fields and plain ones alike.
EDITS = st.one_of(
    st.tuples(st.just("state"), st.sampled_from(list(JobState))),
    st.tuples(st.just("priority"), st.integers(0, 10)),
    st.tuples(st.just("update_time"), st.integers(NOW, NOW + 5)),
    st.tuples(st.just("end_time"), st.sampled_from([None, NOW, NOW + 1])),
    st.tuples(st.just("display_name"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("revision"), st.integers(1, 4)),
    st.tuples(st.just("message"), st.sampled_from(["", "half way"])),
)
# How each save's object is come by: the same object again, the job read anew, or an older copy read
# before the last save (a second reader of the same job in one transaction).
SOURCES = st.sampled_from(["same", "reread", "older"])


def _fields(job: Job) -> dict[str, Any]:
    out = dataclasses.asdict(job)
    for name in ("change_seq", "loaded_state", "bumped", "artifacts"):
        out.pop(name)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(SOURCES, st.lists(EDITS, min_size=0, max_size=3)), min_size=1, max_size=6))
def test_the_row_is_the_last_job_saved(
    store: tuple[asyncio.AbstractEventLoop, SqlStore], steps: list[tuple[str, list[tuple[str, Any]]]]
) -> None:
    loop, s = store
    job_id = ids.new_job_id()
    original = Job(
        id=job_id, owner="saves", kind="k", request_id=f"r-{job_id}", create_time=NOW - 9, update_time=NOW - 9
    )

    async def body(tx: Any) -> Job:
        await tx.insert_job(original, [])
        current = dataclasses.replace(original)
        older = current
        for source, edits in steps:
            if source == "reread":
                older, current = current, await tx.get_job(job_id, None)
            elif source == "older":
                current, older = older, current
            for name, value in edits:
                setattr(current, name, value)
            await tx.save([current], [])
        return current

    last = loop.run_until_complete(s.write(body))

    async def read() -> Job:
        async with s.read() as tx:
            job = await tx.get_job(job_id, None)
            assert job is not None
            return job

    assert _fields(loop.run_until_complete(read())) == _fields(last)
    if s.url.startswith("sqlite"):
        path = s.driver.path
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
