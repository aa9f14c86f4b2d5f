"""A job's controls hold across two server replicas on one PostgreSQL database: max_running_chunks is
never exceeded (counted in the database itself, every 10 ms, while workers on both replicas claim), and
no chunk of a paused job is claimed on either replica once PauseJob has returned."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2

RUNNING = 2  # ChunkState.PROCESSING


@pytest.fixture
def replicas(make_server: Any, database_url: str) -> tuple[Any, Any]:
    if not database_url.startswith("postgresql"):
        pytest.skip("several replicas share a database only on PostgreSQL")
    return make_server(), make_server()


def _work(address: str, worker_id: str, kind: str, stop: threading.Event, max_chunks: int) -> None:
    """Claims and completes as fast as it can, the completions claiming the next chunks (claim_next)."""
    with jobpulse.Client(address, timeout=30) as client:
        held = client.claim_chunks(worker_id, kinds=[kind], max_chunks=max_chunks, wait=0.2)
        while not stop.is_set():
            if not held:
                held = client.claim_chunks(worker_id, kinds=[kind], max_chunks=max_chunks, wait=0.2)
                continue
            claim, *rest = held
            time.sleep(0.002)  # the work
            ask = worker_service_pb2.ClaimChunksRequest(worker_id=worker_id, kinds=[kind], max_chunks=1)
            done = client.complete_chunk(claim.chunk.id, claim.lease_token, claim_next=ask)
            held = rest + list(done.claims)


class _Sampler:
    """Counts a job's chunks PROCESSING in the database every 10 ms (``column``: or a kind's), in a
    thread of its own."""

    def __init__(self, database_url: str, value: str, column: str = "job_id") -> None:
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(database_url, value, column),))
        self._thread.start()

    async def _run(self, url: str, value: str, column: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            while not self._stop.is_set():
                query = f"SELECT count(*) FROM chunks WHERE {column} = $1 AND state = $2"
                self.counts.append(await conn.fetchval(query, value, RUNNING))
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(30)
        return self.counts


def _workers(replicas: tuple[Any, Any], kind: str, per_replica: int, stop: threading.Event) -> list[Any]:
    threads = [
        threading.Thread(target=_work, args=(srv.address, f"w{i}-{n}", kind, stop, 2), daemon=True)
        for i, srv in enumerate(replicas)
        for n in range(per_replica)
    ]
    for t in threads:
        t.start()
    return threads


def test_max_running_chunks_holds_across_replicas(replicas: tuple[Any, Any], database_url: str) -> None:
    a, _ = replicas
    with jobpulse.Client(a.address) as client:
        job = client.create_job("cap-replicas", 300, chunk_size=1, max_running_chunks=3)
        sampler = _Sampler(_plain(database_url), job.id)
        stop = threading.Event()
        threads = _workers(replicas, "cap-replicas", 8, stop)
        try:
            final = client.wait(job.id, timeout=120)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            counts = sampler.stop()

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert len(counts) > 10 and max(counts) == 3, (len(counts), max(counts))


def test_no_claim_of_a_paused_job_after_the_pause_returns(
    replicas: tuple[Any, Any], database_url: str
) -> None:
    no_claims_once_paused(
        replicas, database_url, "pause-replicas", lambda client, job: client.pause_job(job.id)
    )


def no_claims_once_paused(
    replicas: tuple[Any, Any], database_url: str, kind: str, pause: Callable[[jobpulse.Client, Any], Any]
) -> None:
    """Workers on both replicas work a job of ``kind`` until 50 chunks are done, then ``pause`` (client,
    job) returns: from then on no chunk of the job is claimed on either, while they keep asking for 1 s."""
    a, _ = replicas
    with jobpulse.Client(a.address) as client:
        job = client.create_job(kind, 5000, chunk_size=1)
        stop = threading.Event()
        threads = _workers(replicas, kind, 4, stop)
        try:
            deadline = time.monotonic() + 30
            while client.get_job(job.id, view="basic").chunks_summary.completed < 50:
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.01)
            pause(client, job)
            claimed = asyncio.run(_claimed(_plain(database_url), job.id))
            time.sleep(1.0)  # the workers on both replicas keep asking meanwhile
            again = asyncio.run(_claimed(_plain(database_url), job.id))
        finally:
            stop.set()
            for t in threads:
                t.join(30)

    assert claimed == again and 50 <= claimed < 5000


async def _claimed(url: str, job_id: str) -> int:
    """The job's chunks ever claimed (attempt above 0), in the database."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM chunks WHERE job_id = $1 AND attempt > 0", job_id)
        )
    finally:
        await conn.close()


def _plain(url: str) -> str:
    """The database URL as asyncpg takes it."""
    return url.replace("postgresql+asyncpg", "postgresql")
