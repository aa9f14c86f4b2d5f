"""PostgreSQL's own paths, reached only as ``Store.fast`` (None on SQLite, where a transaction on the
loop costs no round trips and the services take the general path): the worker path's claims, completions,
progress reports and retryable failures, group-committed (``store/group.py``: one flusher per process,
one statement per flush, so a job's row is locked and committed once per flush rather than once per chunk
behind every other worker of the job), and a lease of rate-limit tokens. They decline (None) for a job
whose change makes a webhook event (it ends, or a job.progress event is due), whose outbox rows are built
in Python, and when a lease or chunk is not as required: the general path then decides, and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.model import Artifact, Chunk, Job
from jobpulse_server.domain.usage import Lease
from jobpulse_server.store.group import (
    ClaimAsk,
    CompletedOne,
    Completion,
    FailedOne,
    Failure,
    GroupCommit,
    Report,
)
from jobpulse_server.store.waiting import Waiting


class _Runs(Protocol):
    """What the fast paths need of the store (``database.SqlStore``)."""

    replica_id: str
    waiting: Waiting

    async def statement(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None: ...

    def publish(self, changes: Changes) -> None: ...


# A key's shared rate-limit bucket (services/ratelimit.py): takes $3 tokens, all or none, after refilling
# the bucket for the time since its last lease at $4 tokens a second (capped at $2), on the database's
# clock, in one statement that is its own transaction. A key seen for the first time starts full. The row
# lock orders replicas leasing the same key; RETURNING gives the grant and what is left. All or none: with
# partial grants, replicas competing for a key at its limit took its trickle a token or two per statement.
_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
_AVAILABLE = (
    "LEAST($2::double precision, b.tokens + GREATEST(0, excluded.refill_time - b.refill_time)"
    " * $4::double precision / 1000000.0)"
)
_GRANT = f"CASE WHEN {_AVAILABLE} >= $3::bigint THEN $3::bigint ELSE 0 END"
LEASE_TOKENS = (
    "INSERT INTO rate_buckets AS b (key_name, tokens, refill_time, granted) "
    f"SELECT $1, $2::double precision - n.g, n.t, n.g FROM (SELECT {_NOW_US} AS t, "
    "CASE WHEN $2::double precision >= $3::bigint THEN $3::bigint ELSE 0 END AS g) AS n "
    "ON CONFLICT (key_name) DO UPDATE SET "
    f"tokens = {_AVAILABLE} - {_GRANT}, granted = {_GRANT}, "
    "refill_time = GREATEST(b.refill_time, excluded.refill_time) "
    "RETURNING granted, tokens"
)


class PgFast:
    """The worker path's writes on PostgreSQL, group-committed (``store/group.py``: one flusher per
    process, one statement per flush), and the rate-limit lease (a statement of its own)."""

    def __init__(self, store: _Runs, progress_interval_us: int = 5_000_000) -> None:
        self.store = store
        self.group = GroupCommit(store, progress_interval_us)  # type: ignore[arg-type]

    async def complete(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
    ) -> CompletedOne | None:
        """Completes one chunk and publishes the change once its flush commits; None when it declined
        (a webhook event to write, a lease not current: the general path then decides, and says why)."""
        return await self.group.complete(
            Completion(chunk_id, job_id, token, external_task_id, artifacts, now)
        )

    async def complete_and_claim(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
        claim: tuple[str, Sequence[str], int, int],
    ) -> tuple[CompletedOne, list[tuple[Job, Chunk]] | None] | None:
        """``complete``, then, if it went through, a claim (worker id, kinds, limit, lease in us) that sees
        it, in the same flush. None when the completion declined; otherwise the completion and
        the claims as ``claim`` gives them."""
        worker_id, kinds, limit, lease_us = claim
        return await self.group.complete_and_claim(
            Completion(chunk_id, job_id, token, external_task_id, artifacts, now),
            ClaimAsk(worker_id, tuple(sorted(set(kinds))), limit, lease_us, now),
        )

    async def complete_many(
        self,
        items: Sequence[tuple[str, str, str, str, Sequence[Artifact]]],
        now: int,
        claim: tuple[str, Sequence[str], int, int] | None,
    ) -> tuple[list[CompletedOne | None], list[tuple[Job, Chunk]] | None]:
        """Completes the chunks (chunk id, job id, token, external task id, artifacts), each on its own
        lease (in turn: a revision each), then, if all went through, claims (worker id, kinds, limit,
        lease in us); each completion's outcome (None: declined) and the claims ([] without ``claim``,
        None when the claim or a completion declined)."""
        ask = None
        if claim is not None:
            worker_id, kinds, limit, lease_us = claim
            ask = ClaimAsk(worker_id, tuple(sorted(set(kinds))), limit, lease_us, now)
        return await self.group.complete_many(
            [Completion(c, j, t, ext, arts, now) for c, j, t, ext, arts in items], ask
        )

    async def claim(
        self, worker_id: str, kinds: Sequence[str], limit: int, lease_us: int, now: int
    ) -> list[tuple[Job, Chunk]] | None:
        """Claims in the next flush and publishes the change: the claimed chunks with their jobs as they
        are after the flush, [] when no chunk is ready, None when it declined."""
        return await self.group.claim(ClaimAsk(worker_id, tuple(sorted(set(kinds))), limit, lease_us, now))

    async def report(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        *,
        items_done: int,
        stage: str,
        message: str,
        external_task_id: str,
        lease_us: int,
    ) -> tuple[bool, int] | None:
        """Records a progress report (heartbeat) in the next flush and publishes the change: (cancel
        requested, the chunk's new lease end); None when it declined (a lease not current, items past
        the chunk's, a job.progress event due: the general path then decides, and says why).
        ``lease_us`` 0 keeps the chunk's lease duration."""
        return await self.group.report(
            Report(chunk_id, job_id, token, items_done, stage, message, external_task_id, lease_us, now)
        )

    async def fail(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        *,
        reason: str,
        message: str,
        jitter: float,
        backoff_s: float,
        backoff_max_s: float,
    ) -> FailedOne | None:
        """Puts a chunk whose attempt failed (retryably) back to wait out its backoff, in the next flush,
        and publishes the change: what it did, or None when it declined (a lease not current, no attempt
        left, a cancel asked, a job.progress event due: the general path then decides, and says why).
        The backoff is base * 2^(n - 1) capped, n the chunk's attempt since the job's last manual retry,
        its upper half jittered by ``jitter`` (in [0, 1))."""
        return await self.group.fail(
            Failure(chunk_id, job_id, token, reason, message, jitter, backoff_s, backoff_max_s, now)
        )

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        """Takes ``want`` tokens, all or none, from the key's shared bucket; when it grants none, the wait
        is until the bucket holds ``want``, so replicas competing for a key over its limit take blocks,
        not a statement per token."""
        row = await self.store.statement(LEASE_TOKENS, [key_name, burst, want, rate])
        assert row is not None
        granted, left = int(row[0]), float(row[1])
        if granted:
            return Lease(granted, left=left)
        return Lease(0, max(0.001, (want - left) / rate), left)
