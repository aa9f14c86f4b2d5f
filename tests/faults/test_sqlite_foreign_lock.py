"""SQLite runs on the server's event loop: a write lock held by another process must make writers wait
(asynchronously, then succeed), never stall the loop for everyone else."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import jobpulse
from jobpulse.v1 import job_pb2

KIND = "foreign-lock"


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "worker-thread"])
def test_writer_waits_out_a_foreign_lock_while_reads_go_on(
    make_server: Callable[..., Any], database_url: str, on_loop: bool
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("a file lock held by another process is a SQLite matter")
    srv = make_server(sqlite_on_loop=on_loop)
    path = make_url(database_url).database
    assert path is not None
    with jobpulse.Client(srv.address, timeout=30) as client, ThreadPoolExecutor(1) as pool:
        job = client.create_job(KIND, 4, chunk_size=1)
        # Another process's writer takes the lock (waiting, if need be, for the server's own sweeper).
        other = sqlite3.connect(path, isolation_level=None, timeout=30)
        other.execute("BEGIN IMMEDIATE")
        try:
            pending = pool.submit(client.update_job, job.id, priority=9)
            # Reads are served meanwhile: the loop is not stuck behind the lock. Several, so that the
            # writer has certainly reached the lock and is retrying while they run.
            for _ in range(20):
                assert client.get_job(job.id, view="basic").id == job.id
            assert not pending.done(), "the write cannot have committed while the lock is held"
        finally:
            other.execute("ROLLBACK")
            other.close()
        updated = pending.result(timeout=30)
    assert updated.priority == 9
    assert updated.revision > job.revision
    assert updated.state == job_pb2.JOB_STATE_PENDING
