"""Two server replicas on one PostgreSQL database.

Workers on both replicas drain the same jobs and no chunk is completed twice; a
watcher on replica B sees every change made through replica A, in order; and a
dropped notification connection loses nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

import jobpulse
from jobpulse.v1 import job_pb2


@pytest.fixture
def replicas(make_server: Any, database_url: str) -> tuple[Any, Any]:
    if not database_url.startswith("postgresql"):
        pytest.skip("several replicas share a database only on PostgreSQL")
    return make_server(sweep_interval=0.2), make_server(sweep_interval=0.2)


def _drain(address: str, worker_id: str, acknowledged: list[str], stop: threading.Event) -> None:
    with jobpulse.Client(address, timeout=30) as client:
        while not stop.is_set():
            for claim in client.claim_chunks(worker_id, kinds=["replica"], max_chunks=5, wait=0.5):
                client.complete_chunk(claim.chunk.id, claim.lease_token)
                acknowledged.append(claim.chunk.id)


def _watch(address: str, job_id: str, seen: list[Any]) -> None:
    with jobpulse.Client(address, timeout=60) as client:
        for event in client.watch_job(job_id):
            seen.append(event)


def _start_watcher(address: str, job_id: str) -> tuple[threading.Thread, list[Any]]:
    seen: list[Any] = []
    watcher = threading.Thread(target=_watch, args=(address, job_id, seen), daemon=True)
    watcher.start()
    deadline = time.monotonic() + 30
    while not seen:  # the snapshot arrived: the watcher is subscribed
        assert time.monotonic() < deadline, "no snapshot"
        time.sleep(0.01)
    return watcher, seen


def test_workers_on_both_replicas_never_complete_a_chunk_twice(replicas: tuple[Any, Any]) -> None:
    a, b = replicas
    with jobpulse.Client(a.address) as client:
        job_ids = [client.create_job("replica", 100, chunk_size=1).id for _ in range(10)]
        acknowledged: list[str] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_drain, args=(srv.address, f"w{i}-{n}", acknowledged, stop))
            for i, srv in enumerate((a, b))
            for n in range(3)
        ]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 120
            while not all(
                j.state == job_pb2.JOB_STATE_COMPLETED for j in client.batch_get_jobs(job_ids, view="basic")
            ):
                assert time.monotonic() < deadline, "the chunks were not drained"
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        counts = Counter(acknowledged)
        assert len(counts) == 1000
        assert max(counts.values()) == 1, "a chunk was completed under two leases"
        workers = {c.worker_id for job_id in job_ids for c in client.list_job_chunks(job_id)}
        assert any(w.startswith("w0") for w in workers), "replica A's workers did nothing"
        assert any(w.startswith("w1") for w in workers), "replica B's workers did nothing"


def test_a_watcher_on_b_sees_every_change_made_through_a_in_order(replicas: tuple[Any, Any]) -> None:
    a, b = replicas
    with jobpulse.Client(a.address) as client:
        job = client.create_job("replica", 20, chunk_size=1)
        watcher, seen = _start_watcher(b.address, job.id)
        completed_at: dict[str, int] = {}
        for _ in range(20):
            claim = client.claim_chunks("wa", kinds=["replica"])[0]
            client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=0, stage="working")
            client.complete_chunk(claim.chunk.id, claim.lease_token)
            completed_at[claim.chunk.id] = client.get_job(job.id, view="basic").revision
        watcher.join(30)
        assert not watcher.is_alive(), "the watcher on B never saw the job end"

    revisions = [e.revision for e in seen if not e.more]
    assert revisions == sorted(set(revisions)), "revisions went back or repeated"
    assert seen[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    last_seen: dict[str, tuple[int, int]] = {}
    for e in seen:
        for c in e.chunks:
            last_seen[c.id] = (c.revision, c.state)
    for chunk_id, revision in completed_at.items():
        assert last_seen[chunk_id] == (revision, job_pb2.CHUNK_STATE_COMPLETED)


def test_a_dropped_listener_connection_loses_no_change(replicas: tuple[Any, Any]) -> None:
    a, b = replicas
    listener = b.app.listener
    assert listener is not None
    with jobpulse.Client(a.address) as client:
        job = client.create_job("replica", 3, chunk_size=1)
        watcher, seen = _start_watcher(b.address, job.id)
        before = listener.reconnects

        async def kill_listeners() -> int:
            conn = await asyncpg.connect(b.app.db.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return int(
                    await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'jobpulse-listener' AND datname = current_database()"
                    )
                )
            finally:
                await conn.close()

        # Both replicas' listeners go: what A does now reaches B only through the catch-up read.
        assert asyncio.run(kill_listeners()) == 2
        for _ in range(3):
            claim = client.claim_chunks("wa", kinds=["replica"])[0]
            client.complete_chunk(claim.chunk.id, claim.lease_token)
        watcher.join(30)
        assert not watcher.is_alive(), "the watcher on B missed changes made while its listener was down"
        assert seen[-1].job.state == job_pb2.JOB_STATE_COMPLETED
        deadline = time.monotonic() + 30
        while listener.reconnects == before:
            assert time.monotonic() < deadline, "the listener did not reconnect"
            time.sleep(0.05)
