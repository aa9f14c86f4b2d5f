"""The worker path: the one seam every claim, completion, progress report and failure goes through.

``TransactionPath`` writes each call as one transaction of the store, with the domain's rules in Python
(``Job.move_chunk``, ``derive_state``, the lease fence ``leased``, ``backoff_seconds``). ``BatchedPath``
(PostgreSQL) first hands the call to the store's batch (``store.batch``: group-committed, the same rules
mirrored in SQL, store/batch/); what the batch declines (``DECLINED``: a webhook event to build,
a lease not as required, work taken meanwhile) falls back to the transaction path, here and nowhere else.
``worker_path`` picks one for a store; the services hold the one it gives and never look at the store.

Both paths take and answer the types of domain/work.py, and both tell ``WorkRecord`` (metrics, latency,
throughput, spans) what they did once it has committed.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from jobpulse_server.domain import ids
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.errors import (
    ChunkNotFound,
    DomainError,
    FieldViolation,
    InvalidArgument,
    LeaseLost,
)
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.work import (
    DECLINED,
    Backoff,
    Claim,
    ClaimRequest,
    Completed,
    Completion,
    CompletionResult,
    FailOutcome,
    Failure,
    ProgressReport,
    Retried,
)
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services import job_trace, pipeline
from jobpulse_server.services.artifacts import load_artifacts
from jobpulse_server.services.job_trace import ChunkMove
from jobpulse_server.services.latency import COMPLETED, FAILED, Ends, Latency
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.outbox import ends as outbox_ends
from jobpulse_server.services.throughput import Throughput
from jobpulse_server.store import Batch, Store, Tx

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

# Retry jitter from a generator of our own: the process-wide `random` state is left to the
# application (and to tests that seed it).
_jitter = random.Random()

# Claim transactions in a row that found work but lost it to other claims before giving up.
CLAIM_TRIES = 3


def backoff_seconds(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff with full jitter over the upper half: base * 2^(attempt-1), at most ``cap``;
    ``jitter`` in [0, 1) picks the point in the upper half. PostgreSQL's batched failures
    (store/batch/sql.py FAIL_GROUP) compute the same in SQL, with the same float arithmetic."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + jitter * ceiling / 2


def fence(
    job: Job | None, chunk: Chunk | None, chunk_id: str, token: str, now: int
) -> tuple[Job, Chunk] | DomainError:
    """The lease fence: the job and chunk when ``token`` is the chunk's current, unexpired lease at
    ``now``; else why not."""
    if chunk is None or job is None or chunk.job_id != job.id:
        return ChunkNotFound(chunk_id)
    if (
        chunk.state != ChunkState.PROCESSING
        or not token
        or chunk.lease_token != token
        or (chunk.lease_expire_time is not None and chunk.lease_expire_time < now)
    ):
        return LeaseLost(
            f"the lease on chunk {chunk_id} is no longer yours (expired, or the chunk was claimed again)",
            chunk_id=chunk_id,
        )
    return job, chunk


class WorkRecord:
    """What the worker path tells the metrics, the latency histograms, the throughput counts and the
    spans, after each write has committed."""

    def __init__(
        self, metrics: Metrics, throughput: Throughput | None = None, tracer: Tracer | None = None
    ) -> None:
        self.metrics = metrics
        self.latency = Latency(metrics)
        # Chunks completed per minute and kind, for the stats page; told only after a commit.
        self.throughput = throughput
        # Each claim, completion and failure of a chunk is a span (services/job_trace.py) when the tracer
        # is a real one; with the no-op one (tracing off) ``traced`` is false and nothing is done.
        self.tracer, self.traced = job_trace.tracing(tracer)
        # jobpulse_chunks_total's child per event, looked up once (prometheus_client's labels() takes a
        # lock and checks the values each time: 1.2 us against 0.35 for the child's inc).
        self._chunk_events: dict[str, Any] = {}

    def count(self, event: str, n: int = 1) -> None:
        child = self._chunk_events.get(event)
        if child is None:  # the events are a handful of fixed words
            child = self._chunk_events[event] = self.metrics.chunks.labels(event)
        child.inc(n)

    def started(self) -> int:
        """When an operation began, for its spans (0, unread, when not tracing)."""
        return time.time_ns() if self.traced else 0

    def claimed(self, pairs: Sequence[tuple[Job, Chunk]], started: int) -> list[Claim]:
        """Claims the batch made (committed): as ``Claim``s, recorded by ``made``."""
        made = [Claim(job, c, c.lease_token or "", c.lease_expire_time or 0) for job, c in pairs]
        return self.made(made, started)

    def made(self, claims: list[Claim], started: int) -> list[Claim]:
        """Claims that committed: counted, their queue waits observed, their spans recorded."""
        if claims:
            self.count("claimed", len(claims))
            self.latency.claimed((c.job, c.chunk) for c in claims)
            self.trace_claims(claims, started)
        return claims

    def trace_claims(self, claims: list[Claim], started: int) -> None:
        if self.traced and claims:
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

    def completed_one(self, chunk_id: str, done: Completed, started: int) -> None:
        """A batched completion, which has committed when the batch answers."""
        self.count("completed" if done.chunk_state == ChunkState.COMPLETED else "cancelled")
        self.latency.completed_one(done)
        if self.throughput is not None and done.chunk_state == ChunkState.COMPLETED:
            self.throughput.count(done.kind, 1, done.items)
        if self.traced:
            move = ChunkMove(
                chunk_job_id(chunk_id),
                done.index,
                done.attempt,
                done.trace_parent,
                {"jobpulse.chunk_state": done.chunk_state.name},
            )
            job_trace.record(self.tracer, job_trace.COMPLETE, [move], started)

    def retried_one(self, job_id: str, done: Retried, reason: str, now: int, started: int) -> None:
        """A batched retry at ``now`` (committed when the batch answers)."""
        if done.start_time is not None:
            ends = Ends()
            ends.runs.append((done.kind, FAILED, now - done.start_time))
            self.latency.record(ends)
        self.count("retried")
        if self.traced:
            move = ChunkMove(job_id, done.index, done.attempt, done.trace_parent)
            self.trace_fail(move, ChunkState.PENDING, True, reason, started)

    def trace_fail(
        self, move: ChunkMove, state: ChunkState, will_retry: bool, reason: str, started: int
    ) -> None:
        """The span of a FailChunk, either path (the caller checks that tracing is on)."""
        move.extra = {
            "jobpulse.chunk_state": state.name,
            "jobpulse.will_retry": will_retry,
            "jobpulse.error_reason": reason,
        }
        job_trace.record(self.tracer, job_trace.FAIL, [move], started)


class TransactionPath:
    """Every call of the worker path as one write transaction of the store: SQLite's path, and
    PostgreSQL's for what the batch declines. The sweeper's rescue uses its lease and save rules too."""

    def __init__(
        self, store: Store, outbox: Outbox, config: Config, clock: Clock, record: WorkRecord
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.record = record

    # --- claim ---------------------------------------------------------
    async def claim(self, ask: ClaimRequest) -> list[Claim]:
        """Claims up to ``ask.limit`` chunks now (the caller waits for work, if asked)."""
        started = self.record.started()

        async def body(tx: Tx) -> list[Claim] | None:
            now = self.clock()
            jobs: dict[str, Job] = {}
            claims = await self.claim_in(tx, ask, now, jobs, wait_for_jobs=True)
            if claims:
                await self.save(tx, jobs.values(), [c.chunk for c in claims], now)
            # None: there was work, but other claims took it while this one waited for its jobs.
            return claims if claims or not jobs else None

        for _ in range(CLAIM_TRIES):
            claims = await self.store.write(body)
            if claims is None:
                continue  # look again
            return self.record.made(claims, started)
        return []

    async def claim_in(
        self, tx: Tx, ask: ClaimRequest, now: int, jobs: dict[str, Job], *, wait_for_jobs: bool
    ) -> list[Claim]:
        """Claims inside ``tx``; ``jobs`` holds the jobs this transaction already has (and gets the
        jobs of the claims). The caller saves.

        The jobs of the first ready chunks are locked first, then the chunks are picked from those
        jobs: jobs before chunks is the order every writer that waits uses. With ``wait_for_jobs``
        false (the transaction holds other jobs already), jobs another transaction holds are
        skipped rather than waited for, so two such transactions cannot deadlock.
        """
        found, picked = await tx.claim(
            list(ask.kinds), now, ask.limit, skip_locked=not wait_for_jobs, held=jobs
        )
        for job_id, job in found.items():
            jobs.setdefault(job_id, job)  # a job this transaction changed already keeps its changes
        return [self.take(jobs[chunk.job_id], chunk, ask, now) for chunk in picked]

    @staticmethod
    def take(job: Job, chunk: Chunk, ask: ClaimRequest, now: int) -> Claim:
        """The claim rule: a ready chunk starts its next attempt under a new lease of ``ask``'s worker."""
        chunk.attempt += 1
        chunk.worker_id = ask.worker_id
        chunk.start_time = now
        chunk.end_time = None
        chunk.due_time, chunk.next_attempt_time = chunk.next_attempt_time, None
        job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=0)
        chunk.lease_token = ids.new_lease_token()
        chunk.lease_expire_time = job.lease_end(chunk, now, ask.lease_us)
        chunk.lease_duration = ask.lease_us
        return Claim(job, chunk, chunk.lease_token, chunk.lease_expire_time)

    async def save(
        self,
        tx: Tx,
        jobs: Iterable[Job],
        changed: list[Chunk],
        now: int,
        unsaved: dict[str, list[Artifact]] | None = None,
    ) -> None:
        """Saves the chunks and their jobs with the webhook events the jobs' changes make. A job's
        terminal event carries its artifacts: those written before and ``unsaved`` (this transaction's)."""
        held = {job.id: job for job in jobs}
        for job in held.values():
            if job.stopping:  # failed at once (Job.fail_now): its pending chunks are cancelled
                await pipeline.stop_pending(tx, job, changed, now)
        # What the changes free or cancel in pipelines (dependants, a finalize chunk), in this transaction.
        await pipeline.follow(tx, held, changed, now)
        jobs = list(held.values())
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

    # --- the lease fence ---------------------------------------------------
    async def leased(
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
            out[chunk_id] = fence(jobs.get(wanted[chunk_id]), chunks.get(chunk_id), chunk_id, token, now)
        return out, now

    async def leased_one(self, tx: Tx, chunk_id: str, token: str) -> tuple[Job, Chunk, int]:
        found, now = await self.leased(tx, [(chunk_id, token)])
        got = found[chunk_id]
        if isinstance(got, DomainError):
            raise got
        return (*got, now)

    # --- progress ----------------------------------------------------------
    async def report(self, item: ProgressReport) -> tuple[bool, int]:
        """Heartbeat: records progress, extends the lease; (cancel_requested, lease_expire_time)."""

        async def body(tx: Tx) -> tuple[bool, int]:
            job, chunk, now = await self.leased_one(tx, item.chunk_id, item.lease_token)
            answer = self.reported(job, chunk, item, now)
            if item.artifacts:  # previews: each replaces the chunk's earlier artifact of its name
                shown = [dataclasses.replace(a, chunk_index=chunk.index) for a in item.artifacts]
                tx.add_artifacts(job.id, shown)
            await self.save(tx, [job], [chunk], now)
            return answer

        return await self.store.write(body)

    @staticmethod
    def reported(job: Job, chunk: Chunk, item: ProgressReport, now: int) -> tuple[bool, int]:
        """The progress rule, on a leased chunk: (cancel_requested, the lease's new end)."""
        if item.items_done > chunk.item_count:
            raise InvalidArgument(
                [FieldViolation("items_done", f"must be at most the chunk's item_count ({chunk.item_count})")]
            )
        if item.lease_us:
            chunk.lease_duration = item.lease_us
        chunk.lease_expire_time = job.lease_end(
            chunk, now, chunk.lease_duration or item.lease_us or 60_000_000
        )
        if item.external_task_id:
            chunk.external_task_id = item.external_task_id
        if item.stage:
            job.stage = chunk.stage = item.stage
        if item.message:
            job.message = chunk.message = item.message
        job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=max(item.items_done, chunk.items_done))
        return job.cancel_requested, chunk.lease_expire_time

    # --- completion --------------------------------------------------------
    async def complete(
        self, item: Completion, claim_next: ClaimRequest | None
    ) -> tuple[JobState, list[Claim] | None]:
        """Completes one chunk (LeaseLost / ChunkNotFound when its lease is not current), then claims
        ``claim_next`` in the same transaction. The claims: None when the caller is to claim on its own
        now (none was ready among the jobs free to lock, or a batch declined the claim)."""
        results, claims = await self.complete_many([item], claim_next, all_or_nothing=True)
        if results[0].error is not None:
            raise results[0].error
        assert results[0].job_state is not None
        return results[0].job_state, claims

    async def complete_many(
        self, items: Sequence[Completion], claim_next: ClaimRequest | None, *, all_or_nothing: bool = False
    ) -> tuple[list[CompletionResult], list[Claim] | None]:
        """Completes several chunks in one transaction; each item stands or falls on its own lease.

        With ``claim_next``, the next chunks are claimed in the same transaction, whatever became of the
        items; with ``all_or_nothing`` (CompleteChunk: its error answer cannot carry claims) only when the
        completion went through. The claims are None when the caller is to claim on its own.
        """
        counts: dict[str, int] = {}
        # (chunks, items) completed by kind, for ``throughput``: filled by the run of ``body`` that
        # commits (a run that rolls back and runs again starts it afresh), counted after the commit.
        by_kind: dict[str, tuple[int, int]] = {}
        ends = Ends()  # likewise, for the latency metrics
        # The completions' spans, when tracing: filled by the run of ``body`` that commits, as ``by_kind``.
        moved: list[ChunkMove] = []
        record = self.record
        started = record.started()

        async def body(tx: Tx) -> tuple[list[tuple[Completion, DomainError | Job]], list[Claim]]:
            by_kind.clear()
            ends.clear()
            moved.clear()
            if items:
                found, now = await self.leased(tx, [(i.chunk_id, i.lease_token) for i in items])
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
                self.completed(tx, job, chunk, item, now, unsaved)
                jobs[job.id] = job
                changed.append(chunk)
                outcome.append((item, job))
            claims: list[Claim] = []
            if claim_next is not None and not (all_or_nothing and not changed):
                claims = await self.claim_in(tx, claim_next, now, jobs, wait_for_jobs=False)
            if changed or claims:
                ends.add(jobs.values(), changed, now, COMPLETED)
                await self.save(tx, jobs.values(), [*changed, *(c.chunk for c in claims)], now, unsaved)
            if record.traced:
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
            counts.update(completed=completed, cancelled=len(changed) - completed)
            return outcome, claims

        outcome, claims = await self.store.write(body)
        for event, n in counts.items():
            if n:
                record.count(event, n)
        if record.throughput is not None:
            for kind, (n_chunks, n_items) in by_kind.items():
                record.throughput.count(kind, n_chunks, n_items)
        record.latency.record(ends)
        if record.traced:
            job_trace.record(record.tracer, job_trace.COMPLETE, moved, started)
        claimed = record.made(claims, started)
        results = [
            CompletionResult(item.chunk_id, got, None)
            if isinstance(got, DomainError)
            else CompletionResult(item.chunk_id, None, got.state)
            for item, got in outcome
        ]
        if claim_next is None:
            return results, []
        # None ready among jobs free to lock in that transaction: the caller claims (and waits, if
        # asked) on its own now that the completions are committed.
        return results, claimed or None

    @staticmethod
    def completed(
        tx: Tx, job: Job, chunk: Chunk, item: Completion, now: int, unsaved: dict[str, list[Artifact]]
    ) -> None:
        """The completion rule, on a leased chunk: completed with its artifacts, or cancelled when its
        job has a cancel asked."""
        if item.external_task_id:
            chunk.external_task_id = item.external_task_id
        if job.cancel_requested:
            job.move_chunk(chunk, ChunkState.CANCELLED, now)
            return
        job.move_chunk(chunk, ChunkState.COMPLETED, now, items_done=chunk.item_count)
        artifacts = list(item.artifacts)
        for a in artifacts:
            a.chunk_index = chunk.index
        tx.add_artifacts(job.id, artifacts)
        unsaved.setdefault(job.id, []).extend(artifacts)

    # --- failure -----------------------------------------------------------
    async def fail(self, item: Failure) -> FailOutcome:
        """Ends a chunk's attempt as failed: retried after a backoff while it has attempts left (and
        ``retryable``), else failed for good; cancelled instead when its job has a cancel asked."""
        reason = item.reason or "WORKER_ERROR"
        record = self.record
        started = record.started()
        ends = Ends()

        async def body(tx: Tx) -> tuple[FailOutcome, Job, Chunk]:
            job, chunk, now = await self.leased_one(tx, item.chunk_id, item.lease_token)
            chunk.error_reason = reason
            chunk.error_message = item.message
            chunk.error_details = item.details
            outcome = self.settle(tx.changes, job, chunk, now, retryable=item.retryable)
            ends.clear()
            ends.add([job], [chunk], now, FAILED)
            await self.save(tx, [job], [chunk], now)
            return outcome, job, chunk

        outcome, job, chunk = await self.store.write(body)
        record.latency.record(ends)
        record.count("retried" if outcome.will_retry else chunk.state.name.lower())
        if record.traced:
            move = ChunkMove(job.id, chunk.index, chunk.attempt, job.trace_parent)
            record.trace_fail(move, chunk.state, outcome.will_retry, reason, started)
        return outcome

    def settle(self, changes: Changes, job: Job, chunk: Chunk, now: int, *, retryable: bool) -> FailOutcome:
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


