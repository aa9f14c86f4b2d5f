"""WorkerService, WatchService, JobService and FeedService on the in-memory FakeStore: no database at all.

Every service reads and writes through the one ``FakeStore``, as through ``SqlStore``. Time is a
fake clock the tests move; nothing sleeps. The SQL itself (store/statements.py, store/tx.py) is left
to the tests that run on a database (tests/conformance/ holds this fake to them, topic by topic).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
from support.clock import FakeClock
from support.fake_store import FakeRead, FakeStore, Tombstone, new_job

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.errors import (
    ChunkNotFound,
    InvalidArgument,
    JobAlreadyTerminal,
    JobNotFound,
    JobNotRetryable,
    JobNotTerminal,
    LeaseLost,
    RevisionAhead,
    ShuttingDown,
)
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState, Summary
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.domain.webhooks import PENDING
from jobpulse_server.domain.work import ClaimRequest, Completion, Failure, ProgressReport
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobPage, JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.watch import EventType, FeedMessage, FeedService, WatchMessage, WatchService
from jobpulse_server.services.workers import CANCEL_DEADLINE, WorkerService
from jobpulse_server.store import Tx
from jobpulse_server.store.statements import OUTBOX_COLUMNS

DEADLINE = 5.0  # seconds a test waits for something that must happen before it fails
LEASE = 10_000_000  # a claim's lease, us
LONG_LEASE = 3_600_000_000  # a lease that outlasts any test
START = 1_700_000_000_000_000
HOOK = "https://hooks.example/x"


@dataclass
class Rig:
    store: FakeStore
    hub: ChangeHub
    clock: FakeClock
    config: Config
    metrics: Metrics
    outbox: Outbox
    workers: WorkerService
    jobs: JobService

    def seed(self, job_id: str, **kw: Any) -> tuple[Job, list[Chunk]]:
        job, chunks = new_job(job_id, now=self.clock(), **kw)
        self.store.add_job(job, chunks)
        return job, chunks

    def counted(self, event: str) -> float:
        return self.metrics.registry.get_sample_value("jobpulse_chunks_total", {"event": event}) or 0.0

    def state(self, job_id: str) -> tuple[Job, list[Chunk]]:
        return self.store.job(job_id), self.store.chunks_of(job_id)

    async def horizon(self) -> int:
        async with self.store.read() as tx:
            return await tx.change_horizon()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    hub = ChangeHub()
    store = FakeStore(on_commit=hub.publish)
    clock = FakeClock(START)
    config = Config(
        retry_backoff=2.0, retry_backoff_max=60.0, watch_min_interval=0.0, heartbeat_interval=60.0
    )
    outbox = Outbox(lambda job, now: {"id": job.id}, 0)
    metrics = Metrics()
    workers = WorkerService(store, hub, outbox, config, clock, metrics)
    jobs = JobService(store, outbox, config, clock)
    yield Rig(store, hub, clock, config, metrics, outbox, workers, jobs)
    hub.close()  # cancels the hub's timers for retried work


# --- claim ---------------------------------------------------------------------------------------


async def test_claim_hands_out_ready_chunks_in_claim_order_and_leases_them(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5, priority=5)
    rig.seed("B", total_items=10, chunk_size=5, priority=9)
    rig.seed("C", total_items=5, chunk_size=5, priority=5, kind="other")
    now = rig.clock()

    first = await rig.workers.claim(ClaimRequest("w1", ["k"], 3, LEASE, 0))

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

    rest = await rig.workers.claim(ClaimRequest("w2", [], 10, LEASE, 0))
    assert [c.chunk.id for c in rest] == ["A-1", "A-2", "C-0"]
    assert await rig.workers.claim(ClaimRequest("w3", [], 10, LEASE, 0)) == []
    assert rig.counted("claimed") == 6


async def test_a_waiting_claim_is_woken_by_new_work(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    looked = asyncio.Event()
    write = rig.store.write

    async def write_and_tell(body: Callable[[Tx], Awaitable[Any]]) -> Any:
        try:
            return await write(body)
        finally:
            looked.set()

    monkeypatch.setattr(rig.store, "write", write_and_tell)
    waiting = asyncio.create_task(rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 30.0)))
    await asyncio.wait_for(looked.wait(), DEADLINE)  # its first look found nothing: it waits for the hub
    assert not waiting.done() and rig.store.commits == 1

    rig.seed("A", total_items=5, chunk_size=5)  # publishes new work, as CreateJob does

    claims = await asyncio.wait_for(waiting, DEADLINE)
    assert [c.chunk.id for c in claims] == ["A-0"]
    assert rig.store.chunk("A-0").state == ChunkState.PROCESSING


# --- complete ----------------------------------------------------------------------------------


async def test_completing_with_the_lease_completes_the_chunk_and_the_job_follows(rig: Rig) -> None:
    rig.seed("A", total_items=8, chunk_size=5)
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    t1 = rig.clock.advance(1)

    state, claims = await rig.workers.complete(
        Completion("A-0", c0.lease_token, [Artifact("out", "s3://b/0", "text/csv", 12)], "task-0")
    )

    assert (state, claims) == (JobState.PROCESSING, [])  # no next claim asked for
    job, chunks = rig.state("A")
    assert chunks[0].state == ChunkState.COMPLETED
    assert (chunks[0].items_done, chunks[0].end_time, chunks[0].external_task_id) == (5, t1, "task-0")
    assert chunks[0].lease_token is None and chunks[0].lease_expire_time is None
    assert (job.summary.completed, job.summary.processing, job.items_done, job.end_time) == (1, 1, 5, None)

    t2 = rig.clock.advance(1)
    state, claims = await rig.workers.complete(
        Completion("A-1", c1.lease_token, [Artifact("out", "s3://b/1")], "")
    )

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
    (c0,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    published = len(rig.store.published)

    state, claims = await rig.workers.complete(
        Completion("A-0", c0.lease_token, [], ""), claim_next=ClaimRequest("w", [], 1, LEASE)
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
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))

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
    c0, _ = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    before = rig.state("A")
    published = len(rig.store.published)

    with pytest.raises(LeaseLost):
        await rig.workers.complete(Completion("A-0", "not-the-token", [Artifact("x", "s3://x")], ""))
    with pytest.raises(LeaseLost):
        await rig.workers.complete(Completion("A-0", "", [], ""))
    with pytest.raises(LeaseLost):
        await rig.workers.fail(Failure("A-0", "not-the-token", "E", "boom", True))
    with pytest.raises(LeaseLost):
        await rig.workers.report_progress(
            ProgressReport(
                "A-0", "not-the-token", items_done=1, stage="", message="", external_task_id="", lease_us=0
            )
        )
    with pytest.raises(ChunkNotFound):
        await rig.workers.complete(Completion("A-7", c0.lease_token, [], ""))
    # The right token, once the lease has run out.
    rig.clock.advance(LEASE / 1e6 + 1)
    with pytest.raises(LeaseLost):
        await rig.workers.complete(Completion("A-0", c0.lease_token, [], ""))

    assert rig.state("A") == before
    assert rig.store.artifacts_of("A") == [] and rig.store.outbox_rows == []
    assert rig.store.published[published:] == []
    assert rig.counted("completed") == 0


async def test_the_token_of_an_earlier_claim_is_refused_after_a_reclaim(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, max_attempts=3)
    rig.config.retry_backoff = rig.config.retry_backoff_max = 0.0
    (old,) = await rig.workers.claim(ClaimRequest("w1", [], 1, LEASE, 0))
    await rig.workers.fail(Failure("A-0", old.lease_token, "E", "boom", True))
    (new,) = await rig.workers.claim(ClaimRequest("w2", [], 1, LEASE, 0))

    with pytest.raises(LeaseLost):
        await rig.workers.complete(Completion("A-0", old.lease_token, [], ""))

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
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    now = rig.clock.advance(1)

    outcome = await rig.workers.fail(Failure("A-0", c.lease_token, "IO", "disk full", True))

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

    assert await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0)) == []  # not before its retry time
    rig.clock.now = outcome.next_attempt_time
    (again,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    assert (again.chunk.id, again.chunk.attempt) == ("A-0", 2)

    last = await rig.workers.fail(Failure("A-0", again.lease_token, "IO", "still full", True))

    assert (last.will_retry, last.next_attempt_time) == (False, None)
    job, (chunk,) = rig.state("A")
    assert chunk.state == ChunkState.FAILED
    assert (job.state, job.summary.failed, job.end_time) == (JobState.FAILED, 1, rig.clock())
    assert (job.error_reason, job.error_message, job.error_chunk_index) == ("IO", "still full", 0)
    assert (rig.counted("retried"), rig.counted("failed")) == (1, 1)


async def test_a_failure_that_is_not_retryable_fails_at_once(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, max_attempts=3)
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))

    outcome = await rig.workers.fail(Failure("A-0", c0.lease_token, "", "bad input", False))

    assert (outcome.will_retry, outcome.next_attempt_time) == (False, None)
    job, chunks = rig.state("A")
    assert chunks[0].state == ChunkState.FAILED and chunks[0].error_reason == "WORKER_ERROR"
    assert job.state == JobState.PROCESSING  # the other chunk still runs
    await rig.workers.complete(Completion("A-1", c1.lease_token, [], ""))
    assert rig.store.job("A").state == JobState.FAILED


# --- progress ------------------------------------------------------------------------------------


async def test_progress_reports_update_items_and_extend_the_lease(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    now = rig.clock.advance(3)

    cancel, expires = await rig.workers.report_progress(
        ProgressReport(
            "A-0",
            c.lease_token,
            items_done=3,
            stage="parse",
            message="3 rows",
            external_task_id="t-1",
            lease_us=0,
        ),
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
        ProgressReport(
            "A-0", c.lease_token, items_done=1, stage="", message="", external_task_id="", lease_us=20_000_000
        )
    )
    assert expires == now + 20_000_000
    assert (rig.store.chunk("A-0").items_done, rig.store.job("A").items_done) == (3, 3)

    before = rig.state("A")
    with pytest.raises(InvalidArgument):
        await rig.workers.report_progress(
            ProgressReport(
                "A-0", c.lease_token, items_done=6, stage="", message="", external_task_id="", lease_us=0
            )
        )
    assert rig.state("A") == before


# --- webhooks (outbox rows) -----------------------------------------------------------------------


async def test_a_job_with_a_webhook_writes_an_outbox_row_on_its_terminal_transition(rig: Rig) -> None:
    url = "https://hooks.example/done"
    rig.seed("A", total_items=10, chunk_size=5, webhook_url=url, owner="alice")
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    await rig.workers.report_progress(
        ProgressReport(
            "A-0", c0.lease_token, items_done=2, stage="", message="", external_task_id="", lease_us=0
        )
    )
    await rig.workers.complete(Completion("A-0", c0.lease_token, [], ""))
    assert rig.store.outbox_rows == []  # no progress events asked for, nothing terminal yet
    assert not rig.hub.webhooks.is_set()

    now = rig.clock.advance(1)
    await rig.workers.complete(Completion("A-1", c1.lease_token, [], ""))

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
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))

    await rig.workers.fail(Failure("A-0", c.lease_token, "E", "boom", True))  # no attempt left

    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.failed"]


async def test_a_chunk_of_a_job_being_cancelled_ends_cancelled(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, webhook_url="https://hooks.example/x")
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))

    await rig.jobs.cancel_job(ANONYMOUS, "A", "stop")  # both chunks run: nothing to cancel at once
    assert rig.store.job("A").state == JobState.CANCELLING

    cancel_requested, _ = await rig.workers.report_progress(
        ProgressReport(
            "A-0", c0.lease_token, items_done=1, stage="", message="", external_task_id="", lease_us=0
        )
    )
    assert cancel_requested
    assert (await rig.workers.fail(Failure("A-0", c0.lease_token, "E", "stopped", True))).will_retry is False
    state, claims = await rig.workers.complete(
        Completion("A-1", c1.lease_token, [Artifact("x", "s3://x")], "")
    )

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

    (c,) = await rig.workers.claim(ClaimRequest("w", ["k"], 1, LEASE, 0))
    assert c.chunk.id == "A-0"
    assert [ch.jobs for ch in seen] == [{"A": 2}]
    assert watcher.is_set() and not other.is_set()

    await rig.workers.complete(Completion("A-0", c.lease_token, [], ""))

    assert [ch.jobs for ch in seen] == [{"A": 2}, {"A": 3}]
    assert rig.store.job("A").revision == 3
    # Each save also moved the job along the WatchJobs order.
    async with rig.store.read() as tx:
        horizon = await tx.change_horizon()
    assert rig.store.job("A").change_seq == horizon - 1 > rig.store.job("B").change_seq


async def test_a_write_that_raises_rolls_back_and_publishes_nothing(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, webhook_url="https://hooks.example/x")
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    before = rig.state("A")
    published = len(rig.store.published)

    # The body saves everything, then raises: nothing of it stays.
    async def body(tx: Tx) -> None:
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
        await rig.workers.complete(Completion("A-0", c.lease_token, [Artifact("x", "s3://x")], ""))

    assert rig.state("A") == before
    assert rig.store.artifacts_of("A") == [] and rig.store.outbox_rows == []
    assert rig.store.published[published:] == []
    assert rig.store.rollbacks == 2

    # The lease still holds: the completion goes through once the store does.
    assert await rig.workers.complete(Completion("A-0", c.lease_token, [], "")) == (JobState.COMPLETED, [])
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.completed"]


async def test_a_read_sees_one_snapshot_while_writes_commit(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5)
    async with rig.store.read() as tx:
        await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
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

    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    msg = await _next(q)
    assert (msg.type, msg.revision) == (EventType.CHANGE, 2)
    assert [(c.id, c.state) for c in msg.chunks] == [
        ("A-0", ChunkState.PROCESSING),
        ("A-1", ChunkState.PROCESSING),
    ]

    await rig.workers.complete(Completion("A-1", c1.lease_token, [Artifact("out", "s3://1")], ""))
    msg = await _next(q)
    assert (msg.revision, [c.id for c in msg.chunks]) == (3, ["A-1"])  # only what changed after 2
    assert [a.uri for a in msg.chunks[0].artifacts] == ["s3://1"]

    await rig.workers.complete(Completion("A-0", c0.lease_token, [], ""))
    msg = await _next(q)
    assert msg.job is not None
    assert (msg.revision, msg.job.state, [c.id for c in msg.chunks]) == (4, JobState.COMPLETED, ["A-0"])
    await asyncio.wait_for(stream, DEADLINE)  # a terminal job ends the stream
    assert q.empty()
    assert not rig.hub.watched("A")


async def test_watch_resumes_after_a_revision(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5)
    watches = WatchService(rig.store, rig.hub, rig.config)
    c0, *_ = await rig.workers.claim(ClaimRequest("w", [], 3, LEASE, 0))  # revision 2
    await rig.workers.complete(Completion("A-0", c0.lease_token, [], ""))  # revision 3

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
    jobs = rig.jobs
    for job_id, priority in (("A", 1), ("B", 7), ("C", 7), ("D", 3)):
        rig.seed(job_id, total_items=10, chunk_size=5, priority=priority, display_name=f"Job {job_id}")
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))  # B-0
    await rig.workers.complete(Completion(c.chunk.id, c.lease_token, [Artifact("r", "s3://r")], ""))

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


# --- reads, writes and one change order ----------------------------------------------------------------


async def test_reads_keep_their_snapshot_and_every_write_shares_one_change_order(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    rig.seed("B", total_items=5, chunk_size=5)
    async with rig.store.read() as snapshot:
        await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))  # A-0, through the store
        job = await snapshot.get_job("A", None)
        assert not hasattr(snapshot, "save")  # a read offers no write
    assert job is not None and job.revision == 1  # a read keeps the tables it began with

    async with rig.store.read() as tx:
        job = await tx.get_job("A", None)
        running = await tx.processing_chunks("A")
        claimed_seq = await tx.change_horizon() - 1
    assert job is not None and (job.revision, job.change_seq) == (2, claimed_seq)
    assert [(c.id, c.worker_id) for c in running] == [("A-0", "w")]

    # One change_seq sequence: saves and deletes of any write follow each other.
    async def rename(tx: Tx) -> None:
        b = await tx.get_job("B", None, for_update=True)
        assert b is not None
        b.display_name = "renamed"
        b.touch(rig.clock())
        await tx.save([b], [])

    await rig.store.write(rename)
    assert rig.store.job("B").change_seq == claimed_seq + 1
    await rig.store.write(lambda tx: tx.delete_job("B", rig.clock()))
    assert [(t.id, t.change_seq) for t in rig.store.tombstones] == [("B", claimed_seq + 2)]
    assert await rig.horizon() == claimed_seq + 3
    assert rig.store.published[-2:] == [Changes(jobs={"B": 2}), Changes(deleted={"B"})]
    (c,) = await rig.workers.claim(
        ClaimRequest("w", [], 1, LEASE, 0)
    )  # and the store's next save follows them
    assert (c.chunk.id, rig.store.job("A").change_seq) == ("A-1", claimed_seq + 3)


async def test_a_transaction_that_raises_leaves_nothing_and_publishes_nothing(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, webhook_url=HOOK)
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    before = rig.state("A")
    published, horizon = len(rig.store.published), await rig.horizon()

    async def body(tx: Tx) -> None:
        job = await tx.get_job("A", None, for_update=True)
        assert job is not None
        await tx.cancel_pending_chunks("A", job.touch(rig.clock()), rig.clock())
        tx.add_outbox([{**dict.fromkeys(OUTBOX_COLUMNS, 0), "id": "d1", "job_id": "A"}])
        await tx.save([job], [])
        await tx.delete_job("A", rig.clock())
        raise RuntimeError("after the writes")

    with pytest.raises(RuntimeError):
        await rig.store.write(body)
    # A service call whose save fails.
    rig.store.fail_next_save = OSError("disk gone")
    with pytest.raises(OSError):
        await rig.jobs.cancel_job(ANONYMOUS, "A", "stop")

    assert rig.state("A") == before
    assert rig.store.outbox_rows == [] and rig.store.tombstones == []
    assert rig.store.published[published:] == []
    assert await rig.horizon() == horizon
    assert rig.store.rollbacks == 2
    # The writer lock was given back each time: the worker goes on.
    assert await rig.workers.complete(Completion("A-0", c.lease_token, [], "")) == (JobState.PROCESSING, [])


# --- JobService.create_job ----------------------------------------------------------------------------


def _new(request_id: str = "", **kw: Any) -> NewJob:
    fields: dict[str, Any] = dict(kind="k", total_items=10, chunk_size=5, max_attempts=3, priority=5)
    fields.update(kw)
    return NewJob(request_id=request_id, **fields)


async def test_create_job_splits_the_items_into_pending_chunks(rig: Rig) -> None:
    now = rig.clock()
    req = _new(
        total_items=12,
        max_attempts=2,
        priority=7,
        display_name="Nightly",
        labels={"team": "a"},
        metadata={"n": 1},
    )

    page = await rig.jobs.create_job(ANONYMOUS, req)

    job, chunks = rig.state(page.job.id)
    assert (job.state, job.revision, job.owner, job.kind, job.priority) == (
        JobState.PENDING,
        1,
        "anonymous",
        "k",
        7,
    )
    assert (job.total_items, job.chunk_size, job.max_attempts, job.items_done) == (12, 5, 2, 0)
    assert job.summary == Summary(pending=3)
    assert (job.display_name, job.labels, job.metadata, job.request_id) == (
        "Nightly",
        {"team": "a"},
        {"n": 1},
        None,
    )
    assert (job.create_time, job.update_time, job.start_time, job.end_time) == (now, now, None, None)
    assert [(c.id, c.item_start, c.item_count) for c in chunks] == [
        (f"{job.id}-0", 0, 5),
        (f"{job.id}-1", 5, 5),
        (f"{job.id}-2", 10, 2),
    ]
    assert {(c.state, c.priority, c.kind, c.max_attempts, c.revision, c.attempt) for c in chunks} == {
        (ChunkState.PENDING, 7, "k", 2, 1, 0)
    }
    assert page.chunks == chunks and page.chunks_next_page_token == ""
    assert (page.job.state, page.job.summary) == (JobState.PENDING, job.summary)
    assert rig.store.published[-1] == Changes(jobs={job.id: 1}, new_work=True)
    assert job.change_seq == await rig.horizon() - 1
    # The workers claim from the same tables.
    claims = await rig.workers.claim(ClaimRequest("w", ["k"], 5, LEASE, 0))
    assert [c.chunk.id for c in claims] == [c.id for c in chunks]


async def test_create_job_with_a_known_request_id_returns_the_first_job(rig: Rig) -> None:
    first = await rig.jobs.create_job(ANONYMOUS, _new("r-1"))
    published = len(rig.store.published)

    again = await rig.jobs.create_job(ANONYMOUS, _new("r-1"))

    assert again.job.id == first.job.id and again.job.total_items == 10
    assert again.chunks is not None and [c.id for c in again.chunks] == [
        f"{first.job.id}-0",
        f"{first.job.id}-1",
    ]
    assert rig.store.job_ids == [first.job.id]
    assert rig.store.published[published:] == []
    # Request ids are per owner.
    bob = Principal("bob", sees_all=False)
    theirs = await rig.jobs.create_job(bob, _new("r-1"))
    assert theirs.job.id != first.job.id and rig.store.job(theirs.job.id).owner == "bob"


async def test_create_job_with_a_known_request_id_and_another_request_is_refused(rig: Rig) -> None:
    first = await rig.jobs.create_job(ANONYMOUS, _new("r-1"))
    published = len(rig.store.published)

    with pytest.raises(InvalidArgument) as refused:
        await rig.jobs.create_job(ANONYMOUS, _new("r-1", total_items=99))

    assert [v.field for v in refused.value.violations] == ["request_id"]
    assert first.job.id in refused.value.violations[0].description
    assert rig.store.job_ids == [first.job.id]
    assert rig.store.published[published:] == []


class RacingStore:
    """``store``, but runs ``race`` once, inside the first read after its snapshot was taken: as if
    another call committed between this call's look-up of its request_id and its insert."""

    fast = None

    def __init__(self, store: FakeStore, race: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.race: Callable[[], Awaitable[None]] | None = race

    async def chunks_added(self, n: int) -> None:
        await self.store.chunks_added(n)

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[FakeRead]:
        async with self.store.read() as tx:
            race, self.race = self.race, None
            if race is not None:
                await race()
            yield tx

    async def write(self, body: Callable[[Any], Awaitable[Any]], *, bulk: bool = False) -> Any:
        return await self.store.write(body)


async def test_create_job_that_loses_a_request_id_race_returns_the_winner(rig: Rig) -> None:
    won: list[JobPage] = []

    async def other_call() -> None:
        won.append(await rig.jobs.create_job(ANONYMOUS, _new("r-1")))

    racing = JobService(RacingStore(rig.store, other_call), rig.outbox, rig.config, rig.clock)

    page = await racing.create_job(ANONYMOUS, _new("r-1"))

    (winner,) = won
    assert page.job.id == winner.job.id
    assert page.chunks is not None and [c.id for c in page.chunks] == [c.id for c in winner.chunks or []]
    assert rig.store.job_ids == [winner.job.id]
    assert rig.store.rollbacks == 1  # the loser's insert (RequestIdTaken)
    assert [c.jobs for c in rig.store.published] == [{winner.job.id: 1}]


# --- JobService.cancel_job ----------------------------------------------------------------------------


async def test_cancel_cancels_pending_chunks_and_waits_for_running_ones(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5, webhook_url=HOOK)
    (c0,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))  # revision 2
    now = rig.clock.advance(1)

    page = await rig.jobs.cancel_job(ANONYMOUS, "A", "not needed")

    job, chunks = rig.state("A")
    assert page.job.state == job.state == JobState.CANCELLING
    assert (job.revision, job.cancel_requested, job.cancel_reason, job.cancel_time) == (
        3,
        True,
        "not needed",
        now,
    )
    assert (job.update_time, job.end_time) == (now, None)
    assert job.summary == Summary(processing=1, cancelled=2)
    assert [(c.state, c.revision, c.end_time) for c in chunks] == [
        (ChunkState.PROCESSING, 2, None),
        (ChunkState.CANCELLED, 3, now),
        (ChunkState.CANCELLED, 3, now),
    ]
    assert rig.store.published[-1] == Changes(jobs={"A": 3})
    assert rig.store.outbox_rows == []  # not over yet
    assert await rig.workers.claim(ClaimRequest("w", [], 5, LEASE, 0)) == []

    # Asking again changes nothing.
    await rig.jobs.cancel_job(ANONYMOUS, "A", "again")
    assert rig.state("A") == (job, chunks)

    # The worker is told; once its chunk ends, so does the job.
    cancel_requested, _ = await rig.workers.report_progress(
        ProgressReport(
            "A-0", c0.lease_token, items_done=1, stage="", message="", external_task_id="", lease_us=0
        )
    )
    assert cancel_requested
    assert await rig.workers.complete(Completion("A-0", c0.lease_token, [], "")) == (JobState.CANCELLED, [])
    assert rig.store.job("A").summary == Summary(cancelled=3)
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.cancelled"]


