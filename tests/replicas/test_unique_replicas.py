"""Unique jobs across two server replicas on one PostgreSQL database: 100 creates with one key, at once,
half on each replica, make exactly one job, and every other create is told which one."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import jobpulse
from jobpulse import errors


@pytest.fixture
def replicas(make_server: Any, database_url: str) -> tuple[Any, Any]:
    if not database_url.startswith("postgresql"):
        pytest.skip("several replicas share a database only on PostgreSQL")
    return make_server(), make_server()


def test_a_hundred_creates_on_two_replicas_make_one_job(replicas: tuple[Any, Any]) -> None:
    n = 100
    clients = [jobpulse.Client(srv.address, timeout=30) for srv in replicas]
    barrier = threading.Barrier(n)
    made: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        barrier.wait(20)
        try:
            job = clients[i % 2].create_job("nightly", 1, unique_key="2026-11-29")
        except errors.AlreadyExists as exc:
            with lock:
                refused.append(exc.metadata.get("job_id", ""))
        else:
            with lock:
                made.append(job.id)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(made) == 1 and len(refused) == n - 1, (len(made), len(refused))
        assert set(refused) == set(made)
        jobs = list(clients[1].list_jobs(kind="nightly"))
        assert [j.id for j in jobs] == made
    finally:
        for c in clients:
            c.close()