class BatchedPath(TransactionPath):
    """PostgreSQL: each call goes to the store's batch first (group-committed); what it declines takes
    the transaction path, which writes it or says why not."""

    def __init__(
        self, batch: Batch, store: Store, outbox: Outbox, config: Config, clock: Clock, record: WorkRecord
    ) -> None:
        super().__init__(store, outbox, config, clock, record)
        self.batch = batch

    async def claim(self, ask: ClaimRequest) -> list[Claim]:
        started = self.record.started()
        got = await self.batch.claim(ask, self.clock())
        if got is DECLINED:  # jobs with webhooks, work taken meanwhile
            return await super().claim(ask)
        return self.record.claimed(got, started)

    async def report(self, item: ProgressReport) -> tuple[bool, int]:
        # A report with artifacts (previews) takes the transaction path: they are few beside heartbeats.
        if item.job_id and item.lease_token and not item.artifacts:
            got = await self.batch.report(item, self.clock())
            if got is not DECLINED:
                return got
        return await super().report(item)

    async def complete(
        self, item: Completion, claim_next: ClaimRequest | None
    ) -> tuple[JobState, list[Claim] | None]:
        if not (item.job_id and item.lease_token):
            return await super().complete(item, claim_next)
        started = self.record.started()
        if claim_next is None:
            done = await self.batch.complete(item, self.clock())
            if done is DECLINED:
                return await super().complete(item, None)
            self.record.completed_one(item.chunk_id, done, started)
            return done.job_state, []
        both = await self.batch.complete_and_claim(item, claim_next, self.clock())
        if both is DECLINED:
            return await super().complete(item, claim_next)
        finished, next_claims = both
        self.record.completed_one(item.chunk_id, finished, started)
        if next_claims is DECLINED:  # work taken by others meanwhile: the caller claims on its own
            return finished.job_state, None
        return finished.job_state, self.record.claimed(next_claims, started)

    async def complete_many(
        self, items: Sequence[Completion], claim_next: ClaimRequest | None, *, all_or_nothing: bool = False
    ) -> tuple[list[CompletionResult], list[Claim] | None]:
        """The completions batched, each a change of its own, and the claim in the same flush when all
        went through. Items declined (a job with webhooks, a lease not current) then take the transaction
        path, which completes them or says why not, and the claim comes after them. Each result gives its
        job's state after the call."""
        if not items or all_or_nothing:
            return await super().complete_many(items, claim_next, all_or_nothing=all_or_nothing)
        started = self.record.started()
        batched = [i for i in items if i.job_id and i.lease_token]
        done, got = await self.batch.complete_many(batched, self.clock(), claim_next)
        results: dict[int, CompletionResult] = {}
        last: dict[str, JobState] = {}  # each job's state after the flush
        for item, outcome in zip(batched, done, strict=True):
            if outcome is not DECLINED:
                self.record.completed_one(item.chunk_id, outcome, started)
                last[item.job_id] = outcome.job_state
                results[id(item)] = CompletionResult(item.chunk_id, None, outcome.job_state)
        rest = [i for i in items if id(i) not in results]
        if rest:
            general, _ = await super().complete_many(rest, None)
            for i, r in zip(rest, general, strict=True):
                results[id(i)] = r
                if r.job_state is not None:
                    last[i.job_id] = r.job_state
        for i in items:
            if results[id(i)].error is None:
                results[id(i)] = CompletionResult(i.chunk_id, None, last[i.job_id])
        answer = [results[id(i)] for i in items]
        if claim_next is None:
            return answer, []
        claims = [] if got is DECLINED else self.record.claimed(got, started)
        # None ready (or the claim declined): the caller claims, and waits if asked, on its own.
        return answer, claims or None

    async def fail(self, item: Failure) -> FailOutcome:
        if item.retryable and item.job_id and item.lease_token and self._backoff_in_sql:
            started = self.record.started()
            now = self.clock()
            reason = item.reason or "WORKER_ERROR"
            backoff = Backoff(self.config.retry_backoff, self.config.retry_backoff_max, _jitter.random())
            retried = await self.batch.fail(
                Failure(item.chunk_id, item.lease_token, reason, item.message, True, item.details),
                now,
                backoff,
            )
            if retried is not DECLINED:
                self.record.retried_one(item.job_id, retried, reason, now, started)
                return FailOutcome(True, retried.next_attempt_time)
        return await super().fail(item)

    @property
    def _backoff_in_sql(self) -> bool:
        """Whether the backoff settings are ones PostgreSQL's float arithmetic computes as Python's does:
        each 0 or between a microsecond and 10^12 s (PostgreSQL raises an error on a float underflow or
        overflow where Python rounds to 0 or infinity). Others take the transaction path."""
        return all(
            v == 0 or 1e-6 <= v <= 1e12 for v in (self.config.retry_backoff, self.config.retry_backoff_max)
        )


def worker_path(
    store: Store, outbox: Outbox, config: Config, clock: Clock, record: WorkRecord
) -> TransactionPath:
    """The worker path for ``store``: batched where the store has a batch (PostgreSQL), else one
    transaction a call. The one place that asks which store it is."""
    if store.batch is not None:
        return BatchedPath(store.batch, store, outbox, config, clock, record)
    return TransactionPath(store, outbox, config, clock, record)
