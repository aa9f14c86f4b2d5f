"""Chunks waiting out a retry backoff (store/waiting.py), through the services on the real store, with a
clock that moves only when the test says: a failed chunk leaves the claim order until its time, then
rejoins it where its index puts it (ahead of its job's later chunks); a chunk another replica put in a
backoff, which this process was never told of, is found within ``REFRESH_US``; and the storage column
behind it is set and cleared as the chunk waits and is claimed.

Why it exists: while a waiting chunk stayed in the claim index, every claim of its job read past it,
and a job with 10,000 of them drained at 0.14-0.44 of the rate with none (a study since removed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from support.clock import FakeClock

from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import ClaimRequest, Failure
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.waiting import NEVER, PROMOTE_LIMIT, REFRESH_US, Waiting

START = 1_800_000_000_000_000
LEASE = 60_000_000


@dataclass
class Replica:
    db: SqlStore
    workers: WorkerService
    jobs: JobService


@asynccontextmanager
async def replica(url: str, clock: FakeClock) -> AsyncIterator[Replica]:
    """A server's store and services (several may share the database, as replicas do)."""
    hub = ChangeHub()
    db = SqlStore(url, on_commit=hub.publish)
    await db.start()
    config = Config(retry_backoff=0.2, retry_backoff_max=0.2)  # each backoff 0.1-0.2 s
    outbox = Outbox(lambda job, now: {"id": job.id}, 5_000_000)
    try:
        yield Replica(
            db,
            WorkerService(db, hub, outbox, config, clock, Metrics()),
            JobService(db, outbox, config, clock),
        )
    finally:
        hub.close()
        await db.close()


async def _job(r: Replica, kind: str, n: int) -> str:
    page = await r.jobs.create_job(
        ANONYMOUS, NewJob(kind=kind, total_items=n, chunk_size=1, max_attempts=5, priority=0)
    )
    return str(page.job.id)


async def _claim(r: Replica, kind: str) -> list[int]:
    return [c.chunk.index for c in await r.workers.claim(ClaimRequest("w", [kind], 1, LEASE, 0))]


async def _retry_at(r: Replica, job_id: str) -> dict[int, Any]:
    async with r.db.read() as tx:
        rows = await tx.conn.fetch(
            "SELECT idx, retry_at FROM chunks WHERE job_id = :job_id ORDER BY idx", {"job_id": job_id}
        )
    return {int(row[0]): row[1] for row in rows}


async def test_a_failed_chunk_waits_out_of_the_claim_order_and_rejoins_it_when_due(database_url: str) -> None:
    clock = FakeClock(START)
    async with replica(database_url, clock) as r:
        job_id = await _job(r, "wait", 3)
        [claim] = await r.workers.claim(ClaimRequest("w", ["wait"], 1, LEASE, 0))
        assert claim.chunk.index == 0
        outcome = await r.workers.fail(Failure(claim.chunk.id, claim.lease_token, "E", "", retryable=True))
        due = outcome.next_attempt_time
        assert outcome.will_retry and due is not None and due > clock.now
        assert await _retry_at(r, job_id) == {0: due, 1: None, 2: None}

        clock.now = due - 1
        assert await _claim(r, "wait") == [1]  # chunk 0 still waits
        clock.now = due
        assert await _claim(r, "wait") == [0]  # due: back ahead of chunk 2
        assert await _retry_at(r, job_id) == {0: None, 1: None, 2: None}
        assert await _claim(r, "wait") == [2]
        assert await _claim(r, "wait") == []


async def test_a_chunk_another_replica_put_in_a_backoff_is_found_within_the_refresh(
    database_url: str,
) -> None:
    clock = FakeClock(START)
    async with replica(database_url, clock) as a, replica(database_url, clock) as b:
        await _job(a, "peer", 4)
        assert await _claim(b, "peer") == [0]  # b looks: nothing waits
        [claim] = await a.workers.claim(ClaimRequest("w", ["peer"], 1, LEASE, 0))
        assert claim.chunk.index == 1
        outcome = await a.workers.fail(Failure(claim.chunk.id, claim.lease_token, "E", "", retryable=True))
        assert outcome.next_attempt_time is not None
        clock.now = outcome.next_attempt_time  # due, but b was never told of it
        assert outcome.next_attempt_time - START < REFRESH_US
        assert await _claim(b, "peer") == [2]
        assert await _claim(b, "peer") == [3]
        assert await _claim(b, "peer") == []  # chunk 1 waits on, as far as b knows
        clock.now = START + REFRESH_US  # b's last look is REFRESH_US old: it looks again
        assert await _claim(b, "peer") == [1]


def test_waiting_knows_the_earliest_and_what_was_noted_during_a_look() -> None:
    w = Waiting()
    assert w.is_due(5)  # unknown at start: the first claim looks
    w.begin(5)
    w.note(50)  # saved while the look ran: the look did not see it
    w.settle(3, 80, 5)
    assert w.due == 50 and not w.is_due(49) and w.is_due(50)
    w.begin(50)
    w.settle(1, None, 50)
    assert w.due == NEVER and not w.is_due(51)
    assert w.is_due(50 + REFRESH_US)  # the last look is old: look again (another replica's chunks)
    w.note(60)
    assert w.is_due(60)
    w.begin(60)
    w.settle(PROMOTE_LIMIT, 70, 60)  # at the limit: due ones may be left, the next claim looks again
    assert w.due == 60