async def test_cancel_with_nothing_running_ends_the_job_at_once(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, webhook_url=HOOK)
    now = rig.clock.advance(1)

    page = await rig.jobs.cancel_job(ANONYMOUS, "A", "")

    job, chunks = rig.state("A")
    assert page.job.state == job.state == JobState.CANCELLED
    assert (job.summary, job.end_time, job.revision) == (Summary(cancelled=2), now, 2)
    assert {(c.state, c.end_time) for c in chunks} == {(ChunkState.CANCELLED, now)}
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.cancelled"]
    assert rig.store.published[-1] == Changes(jobs={"A": 2}, webhooks=True)
    assert rig.hub.webhooks.is_set()
    # A cancelled job may be cancelled again: nothing happens.
    await rig.jobs.cancel_job(ANONYMOUS, "A", "")
    assert rig.state("A") == (job, chunks)


async def test_a_finished_job_cannot_be_cancelled(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, owner="alice")
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    await rig.workers.complete(Completion("A-0", c.lease_token, [], ""))
    before = rig.state("A")
    published = len(rig.store.published)

    with pytest.raises(JobAlreadyTerminal) as err:
        await rig.jobs.cancel_job(ANONYMOUS, "A", "")
    assert err.value.metadata == {"job_id": "A", "state": "COMPLETED"}
    with pytest.raises(JobNotFound):
        await rig.jobs.cancel_job(ANONYMOUS, "nope", "")
    with pytest.raises(JobNotFound):  # not bob's
        await rig.jobs.cancel_job(Principal("bob", sees_all=False), "A", "")

    assert rig.state("A") == before
    assert rig.store.published[published:] == []


