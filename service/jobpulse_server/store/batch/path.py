"""The store's batched worker path, reached only as ``Store.batch`` (PostgreSQL; None on SQLite, where
a transaction on the loop costs no round trips): claims, completions, progress reports and retryable
failures, group-committed (``flushes.py`` over ``queue.py``: one flusher per process, one statement per
flush, so a job's row is locked and committed once per flush rather than once per chunk behind every
other worker of the job), and a lease of rate-limit tokens. It takes and answers the worker path's own
types (domain/work.py) and answers ``DECLINED`` for a job whose change makes a webhook event (it ends,
or a job.progress event is due), whose outbox rows are built in Python, and when a lease or chunk is
not as required: the transaction path (services/worker_path.py) then decides, and says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.model import Chunk, Job
from jobpulse_server.domain.usage import Lease
from jobpulse_server.domain.work import (
    DECLINED,
    Backoff,
    ClaimRequest,
    Completed,
    Completion,
    Declined,
    Failure,
    ProgressReport,
    Retried,
)
from jobpulse_server.store.batch.flushes import GroupCommit
from jobpulse_server.store.batch.queue import (
    QueuedClaim,
    QueuedCompletion,
    QueuedFailure,
    QueuedReport,
)
from jobpulse_server.store.waiting import Waiting


class _Runs(Protocol):
    """What the batched path needs of the store (``database.SqlStore``)."""

    replica_id: str
    waiting: Waiting

    async def statement(self, sql: str, params: Mapping[str, Any]) -> Sequence[Any] | None: ...

    def publish(self, changes: Changes) -> None: ...


def _lease_tokens() -> str:
    """A key's shared rate-limit bucket (services/ratelimit.py): takes ``want`` tokens, all or none, after
    refilling the bucket for the time since its last lease at ``rate`` tokens a second (capped at
    ``burst``), on the database's clock, in one statement that is its own transaction. A key seen for the
    first time starts full. The row lock orders replicas leasing the same key; RETURNING gives the grant
    and what is left. All or none: with partial grants, replicas competing for a key at its limit took
    its trickle a token or two per statement."""
    key, burst, want, rate = ":key", ":burst", ":want", ":rate"
    now_us = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    available = (
        f"LEAST({burst}::double precision, b.tokens + GREATEST(0, excluded.refill_time - b.refill_time)"
        f" * {rate}::double precision / 1000000.0)"
    )
    grant = f"CASE WHEN {available} >= {want}::bigint THEN {want}::bigint ELSE 0 END"
    return (
        "INSERT INTO rate_buckets AS b (key_name, tokens, refill_time, granted) "
        f"SELECT {key}, {burst}::double precision - n.g, n.t, n.g FROM (SELECT {now_us} AS t, "
        f"CASE WHEN {burst}::double precision >= {want}::bigint THEN {want}::bigint ELSE 0 END AS g) AS n "
        "ON CONFLICT (key_name) DO UPDATE SET "
        f"tokens = {available} - {grant}, granted = {grant}, "
        "refill_time = GREATEST(b.refill_time, excluded.refill_time) "
        "RETURNING granted, tokens"
    )


LEASE_TOKENS = _lease_tokens()


T = TypeVar("T")


def _or_declined(answer: T | None) -> T | Declined:
    """The flusher's None (no row for the item) as the worker path's typed answer."""
    return DECLINED if answer is None else answer


def _claim(ask: ClaimRequest, now: int) -> QueuedClaim:
    return QueuedClaim(ask.worker_id, ask.kinds_key(), ask.limit, ask.lease_us, now)


def _completion(item: Completion, now: int) -> QueuedCompletion:
    return QueuedCompletion(
        item.chunk_id, item.job_id, item.lease_token, item.external_task_id, item.artifacts, now
    )


Claimed = list[tuple[Job, Chunk]]


class Batch:
    """The worker path's writes on PostgreSQL, group-committed (``flushes.py`` over ``queue.py``: one
    flusher per process, one statement per flush), and the rate-limit lease (a statement of its own).
    Every answer is committed and published when it returns."""

    def __init__(self, store: _Runs, progress_interval_us: int = 5_000_000, fair: bool = True) -> None:
        self.store = store
        self.group = GroupCommit(store, progress_interval_us, fair)  # type: ignore[arg-type]

    async def complete(self, item: Completion, now: int) -> Completed | Declined:
        """Completes one chunk."""
        return _or_declined(await self.group.complete(_completion(item, now)))

    async def complete_and_claim(
        self, item: Completion, ask: ClaimRequest, now: int
    ) -> tuple[Completed, Claimed | Declined] | Declined:
        """``complete``, then, if it went through, a claim that sees it, in the same flush: the
        completion and the claims ([] when none was ready)."""
        both = await self.group.complete_and_claim(_completion(item, now), _claim(ask, now))
        if both is None:
            return DECLINED
        done, claims = both
        return done, _or_declined(claims)

    async def complete_many(
        self, items: Sequence[Completion], now: int, ask: ClaimRequest | None
    ) -> tuple[list[Completed | Declined], Claimed | Declined]:
        """Completes the chunks, each on its own lease (in turn: a revision each), then, if all went
        through, claims ``ask``: each completion's outcome and the claims ([] without ``ask``; declined
        when the claim or a completion declined)."""
        done, claims = await self.group.complete_many(
            [_completion(i, now) for i in items], None if ask is None else _claim(ask, now)
        )
        return [_or_declined(d) for d in done], _or_declined(claims)

    async def claim(self, ask: ClaimRequest, now: int) -> Claimed | Declined:
        """Claims in the next flush: the claimed chunks with their jobs as they are after the flush, []
        when no chunk is ready."""
        return _or_declined(await self.group.claim(_claim(ask, now)))

    async def report(self, item: ProgressReport, now: int) -> tuple[bool, int] | Declined:
        """Records a progress report (heartbeat) in the next flush: (cancel requested, the chunk's new
        lease end); declined for a lease not current, items past the chunk's, a job.progress event due."""
        return _or_declined(
            await self.group.report(
                QueuedReport(
                    item.chunk_id,
                    item.job_id,
                    item.lease_token,
                    item.items_done,
                    item.stage,
                    item.message,
                    item.external_task_id,
                    item.lease_us,
                    now,
                )
            )
        )

    async def fail(self, item: Failure, now: int, backoff: Backoff) -> Retried | Declined:
        """Puts a chunk whose attempt failed (retryably) back to wait out its backoff, in the next flush;
        declined for a lease not current, no attempt left, a cancel asked, a job.progress event due.
        The backoff is worked out in SQL as ``backoff_seconds`` (services/worker_path.py) does, with n
        the chunk's attempt since the job's last manual retry."""
        return _or_declined(
            await self.group.fail(
                QueuedFailure(
                    item.chunk_id,
                    item.job_id,
                    item.lease_token,
                    item.reason,
                    item.message,
                    backoff.jitter,
                    backoff.base_s,
                    backoff.cap_s,
                    now,
                    item.details,
                )
            )
        )

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        """Takes ``want`` tokens, all or none, from the key's shared bucket; when it grants none, the wait
        is until the bucket holds ``want``, so replicas competing for a key over its limit take blocks,
        not a statement per token."""
        row = await self.store.statement(
            LEASE_TOKENS, {"key": key_name, "burst": burst, "want": want, "rate": rate}
        )
        assert row is not None
        granted, left = int(row[0]), float(row[1])
        if granted:
            return Lease(granted, left=left)
        return Lease(0, max(0.001, (want - left) / rate), left)
