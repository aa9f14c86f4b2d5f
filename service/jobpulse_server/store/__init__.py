"""Storage for the hot paths: every statement they run, and every dialect difference, lives here.

The services call a ``Store``: ``read()`` hands out a ``ReadTx`` (one consistent snapshot) and
``write(body)`` runs ``body(tx)`` in one write transaction, commits, and publishes what changed.
Three implementations share these interfaces:

* ``sqlite.SqliteStore``: SQLite driven with the standard library's ``sqlite3`` on the event
  loop's own thread (``sqlite_on_loop``, the default): no thread hand-off and no SQL toolkit
  between a call and its statements.
* ``postgres.PgStore``: PostgreSQL over an asyncpg pool of its own, statements prepared once per
  connection; claims and completions of jobs without webhooks are one statement each, other writes
  send their chunk and job updates and their NOTIFY in one round trip; deadlocks and serialization
  failures (SQLSTATE 40P01 / 40001) re-run the whole statement or transaction.
* ``portable.PortableStore``: the same operations through SQLAlchemy on the ``Database``'s engine,
  for the modes the two above do not cover (aiosqlite's worker thread, the psycopg driver).

Why: a GetJob through SQLAlchemy Core cost about 0.9 ms of server CPU on top of gRPC's own
0.45 ms, and a claim + completion about 8 ms; bench/README.md has the figures before and after.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.principal import KeyInfo
from jobpulse_server.domain.reports import FeedEntry, StatsRow
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.domain.usage import KeyUsage, Lease
from jobpulse_server.domain.webhooks import Delivery

T = TypeVar("T")

# How often a transaction aborted by a deadlock or serialization failure is run again.
WRITE_ATTEMPTS = 5


class ReadTx(Protocol):
    """Reads that see one consistent snapshot of the database."""

    async def get_job(self, job_id: str, owner: str | None) -> Job | None: ...

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]: ...

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
    ) -> list[Chunk]:
        """A job's chunks in index order, COMPLETED ones with their artifacts."""
        ...

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        """The first ``limit`` artifacts of each job, in chunk order (jobs without any are left out)."""
        ...

    async def list_jobs(
        self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int
    ) -> list[Job]: ...

    async def count_jobs(self, f: JobFilter) -> int: ...

    async def change_horizon(self) -> int: ...

    async def chunk_states(self, job_id: str) -> str:
        """Every chunk's state of the job in index order, one digit each (ChunkState's numbers)."""
        ...


class WriteTx(Protocol):
    """The operations of one write transaction. Nothing is written before ``save``."""

    changes: Changes

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        """As ``ReadTx.jobs_artifacts`` (artifacts added in this transaction are not written yet)."""
        ...

    async def claim(
        self, kinds: Sequence[str], now: int, limit: int, *, skip_locked: bool
    ) -> tuple[dict[str, Job], list[Chunk]]:
        """Locks the jobs of the first ``limit`` chunks ready to run (claim order), then those jobs'
        ready chunks, ``limit`` at most, in claim order; returns both. Jobs before chunks is the lock
        order of every writer that waits. With ``skip_locked``, jobs another transaction holds are
        left out instead of waited for."""
        ...

    async def lock_leased(
        self, job_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> tuple[dict[str, Job], dict[str, Chunk]]:
        """Locks and reads the jobs, then those of the chunks that belong to them."""
        ...

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        """Locks and reads jobs, in id order; with ``skip_locked`` leaves out those another
        transaction holds instead of waiting for them."""
        ...

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]: ...

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None: ...

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        """Writes the chunks, the jobs (a new change_seq each) and whatever was added, and
        records the jobs' revisions in ``changes``."""
        ...


@dataclass
class CompletedOne:
    """What a one-statement completion did."""

    job_state: JobState
    revision: int
    chunk_state: ChunkState
    # The job's kind and the chunk's item_count, for the throughput counts (services/throughput.py),
    # which the caller could otherwise learn only with another round trip.
    kind: str = ""
    items: int = 0


