"""WorkerService use cases: claim under fenced leases, heartbeat, complete, fail; and the
sweeper that rescues chunks whose lease expired without anyone having to ask."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from . import ids, outbox
from . import repository as repo
from .clock import Clock, now_us
from .config import Config
from .db import Database, UnitOfWork
from .domain import Artifact, Chunk, ChunkState, Job, JobState
from .errors import ChunkNotFound, FieldViolation, InvalidArgument, LeaseLost
from .observability import Metrics
from .watch_hub import ChangeHub

# Retry jitter from a generator of our own: the process-wide `random` state is left to the
# application (and to tests that seed it).
_jitter = random.Random()

log = logging.getLogger(__name__)

LEASE_EXPIRED = "LEASE_EXPIRED"
CANCEL_DEADLINE = "CANCEL_DEADLINE"


@dataclass
class Claim:
    """A chunk handed to a worker."""

    job: Job
    chunk: Chunk
    lease_token: str
    lease_expire_time: int


@dataclass
class FailOutcome:
    """What FailChunk did."""

    will_retry: bool
    next_attempt_time: int | None


class WorkerService:
    """The worker-facing use cases."""

    def __init__(
        self,
        db: Database,
        hub: ChangeHub,
        config: Config,
        clock: Clock = now_us,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.hub = hub
        self.config = config
        self.clock = clock
        self.metrics = metrics or Metrics()
        # When the sweeper last finished a pass (monotonic seconds), for the health report.
        self.last_sweep: float | None = None

    def _count(self, event: str, n: int = 1) -> None:
        self.metrics.chunks.labels(event).inc(n)

    # --- claim ---------------------------------------------------------
    async def claim(
        self, worker_id: str, kinds: list[str], max_chunks: int, lease_us: int, wait_s: float
    ) -> list[Claim]:
        """Claims up to ``max_chunks``; with ``wait_s`` > 0 blocks until work appears or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            # Take the wake-up event before looking, so work added meanwhile is not missed.
            woken = self.hub.work_event()
            claims = await self._claim_once(worker_id, kinds, max_chunks, lease_us)
            remaining = deadline - loop.time()
            if claims or remaining <= 0:
                return claims
            try:
                await asyncio.wait_for(woken.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return []

    async def _claim_once(self, worker_id: str, kinds: list[str], limit: int, lease_us: int) -> list[Claim]:
        async with self.db.write() as uow:
            now = self.clock()
            picked = await repo.pick_claimable(uow.conn, kinds=kinds, now=now, limit=limit)
            if not picked:
                return []
            jobs, picked = await self._jobs_for(uow, picked)
            claims = []
            for chunk in picked:
                job = jobs[chunk.job_id]
                chunk.attempt += 1
                chunk.worker_id = worker_id
                chunk.start_time = now
                chunk.end_time = None
                chunk.next_attempt_time = None
                job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=0)
                chunk.lease_token = ids.new_lease_token()
                chunk.lease_expire_time = now + lease_us
                chunk.lease_duration = lease_us
                claims.append(Claim(job, chunk, chunk.lease_token, chunk.lease_expire_time))
            await self._save(uow, jobs, picked)
        self._count("claimed", len(claims))
        return claims

    async def _jobs_for(self, uow: UnitOfWork, picked: list[Chunk]) -> tuple[dict[str, Job], list[Chunk]]:
        """Locks the jobs of chunks already locked, skipping jobs another transaction holds.

        Lock order is job before chunk everywhere else; here the chunks come first, so
        waiting for a job could deadlock. Chunks of a busy job are left for the next try.
        """
        jobs = await repo.lock_jobs_skip_locked(uow.conn, sorted({c.job_id for c in picked}))
        return jobs, [c for c in picked if c.job_id in jobs]

    async def _save(self, uow: UnitOfWork, jobs: dict[str, Job], changed: list[Chunk]) -> None:
        await repo.save_chunks(uow.conn, changed)
        now = self.clock()
        for job in jobs.values():
            await outbox.save_job(uow, job, now, int(self.config.webhook_progress_interval * 1e6))

    # --- leased calls ----------------------------------------------------
    async def _leased(self, uow: UnitOfWork, chunk_id: str, token: str) -> tuple[Job, Chunk]:
        # Lock the job, then the chunk (the order every writer that waits uses).
        job_id = await repo.job_id_of_chunk(uow.conn, chunk_id)
        job = await repo.get_job(uow.conn, job_id, for_update=True) if job_id else None
        chunk = await repo.get_chunk(uow.conn, chunk_id, for_update=True) if job else None
        if job is None or chunk is None:
            raise ChunkNotFound(chunk_id)
        now = self.clock()
        if (
            chunk.state != ChunkState.PROCESSING
            or not token
            or chunk.lease_token != token
            or (chunk.lease_expire_time is not None and chunk.lease_expire_time < now)
        ):
            raise LeaseLost(
                f"the lease on chunk {chunk_id} is no longer yours (expired, or the chunk was claimed again)",
                chunk_id=chunk_id,
            )
        return job, chunk

    async def report_progress(
        self,
        chunk_id: str,
        token: str,
        *,
        items_done: int,
        stage: str,
        message: str,
        external_task_id: str,
        lease_us: int | None,
    ) -> tuple[bool, int]:
        """Heartbeat: records progress, extends the lease; returns (cancel_requested, lease_expire_time)."""
        async with self.db.write() as uow:
            job, chunk = await self._leased(uow, chunk_id, token)
            if items_done > chunk.item_count:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "items_done", f"must be at most the chunk's item_count ({chunk.item_count})"
                        )
                    ]
                )
            now = self.clock()
            if lease_us:
                chunk.lease_duration = lease_us
            chunk.lease_expire_time = now + (chunk.lease_duration or lease_us or 60_000_000)
            if external_task_id:
                chunk.external_task_id = external_task_id
            if stage:
                job.stage = stage
            if message:
                job.message = message
            job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=max(items_done, chunk.items_done))
            await self._save(uow, {job.id: job}, [chunk])
            return job.cancel_requested, chunk.lease_expire_time

    async def complete(
        self, chunk_id: str, token: str, artifacts: list[Artifact], external_task_id: str
    ) -> JobState:
        async with self.db.write() as uow:
            job, chunk = await self._leased(uow, chunk_id, token)
            now = self.clock()
            if external_task_id:
                chunk.external_task_id = external_task_id
            if job.cancel_requested:
                job.move_chunk(chunk, ChunkState.CANCELLED, now)
            else:
                job.move_chunk(chunk, ChunkState.COMPLETED, now, items_done=chunk.item_count)
                for a in artifacts:
                    a.chunk_index = chunk.index
                await repo.insert_artifacts(uow.conn, job.id, artifacts)
            await self._save(uow, {job.id: job}, [chunk])
        self._count("completed" if chunk.state == ChunkState.COMPLETED else "cancelled")
        return job.state

    async def fail(
        self, chunk_id: str, token: str, reason: str, message: str, retryable: bool
    ) -> FailOutcome:
        async with self.db.write() as uow:
            job, chunk = await self._leased(uow, chunk_id, token)
            now = self.clock()
            chunk.error_reason = reason or "WORKER_ERROR"
            chunk.error_message = message
            outcome = self._settle(uow, job, chunk, now, retryable=retryable)
            await self._save(uow, {job.id: job}, [chunk])
        self._count("retried" if outcome.will_retry else chunk.state.name.lower())
        return outcome

    def _settle(self, uow: UnitOfWork, job: Job, chunk: Chunk, now: int, *, retryable: bool) -> FailOutcome:
        """Ends a failed or expired attempt: cancelled, retried later, or failed for good."""
        if job.cancel_requested:
            job.move_chunk(chunk, ChunkState.CANCELLED, now)
            return FailOutcome(False, None)
        if retryable and chunk.attempt < chunk.max_attempts:
            delay = self._backoff(chunk.attempt)
            chunk.next_attempt_time = now + int(delay * 1e6)
            job.move_chunk(chunk, ChunkState.PENDING, now, items_done=0)
            uow.changes.work_later.append(delay)
            return FailOutcome(True, chunk.next_attempt_time)
        job.move_chunk(chunk, ChunkState.FAILED, now)
        return FailOutcome(False, None)

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter over the upper half: base * 2^(attempt-1)."""
        ceiling = min(self.config.retry_backoff_max, self.config.retry_backoff * (2 ** max(0, attempt - 1)))
        return ceiling / 2 + _jitter.random() * ceiling / 2

    # --- rescue ------------------------------------------------------------
    async def sweep(self) -> int:
        """Rescues expired leases and force-cancels overdue cancels. Returns chunks moved."""
        moved = 0
        async with self.db.write() as uow:
            now = self.clock()
            expired = await repo.expired_leases(uow.conn, now)
            if expired:
                jobs, expired = await self._jobs_for(uow, expired)
                for chunk in expired:
                    chunk.error_reason = LEASE_EXPIRED
                    chunk.error_message = f"worker {chunk.worker_id!r} stopped renewing its lease"
                    self._settle(uow, jobs[chunk.job_id], chunk, now, retryable=True)
                await self._save(uow, jobs, expired)
                moved += len(expired)
                self._count("rescued", len(expired))
        # A transaction of its own: it locks jobs before chunks, the other way round from above.
        async with self.db.write() as uow:
            now = self.clock()
            cancel_before = now - int(self.config.cancel_deadline * 1e6)
            for job_id in await repo.overdue_cancels(uow.conn, cancel_before):
                job = await repo.get_job(uow.conn, job_id, for_update=True)
                if job is None or job.state != JobState.CANCELLING:
                    continue
                running = await repo.list_chunks(uow.conn, job_id, states=[ChunkState.PROCESSING])
                for chunk in running:
                    chunk.error_reason = CANCEL_DEADLINE
                    chunk.error_message = "the worker did not stop within the cancel deadline"
                    job.move_chunk(chunk, ChunkState.CANCELLED, now)
                await self._save(uow, {job.id: job}, running)
                moved += len(running)
        return moved

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        """Sweeps every ``sweep_interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                moved = await self.sweep()
                self.last_sweep = asyncio.get_running_loop().time()
                if moved:
                    log.info("sweeper moved %d chunk(s)", moved)
            except Exception:  # keep rescuing even if one pass fails (e.g. database briefly away)
                log.exception("sweep failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.sweep_interval)
            except asyncio.TimeoutError:
                pass
