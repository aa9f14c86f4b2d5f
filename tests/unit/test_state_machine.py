"""Properties of the job/chunk state machine, driven through the real services on real SQLite.

For any sequence of creates, claims, progress reports, completions, failures,
cancels, retries (of jobs and of chunks), deletes and lease expiries: every job's
summary sums to its total and equals a recount of its chunks, its state is the one
its chunks imply, its items_done equals the sum over its chunks, its revision never
goes back, and SummarizeFailures' counts (kept beside the chunks) equal a count of
the FAILED chunks by reason.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.clock import FakeClock

from jobpulse_server.domain.errors import (
    InvalidArgument,
    JobAlreadyTerminal,
    JobNotRetryable,
    JobNotTerminal,
    LeaseLost,
)
from jobpulse_server.domain.model import Chunk, ChunkState, JobState, Summary, derive_state
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import ClaimRequest, Completion, Failure, ProgressReport
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.database import SqlStore
from jobpulse_server.wire.convert import webhook_job


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.config = Config(retry_backoff=0.0, retry_backoff_max=0.0, cancel_deadline=5.0)
        self.hub = ChangeHub()
        self.store = SqlStore(f"sqlite:///{Path(self.tmp.name) / 'sm.db'}")
        self.run(self.store.start())
        outbox = Outbox(webhook_job, 0)
        self.jobs = JobService(self.store, outbox, self.config, self.clock)
        self.workers = WorkerService(self.store, self.hub, outbox, self.config, self.clock)
        self.job_ids: list[str] = []
        self.leases: list[tuple[str, str]] = []  # (chunk_id, token), possibly stale
        # job id -> (revision, what the job and its chunks looked like at that revision)
        self.seen: dict[str, tuple[int, object]] = {}
        self.last_sweep = -1  # the clock when the sweeper last ran
        self.failures = 0  # failures reported (each message a number of its own)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        self.tmp.cleanup()

    # --- rules ------------------------------------------------------------
    @rule(
        items=st.integers(1, 40),
        size=st.integers(1, 12),
        attempts=st.integers(1, 3),
        priority=st.integers(0, 10),
        # The failure policy and timeouts (none, mostly): fail fast, an attempt's longest run, a deadline.
        max_failed=st.sampled_from([0, 0, 1, 2]),
        attempt_timeout=st.sampled_from([0, 0, 5_000_000, 30_000_000]),
        timeout=st.sampled_from([0, 0, 0, 20_000_000, 100_000_000]),
    )
    def create(
        self,
        items: int,
        size: int,
        attempts: int,
        priority: int,
        max_failed: int,
        attempt_timeout: int,
        timeout: int,
    ) -> None:
        page = self.run(
            self.jobs.create_job(
                ANONYMOUS,
                NewJob(
                    kind="k",
                    total_items=items,
                    chunk_size=size,
                    max_attempts=attempts,
                    priority=priority,
                    max_failed_chunks=max_failed,
                    attempt_timeout=attempt_timeout,
                    timeout=timeout,
                ),
            )
        )
        self.job_ids.append(page.job.id)

    @precondition(lambda self: self.job_ids)
    @rule(n=st.integers(1, 4))
    def claim(self, n: int) -> None:
        for c in self.run(self.workers.claim(ClaimRequest("w", [], n, 10_000_000, 0))):
            assert c.chunk.state == ChunkState.PROCESSING
            self.leases.append((c.chunk.id, c.lease_token))

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), done=st.integers(0, 12))
    def report(self, data: st.DataObject, done: int) -> None:
        chunk_id, token = data.draw(st.sampled_from(self.leases))
        try:
            self.run(
                self.workers.report_progress(
                    ProgressReport(
                        chunk_id,
                        token,
                        items_done=done,
                        stage="s",
                        message="m",
                        external_task_id="",
                        lease_us=0,
                    ),
                )
            )
        except (LeaseLost, InvalidArgument):  # a stale lease, or items_done over the chunk's item_count
            pass

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        try:
            self.run(self.workers.complete(Completion(lease[0], lease[1], [], "")))
        except LeaseLost:
            pass
        self.leases.remove(lease)

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), retryable=st.booleans(), reason=st.sampled_from(["E", "F"]))
    def fail(self, data: st.DataObject, retryable: bool, reason: str) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        self.failures += 1
        try:
            self.run(
                self.workers.fail(Failure(lease[0], lease[1], reason, f"boom {self.failures}", retryable))
            )
        except LeaseLost:
            pass
        self.leases.remove(lease)

    @precondition(lambda self: self.job_ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.job_ids))
        try:
            self.run(self.jobs.cancel_job(ANONYMOUS, job_id, "test"))
        except JobAlreadyTerminal:
            pass

    @precondition(lambda self: self.job_ids)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.job_ids))
        try:
            self.run(self.jobs.retry_job(ANONYMOUS, job_id))
        except JobNotRetryable:
            pass

    @precondition(lambda self: self.job_ids)
    @rule(data=st.data())
    def retry_chunk(self, data: st.DataObject) -> None:
        async def failed():  # type: ignore[no-untyped-def]
            async with self.store.read() as tx:
                return [
                    c
                    for job_id in self.job_ids
                    for c in await tx.list_chunks(job_id)
                    if c.state == ChunkState.FAILED
                ]

        chunks = self.run(failed())
        if not chunks:
            return
        chunk = data.draw(st.sampled_from(chunks))
        try:
            self.run(self.jobs.retry_chunk(ANONYMOUS, chunk.job_id, chunk.id))
        except JobNotRetryable:  # its job cancelled, or failed at once
            pass

    @precondition(lambda self: self.job_ids)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.job_ids))
        try:
            self.run(self.jobs.delete_job(ANONYMOUS, job_id, False))
        except JobNotTerminal:
            return
        self.job_ids.remove(job_id)
        self.seen.pop(job_id, None)
        self.leases = [lease for lease in self.leases if not lease[0].startswith(f"{job_id}-")]

    @rule(seconds=st.sampled_from([1, 11, 61]))
    def time_passes_and_sweep(self, seconds: int) -> None:
        self.clock.now += seconds * 1_000_000
        self.run(self.workers.sweep())
        self.last_sweep = self.clock.now

    # --- invariants ---------------------------------------------------------
    @invariant()
    def jobs_agree_with_their_chunks(self) -> None:
        async def check() -> None:
            async with self.store.read() as tx:
                failed: list[Chunk] = []
                for job_id in self.job_ids:
                    job = await tx.get_job(job_id, None)
                    assert job is not None
                    chunks = await tx.list_chunks(job_id)
                    failed += [c for c in chunks if c.state == ChunkState.FAILED]
                    recount = Summary.recount([c.state for c in chunks])
                    assert job.summary == recount
                    assert job.summary.total == len(chunks)
                    expected = derive_state(
                        recount,
                        cancel_requested=job.cancel_requested,
                        started=job.start_time is not None,
                        failed_at_once=job.failed_at_once,
                    )
                    assert job.state == expected
                    if job.failed_at_once:  # nothing of it may be claimed again
                        assert not any(c.state == ChunkState.PENDING for c in chunks)
                    if job.max_failed_chunks and job.state != JobState.FAILED:
                        assert job.summary.failed < job.max_failed_chunks
                    if job.deadline_time is not None and job.deadline_time <= self.last_sweep:
                        # A sweep ran at or after its deadline: the job has ended, or is ending.
                        assert job.state.terminal or job.cancel_requested
                    for c in chunks:
                        if c.state == ChunkState.PROCESSING and job.attempt_timeout:
                            assert c.start_time is not None and c.lease_expire_time is not None
                            assert c.lease_expire_time <= c.start_time + job.attempt_timeout
                    assert job.items_done == sum(c.items_done for c in chunks)
                    assert 0 <= job.items_done <= job.total_items
                    assert all(c.revision <= job.revision for c in chunks)
                    assert all(0 <= c.items_done <= c.item_count for c in chunks)
                    assert all(c.attempt <= c.max_attempts for c in chunks)
                    if job.state == JobState.COMPLETED:
                        assert job.items_done == job.total_items
                    if job.state.terminal:
                        assert job.end_time is not None
                    seen = (
                        job.state,
                        job.items_done,
                        job.stage,
                        tuple((c.state, c.items_done, c.attempt, c.lease_token) for c in chunks),
                    )
                    before = self.seen.get(job_id)
                    if before is not None:
                        assert job.revision >= before[0], "revision went back"
                        if seen != before[1]:
                            assert job.revision > before[0], "the job changed but its revision did not grow"
                    self.seen[job_id] = (job.revision, seen)
                # SummarizeFailures (job_failures, kept by the moves) against a count of the chunks.
                groups = await tx.failure_groups(None, "", None, None, 100)
                # With a range of creation (every job in it), from the jobs' rows: the same.
                assert await tx.failure_groups(None, "", 0, None, 100) == groups
                by_reason: dict[str, list[Chunk]] = {}
                for c in failed:
                    by_reason.setdefault(c.error_reason, []).append(c)
                expected = []
                for reason, cs in by_reason.items():
                    last = max(c.end_time or 0 for c in cs)
                    expected.append((reason, len(cs), len({c.job_id for c in cs}), last))
                expected.sort(key=lambda g: (-g[3], g[0]))
                assert [(g.reason, g.chunks, g.jobs, g.last_time) for g in groups] == expected
                for g in groups:
                    lasts = {c.error_message for c in by_reason[g.reason] if c.end_time == g.last_time}
                    assert g.sample_message in lasts

        self.run(check())


JobLifecycle.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobLifecycle = JobLifecycle.TestCase
