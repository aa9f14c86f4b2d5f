"""Every operation of the store, written once over a connection that only knows fetch and execute
(``drivers.Conn``), for both databases: ``SqlTx`` is one read snapshot or one write transaction.

Nothing here commits or decides: the services do, inside ``Store.write(body)``. Writes buffer the
artifacts and webhook events they add until the next ``save``, and record in ``changes`` what watchers
must hear of once the transaction commits; on PostgreSQL the other replicas hear of it by a NOTIFY sent
inside the transaction (``save`` folds it into its own statement; ``finish`` sends what is left).
"""

from __future__ import annotations

import asyncio
import json
import math
import operator
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jobpulse_server.store.statements as q
from jobpulse_server.domain.bulk import BulkAction, BulkOperation
from jobpulse_server.domain.changes import CHANNEL, Changes, encode
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import (
    AFTER_PER_CHUNK,
    Artifact,
    Attempt,
    AttemptOutcome,
    Chunk,
    ChunkState,
    Job,
    JobHead,
    JobState,
    Kind,
    current_attempt,
    fair_tie,
)
from jobpulse_server.domain.principal import KeyInfo
from jobpulse_server.domain.reports import FailureGroup, FeedEntry, StatsRow
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.domain.schedules import Schedule
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.domain.webhooks import DEAD, DELIVERED, PENDING, Delivery
from jobpulse_server.store.drivers import Conflict, Conn
from jobpulse_server.store.failure_counts import FailureCounts
from jobpulse_server.store.holds import Holds
from jobpulse_server.store.owners import Owners
from jobpulse_server.store.rows import (
    JOB_HEAD_SELECT,
    JOB_INDEXED,
    JOB_INDEXED_IN_ROW,
    artifact_from_row,
    attempt_row,
    chunk_from_row,
    chunk_saved,
    head_from_row,
    job_from_row,
    job_saved,
    kind_from_row,
)
from jobpulse_server.store.waiting import PROMOTE_LIMIT, Waiting

# No jobs held (SqlTx.claim's default).
NO_JOBS: Mapping[str, Job] = MappingProxyType({})

_INDEXED_IN_ROW = operator.itemgetter(*JOB_INDEXED_IN_ROW)
_INDEXED_IN_SAVED = operator.itemgetter(*JOB_INDEXED)

# New chunks per INSERT: a 100,000-chunk job is written in 20 statements.
_INSERT_BATCH = 5_000
# Rows a bulk batch turns into Jobs at once before it lets the event loop serve others.
_CONVERT_AT_ONCE = 100
# A retired events-token secret is deleted once every token it can have signed has expired: tokens live
# at most a day, and a replica that has not yet seen the rotation may still sign with it for a few
# seconds; two days cover both with room.
RETIRED_SECRET_KEPT_US = 2 * 86_400 * 1_000_000


class UniqueKeyTaken(Exception):
    """A live job of the same owner and kind holds the unique key (ux_jobs_unique_key)."""


class RequestIdTaken(Exception):
    """A job with this request_id (for this owner) was inserted by a transaction that committed first."""


# The chunks whose artifacts are read with them: completed ones, and running ones (their previews).
_WITH_ARTIFACTS = (ChunkState.COMPLETED, ChunkState.PROCESSING)


def _columns(
    rows: Sequence[Mapping[str, Any]], columns: Iterable[str], prefix: str = ""
) -> dict[str, list[Any]]:
    """Rows as one list per column, named as the column after ``prefix`` (PostgreSQL's arrays for
    ``unnest``)."""
    return {prefix + c: [r[c] for r in rows] for c in columns}


def artifacts_by_job(rows: Iterable[Sequence[Any]]) -> dict[str, list[Artifact]]:
    """Rows of ARTIFACT_COLUMNS then job_id, grouped by job."""
    out: dict[str, list[Artifact]] = {}
    for r in rows:
        out.setdefault(r[6], []).append(artifact_from_row(r))
    return out


