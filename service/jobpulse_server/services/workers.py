"""WorkerService use cases: claim under fenced leases, heartbeat, complete, fail; and the
sweeper that rescues chunks whose lease expired without anyone having to ask."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobpulse_server.domain import ids
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import (
    ChunkNotFound,
    DomainError,
    FieldViolation,
    InvalidArgument,
    LeaseLost,
)
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services import job_trace
from jobpulse_server.services.artifacts import load_artifacts
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.services.job_trace import ChunkMove
from jobpulse_server.services.latency import COMPLETED, FAILED, Ends, Latency
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.outbox import ends as outbox_ends
from jobpulse_server.services.throughput import Throughput
from jobpulse_server.store import CompletedOne, FailedOne, PgFast, Store, Tx

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

# Retry jitter from a generator of our own: the process-wide `random` state is left to the
# application (and to tests that seed it).
_jitter = random.Random()

log = logging.getLogger(__name__)


def backoff_seconds(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff with full jitter over the upper half: base * 2^(attempt-1), at most ``cap``;
    ``jitter`` in [0, 1) picks the point in the upper half. PostgreSQL's group-committed failures
    (store/group.py FAIL_GROUP) compute the same in SQL, with the same float arithmetic."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + jitter * ceiling / 2


LEASE_EXPIRED = "LEASE_EXPIRED"
# Claim transactions in a row that found work but lost it to other claims before giving up.
CLAIM_TRIES = 3
CANCEL_DEADLINE = "CANCEL_DEADLINE"


@dataclass
class Claim:
    """A chunk handed to a worker."""

    job: Job
    chunk: Chunk
    lease_token: str
    lease_expire_time: int


@dataclass
class ClaimAsk:
    """What a worker asks for when it claims."""

    worker_id: str
    kinds: list[str]
    limit: int
    lease_us: int
    wait_s: float = 0.0

    def args(self) -> tuple[str, list[str], int, int, float]:
        return self.worker_id, self.kinds, self.limit, self.lease_us, self.wait_s


@dataclass
class Completion:
    """One chunk to complete."""

    chunk_id: str
    lease_token: str
    artifacts: list[Artifact]
    external_task_id: str = ""


@dataclass
class CompletionResult:
    """What happened to one completion: ``error`` None and the job's state after the call, or the
    error that left the chunk unchanged."""

    chunk_id: str
    error: DomainError | None
    job_state: JobState | None


@dataclass
class FailOutcome:
    """What FailChunk did."""

    will_retry: bool
    next_attempt_time: int | None


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
    ) -> None:
        self.store = store
        # Each claim, completion and failure of a chunk is a span (services/job_trace.py) when the tracer
        # is a real one; with the no-op one (tracing off) ``_traced`` is false and nothing is done.
        self.tracer, self._traced = job_trace.tracing(tracer)
        self.hub = hub
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.latency = Latency(self.metrics)
        # Chunks completed per minute and kind, for the stats page; told only after a commit.
        self.throughput = throughput
        # When the sweeper last finished a pass (monotonic seconds), for the health report.
        self.last_sweep: float | None = None
        # Worker id -> when it last asked for work here (monotonic seconds): the dashboard's health page.
        self._seen: dict[str, float] = {}
        # jobpulse_chunks_total's child per event, looked up once (prometheus_client's labels() takes a
        # lock and checks the values each time: 1.2 us against 0.35 for the child's inc).
        self._chunk_events: dict[str, Any] = {}

    def workers_seen(self, within: float = 600.0) -> dict[str, float]:
        """Workers that asked this server for work in the last ``within`` seconds: id -> seconds ago."""
        now = time.monotonic()
        for worker_id in [w for w, t in self._seen.items() if now - t > within]:
            del self._seen[worker_id]
        return {w: now - t for w, t in self._seen.items()}

    def _count(self, event: str, n: int = 1) -> None:
        child = self._chunk_events.get(event)
        if child is None:  # the events are a handful of fixed words
            child = self._chunk_events[event] = self.metrics.chunks.labels(event)
        child.inc(n)

    def _completed_one(self, done: CompletedOne) -> None:
        """Counts a group-committed completion, which has committed when the store returns it."""
        self._count("completed" if done.chunk_state == ChunkState.COMPLETED else "cancelled")
        self.latency.completed_one(done)
        if self.throughput is not None and done.chunk_state == ChunkState.COMPLETED:
            self.throughput.count(done.kind, 1, done.items)

    # --- spans (only when tracing: ``_traced``) -------------------------
    def _started(self) -> int:
        """When an operation began, for its spans (0, unread, when not tracing)."""
        return time.time_ns() if self._traced else 0

    def _trace_claims(self, claims: list[Claim], started: int) -> None:
        if self._traced and claims:
            job_trace.record(
                self.tracer,
                job_trace.CLAIM,
                [
                    ChunkMove(
                        c.job.id,
                        c.chunk.index,
                        c.chunk.attempt,
                        c.job.trace_parent,
                        {"jobpulse.worker_id": c.chunk.worker_id},
                    )
                    for c in claims
                ],
                started,
            )

    def _trace_completed(self, chunk_id: str, done: CompletedOne, started: int) -> None:
        """The span of a group-committed completion (the caller checked ``_traced``)."""
        move = ChunkMove(
            chunk_job_id(chunk_id),
            done.index,
            done.attempt,
            done.trace_parent,
            {"jobpulse.chunk_state": done.chunk_state.name},
        )
        job_trace.record(self.tracer, job_trace.COMPLETE, [move], started)

    # --- claim ---------------------------------------------------------
    async def claim(
        self, worker_id: str, kinds: list[str], max_chunks: int, lease_us: int, wait_s: float
    ) -> list[Claim]:
        """Claims up to ``max_chunks``; with ``wait_s`` > 0 blocks until work appears or time runs out.
        Its clock is ``time.monotonic`` (asyncio's loop clock) read directly: finding the running loop is a
        getpid system call on Python 3.11, and this is on every ClaimChunks call."""
        now = time.monotonic()
        deadline = now + wait_s
        if len(self._seen) < 10_000 or worker_id in self._seen:  # bounded against made-up ids
            self._seen[worker_id] = now
        while True:
            # Take the wake-up event before looking, so work added meanwhile is not missed.
            woken = self.hub.work_event()
            claims = await self._claim_once(worker_id, kinds, max_chunks, lease_us)
            remaining = deadline - time.monotonic()
            if claims or remaining <= 0:
                return claims
            try:
                await asyncio.wait_for(woken.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return []

    async def _claim_once(self, worker_id: str, kinds: list[str], limit: int, lease_us: int) -> list[Claim]:
        ask = ClaimAsk(worker_id, kinds, limit, lease_us)
        started = self._started()
        if self.store.fast is not None:
            fast = await self.store.fast.claim(worker_id, kinds, limit, lease_us, self.clock())
            if fast is not None:  # None: it declined (jobs with webhooks, work taken meanwhile)
                claimed = self._claimed(fast)
                self._trace_claims(claimed, started)
                return claimed

        async def body(tx: Tx) -> list[Claim] | None:
            now = self.clock()
            jobs: dict[str, Job] = {}
            claims = await self._claim_in(tx, ask, now, jobs, wait_for_jobs=True)
            if claims:
                await self._save(tx, jobs.values(), [c.chunk for c in claims], now)
            # None: there was work, but other claims took it while this one waited for its jobs.
            return claims if claims or not jobs else None

        for _ in range(CLAIM_TRIES):
            claims = await self.store.write(body)
            if claims is None:
                continue  # look again
            if claims:
                self._count("claimed", len(claims))
                self.latency.claimed((c.job, c.chunk) for c in claims)
                self._trace_claims(claims, started)
            return claims
        return []

    def _claimed(self, fast: list[tuple[Job, Chunk]]) -> list[Claim]:
        """Claims made by a group-committed claim, counted."""
        if fast:
            self._count("claimed", len(fast))
            self.latency.claimed(fast)
        return [
            Claim(job, chunk, chunk.lease_token or "", chunk.lease_expire_time or 0) for job, chunk in fast
        ]

    async def _claim_in(
        self, tx: Tx, ask: ClaimAsk, now: int, jobs: dict[str, Job], *, wait_for_jobs: bool
    ) -> list[Claim]:
        """Claims inside ``tx``; ``jobs`` holds the jobs this transaction already has (and gets the
        jobs of the claims). The caller saves.

        The jobs of the first ready chunks are locked first, then the chunks are picked from those
        jobs: jobs before chunks is the order every writer that waits uses. With ``wait_for_jobs``
        false (the transaction holds other jobs already), jobs another transaction holds are
        skipped rather than waited for, so two such transactions cannot deadlock.
        """
        found, picked = await tx.claim(
            ask.kinds, now, ask.limit, skip_locked=not wait_for_jobs, held=jobs.keys()
        )
        for job_id, job in found.items():
            jobs.setdefault(job_id, job)  # a job this transaction changed already keeps its changes
        claims = []
        for chunk in picked:
            job = jobs[chunk.job_id]
            chunk.attempt += 1
            chunk.worker_id = ask.worker_id
            chunk.start_time = now
            chunk.end_time = None
            chunk.due_time, chunk.next_attempt_time = chunk.next_attempt_time, None
            job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=0)
            chunk.lease_token = ids.new_lease_token()
            chunk.lease_expire_time = now + ask.lease_us
            chunk.lease_duration = ask.lease_us
            claims.append(Claim(job, chunk, chunk.lease_token, chunk.lease_expire_time))
        return claims

    async def _save(
        self,
        tx: Tx,
        jobs: Iterable[Job],
        changed: list[Chunk],
        now: int,
        unsaved: dict[str, list[Artifact]] | None = None,
    ) -> None:
        """Saves the chunks and their jobs with the webhook events the jobs' changes make. A job's
        terminal event carries its artifacts: those written before and ``unsaved`` (this transaction's)."""
        jobs = list(jobs)
        ending = [job for job in jobs if outbox_ends(job)]
        if ending:
            await load_artifacts(tx, ending, unsaved)
        for job in jobs:
            rows = self.outbox.rows_for(job, now)
            if rows:
                tx.add_outbox(rows)
        await tx.save(jobs, changed)
        for job in jobs:
            job.loaded_state = job.state

    # --- leased calls ----------------------------------------------------
    async def _leased(
        self, tx: Tx, items: Sequence[tuple[str, str]]
    ) -> tuple[dict[str, tuple[Job, Chunk] | DomainError], int]:
        """Locks the jobs, then the chunks, of (chunk id, lease token) pairs, and judges each lease
        by the clock read once the locks are held (a call that waited for a lock past its lease's
        end is refused). Returns the verdicts and that time."""
        wanted = {chunk_id: chunk_job_id(chunk_id) for chunk_id, _ in items}
        jobs, chunks = await tx.lock_leased(
            [j for j in wanted.values() if j], [c for c, j in wanted.items() if j]
        )
        now = self.clock()
        out: dict[str, tuple[Job, Chunk] | DomainError] = {}
        for chunk_id, token in items:
            chunk = chunks.get(chunk_id)
            job = jobs.get(wanted[chunk_id])
            if chunk is None or job is None or chunk.job_id != job.id:
                out[chunk_id] = ChunkNotFound(chunk_id)
            elif (
                chunk.state != ChunkState.PROCESSING
                or not token
                or chunk.lease_token != token
                or (chunk.lease_expire_time is not None and chunk.lease_expire_time < now)
            ):
                out[chunk_id] = LeaseLost(
                    f"the lease on chunk {chunk_id} is no longer yours "
                    "(expired, or the chunk was claimed again)",
                    chunk_id=chunk_id,
                )
            else:
                out[chunk_id] = (job, chunk)
        return out, now

    async def _leased_one(self, tx: Tx, chunk_id: str, token: str) -> tuple[Job, Chunk, int]:
        found, now = await self._leased(tx, [(chunk_id, token)])
        got = found[chunk_id]
        if isinstance(got, DomainError):
            raise got
        return (*got, now)

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
        """Heartbeat: records progress, extends the lease; returns (cancel_requested, lease_expire_time).
        On PostgreSQL the report is group-committed (store/group.py) unless it declines; then, and on
        SQLite, it is a transaction of its own."""
        job_id = chunk_job_id(chunk_id)
        fast = self.store.fast
        if fast is not None and job_id and token:
            done = await fast.report(
                chunk_id,
                job_id,
                token,
                self.clock(),
                items_done=items_done,
                stage=stage,
                message=message,
                external_task_id=external_task_id,
                lease_us=lease_us or 0,
            )
            if done is not None:
                return done

        async def body(tx: Tx) -> tuple[bool, int]:
            job, chunk, now = await self._leased_one(tx, chunk_id, token)
            if items_done > chunk.item_count:
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "items_done", f"must be at most the chunk's item_count ({chunk.item_count})"
                        )
                    ]
                )
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
            await self._save(tx, [job], [chunk], now)
            return job.cancel_requested, chunk.lease_expire_time

        return await self.store.write(body)

    async def complete(
        self,
        chunk_id: str,
        token: str,
        artifacts: list[Artifact],
        external_task_id: str,
        claim_next: ClaimAsk | None = None,
    ) -> tuple[JobState, list[Claim]]:
        """Completes one chunk (LeaseLost / ChunkNotFound when its lease is not current), then claims
        ``claim_next`` (in the same transaction, where the group commit does not apply)."""
        job_id = chunk_job_id(chunk_id)
        fast = self.store.fast
        started = self._started()
        if fast is not None and job_id and token and claim_next is not None:
            both = await fast.complete_and_claim(
                chunk_id,
                job_id,
                token,
                self.clock(),
                external_task_id,
                artifacts,
                (claim_next.worker_id, claim_next.kinds, claim_next.limit, claim_next.lease_us),
            )
            if both is not None:
                finished, next_claims = both
                self._completed_one(finished)
                if self._traced:
                    self._trace_completed(chunk_id, finished, started)
                if next_claims:
                    claimed = self._claimed(next_claims)
                    self._trace_claims(claimed, started)
                    return finished.job_state, claimed
                if next_claims is None or claim_next.wait_s > 0:
                    # Work taken by others meanwhile, or none yet and the worker will wait for it.
                    return finished.job_state, await self.claim(*claim_next.args())
                return finished.job_state, []
        if fast is not None and job_id and token:
            done = await fast.complete(chunk_id, job_id, token, self.clock(), external_task_id, artifacts)
            if done is not None:
                self._completed_one(done)
                if self._traced:
                    self._trace_completed(chunk_id, done, started)
                claims = await self.claim(*claim_next.args()) if claim_next is not None else []
                return done.job_state, claims
        results, claims = await self.complete_many(
            [Completion(chunk_id, token, artifacts, external_task_id)], claim_next, all_or_nothing=True
        )
        if results[0].error is not None:
            raise results[0].error
        assert results[0].job_state is not None
        return results[0].job_state, claims

    async def complete_many(
        self, items: Sequence[Completion], claim_next: ClaimAsk | None = None, *, all_or_nothing: bool = False
    ) -> tuple[list[CompletionResult], list[Claim]]:
        """Completes several chunks in one transaction; each item stands or falls on its own lease.

        With ``claim_next``, the next chunks are claimed in the same transaction, whatever became
        of the items; with ``all_or_nothing`` (CompleteChunk: its error answer cannot carry claims)
        only when the completion went through. If none is ready and ``claim_next`` waits, the wait
        starts once the completions have committed.
        """
        fast = self.store.fast
        if fast is not None and items and not all_or_nothing:
            return await self._complete_grouped(fast, items, claim_next)
        return await self._complete_many(items, claim_next, all_or_nothing=all_or_nothing)

    async def _complete_grouped(
        self, fast: PgFast, items: Sequence[Completion], claim_next: ClaimAsk | None
    ) -> tuple[list[CompletionResult], list[Claim]]:
        """PostgreSQL: the completions group-committed (store/group.py), each a change of its own, and
        the claim in the same flush when all went through. Items declined (a job with webhooks, a lease
        not current) then take the general path, which completes them or says why not, and the claim
        comes after them. Each result gives its job's state after the call."""
        started = self._started()
        known = [(i, chunk_job_id(i.chunk_id)) for i in items]
        grouped = [(i, job_id) for i, job_id in known if job_id and i.lease_token]
        done, fast_claims = await fast.complete_many(
            [(i.chunk_id, job_id, i.lease_token, i.external_task_id, i.artifacts) for i, job_id in grouped],
            self.clock(),
            None
            if claim_next is None
            else (claim_next.worker_id, claim_next.kinds, claim_next.limit, claim_next.lease_us),
        )
        results: dict[int, CompletionResult] = {}
        last: dict[str, JobState] = {}  # each job's state after the flush
        for (item, job_id), outcome in zip(grouped, done, strict=True):
            if outcome is not None:
                self._completed_one(outcome)
                if self._traced:
                    self._trace_completed(item.chunk_id, outcome, started)
                last[job_id] = outcome.job_state
                results[id(item)] = CompletionResult(item.chunk_id, None, outcome.job_state)
        rest = [i for i in items if id(i) not in results]
        if rest:
            general, _ = await self._complete_many(rest, None)
            results.update((id(i), r) for i, r in zip(rest, general, strict=True))
            for i, r in zip(rest, general, strict=True):
                if r.job_state is not None:
                    last[chunk_job_id(i.chunk_id)] = r.job_state
        for i in items:
            r = results[id(i)]
            if r.error is None:
                results[id(i)] = CompletionResult(i.chunk_id, None, last[chunk_job_id(i.chunk_id)])
        claims = self._claimed(fast_claims) if fast_claims else []
        self._trace_claims(claims, started)
        if claim_next is not None and not claims:
            # None ready (or the claim declined): claim, and wait if asked, on its own now.
            claims = await self.claim(*claim_next.args())
        return [results[id(i)] for i in items], claims

    async def _complete_many(
        self, items: Sequence[Completion], claim_next: ClaimAsk | None = None, *, all_or_nothing: bool = False
    ) -> tuple[list[CompletionResult], list[Claim]]:
        """``complete_many`` in one write transaction (SQLite, and what the group commit declined)."""
        counts: dict[str, int] = {}
        # (chunks, items) completed by kind, for ``throughput``: filled by the run of ``body`` that
        # commits (a run that rolls back and runs again starts it afresh), counted after the commit.
        by_kind: dict[str, tuple[int, int]] = {}
        ends = Ends()  # likewise, for the latency metrics
        # The completions' spans, when tracing: filled by the run of ``body`` that commits, as ``by_kind``.
        moved: list[ChunkMove] = []
        started = self._started()

        async def body(tx: Tx) -> tuple[list[tuple[Completion, DomainError | Job]], list[Claim]]:
            by_kind.clear()
            ends.clear()
            moved.clear()
            if items:
                found, now = await self._leased(tx, [(i.chunk_id, i.lease_token) for i in items])
            else:
                found, now = {}, self.clock()
            outcome: list[tuple[Completion, DomainError | Job]] = []
            jobs: dict[str, Job] = {}
            changed: list[Chunk] = []
            unsaved: dict[str, list[Artifact]] = {}
            for item in items:
                got = found[item.chunk_id]
                if isinstance(got, DomainError):
                    outcome.append((item, got))
                    continue
                job, chunk = got
                if item.external_task_id:
                    chunk.external_task_id = item.external_task_id
                if job.cancel_requested:
                    job.move_chunk(chunk, ChunkState.CANCELLED, now)
                else:
                    job.move_chunk(chunk, ChunkState.COMPLETED, now, items_done=chunk.item_count)
                    for a in item.artifacts:
                        a.chunk_index = chunk.index
                    tx.add_artifacts(job.id, item.artifacts)
                    unsaved.setdefault(job.id, []).extend(item.artifacts)
                jobs[job.id] = job
                changed.append(chunk)
                outcome.append((item, job))
            claims: list[Claim] = []
            if claim_next is not None and not (all_or_nothing and not changed):
                claims = await self._claim_in(tx, claim_next, now, jobs, wait_for_jobs=False)
            if changed or claims:
                ends.add(jobs.values(), changed, now, COMPLETED)
                await self._save(tx, jobs.values(), [*changed, *(c.chunk for c in claims)], now, unsaved)
            if self._traced:
                moved.extend(
                    ChunkMove(
                        c.job_id,
                        c.index,
                        c.attempt,
                        jobs[c.job_id].trace_parent,
                        {"jobpulse.chunk_state": c.state.name},
                    )
                    for c in changed
                )
            completed = 0
            for c in changed:
                if c.state == ChunkState.COMPLETED:
                    completed += 1
                    kind = jobs[c.job_id].kind
                    was = by_kind.get(kind, (0, 0))
                    by_kind[kind] = (was[0] + 1, was[1] + c.item_count)
            counts.update(completed=completed, cancelled=len(changed) - completed, claimed=len(claims))
            return outcome, claims

        outcome, claims = await self.store.write(body)
        for event, n in counts.items():
            if n:
                self._count(event, n)
        if self.throughput is not None:
            for kind, (n_chunks, n_items) in by_kind.items():
                self.throughput.count(kind, n_chunks, n_items)
        self.latency.record(ends)
        self.latency.claimed((c.job, c.chunk) for c in claims)
        if self._traced:
            job_trace.record(self.tracer, job_trace.COMPLETE, moved, started)
            self._trace_claims(claims, started)
        results = [
            CompletionResult(item.chunk_id, got, None)
            if isinstance(got, DomainError)
            else CompletionResult(item.chunk_id, None, got.state)
            for item, got in outcome
        ]
        refused = all_or_nothing and results[0].error is not None
        if claim_next is not None and not claims and not refused:
            # Nothing ready among jobs free to lock in that transaction: claim (and wait, if asked)
            # on its own now that the completions are committed.
            claims = await self.claim(*claim_next.args())
        return results, claims

    async def fail(
        self, chunk_id: str, token: str, reason: str, message: str, retryable: bool
    ) -> FailOutcome:
        """Ends a chunk's attempt as failed: retried after a backoff while it has attempts left (and
        ``retryable``), else failed for good; cancelled instead when its job has a cancel asked. On
        PostgreSQL a retry is group-committed (store/group.py) unless it declines; then, and on SQLite,
        it is a transaction of its own."""
        reason = reason or "WORKER_ERROR"
        started = self._started()
        job_id = chunk_job_id(chunk_id)
        fast = self.store.fast
        if fast is not None and retryable and job_id and token and self._backoff_in_sql:
            now = self.clock()
            retried = await fast.fail(
                chunk_id,
                job_id,
                token,
                now,
                reason=reason,
                message=message,
                jitter=_jitter.random(),
                backoff_s=self.config.retry_backoff,
                backoff_max_s=self.config.retry_backoff_max,
            )
            if retried is not None:
                self._retried_one(job_id, retried, reason, now, started)
                return FailOutcome(True, retried.next_attempt_time)
        ends = Ends()

        async def body(tx: Tx) -> tuple[FailOutcome, Job, Chunk]:
            job, chunk, now = await self._leased_one(tx, chunk_id, token)
            chunk.error_reason = reason
            chunk.error_message = message
            outcome = self._settle(tx.changes, job, chunk, now, retryable=retryable)
            ends.clear()
            ends.add([job], [chunk], now, FAILED)
            await self._save(tx, [job], [chunk], now)
            return outcome, job, chunk

        outcome, job, chunk = await self.store.write(body)
        self.latency.record(ends)
        self._count("retried" if outcome.will_retry else chunk.state.name.lower())
        if self._traced:
            move = ChunkMove(job.id, chunk.index, chunk.attempt, job.trace_parent)
            self._trace_fail(move, chunk.state, outcome.will_retry, reason, started)
        return outcome

    def _trace_fail(
        self, move: ChunkMove, state: ChunkState, will_retry: bool, reason: str, started: int
    ) -> None:
        """The span of a FailChunk, either path (the caller checks that tracing is on)."""
        move.extra = {
            "jobpulse.chunk_state": state.name,
            "jobpulse.will_retry": will_retry,
            "jobpulse.error_reason": reason,
        }
        job_trace.record(self.tracer, job_trace.FAIL, [move], started)

    @property
    def _backoff_in_sql(self) -> bool:
        """Whether the backoff settings are ones PostgreSQL's float arithmetic computes as Python's does:
        each 0 or between a microsecond and 10^12 s (PostgreSQL raises an error on a float underflow or
        overflow where Python rounds to 0 or infinity). Others take the general path."""
        return all(
            v == 0 or 1e-6 <= v <= 1e12 for v in (self.config.retry_backoff, self.config.retry_backoff_max)
        )

    def _retried_one(self, job_id: str, done: FailedOne, reason: str, now: int, started: int) -> None:
        """The metrics and span of a group-committed retry at ``now`` (committed when the store returns
        it)."""
        if done.start_time is not None:
            ends = Ends()
            ends.runs.append((done.kind, FAILED, now - done.start_time))
            self.latency.record(ends)
        self._count("retried")
        if self._traced:
            move = ChunkMove(job_id, done.index, done.attempt, done.trace_parent)
            self._trace_fail(move, ChunkState.PENDING, True, reason, started)

    def _settle(self, changes: Changes, job: Job, chunk: Chunk, now: int, *, retryable: bool) -> FailOutcome:
        """Ends a failed or expired attempt: cancelled, retried later, or failed for good."""
        if job.cancel_requested:
            job.move_chunk(chunk, ChunkState.CANCELLED, now)
            return FailOutcome(False, None)
        if retryable and chunk.attempt < chunk.max_attempts:
            # Backoff restarts with each manual retry's budget: the attempts before it do not count.
            attempt = chunk.attempt - (chunk.max_attempts - job.max_attempts)
            delay = backoff_seconds(
                attempt, self.config.retry_backoff, self.config.retry_backoff_max, _jitter.random()
            )
            chunk.next_attempt_time = now + int(delay * 1e6)
            job.move_chunk(chunk, ChunkState.PENDING, now, items_done=0)
            changes.work_later.append(delay)
            return FailOutcome(True, chunk.next_attempt_time)
        job.move_chunk(chunk, ChunkState.FAILED, now)
        return FailOutcome(False, None)

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
                chunk.error_reason = LEASE_EXPIRED
                chunk.error_message = f"worker {chunk.worker_id!r} stopped renewing its lease"
                self._settle(tx.changes, jobs[chunk.job_id], chunk, now, retryable=True)
            ends.add(jobs.values(), expired, now, None)
            await self._save(tx, jobs.values(), expired, now)
            return len(expired)

        moved = await self.store.write(rescue)
        self.latency.record(ends)
        if moved:
            self._count("rescued", moved)

        # A transaction of its own: it locks jobs before chunks, the other way round from above.
        async def overdue(tx: Tx) -> int:
            ends.clear()
            now = self.clock()
            cancel_before = now - int(self.config.cancel_deadline * 1e6)
            stopped = 0
            for job_id in await tx.overdue_cancels(cancel_before):
                job = await tx.get_job(job_id, None, for_update=True)
                if job is None or job.state != JobState.CANCELLING:
                    continue
                running = await tx.processing_chunks(job_id)
                for chunk in running:
                    chunk.error_reason = CANCEL_DEADLINE
                    chunk.error_message = "the worker did not stop within the cancel deadline"
                    job.move_chunk(chunk, ChunkState.CANCELLED, now)
                ends.add([job], running, now, None)
                await self.outbox.save_job(tx, job, now, running)
                stopped += len(running)
            return stopped

        stopped = await self.store.write(overdue)
        self.latency.record(ends)
        return moved + stopped

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