class Store(Protocol):
    """Hands out read snapshots and runs write transactions."""

    async def claim_one_statement(
        self, worker_id: str, kinds: Sequence[str], limit: int, lease_us: int, now: int
    ) -> list[tuple[Job, Chunk]] | None:
        """Claims in a single statement where the store can (PostgreSQL, jobs without webhooks) and
        publishes the change: the claimed chunks with their jobs as they are now, [] when no chunk
        is ready, None when the caller must take the general path."""
        ...

    async def complete_one(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
    ) -> CompletedOne | None:
        """Completes one chunk in a single statement where the store can (PostgreSQL, jobs without
        webhooks) and publishes the change; None when it did nothing (not supported, or the lease,
        chunk or job is not as required): the caller then takes the general path."""
        ...

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
        """``complete_one``, then, if it went through, a claim (``claim``: worker id, kinds, limit,
        lease in us) that sees it, in one round trip where the store can (PostgreSQL); publishes the
        change. None when the completion did nothing (the caller takes the general path for both);
        otherwise the completion and the claims as ``claim_one_statement`` gives them (None: the
        caller claims on the general path)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def dispose(self) -> None:
        """Drops idle connections, so the next call connects afresh (after the database moved)."""
        ...

    async def chunks_added(self, n: int) -> None:
        """Told after ``n`` chunks were inserted (the planner may need fresh statistics)."""
        ...

    def read(self, *, consistent: bool = True) -> AbstractAsyncContextManager[ReadTx]:
        """A read transaction. ``consistent=False`` allows running each statement on its own, for
        callers that run one statement only (it saves two round trips on PostgreSQL)."""
        ...

    async def write(self, body: Callable[[WriteTx], Awaitable[T]]) -> T:
        """Runs ``body`` in one write transaction and commits; publishes the changes after the
        commit. ``body`` may be run more than once (a deadlock or serialization failure rolls
        back and runs it again), so it must not act outside the transaction."""
        ...


class RequestIdTaken(Exception):
    """A job with this request_id (for this owner) was inserted by a transaction that committed first."""


class JobsTx(Protocol):
    """The paths that are not hot, in one transaction (``Transactions.write``) or one snapshot
    (``Transactions.read``). Nothing is published before the transaction commits."""

    changes: Changes

    def changed(self, job_id: str, revision: int) -> None:
        """Records that the job changed to ``revision`` (watchers are woken after the commit)."""
        ...

    async def find_job_by_request(self, owner: str, request_id: str) -> Job | None: ...

    async def insert_job(self, job: Job, chunks: Sequence[Chunk], request_fingerprint: str = "") -> None:
        """Inserts a new job and its chunks, and the fingerprint of the request that made it (if it has a
        request_id); RequestIdTaken if its request_id is taken."""
        ...

    async def request_fingerprint(self, job_id: str) -> str | None:
        """The fingerprint stored with the job; None for jobs made without (or before fingerprints)."""
        ...

    async def get_job(self, job_id: str, owner: str | None, *, for_update: bool = False) -> Job | None: ...

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        """As ``ReadTx.jobs_artifacts``."""
        ...

    async def save_job(self, job: Job, outbox: Sequence[dict[str, Any]] = ()) -> None:
        """Writes the job (a new change_seq) and the webhook events of this save."""
        ...

    async def cancel_pending_chunks(self, job_id: str, revision: int, now: int) -> int:
        """Every PENDING chunk of the job to CANCELLED; returns how many."""
        ...

    async def reset_for_retry(
        self, job_id: str, revision: int, priority: int, attempts: int, chunk_id: str | None = None
    ) -> tuple[int, int, int]:
        """FAILED and CANCELLED chunks (only ``chunk_id``, if given) back to PENDING at ``priority``,
        each allowed ``attempts`` claims more than it has had (``attempt`` keeps counting); (failed
        moved, cancelled moved, their items done)."""
        ...

    async def get_chunk(self, job_id: str, chunk_id: str) -> Chunk | None:
        """One chunk of the job (without its artifacts)."""
        ...

    async def set_pending_priority(self, job_id: str, priority: int) -> None: ...

    async def delete_job(self, job_id: str, now: int) -> None:
        """Deletes the job, its chunks and artifacts, leaving a tombstone for the feed."""
        ...

    async def overdue_cancels(self, cancel_before: int) -> list[str]:
        """Jobs still CANCELLING whose cancel was asked before ``cancel_before``."""
        ...

    async def processing_chunks(self, job_id: str) -> list[Chunk]: ...

    async def expiry_candidates(
        self, state: JobState, after: tuple[int, str], before: int, limit: int
    ) -> list[ExpiryCandidate]:
        """Up to ``limit`` jobs in ``state`` with (update_time, id) after ``after`` and update_time
        before ``before``, in that order (the expiry sweep of jobs on the default ttl)."""
        ...

    async def own_ttl_expired(self, now: int, limit: int) -> list[ExpiryCandidate]:
        """Up to ``limit`` jobs with a ttl of their own (> 0) whose end_time + ttl is before ``now``."""
        ...

    async def delete_expired(self, job_ids: Sequence[str], now: int, retention: Retention) -> list[str]:
        """Deletes those of the jobs whose expire_time (under ``retention``) is still before ``now`` as
        ``delete_job`` does, tombstones included; returns their ids."""
        ...

    async def trim_tombstones(self, before: int, limit: int) -> int:
        """Deletes up to ``limit`` tombstones of jobs deleted before ``before`` and raises the feed's
        floor to the largest change_seq among them; returns how many."""
        ...

    async def feed_floor(self) -> int:
        """The largest change_seq of a trimmed tombstone, 0 if none: a WatchJobs cursor before it may
        have missed deletions."""
        ...

    async def save_chunks(self, chunks: Sequence[Chunk]) -> None: ...

    async def job_stats(self, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
        """Totals, then one row per kind."""
        ...

    async def change_horizon(self) -> int: ...

    async def changed_jobs(
        self, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
    ) -> tuple[list[FeedEntry], bool]:
        """Feed entries after ``after`` below ``horizon``; and whether changes beyond it exist."""
        ...


class KeysAndDeliveriesTx(Protocol):
    """API keys and the webhook outbox, in one transaction or snapshot."""

    changes: Changes

    async def active_keys(self) -> dict[str, KeyInfo]:
        """Keys not revoked, by the hash of the key."""
        ...

    async def events_secrets(self) -> dict[int, tuple[str, bool]]:
        """The secrets events tokens are verified with: id -> (secret, whether it signs new ones)."""
        ...

    async def ensure_events_secret(self, now: int) -> None:
        """Makes a signing secret for events tokens if there is none."""
        ...

    async def rotate_events_secret(self, now: int) -> int:
        """Retires the signing secret for a new one (the old one verifies until its tokens expire)."""
        ...

    async def deliveries_for_job(self, job_id: str, owner: str | None, limit: int) -> list[Delivery] | None:
        """The job's deliveries, newest first; None when there is no such job (of ``owner``'s)."""
        ...

    async def requeue_delivery(self, delivery_id: str, owner: str | None, now: int) -> Delivery | None:
        """Makes a delivery due at ``now``; None when there is no such delivery (of ``owner``'s)."""
        ...

    async def claim_due_deliveries(
        self, now: int, limit: int, hold_us: int
    ) -> list[tuple[Delivery, str | None]]:
        """Up to ``limit`` due deliveries with their owner's webhook secret, held for ``hold_us``."""
        ...

    async def record_deliveries(self, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Writes the outcome of each attempt: (delivery id, the columns to set)."""
        ...

    async def outbox_backlog(self, now: int) -> tuple[int, int | None]:
        """(deliveries pending, create time of the oldest one that is due)."""
        ...

    async def trim_deliveries(self, before: int, limit: int) -> int:
        """Deletes up to ``limit`` delivered or dead deliveries last tried before ``before``."""
        ...


class Transactions(Protocol):
    """Opens ``JobsTx`` units of work."""

    def read(self) -> AbstractAsyncContextManager[JobsTx]: ...

    def write(self) -> AbstractAsyncContextManager[JobsTx]: ...


class KeysAndDeliveries(Protocol):
    """Opens ``KeysAndDeliveriesTx`` units of work."""

    def read(self) -> AbstractAsyncContextManager[KeysAndDeliveriesTx]: ...

    def write(self) -> AbstractAsyncContextManager[KeysAndDeliveriesTx]: ...


class UsageStore(Protocol):
    """Calls per API key kept across restarts and summed over replicas, and the replicas' shared
    rate-limit buckets (``usage.SqlUsage``)."""

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        """Adds each key's counts to its stored totals: one statement for the whole batch (up to
        ``usage.FLUSH_ROWS`` keys), however many calls it counts."""
        ...

    async def usage(self) -> dict[str, KeyUsage]:
        """The stored totals by key name."""
        ...

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        """Takes ``want`` tokens, all or none, from the key's shared bucket (``rate`` a second, at
        most ``burst``; full when first seen), in one statement; when it grants none, the wait is
        until the bucket holds ``want``. PostgreSQL only."""
        ...


def chunk_job_id(chunk_id: str) -> str:
    """The job part of a chunk id (``<job id>-<index>``); "" for ids of another shape."""
    job_id, sep, index = chunk_id.rpartition("-")
    return job_id if sep and index.isdigit() else ""


class GeneralPathsOnly:
    """For stores where the general transaction path is as cheap as one statement: the
    one-statement operations decline, and callers take the general path."""

    async def claim_one_statement(
        self, worker_id: str, kinds: Sequence[str], limit: int, lease_us: int, now: int
    ) -> list[tuple[Job, Chunk]] | None:
        return None

    async def complete_one(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
    ) -> CompletedOne | None:
        return None

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
        return None


class TwoStepLocks:
    """``lock_leased`` as two reads, for stores where that costs no round trip (SQLite on the loop)
    or that have no one-statement form (the portable store)."""

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        raise NotImplementedError

    async def lock_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        raise NotImplementedError

    async def lock_leased(
        self, job_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> tuple[dict[str, Job], dict[str, Chunk]]:
        jobs = await self.lock_jobs(job_ids)
        return jobs, await self.lock_chunks([c for c in chunk_ids if chunk_job_id(c) in jobs])