class SqlTx:
    """The operations of one transaction on ``conn`` (see the module's docstring)."""

    def __init__(
        self,
        conn: Conn,
        dialect: q.Dialect,
        changes: Changes,
        replica: str = "",
        waiting: Waiting | None = None,
        *,
        fair: bool = True,
        owners: Owners | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.conn = conn
        # Claims rotate across owners (domain/model.py fair_order); False: priority, then the oldest job.
        self.fair = fair
        # PostgreSQL: whether several owners have pending chunks, as last seen (store/owners.py).
        self.owners = owners
        # PostgreSQL: whether a PER_CHUNK dependant holds chunks, as last seen (store/holds.py).
        self.holds = holds
        self.d = dialect
        self.changes = changes
        self.replica = replica
        # The store's record of chunks waiting out a retry backoff (write transactions only).
        self.waiting = waiting
        self._artifacts: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        self._notified: tuple[Any, ...] | None = None
        # What this transaction's NOTIFYs have carried so far (``_unsent``).
        self._sent_jobs: dict[str, int] = {}
        self._sent_deleted: set[str] = set()
        # Jobs' saved values before this transaction changed them (``snapshot``), by id.
        self._before: dict[str, Mapping[str, Any]] = {}
        # SQLite: job id -> the values its row holds now in the columns an index holds (JOB_INDEXED), as
        # read or written in this transaction, so that ``save`` sets only those that changed. (SQLite has
        # one writer: nothing else changes the row while this transaction holds it.)
        self._indexed: dict[str, tuple[Any, ...]] = {}
        # SummarizeFailures' counts this transaction changed, written by ``finish``.
        self._failures = FailureCounts()

    def _job(self, row: Sequence[Any]) -> Job:
        if not self.d.arrays:
            self._indexed[row[0]] = _INDEXED_IN_ROW(row)
        return job_from_row(row)

    # --- jobs -------------------------------------------------------------------------------------

    def changed(self, job_id: str, revision: int) -> None:
        """Records that the job changed to ``revision`` (watchers are woken after the commit)."""
        self.changes.jobs[job_id] = max(revision, self.changes.jobs.get(job_id, 0))

    async def get_job(self, job_id: str, owner: str | None, *, for_update: bool = False) -> Job | None:
        if for_update and self.d.for_update:
            sql = (q.GET_JOB if owner is None else q.GET_OWNED_JOB) + self.d.for_update
        else:
            sql = q.GET_JOB if owner is None else q.GET_OWNED_JOB
        row = await self.conn.fetchrow(sql, {"id": job_id, "owner": owner})
        return self._job(row) if row else None

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]:
        ids = sorted(set(job_ids))
        params = {**self.d.values("id", ids), "owner": owner}
        rows = await self.conn.fetch(q.get_jobs(self.d, len(ids), owner is not None), params)
        return {j.id: j for j in map(self._job, rows)}

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        """Locks and reads jobs, in id order; with ``skip_locked`` leaves out those another transaction
        holds instead of waiting for them. (SQLite's writer holds every row already.)"""
        if not job_ids:
            return {}
        ids = sorted(set(job_ids))
        lock = self.d.skip_locked if skip_locked else self.d.for_update
        rows = await self.conn.fetch(q.get_jobs(self.d, len(ids), False, lock=lock), self.d.values("id", ids))
        return {j.id: j for j in map(self._job, rows)}

    async def find_job_by_request(self, owner: str, request_id: str) -> Job | None:
        row = await self.conn.fetchrow(q.FIND_JOB_BY_REQUEST, {"owner": owner, "request_id": request_id})
        return self._job(row) if row else None

    async def live_job_with_key(self, owner: str, kind: str, unique_key: str) -> str | None:
        """The id of the job of this owner and kind holding the unique key that has not ended, if any."""
        value = await self.conn.fetchval(
            q.LIVE_JOB_WITH_KEY, {"owner": owner, "kind": kind, "unique_key": unique_key}
        )
        return str(value) if value is not None else None

    # --- bulk operations over a filter (services/bulk.py) ---------------------------------------------

    async def insert_bulk(self, op: BulkOperation) -> None:
        await self.conn.execute(q.INSERT_BULK, _bulk_row(op))

    async def get_bulk(self, op_id: str, *, lock: bool = False) -> BulkOperation | None:
        """The operation; ``lock``: its row locked until this transaction ends (PostgreSQL), so the
        batches of one operation run one after another whichever replicas run them."""
        sql = q.GET_BULK + (self.d.for_update if lock else "")
        row = await self.conn.fetchrow(sql, {"id": op_id})
        return _bulk_from_row(row) if row is not None else None

    async def save_bulk(self, op: BulkOperation) -> None:
        await self.conn.execute(
            q.SAVE_BULK,
            {"id": op.id, "done": op.done, "skipped": op.skipped, "cursor": op.cursor,
             "update_time": op.update_time, "end_time": op.end_time, "cancelled": op.cancelled},
        )  # fmt: skip

    async def delete_bulk(self, op_id: str) -> None:
        await self.conn.execute(q.DELETE_BULK, {"id": op_id})

    async def list_bulk(
        self, after: str, limit: int, owner: str | None, done: bool | None = None
    ) -> list[BulkOperation]:
        """Up to ``limit`` operations, newest first, after the id ``after`` ('' from the newest): only
        ``owner``'s unless None; only those ended (``done``) or running (not ``done``) unless None."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        if owner is not None:
            params["owner"] = owner
        rows = await self.conn.fetch(q.list_bulk(bool(after), owner is not None, done), params)
        return [_bulk_from_row(row) for row in rows]

    async def running_bulk(self) -> list[str]:
        """The ids of the operations not finished, oldest first."""
        return [str(r[0]) for r in await self.conn.fetch(q.RUNNING_BULK)]

    async def bulk_batch(self, f: JobFilter, cursor: str, limit: int) -> list[Job]:
        """The next ``limit`` jobs matching ``f`` after the id ``cursor``, in id order, locked until the
        transaction ends (a job locked meanwhile by another is waited for, then read as it is)."""
        sql, params = q.bulk_batch(self.d, f, cursor, limit)
        rows = await self.conn.fetch(sql, params)
        batch: list[Job] = []
        for start in range(0, len(rows), _CONVERT_AT_ONCE):
            if start:  # the event loop serves calls between two slices (each well under a millisecond)
                await asyncio.sleep(0)
            batch += [self._job(row) for row in rows[start : start + _CONVERT_AT_ONCE]]
        return batch

    async def count_all_jobs(self, f: JobFilter) -> int:
        """The exact number of jobs matching ``f``."""
        sql, params = q.count_all_jobs(self.d, f)
        return int(await self.conn.fetchval(sql, params))

    async def request_fingerprint(self, job_id: str) -> str | None:
        """The fingerprint stored with the job; None for jobs made without (or before fingerprints)."""
        value = await self.conn.fetchval(q.GET_FINGERPRINT, {"job_id": job_id})
        return str(value) if value is not None else None

    async def insert_job(self, job: Job, chunks: Sequence[Chunk], request_fingerprint: str = "") -> None:
        """Inserts a new job, its chunks and the fingerprint of the request that made it (if it has a
        request_id); RequestIdTaken if its request_id is taken."""
        values = job_saved(job)
        try:
            await self.conn.execute(
                q.insert_job(self.d),
                {
                    **values,
                    "ttl": job.ttl,
                    "trace_parent": job.trace_parent,
                    "schedule_time": job.schedule_time,
                    "paused": job.paused,
                    "max_running_chunks": job.max_running_chunks,
                    "after_ids": json.dumps(job.after) if job.after else None,
                    "after_mode": job.after_mode,
                    "finalize_kind": job.finalize_kind,
                    "n_held": job.n_held,
                    "pipeline": job.pipeline,
                    "max_failed_chunks": job.max_failed_chunks,
                    "attempt_timeout": job.attempt_timeout,
                    "deadline_time": job.deadline_time,
                    "unique_key": job.unique_key or None,
                },
            )
        except Conflict as exc:
            if job.unique_key and "unique_key" in str(exc):
                raise UniqueKeyTaken(job.unique_key) from exc
            if job.request_id:
                raise RequestIdTaken(job.request_id) from exc
            raise
        if not self.d.arrays:
            self._indexed[job.id] = _INDEXED_IN_SAVED(values)
        if self.owners is not None and job.summary.pending:
            self.owners.saw(job.owner)
        rows = [
            {"id": c.id, "job_id": c.job_id, "idx": c.index, "state": int(c.state),
             "item_start": c.item_start, "item_count": c.item_count, "items_done": c.items_done,
             "attempt": c.attempt, "max_attempts": c.max_attempts, "worker_id": c.worker_id,
             "external_task_id": c.external_task_id, "error_reason": c.error_reason,
             "error_message": c.error_message, "lease_token": c.lease_token,
             "lease_expire_time": c.lease_expire_time, "lease_duration": c.lease_duration,
             "next_attempt_time": c.next_attempt_time, "revision": c.revision, "priority": c.priority,
             "kind": c.kind, "start_time": c.start_time, "end_time": c.end_time, "finalize": c.finalize,
             "error_details": c.error_details, "stage": c.stage, "message": c.message,
             "retry_at": c.next_attempt_time if c.state == ChunkState.PENDING else None}
            for c in chunks
        ]  # fmt: skip
        sql = q.insert_chunks(self.d)
        for start in range(0, len(rows), _INSERT_BATCH):
            batch = rows[start : start + _INSERT_BATCH]
            if self.d.arrays:
                await self.conn.execute(sql, _columns(batch, q.CHUNK_INSERTED))
            else:
                await self.conn.executemany(sql, batch)
        if request_fingerprint:
            await self.conn.execute(
                q.INSERT_FINGERPRINT, {"job_id": job.id, "fingerprint": request_fingerprint}
            )
        if self.waiting is not None:
            for c in chunks:  # waiting until then (a job scheduled to start later), as in save
                if c.next_attempt_time is not None and c.state == ChunkState.PENDING:
                    self.waiting.note(c.next_attempt_time)
        self.changed(job.id, job.revision)

    async def delete_job(self, job_id: str, now: int) -> None:
        """Deletes the job, its chunks and artifacts, leaving a tombstone for the feed."""
        await self.delete_jobs([job_id], now)

    async def delete_jobs(self, ids: Sequence[str], now: int) -> None:
        """``delete_job`` of many jobs, in one statement of each kind (PurgeJobs' batches, retention)."""
        if not ids:
            return
        params = {**self.d.values("id", ids), "now": now}
        self._failures.moved(await self.conn.fetch(q.job_failure_rows(self.d, len(ids)), params), [])
        for sql in q.delete_jobs(self.d, len(ids)):
            await self.conn.execute(sql, params)
        self.changes.deleted.update(ids)

    async def overdue_cancels(self, cancel_before: int, limit: int = 100) -> list[str]:
        """Jobs with chunks still running whose cancel was asked before ``cancel_before`` (CANCELLING, or
        failed at once)."""
        rows = await self.conn.fetch(q.OVERDUE_CANCELS, {"before": cancel_before, "limit": limit})
        return [r[0] for r in rows]

    async def past_deadline(self, now: int, limit: int = 100) -> list[str]:
        """Jobs not ended, with no cancel asked, whose deadline_time is ``now`` or earlier."""
        rows = await self.conn.fetch(q.PAST_DEADLINE, {"now": now, "limit": limit})
        return [r[0] for r in rows]

    # --- chunks -----------------------------------------------------------------------------------

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
        kind: str = "",
        error_reasons: Sequence[str] = (),
    ) -> list[Chunk]:
        """A job's chunks in index order, COMPLETED ones with their artifacts."""
        sql, params = q.chunk_list(
            self.d, job_id, after_index, limit, states, after_revision, kind, tuple(error_reasons)
        )
        found = list(map(chunk_from_row, await self.conn.fetch(sql, params)))
        await self._artifacts_of(job_id, found)
        return found

    async def _artifacts_of(self, job_id: str, chunks: list[Chunk]) -> None:
        """Reads the artifacts of the COMPLETED and PROCESSING ones of ``chunks`` (of one job, in index order
        either way): a running chunk's are the previews its progress reported."""
        done = [c for c in chunks if c.state in _WITH_ARTIFACTS]
        if not done:
            return
        first, last = min(done[0].index, done[-1].index), max(done[0].index, done[-1].index)
        rows = await self.conn.fetch(q.ARTIFACTS_BETWEEN, {"job_id": job_id, "first": first, "last": last})
        by_index: dict[int, list[Artifact]] = {}
        for r in rows:
            by_index.setdefault(r[0], []).append(artifact_from_row(r))
        for c in done:
            c.artifacts = by_index.get(c.index, [])

    async def count_chunks(
        self, job_id: str, states: Iterable[ChunkState], kind: str, error_reasons: Sequence[str]
    ) -> int:
        """How many of the job's chunks are of ``states`` (any when empty), ``kind`` and ``error_reasons``."""
        sql, params = q.chunk_count(self.d, job_id, states, kind, tuple(error_reasons))
        return int(await self.conn.fetchval(sql, params) or 0)

    async def list_chunks_across(
        self,
        owner: str | None,
        states: Iterable[ChunkState],
        kind: str,
        error_reasons: Sequence[str],
        after: tuple[str, int] | None,
        limit: int,
    ) -> list[Chunk]:
        """ListJobChunks over "-": chunks of every job (``owner``'s only, unless None), newest job first
        and each job's from its last, after (job id, index) ``after``; COMPLETED ones with their artifacts."""
        sql, params = q.chunks_across(self.d, owner, states, kind, tuple(error_reasons), after, limit)
        found = list(map(chunk_from_row, await self.conn.fetch(sql, params)))
        by_job: dict[str, list[Chunk]] = {}
        for c in found:
            by_job.setdefault(c.job_id, []).append(c)
        for job_id, chunks in by_job.items():
            await self._artifacts_of(job_id, chunks)
        return found

    async def failure_groups(
        self,
        owner: str | None,
        kind: str,
        created_after: int | None,
        created_before: int | None,
        limit: int,
    ) -> list[FailureGroup]:
        """SummarizeFailures: the chunks FAILED for good by error reason, the reason failed most lately
        first, with the message of its last failure."""
        sql, params = q.failure_groups(owner, kind, created_after, created_before, limit)
        last_sql, last_params = q.last_failure(owner, kind, created_after, created_before)
        groups = []
        for reason, n, jobs, last in await self.conn.fetch(sql, params):
            sample = await self.conn.fetchval(last_sql, {**last_params, "reason": reason, "last": last})
            groups.append(FailureGroup(reason, int(n), int(jobs), last, sample or ""))
        return groups

    async def list_attempts(
        self, job_id: str, index: int | None, after: tuple[int, int], limit: int
    ) -> list[Attempt]:
        """Up to ``limit`` attempts of the job's chunks (of chunk ``index`` only, unless None) after
        (chunk index, attempt) ``after``, in that order: the ended ones not completed (chunk_attempts),
        and each running or completed chunk's current or last one, which the chunk row is."""
        one = index is not None
        params = {
            "job_id": job_id,
            "one": one,
            "index": index if one else 0,
            "after_index": after[0],
            "after_attempt": after[1],
            "limit": limit,
        }
        rows = await self.conn.fetch(q.LIST_ATTEMPTS, params)
        found = [
            Attempt(r[0], r[1], r[2], r[3], r[4], r[5], AttemptOutcome(r[6]), r[7], r[8], r[9], r[10])
            for r in rows
        ]
        current = await self.conn.fetch(q.CURRENT_ATTEMPTS, params)
        found += [current_attempt(chunk_from_row(r)) for r in current]
        found.sort(key=lambda a: (a.chunk_index, a.attempt))
        return found[:limit]

    async def get_chunk(self, job_id: str, chunk_id: str) -> Chunk | None:
        """One chunk of the job (without its artifacts)."""
        row = await self.conn.fetchrow(q.GET_CHUNK, {"id": chunk_id})
        chunk = chunk_from_row(row) if row else None
        return chunk if chunk is not None and chunk.job_id == job_id else None

    async def processing_chunks(self, job_id: str) -> list[Chunk]:
        return await self.list_chunks(job_id, states=[ChunkState.PROCESSING])

    async def chunk_states(self, job_id: str) -> str:
        """Every chunk's state of the job in index order, one digit each (ChunkState's numbers)."""
        if self.d.postgres:
            return str(await self.conn.fetchval(q.chunk_states(self.d), {"job_id": job_id}) or "")
        return "".join(str(r[0]) for r in await self.conn.fetch(q.chunk_states(self.d), {"job_id": job_id}))

    async def claim(
        self,
        kinds: Sequence[str],
        now: int,
        limit: int,
        *,
        skip_locked: bool,
        held: Mapping[str, Job] = NO_JOBS,
    ) -> tuple[dict[str, Job], list[Chunk]]:
        """The first ``limit`` chunks ready to run (claim order) and their jobs, locked. On PostgreSQL the
        jobs of the first ready chunks are locked first, then those jobs' ready chunks are taken: jobs
        before chunks is the lock order of every writer that waits; with ``skip_locked``, jobs another
        transaction holds are left out instead of waited for. SQLite has one writer at a time: the
        chunks come straight off the claim index (restricting them to jobs found first made SQLite sort
        every pending chunk of those jobs, 68% of the server's time at 20,000 pending chunks). ``held``: jobs
        this transaction has read already (with its changes), which SQLite does not read again (left out of
        the jobs returned; PostgreSQL locks every job it claims from, so it reads them all).

        A job's own controls (``Job.claimable``: paused, max_running_chunks) hold on both: PostgreSQL's
        statement judges each candidate job as it locks it; SQLite takes the first chunks as before and,
        only when one of their jobs has a control, takes them again within those (``_within_controls``).

        Fair share (``self.fair``; domain/model.py fair_order): PostgreSQL's statement orders its rows by
        turn; SQLite keeps the first chunks when they and every job with pending chunks have one owner,
        and otherwise deals the owners' chunks by turn (``_fair``)."""
        if self.d.postgres:
            rooms = await self._capped_rooms(kinds, holding=skip_locked)
            fair = self.fair and await self._several_owners()
            claim = q.pg_claim(len(kinds), skip_locked=skip_locked, fair=fair)
            full = [k for k, left in rooms.items() if left <= 0]
            params: dict[str, Any] = {"kinds": list(kinds), "limit": limit, "full": full}
            if fair:  # fair share counts the running chunks of the jobs held as they are now
                params.update(held_ids=list(held), held_n=[j.summary.processing for j in held.values()])
                params["spin"] = str(now)  # the ties' (domain/model.py fair_tie)
            row = await self.conn.fetchrow(claim, params)
            jobs, chunks = row if row else (None, None)
            picked = list(map(chunk_from_row, chunks or ()))
            if rooms:  # no more of a capped kind's chunks than its room
                room = _Room(lambda job_id: None, rooms)
                picked = [c for c in picked if not room.full(c) and room.take(c)]
            return {j.id: j for j in map(job_from_row, jobs or ())}, picked
        waiting = self.waiting
        if waiting is not None and waiting.is_due(now):
            # One writer: the due retries join the claim order in this transaction (store/waiting.py).
            waiting.begin(now)
            promoted = await self.conn.execute(q.SQLITE_PROMOTE, {"now": now, "limit": PROMOTE_LIMIT})
            waiting.settle(promoted, await self.conn.fetchval(q.NEXT_RETRY), now)
        params = {**q.ready_params(self.d, kinds), "limit": limit}
        picked = list(map(chunk_from_row, await self.conn.fetch(q.pick_ready(self.d, len(kinds)), params)))
        found = await self._jobs_of(picked, held, {})
        room = _Room(
            lambda job_id: (held.get(job_id) or found[job_id]).claimable(), await self._kind_rooms(kinds)
        )
        if self.fair and picked and await self._other_owners(picked, held, found):
            # The chunks fair_order chose, returned as every claim returns them: in claim order, their
            # jobs in id order (the order the jobs are saved in, and so their change_seq).
            picked = sorted(await self._fair(kinds, now, limit, held, found, room), key=_claim_order)
            return {j: found[j] for j in sorted({c.job_id for c in picked}) if j in found}, picked
        if any(room.limits(c) for c in picked):
            picked = await self._within_controls(kinds, limit, picked, found, held, room)
            found = {c.job_id: found[c.job_id] for c in picked if c.job_id in found}
        return found, picked

    async def _kind_rooms(self, kinds: Sequence[str]) -> dict[str, int]:
        """SQLite (one writer): how many more chunks a claim may take of each kind with a control in
        force (``Kind.claimable``: 0 while paused; what max_running_chunks leaves), among ``kinds`` (empty:
        any); kinds without a control are left out."""
        controls = await self.kind_controls(kinds)
        if not controls:
            return {}
        capped = sorted(k for k, c in controls.items() if c.max_running_chunks and not c.paused)
        running = await self._running_of_kinds(capped) if capped else {}
        return {k: c.claimable(running.get(k, 0)) or 0 for k, c in controls.items()}

    async def _running_of_kinds(self, kinds: Sequence[str]) -> dict[str, int]:
        """The chunks of each of ``kinds`` PROCESSING now, counted from the running chunks (a fresh read:
        on PostgreSQL after the kinds' rows are locked)."""
        rows = await self.conn.fetch(q.running_of_kinds(self.d, len(kinds)), self.d.values("kind", kinds))
        return {r[0]: int(r[1]) for r in rows}

    async def _capped_rooms(self, kinds: Sequence[str], *, holding: bool) -> dict[str, int]:
        """PostgreSQL: the room of each kind with a max_running_chunks (among ``kinds``; empty: any), its
        row locked first so that claims of the kind on every replica count its running chunks one after
        the other, then those counted in a statement of their own (its snapshot after the lock). A
        transaction ``holding`` jobs already (a completion's next claim) takes none of a capped kind
        (room 0) rather than lock a kind after jobs; its caller claims again on its own."""
        rows = await self.conn.fetch(q.capped_kinds(len(kinds), lock=not holding), {"kinds": list(kinds)})
        caps = {r[0]: int(r[1]) for r in rows}
        if not caps or holding:
            return dict.fromkeys(caps, 0)
        running = await self._running_of_kinds(sorted(caps))
        return {k: cap - running.get(k, 0) for k, cap in caps.items()}

    async def _jobs_of(
        self, chunks: Sequence[Chunk], held: Mapping[str, Job], found: dict[str, Job]
    ) -> dict[str, Job]:
        """``found`` with the jobs of ``chunks`` that neither it nor ``held`` has, read."""
        wanted = sorted({c.job_id for c in chunks if c.job_id not in held and c.job_id not in found})
        if wanted:
            found.update(await self.get_jobs(wanted, None))
        return found

    async def _within_controls(
        self,
        kinds: Sequence[str],
        limit: int,
        first: list[Chunk],
        found: dict[str, Job],
        held: Mapping[str, Job],
        room: _Room,
    ) -> list[Chunk]:
        """SQLite: the first ``limit`` ready chunks in claim order that ``room`` allows (their jobs' and
        kinds' controls), from ``first`` (the first ``limit`` ready ones) on. Past a job with no room the
        read seeks to the next job (statements.ready_after), so a paused job's pending chunks are passed
        over by one index seek, not read one by one. ``found`` gets the jobs read."""
        taken: list[Chunk] = []
        rows = first
        while True:
            for chunk in rows:
                if not room.full(chunk):
                    room.take(chunk)
                    taken.append(chunk)
                    if len(taken) == limit:
                        return taken
            if len(rows) < limit:  # every ready chunk has been looked at
                return taken
            last = rows[-1]
            rows = await self._ready_after(kinds, last, limit, next_job=room.full(last))
            await self._jobs_of(rows, held, found)

    async def _several_owners(self) -> bool:
        """PostgreSQL: whether several owners have pending chunks, looked up when the last look is stale
        (store/owners.py); True when this transaction has no record to go by."""
        owners = self.owners
        if owners is None:
            return True
        if owners.stale():
            sole, several = await self.conn.fetchrow(q.OWNERS_NOW) or (None, False)
            owners.settle(sole, bool(several))
        return owners.several

    async def _other_owners(
        self, picked: Sequence[Chunk], held: Mapping[str, Job], found: Mapping[str, Job]
    ) -> bool:
        """SQLite: whether the chunks ``picked`` are of several owners, or another owner has pending
        chunks: whether fair share may order this claim otherwise than the claim order."""
        owners = {(held.get(c.job_id) or found[c.job_id]).owner for c in picked}
        if len(owners) > 1:
            return True
        return bool(await self.conn.fetchval(q.OTHER_OWNER, {"o": owners.pop()}))

    async def _fair(
        self,
        kinds: Sequence[str],
        now: int,
        limit: int,
        held: Mapping[str, Job],
        found: dict[str, Job],
        room: _Room,
    ) -> list[Chunk]:
        """SQLite: the first ``limit`` chunks of fair_order. Each owner's chunks that may be claimed come
        in claim order, a page at a time (statements.owner_ready), within ``room`` (their jobs' and
        kinds' controls); the owners' next chunks are dealt by turn, lowest first, ties by fair_tie of
        the claim's time ``now``.
        ``found`` gets the jobs read. Costs a probe per owner with pending chunks, and a page of each."""
        # Each owner's running chunks; the jobs this transaction changed already count as they are now.
        by_job = {r[0]: (r[1], int(r[2])) for r in await self.conn.fetch(q.SQLITE_RUNNING_BY_JOB)}
        by_job.update((j.id, (j.owner, j.summary.processing)) for j in held.values())
        running: dict[str, int] = {}
        for owner, n in by_job.values():
            running[owner] = running.get(owner, 0) + n
        owners: list[str] = []
        owner = await self.conn.fetchval(q.FIRST_OWNER)
        while owner is not None:
            owners.append(owner)
            owner = await self.conn.fetchval(q.NEXT_OWNER, {"o": owner})
        rows = {o: await self._owner_page(kinds, o, None, limit, next_job=False) for o in owners}
        ties = {o: fair_tie(o, now) for o in owners}
        more = {o: len(r) == limit for o, r in rows.items()}
        turns: dict[tuple[int, str], int] = {}
        taken: list[Chunk] = []
        while len(taken) < limit:
            heads = [o for o in owners if rows[o]]
            if not heads:
                return taken

            def key(o: str) -> tuple[int, int, bytes, str, int]:
                c = rows[o][0]
                turn = turns.get((c.priority, o), running.get(o, 0)) + 1
                return -c.priority, turn, ties[o], c.job_id, c.index

            owner = min(heads, key=key)
            chunk = rows[owner].pop(0)
            await self._jobs_of([chunk], held, found)
            full = room.full(chunk)
            if full:  # no room: the rest of this job's chunks are passed over
                rows[owner] = [c for c in rows[owner] if c.job_id != chunk.job_id]
            else:
                room.take(chunk)
                taken.append(chunk)
                turns[chunk.priority, owner] = turns.get((chunk.priority, owner), running.get(owner, 0)) + 1
            if not rows[owner] and more[owner]:
                rows[owner] = await self._owner_page(kinds, owner, chunk, limit, next_job=full)
                more[owner] = len(rows[owner]) == limit
        return taken

    async def _owner_page(
        self, kinds: Sequence[str], owner: str, last: Chunk | None, limit: int, *, next_job: bool
    ) -> list[Chunk]:
        """SQLite: up to ``limit`` of ``owner``'s ready chunks of jobs that may be claimed, in claim order,
        from the start or after ``last`` (``next_job``: after its job), range by range as
        ``_ready_after``; fewer only when none is left."""
        params: dict[str, Any] = {**q.ready_params(self.d, kinds), "o": owner}
        ranges: tuple[str, ...] = (q.OWNER_FROM_START,)
        if last is not None:
            params.update(p=last.priority, j=last.job_id, i=last.index)
            after_job = (q.OWNER_AFTER_JOB, q.OWNER_AFTER_PRIORITY)
            ranges = after_job if next_job else (q.OWNER_AFTER_INDEX, *after_job)
        out: list[Chunk] = []
        for after in ranges:
            sql = q.owner_ready(self.d, len(kinds), after)
            out += map(chunk_from_row, await self.conn.fetch(sql, {**params, "limit": limit - len(out)}))
            if len(out) == limit:
                break
        return out

    async def _ready_after(
        self, kinds: Sequence[str], last: Chunk, limit: int, *, next_job: bool
    ) -> list[Chunk]:
        """SQLite: up to ``limit`` ready chunks after ``last`` in claim order (``next_job``: after its job),
        read range by range (statements.ready_after); fewer only when none is left."""
        params = {**q.ready_params(self.d, kinds), "p": last.priority, "j": last.job_id, "i": last.index}
        ranges = (
            (q.AFTER_JOB, q.AFTER_PRIORITY) if next_job else (q.AFTER_INDEX, q.AFTER_JOB, q.AFTER_PRIORITY)
        )
        out: list[Chunk] = []
        for after in ranges:
            sql = q.ready_after(self.d, len(kinds), after)
            out += map(chunk_from_row, await self.conn.fetch(sql, {**params, "limit": limit - len(out)}))
            if len(out) == limit:
                break
        return out

    async def lock_leased(
        self, job_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> tuple[dict[str, Job], dict[str, Chunk]]:
        """Locks and reads the jobs, then those of the chunks that belong to them (one round trip on
        PostgreSQL)."""
        if self.d.postgres:
            ids = {"job_ids": sorted(set(job_ids)), "chunk_ids": sorted(set(chunk_ids))}
            row = await self.conn.fetchrow(q.PG_LOCK_LEASED, ids)
            jobs, chunks = row if row else (None, None)
            return (
                {j.id: j for j in map(job_from_row, jobs or ())},
                {c.id: c for c in map(chunk_from_row, chunks or ())},
            )
        found = await self.lock_jobs(job_ids)
        wanted = sorted({c for c in chunk_ids if chunk_job_id(c) in found})
        rows = (
            await self.conn.fetch(q.get_chunks(self.d, len(wanted)), self.d.values("id", wanted))
            if wanted
            else []
        )
        return found, {c.id: c for c in map(chunk_from_row, rows)}

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]:
        rows = await self.conn.fetch(q.expired_leases(self.d), {"now": now, "limit": limit})
        return list(map(chunk_from_row, rows))

    async def cancel_pending_chunks(self, job_id: str, revision: int, now: int) -> int:
        """Every PENDING chunk of the job to CANCELLED; returns how many."""
        params = {
            "cancelled": int(ChunkState.CANCELLED),
            "revision": revision,
            "now": now,
            "job_id": job_id,
            "pending": int(ChunkState.PENDING),
        }
        return await self.conn.execute(q.CANCEL_PENDING_CHUNKS, params)

    async def cancel_pending_chunks_many(self, revisions: Mapping[str, int], now: int) -> dict[str, int]:
        """``cancel_pending_chunks`` of many jobs (job id -> its new revision); how many moved of each."""
        if not self.d.arrays:
            return {
                job_id: await self.cancel_pending_chunks(job_id, revision, now)
                for job_id, revision in revisions.items()
            }
        params = {
            "cancelled": int(ChunkState.CANCELLED),
            "pending": int(ChunkState.PENDING),
            "now": now,
            "job_ids": list(revisions),
            "revs": list(revisions.values()),
        }
        moved = dict.fromkeys(revisions, 0)
        for row in await self.conn.fetch(q.PG_CANCEL_PENDING_MANY, params):
            moved[row[0]] += 1
        return moved

    async def reset_for_retry(
        self, job_id: str, revision: int, priority: int, attempts: int, chunk_id: str | None = None
    ) -> tuple[int, int, int]:
        """FAILED and CANCELLED chunks (only ``chunk_id``, if given) back to PENDING at ``priority``, each
        allowed ``attempts`` claims more than it has had (``attempt`` keeps counting); (failed moved,
        cancelled moved, their items done)."""
        count, update = q.retryable_chunks(self.d, chunk_id is not None)
        params = {
            **self.d.values("state", [int(ChunkState.FAILED), int(ChunkState.CANCELLED)]),
            "job_id": job_id,
            "chunk_id": chunk_id,
            "revision": revision,
            "priority": priority,
            "attempts": attempts,
        }
        counts = {int(r[0]): (int(r[1]), int(r[2])) for r in await self.conn.fetch(count, params)}
        key = None
        if chunk_id is not None:
            key = await self.conn.fetchrow(q.FAILED_CHUNK_KEY, {"chunk_id": chunk_id})
        await self.conn.execute(update, params)
        # The job_failures rows of what moved: gone (RetryJob), or counted again (RetryChunk).
        if chunk_id is None:
            before = await self.conn.fetch(q.job_failure_rows(self.d, 1), self.d.values("id", [job_id]))
            await self.conn.execute(q.FORGET_JOB_FAILURES, {"job_id": job_id})
            self._failures.moved(before, [])
        elif key is not None:
            row = {"job_id": job_id, "kind": key[0], "error_reason": key[1]}
            before = await self.conn.fetch(q.CHUNK_FAILURE_ROW, row)
            await self.conn.execute(q.FORGET_CHUNK_FAILURES, row)
            await self.conn.execute(q.RECOUNT_CHUNK_FAILURES, row)
            self._failures.moved(before, await self.conn.fetch(q.CHUNK_FAILURE_ROW, row))
        return _moved_for_retry(counts)

    async def reset_for_retry_many(
        self, jobs: Sequence[tuple[str, int, int, int]]
    ) -> dict[str, tuple[int, int, int]]:
        """``reset_for_retry`` of whole jobs (job id, new revision, priority, attempts each), in one
        statement of each kind on PostgreSQL (RetryJobs' batches): (failed moved, cancelled moved, their
        items done) of each job."""
        if not self.d.arrays or len(jobs) < 2:
            return {job[0]: await self.reset_for_retry(*job) for job in jobs}
        ids = [job[0] for job in jobs]
        counts: dict[str, dict[int, tuple[int, int]]] = {job_id: {} for job_id in ids}
        for job_id, state, n, items in await self.conn.fetch(q.PG_RETRYABLE_MANY, {"job_ids": ids}):
            counts[job_id][int(state)] = (int(n), int(items))
        params = {
            "job_ids": ids,
            "revs": [job[1] for job in jobs],
            "priorities": [job[2] for job in jobs],
            "attempts": [job[3] for job in jobs],
        }
        await self.conn.execute(q.PG_RESET_FOR_RETRY_MANY, params)
        named = self.d.values("id", ids)
        before = await self.conn.fetch(q.job_failure_rows(self.d, len(ids)), named)
        await self.conn.execute(q.forget_failures_of(self.d, len(ids)), named)
        self._failures.moved(before, [])
        return {job_id: _moved_for_retry(of) for job_id, of in counts.items()}

    # --- pipelines: dependencies and the finalize step (services/pipeline.py) ----------------------

    async def link_dependencies(self, job_id: str, after: Sequence[str], mode: int) -> None:
        """Records ``job_id``'s dependencies and marks each as a pipeline job (its completions then take
        the transaction path, which frees and cancels dependants)."""
        for after_id in after:
            await self.conn.execute(q.LINK_DEPENDENCY, {"after_id": after_id, "job_id": job_id, "mode": mode})
            await self.conn.execute(q.MARK_PIPELINE, {"id": after_id})
        if mode == AFTER_PER_CHUNK and self.holds is not None:
            self.holds.saw()

    async def dependants(self, job_id: str) -> list[tuple[str, int]]:
        """(job id, after_mode) of each job waiting for ``job_id``, in id order."""
        return [(r[0], int(r[1])) for r in await self.conn.fetch(q.DEPENDANTS, {"id": job_id})]

    async def unfinished_dependencies(self, job_id: str) -> list[str]:
        """The jobs ``job_id`` waits for that are not COMPLETED, as stored."""
        return [r[0] for r in await self.conn.fetch(q.UNFINISHED_DEPENDENCIES, {"id": job_id})]

    async def completed_indexes(self, job_id: str) -> set[int]:
        return {int(r[0]) for r in await self.conn.fetch(q.COMPLETED_INDEXES, {"job_id": job_id})}

    async def release_held(self, job: Job, indexes: Sequence[int] | None, now: int) -> int:
        """Lets the job's held chunks go (those at ``indexes``; None: all), as a change of the job: ready
        now, or at its schedule_time if that is still to come. Returns how many; the caller saves ``job``."""
        idx = sorted(set(indexes)) if indexes is not None else []
        if indexes is not None and not idx:
            return 0
        later = job.schedule_time if job.schedule_time is not None and job.schedule_time > now else None
        params = {"job_id": job.id, "due": later, "revision": job.touch(now), **self.d.values("idx", idx)}
        n = await self.conn.execute(q.release_held(self.d, len(idx)), params)
        if n:
            await self.move_held(job, -n)
            if later is None:
                self.changes.new_work = True
            else:
                self.changes.work_later.append((later - now) / 1e6)
                if self.waiting is not None:
                    self.waiting.note(later)
        return n

    async def hold_pending(self, job: Job, indexes: Sequence[int], now: int) -> int:
        """Holds the job's pending chunks at ``indexes`` that are not held; returns how many."""
        params = {"job_id": job.id, "revision": job.touch(now), **self.d.values("idx", list(indexes))}
        n = await self.conn.execute(q.hold_pending(self.d, len(indexes)), params)
        await self.move_held(job, n)
        return n

    async def move_held(self, job: Job, n: int) -> None:
        """The job holds ``n`` more chunks (fewer, when negative)."""
        if n:
            await self.conn.execute(q.MOVE_HELD, {"id": job.id, "n": n})
            job.n_held += n

    async def clear_held(self, job: Job) -> None:
        """The job holds no chunk any more (its pending ones were cancelled)."""
        if job.n_held:
            await self.conn.execute(q.CLEAR_HELD, {"id": job.id})
            job.n_held = 0

    async def set_deadline(self, job: Job) -> None:
        """Writes the job's deadline_time (rows.JOB_CREATED_ONLY: a save leaves it out), as RetryJob
        moves it."""
        await self.conn.execute(q.SET_DEADLINE, {"id": job.id, "deadline_time": job.deadline_time})

    async def set_controls(self, job: Job) -> None:
        """Writes the job's controls on the claim (rows.JOB_CONTROLS), which a save leaves out."""
        params = {"id": job.id, "paused": job.paused, "max_running_chunks": job.max_running_chunks}
        await self.conn.execute(q.SET_JOB_CONTROLS, params)

    async def set_pending_priority(self, job_id: str, priority: int) -> None:
        # Only pending chunks: running ones are locked by their workers, and a chunk that goes back to
        # PENDING takes its job's priority then (Job.move_chunk).
        params = {"priority": priority, "job_id": job_id, "pending": int(ChunkState.PENDING)}
        await self.conn.execute(q.SET_PENDING_PRIORITY, params)

    # --- artifacts, outbox, save -------------------------------------------------------------------

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        """The first ``limit`` artifacts of each job, in chunk order (jobs without any are left out;
        artifacts added in this transaction are not written yet)."""
        if len(job_ids) == 1:
            rows = await self.conn.fetch(q.JOB_ARTIFACTS, {"job_id": job_ids[0], "limit": limit})
        else:
            rows = await self.conn.fetch(
                q.jobs_artifacts(self.d, len(job_ids)), {**self.d.values("job_id", job_ids), "limit": limit}
            )
        return artifacts_by_job(rows)

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        self._artifacts += [
            {
                "job_id": job_id,
                "chunk_index": a.chunk_index,
                "name": a.name,
                "uri": a.uri,
                "media_type": a.media_type,
                "size_bytes": a.size_bytes,
                "role": a.role,
            }
            for a in artifacts
        ]

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox += [{c: r[c] for c in q.OUTBOX_COLUMNS} for r in rows]

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        """Writes the chunks, the jobs (a new change_seq each) and the artifacts and webhook events added
        so far, and records the jobs' revisions in ``changes``. On PostgreSQL the chunks, the jobs and
        the NOTIFY go in one round trip."""
        jobs = list(jobs)
        for job in jobs:
            self.changed(job.id, job.revision)
        if self.waiting is not None:
            for c in chunks:  # put back to wait out a retry backoff (rows.chunk_saved_values)
                if c.next_attempt_time is not None and c.state == ChunkState.PENDING:
                    self.waiting.note(c.next_attempt_time)
        if self.d.arrays:
            payloads = encode(self._unsent(), self.replica)
            chunk_rows = [chunk_saved(c) for c in chunks]
            job_rows = [job_saved(j) for j in jobs]
            changed = self._changed_columns(job_rows) if not chunks else None
            if changed is not None:
                sql = q.pg_save_jobs_some(changed)
                params = {**_columns(job_rows, ("id", *changed), "j_"), "channel": CHANNEL}
            else:
                sql = q.PG_SAVE
                params = {
                    **_columns(chunk_rows, ("id", *q.CHUNK_SAVED), "c_"),
                    **_columns(job_rows, ("id", *q.JOB_SAVED), "j_"),
                    "channel": CHANNEL,
                }
            try:
                await self.conn.fetchval(sql, {**params, "payload": payloads[0]})
            except Conflict as exc:  # an ended job made live again while another holds its key
                keyed = [j.unique_key for j in jobs if j.unique_key]
                if keyed and "unique_key" in str(exc):
                    raise UniqueKeyTaken(keyed[0]) from exc
                raise
            for payload in payloads[1:]:
                await self.conn.execute(q.NOTIFY, {"channel": CHANNEL, "payload": payload})
            self._notified = self._said()
        else:
            await self.conn.executemany(q.SAVE_CHUNK, [chunk_saved(c) for c in chunks])
            for job in jobs:
                values = job_saved(job)
                now = _INDEXED_IN_SAVED(values)
                was = self._indexed.get(job.id)
                try:
                    if was is None:  # not read in this transaction: every column
                        await self.conn.execute(q.save_job(self.d), values)
                    else:
                        sql = q.save_job_changed(self.d, tuple(i for i, v in enumerate(now) if v != was[i]))
                        await self.conn.execute(sql, values)
                except Conflict as exc:  # an ended job made live again while another holds its key
                    if job.unique_key and "unique_key" in str(exc):
                        raise UniqueKeyTaken(job.unique_key) from exc
                    raise
                self._indexed[job.id] = now  # once written: a failed statement changed nothing
        for job in jobs:
            job.bumped = False
        ended = [c.ended for c in chunks if c.ended is not None]
        if ended:  # the attempts these moves ended (Job.move_chunk), in the same transaction
            await self._count_failures(chunks)
            rows = [attempt_row(a) for a in ended]
            if self.d.arrays:
                await self.conn.execute(q.insert_attempts(self.d), _columns(rows, q.ATTEMPT_COLUMNS))
            else:
                await self.conn.executemany(q.insert_attempts(self.d), rows)
            for c in chunks:
                c.ended = None
        if self._artifacts:
            # A chunk's artifact replaces its earlier one of the same name (a preview reported before).
            gone = q.delete_named_artifacts(self.d)
            sql = q.insert_artifacts(self.d)
            if self.d.arrays:
                await self.conn.execute(gone, _columns(self._artifacts, ("job_id", "chunk_index", "name")))
                await self.conn.execute(sql, _columns(self._artifacts, q.ARTIFACT_INSERTED))
            else:
                keys = [{k: a[k] for k in ("job_id", "chunk_index", "name")} for a in self._artifacts]
                await self.conn.executemany(gone, keys)
                await self.conn.executemany(sql, self._artifacts)
            self._artifacts = []
        if self._outbox:
            await self.conn.executemany(q.INSERT_OUTBOX, self._outbox)
            self._outbox = []
            self.changes.webhooks = True

    async def _count_failures(self, chunks: Sequence[Chunk]) -> None:
        """Adds the chunks that moved to FAILED (Job.move_chunk: only out of PROCESSING, ending an
        attempt) to their jobs' job_failures rows."""
        rows: dict[tuple[str, str, str], list[int]] = {}
        for c in chunks:
            if c.ended is not None and c.state == ChunkState.FAILED:
                row = rows.setdefault((c.job_id, c.kind, c.error_reason), [0, 0])
                row[0] += 1
                row[1] = max(row[1], c.end_time or 0)
        for (job_id, kind, reason), (n, last) in rows.items():
            params = {"job_id": job_id, "kind": kind, "error_reason": reason, "chunks": n, "last_time": last}
            made = await self.conn.fetchrow(q.ADD_JOB_FAILURES, params)
            if made is not None:
                self._failures.added((made[0], kind, reason), n, int(made[1]) == n, last)

    def snapshot(self, jobs: Iterable[Job]) -> None:
        """Notes the jobs' saved values as they are now, before a change: on PostgreSQL a save of jobs
        that all have a snapshot (and no chunks) writes only the columns that changed since (a bulk
        cancel's batch: 9 columns of the 40)."""
        if self.d.arrays:
            for job in jobs:
                self._before[job.id] = job_saved(job)

    def _changed_columns(self, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...] | None:
        """The JOB_SAVED columns of ``rows`` that differ from their snapshots (the snapshots then move
        on to them); None when a row has none."""
        befores = [self._before.get(row["id"]) for row in rows]
        known = [b for b in befores if b is not None]
        if not rows or len(known) != len(rows):
            return None
        names = {
            name
            for row, before in zip(rows, known, strict=True)
            for name in q.JOB_SAVED
            if row[name] != before[name]
        }
        for row in rows:
            self._before[row["id"]] = row
        # At least the revision (a save makes a new one), in JOB_SAVED order: one statement a set.
        names.add("revision")
        return tuple(name for name in q.JOB_SAVED if name in names)

    def _unsent(self) -> Changes:
        """What ``changes`` holds that no NOTIFY of this transaction has carried yet (the jobs at their
        latest revision, the deletions; the flags every time), marked as carried: a transaction that
        saves in several steps (a bulk batch) tells each change once, not its whole list at each step."""
        c = self.changes
        jobs = {job_id: rev for job_id, rev in c.jobs.items() if self._sent_jobs.get(job_id) != rev}
        deleted = c.deleted - self._sent_deleted
        self._sent_jobs.update(jobs)
        self._sent_deleted |= deleted
        return Changes(jobs=jobs, deleted=deleted, new_work=c.new_work, work_later=c.work_later)

    def _said(self) -> tuple[Any, ...]:
        """A mark of what ``changes`` holds (it only grows within a transaction: jobs get higher
        revisions, deletions and retries are added, new_work is set)."""
        c = self.changes
        return (len(c.jobs), sum(c.jobs.values()), len(c.deleted), c.new_work, len(c.work_later))

    async def finish(self) -> None:
        """Before the commit: writes the failure counts this transaction changed (store/failure_counts.py);
        on PostgreSQL, tells the other replicas what it changed that no ``save`` has told them yet
        (delivered only if it commits)."""
        await self._failures.flush(self.conn)
        c = self.changes
        if not self.d.postgres or not (c.jobs or c.deleted or c.new_work) or self._notified == self._said():
            return
        for payload in encode(self._unsent(), self.replica):
            await self.conn.execute(q.NOTIFY, {"channel": CHANNEL, "payload": payload})
        self._notified = self._said()

    # --- listing, the feed, stats ------------------------------------------------------------------

    async def list_jobs(self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int) -> list[Job]:
        sql, params = q.list_jobs(self.d, f, order_by, after, limit)
        return list(map(job_from_row, await self.conn.fetch(sql, params)))

    async def list_job_heads(
        self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int
    ) -> list[JobHead]:
        """``list_jobs``' page with only the JobHead fields of each job (on SQLite, 21 us for a 21-row
        page against the full read's 118 us, rows mapped included)."""
        sql, params = q.list_jobs(self.d, f, order_by, after, limit, JOB_HEAD_SELECT)
        return list(map(head_from_row, await self.conn.fetch(sql, params)))

    async def count_jobs(self, f: JobFilter) -> int:
        """Exact on SQLite; on PostgreSQL exact up to COUNT_EXACT_UP_TO, beyond that the planner's
        estimate (never below the cap)."""
        count, explain, params = q.count_jobs(self.d, f)
        n = int(await self.conn.fetchval(count, params))
        if explain is None or n <= q.COUNT_EXACT_UP_TO:
            return n
        plan = json.loads(await self.conn.fetchval(explain, params))
        return max(n, int(plan[0]["Plan"]["Plan Rows"]))

    async def change_horizon(self) -> int:
        """Every job change with change_seq below this is committed and visible to this transaction."""
        return int(await self.conn.fetchval(self.d.horizon))

    async def changed_jobs(
        self, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
    ) -> tuple[list[FeedEntry], bool]:
        """Jobs matching ``f`` changed or deleted after ``after`` (change_seq, id) and below ``horizon``,
        in change order; and whether changes at or beyond the horizon exist (committed but not yet safe
        to hand out)."""
        sql, params = q.changed(self.d, "jobs", f, after, horizon, limit)
        found = [
            FeedEntry(j.change_seq, j.id, j) for j in map(job_from_row, await self.conn.fetch(sql, params))
        ]
        sql, params = q.changed(self.d, "job_tombstones", f, after, horizon, limit)
        found += [FeedEntry(int(r[0]), r[1], None) for r in await self.conn.fetch(sql, params)]
        beyond = (
            bool(await self.conn.fetchval(q.BEYOND_HORIZON, {"horizon": horizon}))
            if self.d.postgres
            else False
        )
        found.sort(key=lambda e: (e.change_seq, e.job_id))
        return found[:limit], beyond

    async def feed_floor(self) -> int:
        """The largest change_seq of a trimmed tombstone, 0 if none: a WatchJobs cursor before it may have
        missed deletions."""
        value = await self.conn.fetchval(q.FEED_FLOOR)
        return int(value) if value is not None else 0

    async def trim_tombstones(self, before: int, limit: int) -> int:
        """Deletes up to ``limit`` tombstones of jobs deleted before ``before`` (never the newest) and
        raises the feed's floor to the largest change_seq among them; returns how many."""
        rows = await self.conn.fetch(q.OLD_TOMBSTONES, {"before": before, "limit": limit})
        if not rows:
            return 0
        ids = [r[0] for r in rows]
        await self.conn.execute(q.delete_tombstones(self.d, len(ids)), self.d.values("id", ids))
        await self.conn.execute(q.RAISE_FEED_FLOOR, {"change_seq": max(int(r[1]) for r in rows)})
        return len(rows)

    async def job_stats(self, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
        """Counts by state and duration percentiles, computed in SQL, overall and per kind."""
        w = q.job_filter(self.d, f)
        per_kind: dict[str, StatsRow] = {}
        overall = StatsRow("", 0, {}, 0, {})
        for kind, state, n, items, first_start, last_update, n_ran, ran_us in await self.conn.fetch(
            q.stats_groups(w), w.params
        ):
            row = per_kind.setdefault(kind, StatsRow(kind, 0, {}, 0, {}))
            for target in (row, overall):
                target.total += int(n)
                target.by_state[JobState(state)] = target.by_state.get(JobState(state), 0) + int(n)
                target.items_done += int(items)
                target.processed_jobs += int(n_ran)
                target.processing_us += int(ran_us)
                if first_start is not None:
                    target.first_start = min(filter(None, (target.first_start, int(first_start))))
                    target.last_update = max(target.last_update or 0, int(last_update))
        overall.durations = await self._durations(w)
        for kind, row in per_kind.items():
            wk = q.job_filter(self.d, f)
            wk.add("kind = :group_kind", group_kind=kind)
            row.durations = await self._durations(wk)
        return overall, [per_kind[k] for k in sorted(per_kind)]

    async def _durations(self, w: q.Where) -> dict[str, int | None]:
        """Nearest-rank percentiles (the ceil(q*n)-th smallest) of finished jobs' create-to-end time."""
        out: dict[str, int | None] = {"p50": None, "p95": None, "p99": None, "max": None}
        n = int(await self.conn.fetchval(q.finished_count(w), w.params))
        if n == 0:
            return out
        for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
            rank = min(n, max(1, math.ceil(share * n)))
            out[name] = int(await self.conn.fetchval(q.duration_at(w), {**w.params, "skip": rank - 1}))
        return out

    async def count_by_state(self) -> dict[JobState, int]:
        return {JobState(s): int(n) for s, n in await self.conn.fetch(q.COUNT_BY_STATE)}

    async def leases_in_flight(self) -> tuple[int, int]:
        """Chunks under a lease now, and the workers holding them."""
        row = await self.conn.fetchrow(q.LEASES_IN_FLIGHT)
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def schema_version(self) -> str:
        """The migration the database is at ("" before the first)."""
        return str(await self.conn.fetchval(q.SCHEMA_VERSION) or "")

    async def probe(self) -> None:
        """Raises unless every table and column the server uses is there."""
        await self.conn.fetchrow(q.SCHEMA_PROBE)

    # --- expiry ------------------------------------------------------------------------------------

    async def expiry_candidates(
        self, state: JobState, after: tuple[int, str], before: int, limit: int
    ) -> list[ExpiryCandidate]:
        """Up to ``limit`` jobs in ``state`` with (update_time, id) after ``after`` and update_time before
        ``before``, in that order (the expiry sweep of jobs on the default ttl: a terminal job's
        update_time is at least its end_time, and a change after it ended only postpones its deletion)."""
        params = {
            "state": int(state),
            "after_time": after[0],
            "after_id": after[1],
            "before": before,
            "limit": limit,
        }
        rows = await self.conn.fetch(q.EXPIRY_CANDIDATES, params)
        return [ExpiryCandidate(r[0], int(r[1]), r[2], int(r[3])) for r in rows]

    async def own_ttl_expired(self, now: int, limit: int) -> list[ExpiryCandidate]:
        """Up to ``limit`` jobs with a ttl of their own (> 0) whose end_time + ttl is before ``now``."""
        rows = await self.conn.fetch(q.OWN_TTL_EXPIRED, {"now": now, "limit": limit})
        return [ExpiryCandidate(r[0], int(r[1]), r[2], int(r[3])) for r in rows]

    async def delete_expired(self, job_ids: Sequence[str], now: int, retention: Retention) -> list[str]:
        """Deletes those of the jobs still expired under ``retention`` (looked for in another snapshot, a
        job may have been retried or deleted since) as ``delete_job`` does; returns their ids."""
        if not job_ids:
            return []
        defaults = list(retention.defaults())
        params = {**self.d.values("id", job_ids), "now": now}
        for i, (state, ttl) in enumerate(defaults):
            params[f"default_state_{i}"], params[f"default_cutoff_{i}"] = int(state), now - ttl
        rows = await self.conn.fetch(q.still_expired(self.d, len(job_ids), len(defaults)), params)
        gone = [r[0] for r in rows]
        await self.delete_jobs(gone, now)
        return gone

    # --- API keys, events-token secrets ------------------------------------------------------------

    async def create_key(
        self,
        name: str,
        role: str,
        key_hash: str,
        prefix: str,
        now: int,
        webhook_url: str,
        webhook_secret: str,
    ) -> bool:
        """Stores a key; False when the name is taken (revoked keys keep theirs)."""
        if await self.conn.fetchval(q.KEY_NAMED, {"name": name}) is not None:
            return False
        key = {
            "name": name,
            "role": role,
            "key_hash": key_hash,
            "key_prefix": prefix,
            "create_time": now,
            "webhook_url": webhook_url,
            "webhook_secret": webhook_secret,
        }
        await self.conn.execute(q.INSERT_KEY, key)
        return True

    async def list_keys(self) -> list[KeyInfo]:
        return [KeyInfo(r[0], r[1], r[2], r[3], r[4]) for r in await self.conn.fetch(q.LIST_KEYS)]

    async def revoke_key(self, name: str, now: int) -> bool:
        """Revokes a key by name; False if there is no such active key."""
        return await self.conn.execute(q.REVOKE_KEY, {"now": now, "name": name}) > 0

    async def active_keys(self) -> dict[str, KeyInfo]:
        """Keys not revoked, by the hash of the key."""
        rows = await self.conn.fetch(q.ACTIVE_KEYS)
        return {r[0]: KeyInfo(r[1], r[2], r[3], r[4], None, r[5]) for r in rows}

    async def webhook_secret(self, name: str) -> str | None:
        """The secret a key's webhooks are signed with."""
        value = await self.conn.fetchval(q.KEY_WEBHOOK_SECRET, {"name": name})
        return str(value) if value is not None else None

    async def events_secrets(self) -> dict[int, tuple[str, bool]]:
        """The secrets events tokens are verified with: id -> (secret, whether it signs new ones)."""
        return {int(r[0]): (r[1], r[2] is None) for r in await self.conn.fetch(q.EVENTS_SECRETS)}

    async def ensure_events_secret(self, now: int) -> None:
        """Makes a signing secret if there is none (a server's first start on a new database)."""
        if await self.conn.fetchval(q.SIGNING_SECRET) is None:
            await self.conn.fetchval(
                q.INSERT_EVENTS_SECRET, {"secret": secrets.token_hex(32), "create_time": now}
            )

    async def rotate_events_secret(self, now: int) -> int:
        """Retires the signing secret(s) for a new one (the old ones verify until their tokens expire) and
        drops secrets retired long enough ago that no token they signed is still valid; the new id."""
        await self.conn.execute(q.DROP_OLD_SECRETS, {"before": now - RETIRED_SECRET_KEPT_US})
        await self.conn.execute(q.RETIRE_SECRETS, {"now": now})
        secret = {"secret": secrets.token_hex(32), "create_time": now}
        return int(await self.conn.fetchval(q.INSERT_EVENTS_SECRET, secret))

    # --- the webhook outbox ------------------------------------------------------------------------

    async def deliveries_for_job(self, job_id: str, owner: str | None, limit: int) -> list[Delivery] | None:
        """The job's deliveries, newest first; None when there is no such job (of ``owner``'s)."""
        exists = q.JOB_EXISTS if owner is None else q.OWNED_JOB_EXISTS
        if await self.conn.fetchrow(exists, {"id": job_id, "owner": owner}) is None:
            return None
        return [
            Delivery(*r) for r in await self.conn.fetch(q.JOB_DELIVERIES, {"job_id": job_id, "limit": limit})
        ]

    async def requeue_delivery(self, delivery_id: str, owner: str | None, now: int) -> Delivery | None:
        """Makes a delivery due at ``now``, whatever its state; None when there is no such delivery (of
        ``owner``'s)."""
        sql = q.GET_DELIVERY if owner is None else q.GET_OWNED_DELIVERY
        row = await self.conn.fetchrow(sql, {"id": delivery_id, "owner": owner})
        if row is None:
            return None
        await self.conn.execute(q.REQUEUE_DELIVERY, {"state": PENDING, "now": now, "id": delivery_id})
        delivery = Delivery(*row)
        delivery.state, delivery.next_attempt_time = PENDING, now
        self.changes.webhooks = True
        return delivery

    async def claim_due_deliveries(
        self, now: int, limit: int, hold_us: int
    ) -> list[tuple[Delivery, str | None]]:
        """Up to ``limit`` due deliveries with their owner's webhook secret, held for ``hold_us`` so no
        other replica sends them meanwhile."""
        rows = await self.conn.fetch(q.due_deliveries(self.d), {"now": now, "limit": limit})
        due = [(Delivery(*r[:-1]), r[-1]) for r in rows]
        if due:
            ids = [d.id for d, _ in due]
            held = {**self.d.values("id", ids), "until": now + hold_us}
            await self.conn.execute(q.hold_deliveries(self.d, len(ids)), held)
        return due

    async def record_deliveries(self, outcomes: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Writes the outcome of each attempt: (delivery id, the columns to set)."""
        for delivery_id, values in outcomes:
            await self.conn.execute(q.record_delivery(tuple(sorted(values))), {**values, "id": delivery_id})

    async def outbox_backlog(self, now: int) -> tuple[int, int | None]:
        """(deliveries pending, create time of the oldest one that is due)."""
        pending = int(await self.conn.fetchval(q.OUTBOX_PENDING, {"state": PENDING}))
        oldest = await self.conn.fetchval(q.OUTBOX_OLDEST_DUE, {"state": PENDING, "now": now})
        return pending, int(oldest) if oldest is not None else None

    async def trim_deliveries(self, before: int, limit: int) -> int:
        """Deletes up to ``limit`` delivered or dead deliveries last tried before ``before``."""
        found = 0
        for state in (DELIVERED, DEAD):
            done = {"state": state, "before": before, "limit": limit - found}
            ids = [r[0] for r in await self.conn.fetch(q.DONE_DELIVERIES, done)]
            if ids:
                await self.conn.execute(q.delete_deliveries(self.d, len(ids)), self.d.values("id", ids))
            found += len(ids)
            if found >= limit:
                break
        return found

    # --- kinds ------------------------------------------------------------------------------------

    async def update_kind(
        self, kind: str, *, paused: bool | None, max_running_chunks: int | None, now: int
    ) -> Kind:
        """Sets the kind's controls given (None: keep), making its row if it has none; the kind's
        controls as stored after it (statements.UPDATE_KIND: one statement, so concurrent updates of
        different fields both hold)."""
        if self.d.postgres:
            # Every claim statement reads the kinds table (statements.kind_open): this waits for the
            # claims under way on every replica to commit, and a claim that starts meanwhile waits for
            # this commit and sees the change. So no claim of a kind paused (or over a cap) commits after
            # UpdateKind returns. (SQLite has one writer.)
            await self.conn.execute(q.LOCK_KINDS)
        params = {"kind": kind, "paused": paused, "max_running_chunks": max_running_chunks}
        row = await self.conn.fetchrow(q.UPDATE_KIND, {**params, "update_time": now})
        assert row is not None  # RETURNING gives the row written
        return kind_from_row(row)

    async def get_kind(self, kind: str) -> Kind | None:
        """The kind's stored controls (no counts); None for a kind never updated."""
        row = await self.conn.fetchrow(q.GET_KIND, {"kind": kind})
        return kind_from_row(row) if row else None

    async def list_kinds(self, after: str, limit: int, owner: str | None) -> list[Kind]:
        """ListKinds: up to ``limit`` kinds after ``after`` in kind order, those with stored controls and
        those with chunks PENDING or PROCESSING, with those counts (``owner``: of that owner's jobs)."""
        params = {"after": after, "limit": limit, "owner": owner}
        rows = await self.conn.fetch(q.list_kinds(owner is not None), params)
        return [kind_from_row(r) for r in rows]

    async def kind_chunks(self, kind: str, owner: str | None) -> tuple[int, int]:
        """The kind's chunks (PENDING, PROCESSING) now (``owner``: of that owner's jobs)."""
        row = await self.conn.fetchrow(q.kind_chunks(owner is not None), {"kind": kind, "owner": owner})
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def kind_controls(self, kinds: Sequence[str]) -> dict[str, Kind]:
        """The kinds among ``kinds`` (empty: any) that have a control in force (paused, or a
        max_running_chunks), by kind: a claim's view of ``Kind.claimable`` with the kinds' running chunks."""
        rows = await self.conn.fetch(q.kind_controls(self.d, len(kinds)), q.ready_params(self.d, kinds))
        return {r[0]: kind_from_row(r) for r in rows}

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        """Adds each key's counts to its stored totals. Keys in name order: two replicas flushing the same
        keys lock their rows in the same order, so they wait for each other instead of deadlocking."""
        rows = [
            {"key_name": n, "role": c.role, "calls": c.calls, "rejected": c.rejected, "update_time": now}
            for n, c in sorted(counts.items())
        ]
        await self.conn.executemany(q.ADD_USAGE, rows)

    async def usage(self) -> dict[str, KeyUsage]:
        """The stored totals by key name."""
        return {r[0]: KeyUsage(r[1], int(r[2]), int(r[3])) for r in await self.conn.fetch(q.USAGE)}

    async def add_throughput(self, counts: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Adds each (minute, kind)'s (chunks, items), in key order (as ``add_usage``, for the locks)."""
        rows = [
            {"minute": m, "kind": k, "chunks": chunks, "items": items}
            for (m, k), (chunks, items) in sorted(counts.items())
        ]
        await self.conn.executemany(q.ADD_THROUGHPUT, rows)

    async def throughput_since(self, minute: int) -> list[tuple[int, str, int, int]]:
        """Every stored (minute, kind, chunks, items) from ``minute`` on, by minute then kind."""
        rows = await self.conn.fetch(q.THROUGHPUT_SINCE, {"minute": minute})
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def prune_throughput(self, before_minute: int) -> int:
        """Deletes the rows of the minutes before ``before_minute``; returns how many."""
        return await self.conn.execute(q.PRUNE_THROUGHPUT, {"minute": before_minute})

    # --- schedules (ScheduleService; services/schedules.py) ----------------------------------------

    @staticmethod
    def _schedule(r: Sequence[Any]) -> Schedule:
        """A row of statements.SCHEDULE_SELECT."""
        template = r[5]
        if isinstance(template, str):
            template = json.loads(template)
        return Schedule(
            id=r[0],
            owner=r[1],
            display_name=r[2],
            cron=r[3],
            time_zone=r[4],
            job_template=dict(template or {}),
            paused=bool(r[6]),
            misfire_policy=int(r[7]),
            overlap_policy=int(r[8]),
            next_run_time=r[9],
            last_run_time=r[10],
            last_job_id=r[11],
            create_time=r[12],
            update_time=r[13],
        )

    @staticmethod
    def _schedule_row(s: Schedule) -> dict[str, Any]:
        return {
            "id": s.id,
            "owner": s.owner,
            "display_name": s.display_name,
            "cron": s.cron,
            "time_zone": s.time_zone,
            "job_template": json.dumps(s.job_template, sort_keys=True),
            "paused": s.paused,
            "misfire_policy": s.misfire_policy,
            "overlap_policy": s.overlap_policy,
            "next_run_time": s.next_run_time,
            "last_run_time": s.last_run_time,
            "last_job_id": s.last_job_id,
            "create_time": s.create_time,
            "update_time": s.update_time,
        }

    async def insert_schedule(self, s: Schedule) -> None:
        await self.conn.execute(q.INSERT_SCHEDULE, self._schedule_row(s))

    async def get_schedule(
        self, schedule_id: str, owner: str | None, *, for_update: bool = False
    ) -> Schedule | None:
        """The schedule (of ``owner`` unless None); ``for_update``: its row locked until the commit."""
        sql = q.get_schedule(self.d, owner is not None, lock=for_update)
        row = await self.conn.fetchrow(sql, {"id": schedule_id, "owner": owner})
        return self._schedule(row) if row else None

    async def list_schedules(self, after: str, limit: int, owner: str | None) -> list[Schedule]:
        """Up to ``limit`` schedules after the id ``after``, oldest first (of ``owner`` unless None)."""
        params = {"after": after, "limit": limit, "owner": owner}
        return [self._schedule(r) for r in await self.conn.fetch(q.list_schedules(owner is not None), params)]

    async def update_schedule(self, s: Schedule) -> None:
        """Writes the fields UpdateSchedule may change, ``next_run_time`` and ``update_time``."""
        row = self._schedule_row(s)
        del row["owner"], row["last_run_time"], row["last_job_id"], row["create_time"]
        await self.conn.execute(q.UPDATE_SCHEDULE, row)

    async def delete_schedule(self, schedule_id: str, owner: str | None) -> bool:
        """Deletes the schedule (of ``owner`` unless None); whether there was one."""
        sql = q.delete_schedule(owner is not None)
        return await self.conn.execute(sql, {"id": schedule_id, "owner": owner}) > 0

    async def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        """Up to ``limit`` schedules whose next run is at or before ``now``, the earliest first."""
        rows = await self.conn.fetch(q.DUE_SCHEDULES, {"now": now, "limit": limit})
        return [self._schedule(r) for r in rows]

    async def next_schedule_run(self) -> int | None:
        """The earliest next run of any schedule (None: none is due ever, or every one is paused)."""
        found = await self.conn.fetchval(q.NEXT_SCHEDULE_RUN)
        return int(found) if found is not None else None

    async def advance_schedule(
        self,
        schedule_id: str,
        expected: int,
        next_run_time: int | None,
        last_run_time: int | None,
        last_job_id: str | None,
        now: int,
    ) -> bool:
        """Moves the schedule's next run from ``expected`` to ``next_run_time`` (None: none, a schedule
        parked) and records the job a tick made, if any, only if its next run is still ``expected``;
        whether it did."""
        params = {
            "id": schedule_id,
            "expected": expected,
            "next_run_time": next_run_time,
            "last_run_time": last_run_time,
            "last_job_id": last_job_id,
            "update_time": now,
        }
        return await self.conn.execute(q.ADVANCE_SCHEDULE, params) > 0

    async def record_tick_job(self, schedule_id: str, tick: int, job_id: str, now: int) -> None:
        """Records the job of ``tick`` as the schedule's last, unless it has a later one (another
        pass moved the schedule on past this tick, making no job or an earlier one)."""
        params = {"id": schedule_id, "last_run_time": tick, "last_job_id": job_id, "update_time": now}
        await self.conn.execute(q.RECORD_TICK_JOB, params)

    async def record_schedule_run(
        self, schedule_id: str, last_run_time: int, last_job_id: str, now: int
    ) -> Schedule | None:
        """Records the job TriggerSchedule made; the schedule after it (None: it is gone)."""
        params = {"id": schedule_id, "last_run_time": last_run_time, "last_job_id": last_job_id}
        row = await self.conn.fetchrow(q.RECORD_SCHEDULE_RUN, {**params, "update_time": now})
        return self._schedule(row) if row else None

    async def schedule_jobs(self, owner: str, prefix: str, limit: int) -> list[Job]:
        """Up to ``limit`` jobs of ``owner`` whose request_id starts with ``prefix`` (ending in "/"),
        newest first."""
        params = {"owner": owner, "low": prefix, "high": prefix[:-1] + "0", "limit": limit}
        return [job_from_row(r) for r in await self.conn.fetch(q.SCHEDULE_JOBS, params)]


class _Room:
    """What a claim may still take, counted down as it takes: of each job (``job_room``: its
    ``Job.claimable``, None for no limit) and of each kind in ``kinds`` (``Kind.claimable``: 0 while
    paused, else what its max_running_chunks leaves; kinds left out have no limit)."""

    __slots__ = ("_job_room", "_jobs", "_kinds")

    def __init__(self, job_room: Callable[[str], int | None], kinds: Mapping[str, int]) -> None:
        self._job_room = job_room
        self._jobs: dict[str, int | None] = {}
        self._kinds = dict(kinds)

    def limits(self, chunk: Chunk) -> bool:
        """Whether a control limits what may be taken of the chunk's job or kind."""
        return chunk.kind in self._kinds or self._left(chunk.job_id) is not None

    def _left(self, job_id: str) -> int | None:
        if job_id not in self._jobs:
            self._jobs[job_id] = self._job_room(job_id)
        return self._jobs[job_id]

    def full(self, chunk: Chunk) -> bool:
        """Whether the chunk's job or kind has no room left."""
        left = self._left(chunk.job_id)
        return (left is not None and left <= 0) or self._kinds.get(chunk.kind, 1) <= 0

    def take(self, chunk: Chunk) -> bool:
        """Counts the chunk taken (True)."""
        left = self._left(chunk.job_id)
        if left is not None:
            self._jobs[chunk.job_id] = left - 1
        if chunk.kind in self._kinds:
            self._kinds[chunk.kind] -= 1
        return True


def _claim_order(chunk: Chunk) -> tuple[int, str, int]:
    return -chunk.priority, chunk.job_id, chunk.index


def _bulk_row(op: BulkOperation) -> dict[str, Any]:
    f = op.filter
    job_filter = {
        "states": [int(s) for s in f.states], "kind": f.kind, "min_priority": f.min_priority,
        "max_priority": f.max_priority, "created_after": f.created_after, "created_before": f.created_before,
        "search": f.search, "labels": f.labels,
    }  # fmt: skip
    return {
        "id": op.id, "owner": op.owner, "sees_all": op.sees_all, "action": int(op.action),
        "job_filter": json.dumps(job_filter), "reason": op.reason, "force": op.force, "matched": op.matched,
        "done": op.done, "skipped": op.skipped, "cursor": op.cursor, "create_time": op.create_time,
        "update_time": op.update_time, "end_time": op.end_time, "cancelled": op.cancelled,
    }  # fmt: skip


def _bulk_from_row(r: Sequence[Any]) -> BulkOperation:
    raw = r[4]
    stored = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
    f = JobFilter(
        owner=None if r[2] else r[1],
        states=[JobState(s) for s in stored.get("states", [])],
        kind=stored.get("kind", ""),
        min_priority=stored.get("min_priority"),
        max_priority=stored.get("max_priority"),
        created_after=stored.get("created_after"),
        created_before=stored.get("created_before"),
        search=stored.get("search", ""),
        labels=dict(stored.get("labels") or {}),
    )
    return BulkOperation(
        id=r[0], owner=r[1], sees_all=bool(r[2]), action=BulkAction(r[3]), filter=f, reason=r[5],
        force=bool(r[6]), matched=r[7], done=r[8], skipped=r[9], cursor=r[10], create_time=r[11],
        update_time=r[12], end_time=r[13], cancelled=bool(r[14]),
    )  # fmt: skip


def _moved_for_retry(counts: Mapping[int, tuple[int, int]]) -> tuple[int, int, int]:
    """(failed moved, cancelled moved, their items done) from a job's (count, items done) by state."""
    failed = counts.get(int(ChunkState.FAILED), (0, 0))
    cancelled = counts.get(int(ChunkState.CANCELLED), (0, 0))
    return failed[0], cancelled[0], failed[1] + cancelled[1]