# --- JobService.retry_job -----------------------------------------------------------------------------


async def test_retry_puts_a_failed_jobs_failed_chunks_back_to_work(rig: Rig) -> None:
    rig.seed("A", total_items=15, chunk_size=5, max_attempts=1)
    c0, c1 = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    await rig.workers.report_progress(
        ProgressReport(
            "A-0", c0.lease_token, items_done=2, stage="", message="", external_task_id="", lease_us=0
        )
    )
    await rig.workers.fail(Failure("A-0", c0.lease_token, "IO", "disk full", True))  # no attempt left
    await rig.workers.complete(Completion("A-1", c1.lease_token, [], ""))
    (c2,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    await rig.workers.complete(Completion("A-2", c2.lease_token, [], ""))
    failed = rig.store.job("A")
    assert (failed.state, failed.items_done, failed.error_reason, failed.error_chunk_index) == (
        JobState.FAILED,
        12,
        "IO",
        0,
    )
    now = rig.clock.advance(1)

    page = await rig.jobs.retry_job(ANONYMOUS, "A")

    job, chunks = rig.state("A")
    assert page.job.state == job.state == JobState.PROCESSING  # it had started
    assert job.revision == failed.revision + 1
    assert job.summary == Summary(pending=1, completed=2)
    assert (job.items_done, job.end_time, job.update_time) == (10, None, now)
    assert (job.error_reason, job.error_message, job.error_chunk_index) == ("", "", None)
    retried = chunks[0]
    # attempt keeps counting; the retry allows the job's max_attempts more claims.
    assert (retried.state, retried.attempt, retried.max_attempts, retried.items_done, retried.revision) == (
        ChunkState.PENDING,
        1,
        1 + job.max_attempts,
        0,
        job.revision,
    )
    assert (retried.error_reason, retried.error_message, retried.worker_id) == ("", "", "")
    assert (retried.lease_token, retried.lease_expire_time, retried.next_attempt_time) == (None, None, None)
    assert (retried.start_time, retried.end_time) == (None, None)
    assert [c.state for c in chunks[1:]] == [ChunkState.COMPLETED, ChunkState.COMPLETED]
    assert rig.store.published[-1] == Changes(jobs={"A": job.revision}, new_work=True)

    (again,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    assert (again.chunk.id, again.chunk.attempt) == ("A-0", 2)  # the second claim of its life
    assert await rig.workers.complete(Completion("A-0", again.lease_token, [], "")) == (
        JobState.COMPLETED,
        [],
    )
    assert rig.store.job("A").items_done == 15


async def test_retry_of_a_job_cancelled_before_it_started_makes_it_pending(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    await rig.jobs.cancel_job(ANONYMOUS, "A", "oops")

    page = await rig.jobs.retry_job(ANONYMOUS, "A")

    job, chunks = rig.state("A")
    assert page.job.state == job.state == JobState.PENDING
    assert (job.cancel_requested, job.cancel_reason, job.cancel_time, job.end_time) == (False, "", None, None)
    assert job.summary == Summary(pending=2)
    assert {(c.state, c.end_time, c.revision) for c in chunks} == {(ChunkState.PENDING, None, 3)}


async def test_only_failed_or_cancelled_jobs_can_be_retried(rig: Rig) -> None:
    rig.seed("R", total_items=10, chunk_size=5)
    rig.seed("S", total_items=5, chunk_size=5)
    _, _, s0 = await rig.workers.claim(ClaimRequest("w", [], 3, LEASE, 0))
    await rig.workers.complete(Completion("S-0", s0.lease_token, [], ""))
    rig.seed("P", total_items=5, chunk_size=5)
    states = {"P": JobState.PENDING, "R": JobState.PROCESSING, "S": JobState.COMPLETED}
    assert {j: rig.store.job(j).state for j in states} == states
    before = {j: rig.state(j) for j in states}
    published = len(rig.store.published)

    for job_id, state in states.items():
        with pytest.raises(JobNotRetryable) as err:
            await rig.jobs.retry_job(ANONYMOUS, job_id)
        assert err.value.metadata == {"job_id": job_id, "state": state.name}

    assert {j: rig.state(j) for j in states} == before
    assert rig.store.published[published:] == []


async def test_a_retried_chunk_takes_its_jobs_current_priority(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, priority=5)
    rig.seed("B", total_items=5, chunk_size=5, priority=5)
    await rig.jobs.cancel_job(ANONYMOUS, "B", "")
    await rig.jobs.update_job(ANONYMOUS, "B", priority=9, labels=None, display_name=None)
    await rig.jobs.retry_job(ANONYMOUS, "B")

    assert rig.store.job("B").priority == 9
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    assert c.chunk.id == "B-0"  # claimed at 5, after A-0


# --- JobService.update_job ----------------------------------------------------------------------------


async def test_a_new_priority_reaches_the_pending_chunks_and_the_claim_order(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5, priority=5)
    rig.seed("B", total_items=15, chunk_size=5, priority=7)
    (b0,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))  # B first: higher priority
    assert b0.chunk.id == "B-0"
    now = rig.clock.advance(1)

    page = await rig.jobs.update_job(ANONYMOUS, "B", priority=3, labels=None, display_name=None)

    job, chunks = rig.state("B")
    assert page.job.priority == job.priority == 3
    assert (job.revision, job.update_time) == (3, now)
    # Running chunks keep theirs (a chunk takes its job's priority when it goes back to PENDING).
    assert [(c.state, c.priority) for c in chunks] == [
        (ChunkState.PROCESSING, 7),
        (ChunkState.PENDING, 3),
        (ChunkState.PENDING, 3),
    ]
    assert rig.store.published[-1] == Changes(jobs={"B": 3}, new_work=True)
    claims = await rig.workers.claim(ClaimRequest("w", [], 3, LEASE, 0))
    assert [c.chunk.id for c in claims] == ["A-0", "A-1", "B-1"]


async def test_update_changes_labels_and_name_and_bumps_the_revision_only_on_a_change(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, labels={"team": "a"}, display_name="old")
    now = rig.clock.advance(1)

    page = await rig.jobs.update_job(ANONYMOUS, "A", priority=None, labels={"team": "b"}, display_name="new")

    job = rig.store.job("A")
    assert (page.job.revision, job.revision, job.labels, job.display_name, job.update_time) == (
        2,
        2,
        {"team": "b"},
        "new",
        now,
    )
    assert rig.store.published[-1] == Changes(jobs={"A": 2})  # no new work: the priority stayed
    published, change_seq = len(rig.store.published), job.change_seq

    rig.clock.advance(1)
    same = await rig.jobs.update_job(
        ANONYMOUS, "A", priority=job.priority, labels={"team": "b"}, display_name="new"
    )
    assert same.job.revision == 2
    assert rig.store.job("A") == job and rig.store.job("A").change_seq == change_seq
    assert rig.store.published[published:] == []

    await rig.jobs.update_job(ANONYMOUS, "A", priority=None, labels={}, display_name=None)
    assert (rig.store.job("A").labels, rig.store.job("A").revision) == ({}, 3)
    with pytest.raises(JobNotFound):
        await rig.jobs.update_job(ANONYMOUS, "nope", priority=1, labels=None, display_name=None)


# --- JobService.delete_job ----------------------------------------------------------------------------


async def test_delete_removes_a_finished_job_and_leaves_a_tombstone(rig: Rig) -> None:
    rig.seed("A", total_items=5, chunk_size=5, kind="k", priority=4, labels={"t": "1"}, display_name="Doomed")
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    await rig.workers.complete(Completion("A-0", c.lease_token, [Artifact("out", "s3://a")], ""))
    now = rig.clock.advance(1)

    await rig.jobs.delete_job(ANONYMOUS, "A", force=False)

    assert rig.store.job_ids == [] and rig.store.chunks_of("A") == [] and rig.store.artifacts_of("A") == []
    assert rig.store.tombstones == [
        Tombstone(
            "A",
            "anonymous",
            "Doomed",
            "k",
            JobState.COMPLETED,
            4,
            {"t": "1"},
            START,
            now,
            await rig.horizon() - 1,
        )
    ]
    assert rig.store.published[-1] == Changes(deleted={"A"})
    with pytest.raises(JobNotFound):
        await rig.jobs.get_job(ANONYMOUS, "A", full=True)
    with pytest.raises(JobNotFound):
        await rig.jobs.delete_job(ANONYMOUS, "A", force=True)


async def test_delete_of_a_running_job_needs_force(rig: Rig) -> None:
    rig.seed("A", total_items=10, chunk_size=5)
    (c,) = await rig.workers.claim(ClaimRequest("w", [], 1, LEASE, 0))
    before = rig.state("A")

    with pytest.raises(JobNotTerminal) as err:
        await rig.jobs.delete_job(ANONYMOUS, "A", force=False)
    assert err.value.metadata == {"job_id": "A", "state": "PROCESSING"}
    assert rig.state("A") == before and rig.store.tombstones == []

    await rig.jobs.delete_job(ANONYMOUS, "A", force=True)

    assert rig.store.job_ids == [] and rig.store.chunks_of("A") == []
    assert [(t.id, t.state) for t in rig.store.tombstones] == [("A", JobState.PROCESSING)]
    with pytest.raises(ChunkNotFound):  # its worker finds nothing left to complete
        await rig.workers.complete(Completion("A-0", c.lease_token, [], ""))


# --- WorkerService.sweep: the cancel deadline ---------------------------------------------------------


async def test_sweep_force_cancels_a_chunk_whose_worker_never_stops(rig: Rig) -> None:
    rig.config.cancel_deadline = 30.0
    rig.seed("A", total_items=10, chunk_size=5, webhook_url=HOOK)
    (c0,) = await rig.workers.claim(ClaimRequest("w", [], 1, LONG_LEASE, 0))
    await rig.jobs.cancel_job(ANONYMOUS, "A", "stop")  # A-1 cancelled at once; A-0 runs on
    cancelled_at = rig.clock()

    rig.clock.advance(29)
    assert await rig.workers.sweep() == 0
    assert rig.store.job("A").state == JobState.CANCELLING

    now = rig.clock.advance(2)  # past the deadline
    assert await rig.workers.sweep() == 1

    job, chunks = rig.state("A")
    forced = chunks[0]
    assert (forced.state, forced.error_reason, forced.error_message) == (
        ChunkState.CANCELLED,
        CANCEL_DEADLINE,
        "the worker did not stop within the cancel deadline",
    )
    assert (forced.end_time, forced.lease_token, forced.lease_expire_time, forced.revision) == (
        now,
        None,
        None,
        job.revision,
    )
    assert (job.state, job.summary, job.end_time, job.cancel_time) == (
        JobState.CANCELLED,
        Summary(cancelled=2),
        now,
        cancelled_at,
    )
    assert [r["event_type"] for r in rig.store.outbox_rows] == ["job.cancelled"]
    assert rig.store.published[-1] == Changes(jobs={"A": job.revision}, webhooks=True)
    with pytest.raises(LeaseLost):  # the worker that never stopped has lost its chunk
        await rig.workers.complete(Completion("A-0", c0.lease_token, [], ""))
    assert await rig.workers.sweep() == 0


# --- FeedService (WatchJobs) --------------------------------------------------------------------------


async def _feed_next(stream: AsyncGenerator[FeedMessage, None]) -> FeedMessage:
    return await asyncio.wait_for(anext(stream), DEADLINE)


async def test_the_feed_reports_created_changed_and_deleted_jobs_after_its_cursor(rig: Rig) -> None:
    rig.seed("OLD", total_items=5, chunk_size=5)  # before the feed starts: not reported
    feed = FeedService(rig.store, rig.hub, rig.config)
    stream = cast(AsyncGenerator[FeedMessage, None], feed.watch(ANONYMOUS, JobFilter(), ""))
    try:
        first = await _feed_next(stream)
        assert (first.type, first.jobs, first.deleted) == (EventType.HEARTBEAT, [], [])

        created = await rig.jobs.create_job(ANONYMOUS, _new())
        job_id = created.job.id
        msg = await _feed_next(stream)
        assert (msg.type, [(j.id, j.revision, j.state) for j in msg.jobs], msg.deleted) == (
            EventType.CHANGE,
            [(job_id, 1, JobState.PENDING)],
            [],
        )
        after_create = msg.cursor

        await rig.jobs.cancel_job(ANONYMOUS, job_id, "")
        msg = await _feed_next(stream)
        assert [(j.id, j.revision, j.state) for j in msg.jobs] == [(job_id, 2, JobState.CANCELLED)]

        await rig.jobs.delete_job(ANONYMOUS, job_id, force=False)
        msg = await _feed_next(stream)
        assert (msg.type, msg.jobs, msg.deleted) == (EventType.CHANGE, [], [job_id])
    finally:
        await stream.aclose()

    # Resuming from a cursor: what changed after it, deletions filtered like jobs, in change order.
    rig.seed("K", total_items=5, chunk_size=5, kind="k")
    rig.seed("O", total_items=5, chunk_size=5, kind="other")
    resumed = cast(
        AsyncGenerator[FeedMessage, None], feed.watch(ANONYMOUS, JobFilter(kind="k"), after_create)
    )
    try:
        msg = await _feed_next(resumed)
    finally:
        await resumed.aclose()
    assert (msg.type, [j.id for j in msg.jobs], msg.deleted) == (EventType.CHANGE, ["K"], [job_id])


# --- JobService.stats ---------------------------------------------------------------------------------


async def test_stats_count_by_state_and_kind_with_duration_percentiles(rig: Rig) -> None:
    s = 1_000_000
    rig.seed("A", total_items=5, chunk_size=5, kind="a")
    rig.seed("B", total_items=5, chunk_size=5, kind="a")
    rig.seed("C", total_items=10, chunk_size=5, kind="b")
    rig.seed("D", total_items=5, chunk_size=5, kind="b")
    rig.seed("E", total_items=5, chunk_size=5, kind="b", owner="bob")
    rig.store.fair_share = False  # today's claim order: bob's E is not claimed
    a, b, c = await rig.workers.claim(ClaimRequest("w", [], 3, LONG_LEASE, 0))  # A-0, B-0, C-0
    rig.clock.advance(10)
    await rig.workers.complete(Completion("A-0", a.lease_token, [], ""))  # A: COMPLETED after 10 s
    rig.clock.advance(10)
    await rig.workers.complete(Completion("B-0", b.lease_token, [], ""))  # B: COMPLETED after 20 s
    rig.clock.advance(5)
    await rig.workers.complete(Completion("C-0", c.lease_token, [], ""))  # C: PROCESSING, 5 items
    await rig.jobs.cancel_job(ANONYMOUS, "E", "")  # E: CANCELLED after 25 s, never started

    overall, per_kind = await rig.jobs.stats(ANONYMOUS, JobFilter())

    assert (overall.kind, overall.total, overall.items_done) == ("", 5, 15)
    assert overall.by_state == {
        JobState.COMPLETED: 2,
        JobState.PROCESSING: 1,
        JobState.PENDING: 1,
        JobState.CANCELLED: 1,
    }
    assert (overall.first_start, overall.last_update) == (START, START + 25 * s)
    assert overall.items_per_second == pytest.approx(15 / 25)
    assert overall.durations == {"p50": 20 * s, "p95": 25 * s, "p99": 25 * s, "max": 25 * s}
    ka, kb = per_kind
    assert (ka.kind, ka.total, ka.by_state, ka.items_done) == ("a", 2, {JobState.COMPLETED: 2}, 10)
    assert (ka.first_start, ka.last_update) == (START, START + 20 * s)
    assert ka.durations == {"p50": 10 * s, "p95": 20 * s, "p99": 20 * s, "max": 20 * s}
    assert (kb.kind, kb.total, kb.items_done) == ("b", 3, 5)
    assert kb.by_state == {JobState.PROCESSING: 1, JobState.PENDING: 1, JobState.CANCELLED: 1}
    # Only groups with a started job count for the last update (repository.job_stats).
    assert (kb.first_start, kb.last_update) == (START, START + 25 * s)
    assert kb.durations == {"p50": 25 * s, "p95": 25 * s, "p99": 25 * s, "max": 25 * s}

    # A caller who sees only their own jobs; filters apply as in ListJobs.
    theirs, (only,) = await rig.jobs.stats(Principal("bob", sees_all=False), JobFilter())
    assert (theirs.total, theirs.by_state, only.kind, theirs.first_start) == (
        1,
        {JobState.CANCELLED: 1},
        "b",
        None,
    )
    assert theirs.durations == {"p50": 25 * s, "p95": 25 * s, "p99": 25 * s, "max": 25 * s}
    none, kinds = await rig.jobs.stats(ANONYMOUS, JobFilter(kind="zzz"))
    assert (none.total, kinds, none.durations["p50"], none.items_per_second) == (0, [], None, 0.0)
