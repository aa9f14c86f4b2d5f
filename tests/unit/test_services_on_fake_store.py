"""WorkerService, WatchService and JobService's reads on the in-memory FakeStore: no database at all.

Time is a fake clock the tests move; nothing sleeps. What still needs a real database is left out:
``WorkerService.sweep`` (its overdue-cancel pass runs on ``Database.write()`` and the SQLAlchemy
repository), JobService's create / cancel / retry / update / delete / stats, and the WatchJobs feed
(``FeedService``), which all go to the ``Database`` directly rather than through the ``Store``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
from support.fake_store import FakeStore, new_job

from jobpulse_server.config import Config
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.errors import (
    ChunkNotFound,
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    RevisionAhead,
    ShuttingDown,
)
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.webhooks import PENDING
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.observability import Metrics
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.watch import EventType, WatchMessage, WatchService
from jobpulse_server.services.workers import ClaimAsk, Completion, WorkerService
from jobpulse_server.store import WriteTx
from jobpulse_server.store.engine import Database
from jobpulse_server.store.sql import OUTBOX_COLUMNS

DEADLINE = 5.0  # seconds a test waits for something that must happen before it fails
LEASE = 10_000_000  # a claim's lease, us
START = 1_700_000_000_000_000


class FakeClock:
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += int(seconds * 1e6)
        return self.now


@dataclass
class Rig:
    store: FakeStore
    hub: ChangeHub
    clock: FakeClock
    config: Config
    metrics: Metrics
    workers: WorkerService

    def seed(self, job_id: str, **kw: Any) -> tuple[Job, list[Chunk]]:
        job, chunks = new_job(job_id, now=self.clock(), **kw)
        self.store.add_job(job, chunks)
        return job, chunks

    def counted(self, event: str) -> float:
        return self.metrics.registry.get_sample_value("jobpulse_chunks_total", {"event": event}) or 0.0

    def state(self, job_id: str) -> tuple[Job, list[Chunk]]:
        return self.store.job(job_id), self.store.chunks_of(job_id)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    hub = ChangeHub()
    store = FakeStore(on_commit=hub.publish)
    clock = FakeClock()
    config = Config(
        retry_backoff=2.0, retry_backoff_max=60.0, watch_min_interval=0.0, heartbeat_interval=60.0
    )
    outbox = Outbox(lambda job, now: {"id": job.id}, 0)
    metrics = Metrics()
    # No Database: none of the paths tested here touches it (only sweep() does).
    workers = WorkerService(store, cast(Database, None), hub, outbox, config, clock, metrics)
    yield Rig(store, hub, clock, config, metrics, workers)
    hub.close()  # cancels the hub's timers for retried work


# --- claim ---------------------------------------------------------------------------------------


async def test_claim_hands_out_ready_chunks_in_claim_order_and_leases_them(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5, priority=5)
    rig.seed("B", total_items=10, chunk_size=5, priority=9)
    rig.seed("C", total_items=5, chunk_size=5, priority=5, kind="other")
    now = rig.clock()

    first = await rig.workers.claim("w1", ["k"], 3, LEASE, 0)

    # Priority first, then job id, then index; kind "other" is not asked for.
    assert [c.chunk.id for c in first] == ["B-0", "B-1", "A-0"]
    assert len({c.lease_token for c in first}) == 3
    for c in first:
        stored = rig.store.chunk(c.chunk.id)
        assert stored.state == ChunkState.PROCESSING
        assert stored.lease_token == c.lease_token and c.lease_token
        assert stored.lease_expire_time == c.lease_expire_time == now + LEASE
        assert stored.lease_duration == LEASE
        assert (stored.worker_id, stored.attempt, stored.start_time) == ("w1", 1, now)
    b, a = rig.store.job("B"), rig.store.job("A")
    assert (b.state, b.summary.processing, b.summary.pending, b.start_time, b.revision) == (
        JobState.PROCESSING,
        2,
        0,
        now,
        2,
    )
    assert (a.state, a.summary.processing, a.summary.pending) == (JobState.PROCESSING, 1, 2)
    assert rig.store.job("C").state == JobState.PENDING
    assert rig.store.published[-1].jobs == {"A": 2, "B": 2}

    rest = await rig.workers.claim("w2", [], 10, LEASE, 0)
    assert [c.chunk.id for c in rest] == ["A-1", "A-2", "C-0"]
    assert await rig.workers.claim("w3", [], 10, LEASE, 0) == []
    assert rig.counted("claimed") == 6


async def test_a_waiting_claim_is_woken_by_new_work(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    looked = asyncio.Event()
    write = rig.store.write

    async def write_and_tell(body: Callable[[WriteTx], Awaitable[Any]]) -> Any:
        try:
            return await write(body)
        finally:
            looked.set()

    monkeypatch.setattr(rig.store, "write", write_and_tell)
    waiting = asyncio.create_task(rig.workers.claim("w", [], 1, LEASE, 30.0))
    await asyncio.wait_for(looked.wait(), DEADLINE)  # its first look found nothing: it waits for the hub
    assert not waiting.done() and rig.store.commits == 1

    rig.seed("A", total_items=5, chunk_size=5)  # publishes new work, as CreateJob does

    claims = await asyncio.wait_for(waiting, DEADLINE)
    assert [c.chunk.id for c in claims] == ["A-0"]
    assert rig.store.chunk("A-0").state == ChunkState.PROCESSING


# --- complete ----------------------------------------------------------------------------------


async def test_completing_with_the_lease_completes_the_chunk_and_the_job_follows(rig: Rig) -> None:
    rig.seed("A", total_items=8, chunk_size=5)
    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)
    t1 = rig.clock.advance(1)

    state, claims = await rig.workers.complete(
        "A-0", c0.lease_token, [Artifact("out", "s3://b/0", "text/csv", 12)], "task-0"
    )

    assert (state, claims) == (JobState.PROCESSING, [])  # no next claim asked for
    job, chunks = rig.state("A")
    assert chunks[0].state == ChunkState.COMPLETED
    assert (chunks[0].items_done, chunks[0].end_time, chunks[0].external_task_id) == (5, t1, "task-0")
    assert chunks[0].lease_token is None and chunks[0].lease_expire_time is None
    assert (job.summary.completed, job.summary.processing, job.items_done, job.end_time) == (1, 1, 5, None)

    t2 = rig.clock.advance(1)
    state, claims = await rig.workers.complete("A-1", c1.lease_token, [Artifact("out", "s3://b/1")], "")

    assert (state, claims) == (JobState.COMPLETED, [])
    job, chunks = rig.state("A")
    assert (job.state, job.summary.completed, job.items_done, job.end_time) == (JobState.COMPLETED, 2, 8, t2)
    assert [(a.chunk_index, a.uri, a.size_bytes) for a in rig.store.artifacts_of("A")] == [
        (0, "s3://b/0", 12),
        (1, "s3://b/1", 0),
    ]
    # Reads attach them to the completed chunks, as SqliteStore's do.
    async with rig.store.read() as tx:
        listed = await tx.list_chunks("A")
    assert [[a.name for a in c.artifacts] for c in listed] == [["out"], ["out"]]
    assert rig.counted("completed") == 2


async def test_complete_and_claim_next_in_one_transaction(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    (c0,) = await rig.workers.claim("w", [], 1, LEASE, 0)
    published = len(rig.store.published)

    state, claims = await rig.workers.complete(
        "A-0", c0.lease_token, [], "", claim_next=ClaimAsk("w", [], 1, LEASE)
    )

    assert state == JobState.PROCESSING
    assert [c.chunk.id for c in claims] == ["A-1"]
    job, chunks = rig.state("A")
    assert [c.state for c in chunks] == [ChunkState.COMPLETED, ChunkState.PROCESSING]
    assert chunks[1].lease_token == claims[0].lease_token
    # One commit: one publication, one revision for both changes.
    assert rig.store.published[published:] == [Changes(jobs={"A": job.revision})]
    assert job.revision == 3


async def test_complete_many_judges_each_lease_on_its_own(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)

    results, claims = await rig.workers.complete_many(
        [
            Completion("A-0", c0.lease_token, []),
            Completion("A-1", "not-the-token", []),
            Completion("A-9", c1.lease_token, []),
        ]
    )

    assert claims == []
    assert [(r.chunk_id, type(r.error).__name__, r.job_state) for r in results] == [
        ("A-0", "NoneType", JobState.PROCESSING),
        ("A-1", "LeaseLost", None),
        ("A-9", "ChunkNotFound", None),
    ]
    _, chunks = rig.state("A")
    assert [c.state for c in chunks] == [ChunkState.COMPLETED, ChunkState.PROCESSING]


async def test_a_stale_or_wrong_lease_is_refused_and_changes_nothing(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, webhook_url="https://hooks.example/x")
    c0, _ = await rig.workers.claim("w", [], 2, LEASE, 0)
    before = rig.state("A")
    published = len(rig.store.published)

    with pytest.raises(LeaseLost):
        await rig.workers.complete("A-0", "not-the-token", [Artifact("x", "s3://x")], "")
    with pytest.raises(LeaseLost):
        await rig.workers.complete("A-0", "", [], "")
    with pytest.raises(LeaseLost):
        await rig.workers.fail("A-0", "not-the-token", "E", "boom", True)
    with pytest.raises(LeaseLost):
        await rig.workers.report_progress(
            "A-0", "not-the-token", items_done=1, stage="", message="", external_task_id="", lease_us=None
        )
    with pytest.raises(ChunkNotFound):
        await rig.workers.complete("A-7", c0.lease_token, [], "")
    # The right token, once the lease has run out.
    rig.clock.advance(LEASE / 1e6 + 1)
    with pytest.raises(LeaseLost):
        await rig.workers.complete("A-0", c0.lease_token, [], "")

    assert rig.state("A") == before
    assert rig.store.artifacts_of("A") == [] and rig.store.outbox_rows == []
    assert rig.store.published[published:] == []
    assert rig.counted("completed") == 0


async def test_the_token_of_an_earlier_claim_is_refused_after_a_reclaim(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, max_attempts=3)
    rig.config.retry_backoff = rig.config.retry_backoff_max = 0.0
    (old,) = await rig.workers.claim("w1", [], 1, LEASE, 0)
    await rig.workers.fail("A-0", old.lease_token, "E", "boom", True)
    (new,) = await rig.workers.claim("w2", [], 1, LEASE, 0)

    with pytest.raises(LeaseLost):
        await rig.workers.complete("A-0", old.lease_token, [], "")

    stored = rig.store.chunk("A-0")
    assert (stored.state, stored.lease_token, stored.worker_id, stored.attempt) == (
        ChunkState.PROCESSING,
        new.lease_token,
        "w2",
        2,
    )


# --- fail ----------------------------------------------------------------------------------------


async def test_failing_with_attempts_left_retries_later_then_fails_for_good(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, max_attempts=2)
    (c,) = await rig.workers.claim("w", [], 1, LEASE, 0)
    now = rig.clock.advance(1)

    outcome = await rig.workers.fail("A-0", c.lease_token, "IO", "disk full", True)

    # retry_backoff 2 s, first attempt: a delay between 1 and 2 seconds.
    assert outcome.will_retry and outcome.next_attempt_time is not None
    assert now + 1_000_000 <= outcome.next_attempt_time <= now + 2_000_000
    job, (chunk,) = rig.state("A")
    assert (chunk.state, chunk.next_attempt_time, chunk.lease_token) == (
        ChunkState.PENDING,
        outcome.next_attempt_time,
        None,
    )
    assert (chunk.error_reason, chunk.error_message, chunk.items_done) == ("IO", "disk full", 0)
    assert (job.state, job.summary.pending, job.summary.processing) == (JobState.PROCESSING, 1, 0)
    assert rig.store.published[-1].work_later and rig.store.published[-1].jobs == {"A": job.revision}

    assert await rig.workers.claim("w", [], 1, LEASE, 0) == []  # not before its retry time
    rig.clock.now = outcome.next_attempt_time
    (again,) = await rig.workers.claim("w", [], 1, LEASE, 0)
    assert (again.chunk.id, again.chunk.attempt) == ("A-0", 2)

    last = await rig.workers.fail("A-0", again.lease_token, "IO", "still full", True)

    assert (last.will_retry, last.next_attempt_time) == (False, None)
    job, (chunk,) = rig.state("A")
    assert chunk.state == ChunkState.FAILED
    assert (job.state, job.summary.failed, job.end_time) == (JobState.FAILED, 1, rig.clock())
    assert (job.error_reason, job.error_message, job.error_chunk_index) == ("IO", "still full", 0)
    assert (rig.counted("retried"), rig.counted("failed")) == (1, 1)


async def test_a_failure_that_is_not_retryable_fails_at_once(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, max_attempts=3)
    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)

    outcome = await rig.workers.fail("A-0", c0.lease_token, "", "bad input", False)

    assert (outcome.will_retry, outcome.next_attempt_time) == (False, None)
    job, chunks = rig.state("A")
    assert chunks[0].state == ChunkState.FAILED and chunks[0].error_reason == "WORKER_ERROR"
    assert job.state == JobState.PROCESSING  # the other chunk still runs
    await rig.workers.complete("A-1", c1.lease_token, [], "")
    assert rig.store.job("A").state == JobState.FAILED


# --- progress ------------------------------------------------------------------------------------


async def test_progress_reports_update_items_and_extend_the_lease(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    (c,) = await rig.workers.claim("w", [], 1, LEASE, 0)
    now = rig.clock.advance(3)

    cancel, expires = await rig.workers.report_progress(
        "A-0",
        c.lease_token,
        items_done=3,
        stage="parse",
        message="3 rows",
        external_task_id="t-1",
        lease_us=None,
    )

    assert (cancel, expires) == (False, now + LEASE)
    job, chunks = rig.state("A")
    assert (chunks[0].items_done, chunks[0].lease_expire_time, chunks[0].external_task_id) == (
        3,
        expires,
        "t-1",
    )
    assert (job.items_done, job.stage, job.message) == (3, "parse", "3 rows")
    assert job.percent == 30.0

    # Items never go back; a new lease length sticks.
    now = rig.clock.advance(1)
    _, expires = await rig.workers.report_progress(
        "A-0", c.lease_token, items_done=1, stage="", message="", external_task_id="", lease_us=20_000_000
    )
    assert expires == now + 20_000_000
    assert (rig.store.chunk("A-0").items_done, rig.store.job("A").items_done) == (3, 3)

    before = rig.state("A")
    with pytest.raises(InvalidArgument):
        await rig.workers.report_progress(
            "A-0", c.lease_token, items_done=6, stage="", message="", external_task_id="", lease_us=None
        )
    assert rig.state("A") == before


# --- webhooks (outbox rows) -----------------------------------------------------------------------


async def test_a_job_with_a_webhook_writes_an_outbox_row_on_its_terminal_transition(rig: Rig) -> None:
    url = "https://hooks.example/done"
    rig.seed("A", total_items=10, chunk_size=5, webhook_url=url, owner="alice")
    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)
    await rig.workers.report_progress(
        "A-0", c0.lease_token, items_done=2, stage="", message="", external_task_id="", lease_us=None
    )
    await rig.workers.complete("A-0", c0.lease_token, [], "")
    assert rig.store.outbox_rows == []  # no progress events asked for, nothing terminal yet
    assert not rig.hub.webhooks.is_set()

    now = rig.clock.advance(1)
    await rig.workers.complete("A-1", c1.lease_token, [], "")

    (row,) = rig.store.outbox_rows
    assert (row["job_id"], row["owner"], row["event_type"], row["url"]) == (
        "A",
        "alice",
        "job.completed",
        url,
    )
    assert (row["state"], row["attempts"], row["next_attempt_time"], row["create_time"]) == (
        PENDING,
        0,
        now,
        now,
    )
    body = json.loads(row["payload"])
    assert (body["id"], body["type"], body["job"]) == (row["id"], "job.completed", {"id": "A"})
    assert rig.store.published[-1].webhooks
    assert rig.hub.webhooks.is_set()  # the deliverer is woken


async def test_a_job_that_fails_writes_a_failed_event(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, webhook_url="https://hooks.example/x", max_attempts=1)
    (c,) = await rig.workers.claim("w", [], 1, LEASE, 0)

    await rig.workers.fail("A-0", c.lease_token, "E", "boom", True)  # no attempt left

    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.failed"]


async def test_a_chunk_of_a_job_being_cancelled_ends_cancelled(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, webhook_url="https://hooks.example/x")
    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)

    async def cancel(tx: WriteTx) -> None:  # what JobService.cancel_job does (on the Database)
        job = (await tx.lock_jobs(["A"]))["A"]
        job.cancel_requested = True
        job.touch(rig.clock())
        job.refresh_state(rig.clock())
        await tx.save([job], [])

    await rig.store.write(cancel)
    assert rig.store.job("A").state == JobState.CANCELLING

    cancel_requested, _ = await rig.workers.report_progress(
        "A-0", c0.lease_token, items_done=1, stage="", message="", external_task_id="", lease_us=None
    )
    assert cancel_requested
    assert (await rig.workers.fail("A-0", c0.lease_token, "E", "stopped", True)).will_retry is False
    state, claims = await rig.workers.complete("A-1", c1.lease_token, [Artifact("x", "s3://x")], "")

    assert (state, claims) == (JobState.CANCELLED, [])
    chunks = rig.store.chunks_of("A")
    assert [c.state for c in chunks] == [ChunkState.CANCELLED, ChunkState.CANCELLED]
    assert rig.store.artifacts_of("A") == []  # a cancelled chunk keeps no artifacts
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.cancelled"]


# --- atomic writes and what they publish ------------------------------------------------------------


async def test_a_commit_publishes_the_changed_job_and_its_revision(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5)
    rig.seed("B", total_items=5, chunk_size=5)
    seen: list[Changes] = []

    def on_commit(changes: Changes) -> None:
        seen.append(changes)
        rig.hub.publish(changes)

    rig.store.on_commit = on_commit
    watcher = rig.hub.add_watcher("A")
    other = rig.hub.add_watcher("B")

    (c,) = await rig.workers.claim("w", ["k"], 1, LEASE, 0)
    assert c.chunk.id == "A-0"
    assert [ch.jobs for ch in seen] == [{"A": 2}]
    assert watcher.is_set() and not other.is_set()

    await rig.workers.complete("A-0", c.lease_token, [], "")

    assert [ch.jobs for ch in seen] == [{"A": 2}, {"A": 3}]
    assert rig.store.job("A").revision == 3
    # Each save also moved the job along the WatchJobs order.
    async with rig.store.read() as tx:
        horizon = await tx.change_horizon()
    assert rig.store.job("A").change_seq == horizon - 1 > rig.store.job("B").change_seq


async def test_a_write_that_raises_rolls_back_and_publishes_nothing(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, webhook_url="https://hooks.example/x")
    (c,) = await rig.workers.claim("w", [], 1, LEASE, 0)
    before = rig.state("A")
    published = len(rig.store.published)

    # The body saves everything, then raises: nothing of it stays.
    async def body(tx: WriteTx) -> None:
        jobs, chunks = await tx.lock_leased(["A"], ["A-0"])
        job, chunk = jobs["A"], chunks["A-0"]
        job.move_chunk(chunk, ChunkState.COMPLETED, rig.clock(), items_done=5)
        tx.add_artifacts("A", [Artifact("x", "s3://x")])
        tx.add_outbox([{**dict.fromkeys(OUTBOX_COLUMNS, 0), "id": "d1", "job_id": "A"}])
        await tx.save([job], [chunk])
        raise RuntimeError("after the save")

    with pytest.raises(RuntimeError):
        await rig.store.write(body)

    # And a service call whose save fails leaves the chunk leased as it was.
    rig.store.fail_next_save = OSError("disk gone")
    with pytest.raises(OSError):
        await rig.workers.complete("A-0", c.lease_token, [Artifact("x", "s3://x")], "")

    assert rig.state("A") == before
    assert rig.store.artifacts_of("A") == [] and rig.store.outbox_rows == []
    assert rig.store.published[published:] == []
    assert rig.store.rollbacks == 2

    # The lease still holds: the completion goes through once the store does.
    assert await rig.workers.complete("A-0", c.lease_token, [], "") == (JobState.COMPLETED, [])
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.completed"]


async def test_a_read_sees_one_snapshot_while_writes_commit(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5)
    async with rig.store.read() as tx:
        await rig.workers.claim("w", [], 1, LEASE, 0)
        job = await tx.get_job("A", None)
        chunks = await tx.list_chunks("A")
    assert job is not None and job.revision == 1 and chunks[0].state == ChunkState.PENDING
    assert rig.store.job("A").revision == 2


# --- WatchService ----------------------------------------------------------------------------------


def _recorder() -> tuple[asyncio.Queue[WatchMessage], Callable[[Any], Awaitable[object]]]:
    q: asyncio.Queue[WatchMessage] = asyncio.Queue()

    async def write(msg: Any) -> None:
        await q.put(msg)

    return q, write


async def _next(q: asyncio.Queue[WatchMessage]) -> WatchMessage:
    return await asyncio.wait_for(q.get(), DEADLINE)


async def test_watch_streams_a_snapshot_then_each_change_until_the_job_ends(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    watches = WatchService(rig.store, rig.hub, rig.config)
    q, write = _recorder()
    stream = asyncio.create_task(watches.watch(ANONYMOUS, "A", 0, write))

    snap = await _next(q)
    assert (snap.type, snap.revision, [c.id for c in snap.chunks]) == (EventType.SNAPSHOT, 1, ["A-0", "A-1"])

    c0, c1 = await rig.workers.claim("w", [], 2, LEASE, 0)
    msg = await _next(q)
    assert (msg.type, msg.revision) == (EventType.CHANGE, 2)
    assert [(c.id, c.state) for c in msg.chunks] == [
        ("A-0", ChunkState.PROCESSING),
        ("A-1", ChunkState.PROCESSING),
    ]

    await rig.workers.complete("A-1", c1.lease_token, [Artifact("out", "s3://1")], "")
    msg = await _next(q)
    assert (msg.revision, [c.id for c in msg.chunks]) == (3, ["A-1"])  # only what changed after 2
    assert [a.uri for a in msg.chunks[0].artifacts] == ["s3://1"]

    await rig.workers.complete("A-0", c0.lease_token, [], "")
    msg = await _next(q)
    assert msg.job is not None
    assert (msg.revision, msg.job.state, [c.id for c in msg.chunks]) == (4, JobState.COMPLETED, ["A-0"])
    await asyncio.wait_for(stream, DEADLINE)  # a terminal job ends the stream
    assert q.empty()
    assert not rig.hub.watched("A")


async def test_watch_resumes_after_a_revision(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5)
    watches = WatchService(rig.store, rig.hub, rig.config)
    c0, *_ = await rig.workers.claim("w", [], 3, LEASE, 0)  # revision 2
    await rig.workers.complete("A-0", c0.lease_token, [], "")  # revision 3

    q, write = _recorder()
    stream = asyncio.create_task(watches.watch(ANONYMOUS, "A", 2, write))
    msg = await _next(q)
    assert (msg.type, msg.revision, [c.id for c in msg.chunks]) == (EventType.CHANGE, 3, ["A-0"])

    q2, write2 = _recorder()
    current = asyncio.create_task(watches.watch(ANONYMOUS, "A", 3, write2))
    msg = await _next(q2)
    assert (msg.type, msg.revision, msg.chunks) == (EventType.HEARTBEAT, 3, [])

    with pytest.raises(RevisionAhead):
        await watches.watch(ANONYMOUS, "A", 9, write)
    with pytest.raises(JobNotFound):
        await watches.watch(ANONYMOUS, "nope", 0, write)

    rig.hub.close()  # the server going away ends the open streams
    for task in (stream, current):
        with pytest.raises(ShuttingDown):
            await asyncio.wait_for(task, DEADLINE)


# --- JobService's reads (they go through the Store) --------------------------------------------------


async def test_job_reads_on_the_fake_store(rig: Rig) -> None:
    jobs = JobService(cast(Database, None), rig.store, Outbox(lambda j, n: {}, 0), rig.config, rig.clock)
    for job_id, priority in (("A", 1), ("B", 7), ("C", 7), ("D", 3)):
        rig.seed(job_id, total_items=10, chunk_size=5, priority=priority, display_name=f"Job {job_id}")
    (c,) = await rig.workers.claim("w", [], 1, LEASE, 0)  # B-0
    await rig.workers.complete(c.chunk.id, c.lease_token, [Artifact("r", "s3://r")], "")

    page = await jobs.get_job(ANONYMOUS, "B", full=True)
    assert [a.uri for a in page.job.artifacts] == ["s3://r"]
    assert page.chunks is not None and [c.state for c in page.chunks] == [
        ChunkState.COMPLETED,
        ChunkState.PENDING,
    ]

    seen: list[str] = []
    token = ""
    while True:
        pages, token, total, _ = await jobs.list_jobs(
            ANONYMOUS, JobFilter(), order_by="priority desc", page_size=3, page_token=token, full=False
        )
        seen += [p.job.id for p in pages]
        assert total == 4
        if not token:
            break
    assert seen == ["C", "B", "D", "A"]

    pages, _, total, _ = await jobs.list_jobs(
        ANONYMOUS,
        JobFilter(states=[JobState.PROCESSING]),
        order_by="create_time",
        page_size=10,
        page_token="",
        full=False,
    )
    assert ([p.job.id for p in pages], total) == (["B"], 1)

    chunks, _, total = await jobs.list_chunks(ANONYMOUS, "B", [ChunkState.PENDING], 10, "")
    assert ([c.id for c in chunks], total) == (["B-1"], 1)
    with pytest.raises(JobNotFound):
        await jobs.get_job(ANONYMOUS, "nope", full=False)
