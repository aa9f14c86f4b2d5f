"""WorkerService use cases: claim under fenced leases (waiting for work if asked), heartbeat, complete,
fail; and the sweeper that rescues chunks whose lease expired without anyone having to ask. Every write
goes through the one worker path (services/worker_path.py), which decides how it is written."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.model import (
    ATTEMPT_TIMEOUT,
    JOB_DEADLINE_EXCEEDED,
    Chunk,
    ChunkState,
    Job,
    JobState,
)
from jobpulse_server.domain.work import (
    Claim,
    ClaimRequest,
    Completion,
    CompletionResult,
    FailOutcome,
    Failure,
    ProgressReport,
)
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.services.latency import Ends
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.throughput import Throughput
from jobpulse_server.services.worker_path import TransactionPath, WorkRecord, worker_path
from jobpulse_server.store import Store, Tx

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

LEASE_EXPIRED = "LEASE_EXPIRED"
CANCEL_DEADLINE = "CANCEL_DEADLINE"


def timed_out(job: Job, chunk: Chunk) -> bool:
    """Whether a running chunk's lease ran out because its attempt reached the job's attempt_timeout
    (``Job.lease_end`` ends no lease later), rather than because its worker stopped renewing it."""
    return bool(
        job.attempt_timeout
        and chunk.start_time is not None
        and chunk.lease_expire_time is not None
        and chunk.lease_expire_time >= chunk.start_time + job.attempt_timeout
    )


def past_its_deadline(job: Job, now: int) -> bool:
    """A job to fail for its deadline_time at ``now``: not ended, not ending (no cancel asked), late."""
    return (
        job.deadline_time is not None
        and now >= job.deadline_time
        and not job.state.terminal
        and not job.cancel_requested
    )


class WorkerService:
    """The worker-facing use cases."""

    def __init__(
        self,
        store: Store,
        hub: ChangeHub,
        outbox: Outbox,
        config: Config,
        clock: Clock = now_us,
        metrics: Metrics | None = None,
        throughput: Throughput | None = None,
        *,
        tracer: Tracer | None = None,
        path: TransactionPath | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.record = WorkRecord(self.metrics, throughput, tracer)
        self.path = path or worker_path(store, outbox, config, clock, self.record)
        # When the sweeper last finished a pass (monotonic seconds), for the health report.
        self.last_sweep: float | None = None
        # Worker id -> when it last asked for work here (monotonic seconds): the dashboard's health page.
        self._seen: dict[str, float] = {}

    def workers_seen(self, within: float = 600.0) -> dict[str, float]:
        """Workers that asked this server for work in the last ``within`` seconds: id -> seconds ago."""
        now = time.monotonic()
        for worker_id in [w for w, t in self._seen.items() if now - t > within]:
            del self._seen[worker_id]
        return {w: now - t for w, t in self._seen.items()}

    # --- claim ---------------------------------------------------------
    async def claim(self, ask: ClaimRequest) -> list[Claim]:
        """Claims up to ``ask.limit`` chunks; with ``ask.wait_s`` > 0 blocks until work appears or time
        runs out. Its clock is ``time.monotonic`` (asyncio's loop clock) read directly: finding the
        running loop is a getpid system call on Python 3.11, and this is on every ClaimChunks call."""
        now = time.monotonic()
        deadline = now + ask.wait_s
        worker_id = ask.worker_id
        if len(self._seen) < 10_000 or worker_id in self._seen:  # bounded against made-up ids
            self._seen[worker_id] = now
        while True:
            # Take the wake-up event before looking, so work added meanwhile is not missed.
            woken = self.hub.work_event()
            claims = await self.path.claim(ask)
            remaining = deadline - time.monotonic()
            if claims or remaining <= 0:
                return claims
            try:
                await asyncio.wait_for(woken.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return []

    async def _then_claim(self, claims: list[Claim] | None, claim_next: ClaimRequest | None) -> list[Claim]:
        """The claims a completion's call answers with: those the path made with it, or, when it made
        none that settle the matter (None: none ready among the jobs free to lock, or the batch declined;
        []: none ready, and the worker will wait), a claim of its own now that the completion committed."""
        if claim_next is not None and (claims is None or (not claims and claim_next.wait_s > 0)):
            return await self.claim(claim_next)
        return claims or []

    # --- leased calls ----------------------------------------------------
    async def report_progress(self, item: ProgressReport) -> tuple[bool, int]:
        """Heartbeat: records progress, extends the lease; returns (cancel_requested, lease_expire_time)."""
        return await self.path.report(item)

    async def complete(
        self, item: Completion, claim_next: ClaimRequest | None = None
    ) -> tuple[JobState, list[Claim]]:
        """Completes one chunk (LeaseLost / ChunkNotFound when its lease is not current), then claims
        ``claim_next`` (in the same transaction or flush where it can)."""
        state, claims = await self.path.complete(item, claim_next)
        return state, await self._then_claim(claims, claim_next)

    async def complete_many(
        self,
        items: Sequence[Completion],
        claim_next: ClaimRequest | None = None,
        *,
        all_or_nothing: bool = False,
    ) -> tuple[list[CompletionResult], list[Claim]]:
        """Completes several chunks; each item stands or falls on its own lease.

        With ``claim_next``, the next chunks are claimed with them, whatever became of the items; with
        ``all_or_nothing`` only when the completion went through. If none is ready and ``claim_next``
        waits, the wait starts once the completions have committed.
        """
        results, claims = await self.path.complete_many(items, claim_next, all_or_nothing=all_or_nothing)
        if all_or_nothing and results and results[0].error is not None:
            return results, []
        return results, await self._then_claim(claims, claim_next)

    async def fail(self, item: Failure) -> FailOutcome:
        """Ends a chunk's attempt as failed: retried after a backoff while it has attempts left (and
        ``retryable``), else failed for good; cancelled instead when its job has a cancel asked."""
        return await self.path.fail(item)

    # --- rescue ------------------------------------------------------------
    async def sweep(self) -> int:
        """Rescues expired leases and force-cancels overdue cancels. Returns chunks moved."""
        ends = Ends()  # chunks failed for good and jobs ended, for the latency metrics

        async def rescue(tx: Tx) -> int:
            ends.clear()
            now = self.clock()
            expired = await tx.expired_leases(now, 500)
            if not expired:
                return 0
            # Chunks are locked first here (skipping those a worker is completing), so jobs
            # another transaction holds are skipped too rather than waited for.
            jobs = await tx.lock_jobs([c.job_id for c in expired], skip_locked=True)
            expired = [c for c in expired if c.job_id in jobs]
            for chunk in expired:
                job = jobs[chunk.job_id]
                if timed_out(job, chunk):
                    chunk.error_reason = ATTEMPT_TIMEOUT
                    chunk.error_message = (
                        f"the attempt ran past the job's attempt_timeout ({job.attempt_timeout / 1e6:g} s)"
                    )
                else:
                    chunk.error_reason = LEASE_EXPIRED
                    chunk.error_message = f"worker {chunk.worker_id!r} stopped renewing its lease"
                chunk.error_details = ""
                self.path.settle(tx.changes, jobs[chunk.job_id], chunk, now, retryable=True)
            ends.add(jobs.values(), expired, now, None)
            await self.path.save(tx, jobs.values(), expired, now)
            return len(expired)

        moved = await self.store.write(rescue)
        self.record.latency.record(ends)
        if moved:
            self.record.count("rescued", moved)

        # A transaction of its own: it locks jobs before chunks, the other way round from above.
        async def overdue(tx: Tx) -> int:
            ends.clear()
            now = self.clock()
            cancel_before = now - int(self.config.cancel_deadline * 1e6)
            stopped = 0
            for job_id in await tx.overdue_cancels(cancel_before):
                job = await tx.get_job(job_id, None, for_update=True)
                # CANCELLING, or failed at once (Job.fail_now) with chunks still running.
                if job is None or not job.cancel_requested or job.cancel_time is None:
                    continue
                if job.cancel_time >= cancel_before:
                    continue
                running = await tx.processing_chunks(job_id)
                for chunk in running:
                    chunk.error_reason = CANCEL_DEADLINE
                    chunk.error_message = "the worker did not stop within the cancel deadline"
                    chunk.error_details = ""
                    job.move_chunk(chunk, ChunkState.CANCELLED, now)
                ends.add([job], running, now, None)
                await self.outbox.save_job(tx, job, now, running)
                stopped += len(running)
            return stopped

        stopped = await self.store.write(overdue)
        self.record.latency.record(ends)

        # Jobs past their deadline_time, failed at once: a transaction of its own, jobs locked first.
        async def past_deadline(tx: Tx) -> int:
            ends.clear()
            now = self.clock()
            failed = 0
            for job_id in await tx.past_deadline(now):
                job = await tx.get_job(job_id, None, for_update=True)
                if job is None or not past_its_deadline(job, now):
                    continue
                assert job.deadline_time is not None
                late = (now - job.deadline_time) / 1e6
                job.fail_now(
                    now,
                    JOB_DEADLINE_EXCEEDED,
                    f"the job had not ended by its deadline_time (failed {late:.1f} s after it)",
                )
                ends.add([job], [], now, None)
                await self.path.save(tx, [job], [], now)
                failed += 1
            return failed

        failed = await self.store.write(past_deadline)
        self.record.latency.record(ends)
        return moved + stopped + failed

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        """Sweeps every ``sweep_interval`` seconds until ``stop`` is set."""
        passes = FailingPasses("sweep", log)
        while not stop.is_set():
            try:
                moved = await self.sweep()
                self.last_sweep = asyncio.get_running_loop().time()
                passes.worked()
                if moved:
                    log.info("sweeper moved %d chunk(s)", moved)
            except Exception as exc:  # keep rescuing even if one pass fails (e.g. database briefly away)
                passes.failed(exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.sweep_interval)
            except asyncio.TimeoutError:
                pass
