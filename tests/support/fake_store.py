"""An in-memory ``Store`` with the observable semantics of ``SqlStore`` on SQLite, for testing services
without a database.

What it mirrors (``store/tx.py``, ``store/statements.py``, ``store/rows.py``, ``store/database.py``):

* Reads hand out fresh copies, as rows mapped to objects would be: a job read has
  ``loaded_state`` = its state, no artifacts, ``bumped`` false; COMPLETED chunks from
  ``list_chunks`` carry their artifacts (``chunk_index``, then insertion order).
* ``claim`` picks the first ``limit`` ready chunks (PENDING, past ``next_attempt_time``, of the
  wanted kinds) in claim order ``priority DESC, job_id, idx``, each job's within its room, then in
  ``fair_order`` (fair share on, as the server's default) and reads their jobs; locks just read
  (one writer at a time, as on SQLite); ``lock_leased`` reads the jobs, then the chunks of those jobs.
* ``save`` writes only the chunk columns of ``rows.CHUNK_SAVED`` and every job column but ``id``,
  ``change_seq`` and ``trace_parent`` (which only ``insert_job`` writes); each saved job gets the
  next ``change_seq`` (one more than the largest handed out, shared with ``insert_job`` and the
  tombstones of ``delete_job``); rows that do not exist are left alone (an UPDATE of nothing), but
  the job's revision is still recorded in ``changes``. Artifacts and
  outbox rows added so far are written by the next ``save`` (and dropped if no ``save`` follows);
  outbox rows set ``changes.webhooks``.
* ``write(body)`` is atomic: writers queue on a lock, the body works on a copy of the tables, and
  the copy replaces them only when the body returns. After the commit the ``Changes`` go to
  ``on_commit`` (e.g. ``ChangeHub.publish``) when they name a job, a deletion, new work or
  webhooks, as ``SqlStore.publish`` filters them. An exception (or cancellation) rolls back and
  publishes nothing.
* Reads see one snapshot: a ``read()`` keeps the tables as they were when it began, since a commit
  replaces them rather than changing them in place (stored rows are never mutated); a read offers no
  write operation.
* ``batch`` is None (no group-committed path), as on SQLite.
* ``delete_job`` gives the job's tombstone the next change_seq (the columns the feed filters on;
  ``tombstones``) and removes the job, its chunks and its artifacts (not its outbox rows).
  ``change_horizon`` is one past the largest; ``changed_jobs`` returns jobs and tombstones after a
  (change_seq, id) position, and never "changes beyond the horizon", as on SQLite.
* ``insert_job`` raises ``RequestIdTaken`` when the owner has a job with that request_id (or, as
  ``SqlTx`` does for any conflict, when the job's id is taken and it has a request_id).
* ``cancel_pending_chunks``, ``reset_for_retry`` and ``set_pending_priority`` set exactly the columns
  their UPDATEs set; ``job_stats`` groups by (kind, state) and takes nearest-rank duration percentiles
  as ``SqlTx.job_stats`` does (exact, not approximated).
* ``fail_next_save`` fails the next ``save``.

Seed data with ``add_job`` (``new_job`` builds a job and its chunks as JobService.create_job
does); inspect committed state with ``job``, ``chunk``, ``chunks_of``, ``artifacts_of``,
``outbox_rows``, ``tombstones``, ``job_ids`` and ``published``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from jobpulse_server.domain import ids
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.filters import ORDERS, JobFilter
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    HELD,
    Artifact,
    Attempt,
    Chunk,
    ChunkState,
    Job,
    JobHead,
    JobState,
    Kind,
    Summary,
    current_attempt,
    fair_order,
    split_items,
)
from jobpulse_server.domain.reports import FailureGroup, FeedEntry, StatsRow
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.store import RequestIdTaken
from jobpulse_server.store.rows import CHUNK_SAVED
from jobpulse_server.store.statements import OUTBOX_COLUMNS

NO_JOBS: Mapping[str, Job] = MappingProxyType({})

T = TypeVar("T")

# Job attributes behind the sort columns of ListJobs (repository.ORDERS names columns).
_SORT_ATTRS = {"id": "id", "priority": "priority", "update_time": "update_time"}


@dataclass(frozen=True)
class Tombstone:
    """A job_tombstones row: the deleted job's columns the feed filters on, and the delete's change_seq."""

    id: str
    owner: str
    display_name: str
    kind: str
    state: JobState
    priority: int
    labels: dict[str, str]
    create_time: int
    delete_time: int
    change_seq: int


@dataclass
class _Tables:
    """One version of the database. Committed versions are never changed in place: a write works
    on ``fork()`` and the store swaps it in on commit."""

    jobs: dict[str, Job] = field(default_factory=dict)
    chunks: dict[str, Chunk] = field(default_factory=dict)
    # (job id, artifact) in insertion order, which stands for the artifacts' autoincrement id.
    artifacts: list[tuple[str, Artifact]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    # job id -> the fingerprint of the request that made it (job_requests).
    requests: dict[str, str] = field(default_factory=dict)
    # The largest change_seq handed out, to a job or to a tombstone.
    seq: int = 0
    # The largest change_seq of a trimmed tombstone (feed_floor).
    floor: int = 0
    # kind -> its stored controls (the kinds table; no counts).
    kinds: dict[str, Kind] = field(default_factory=dict)
    # (after_id, job_id) -> after_mode (job_dependencies).
    dependencies: dict[tuple[str, str], int] = field(default_factory=dict)
    # The ended attempts (chunk_attempts), in insertion order.
    attempts: list[Attempt] = field(default_factory=list)

    def fork(self) -> _Tables:
        # Shallow copies suffice: rows are replaced on write, never mutated.
        return _Tables(
            dict(self.jobs),
            dict(self.chunks),
            list(self.artifacts),
            list(self.outbox),
            dict(self.tombstones),
            requests=dict(self.requests),
            seq=self.seq,
            floor=self.floor,
            kinds=dict(self.kinds),
            dependencies=dict(self.dependencies),
            attempts=list(self.attempts),
        )

    def next_seq(self) -> int:
        """The change_seq of a change made now (SQLite: one more than the largest handed out)."""
        self.seq += 1
        return self.seq

    def save_job(self, job: Job) -> None:
        """An UPDATE of every job column but id, change_seq, which takes the next change_seq, and the
        ones ``rows.JOB_SAVED`` leaves out (trace_parent, schedule_time: only ``insert_job`` writes them;
        paused, max_running_chunks: ``set_controls``); a job that does not exist is left alone (and
        takes none)."""
        stored = self.jobs.get(job.id)
        if stored is not None:
            row = _job_row(job)
            row.change_seq = self.next_seq()
            row.trace_parent, row.schedule_time = stored.trace_parent, stored.schedule_time
            row.max_failed_chunks, row.attempt_timeout = stored.max_failed_chunks, stored.attempt_timeout
            row.deadline_time = stored.deadline_time
            row.paused, row.max_running_chunks = stored.paused, stored.max_running_chunks
            # rows.JOB_PIPELINE: only the statements that hold, release and link move these.
            row.n_held, row.pipeline = stored.n_held, stored.pipeline
            self.jobs[job.id] = row
        job.bumped = False

    def save_chunks(self, chunks: Iterable[Chunk]) -> None:
        """UPDATEs of the chunk columns of ``rows.CHUNK_SAVED``; missing chunks are left alone."""
        for c in chunks:
            stored = self.chunks.get(c.id)
            if stored is None:
                continue
            new = copy.deepcopy(stored)
            for name in CHUNK_SAVED:
                # retry_at is storage only: the fake's claim reads next_attempt_time, which is what a
                # claim on the real store sees once a due chunk is promoted (store/waiting.py).
                if name != "retry_at":
                    setattr(new, name, getattr(c, name))
            self.chunks[c.id] = new

    def update_chunks(
        self, job_id: str, states: Iterable[ChunkState], only: str | None = None, **values: Any
    ) -> dict[ChunkState, int]:
        """``UPDATE chunks SET values WHERE job_id = ? AND state IN states [AND id = only]``; how many
        per state."""
        wanted = set(states)
        moved: dict[ChunkState, int] = {}
        for c in list(self.chunks.values()):
            if c.job_id == job_id and c.state in wanted and only in (None, c.id):
                moved[c.state] = moved.get(c.state, 0) + 1
                self.chunks[c.id] = dataclasses.replace(c, **values)
        return moved

    def add_outbox(self, rows: Iterable[dict[str, Any]]) -> None:
        self.outbox += [{c: r[c] for c in OUTBOX_COLUMNS} for r in rows]


def _job_row(job: Job) -> Job:
    """A job as a read maps it from its row."""
    out = copy.deepcopy(job)
    out.artifacts = []
    out.loaded_state = out.state
    out.bumped = False
    return out


def _chunk_row(chunk: Chunk) -> Chunk:
    out = copy.deepcopy(chunk)
    out.artifacts = []
    return out


def _matches(job: Job | Tombstone, f: JobFilter) -> bool:
    """``sql.job_filter`` in Python (``repository._filter_clauses`` on tombstones, too)."""
    if f.owner is not None and job.owner != f.owner:
        return False
    if f.states and job.state not in f.states:
        return False
    if f.kind and job.kind != f.kind:
        return False
    if f.min_priority is not None and job.priority < f.min_priority:
        return False
    if f.max_priority is not None and job.priority > f.max_priority:
        return False
    if f.created_after is not None and job.create_time < f.created_after:
        return False
    if f.created_before is not None and job.create_time >= f.created_before:
        return False
    if f.search and f.search.lower() not in job.display_name.lower():
        return False
    return all(job.labels.get(k) == v for k, v in f.labels.items())


class FakeRead:
    """Reads of one snapshot of the tables (a read transaction; its writes do not exist here)."""

    def __init__(self, tables: _Tables, changes: Changes | None = None) -> None:
        self.tables = tables
        self.changes = changes if changes is not None else Changes()

    def changed(self, job_id: str, revision: int) -> None:
        self.changes.jobs[job_id] = max(revision, self.changes.jobs.get(job_id, 0))

    async def get_job(self, job_id: str, owner: str | None, *, for_update: bool = False) -> Job | None:
        # for_update locks nothing here: writers run one at a time, as on SQLite.
        job = self.tables.jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return _job_row(job)

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for job_id in sorted(set(job_ids)):
            job = await self.get_job(job_id, owner)
            if job is not None:
                found[job_id] = job
        return found

    async def list_attempts(
        self, job_id: str, index: int | None, after: tuple[int, int], limit: int
    ) -> list[Attempt]:
        """SqlTx.list_attempts: the ended attempts not completed, then each running or completed chunk's
        current or last one."""
        found = [copy.copy(a) for a in self.tables.attempts if a.job_id == job_id]
        found += [
            current_attempt(c)
            for c in self.tables.chunks.values()
            if c.job_id == job_id and c.state in (ChunkState.PROCESSING, ChunkState.COMPLETED)
        ]
        found = [
            a
            for a in found
            if (index is None or a.chunk_index == index) and (a.chunk_index, a.attempt) > after
        ]
        return sorted(found, key=lambda a: (a.chunk_index, a.attempt))[:limit]

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
        found = sorted(
            (
                c
                for c in self._filtered(states, kind, error_reasons)
                if c.job_id == job_id
                and c.index > after_index
                and (after_revision is None or c.revision > after_revision)
            ),
            key=lambda c: c.index,
        )
        if limit is not None:
            found = found[:limit]
        return await self._with_artifacts([_chunk_row(c) for c in found])

    def _filtered(self, states: Iterable[ChunkState], kind: str, error_reasons: Sequence[str]) -> list[Chunk]:
        wanted = set(states)
        return [
            c
            for c in self.tables.chunks.values()
            if (not wanted or c.state in wanted)
            and (not kind or c.kind == kind)
            and (not error_reasons or c.error_reason in error_reasons)
        ]

    async def _with_artifacts(self, out: list[Chunk]) -> list[Chunk]:
        arts = await self.jobs_artifacts(sorted({c.job_id for c in out}), 1 << 62)
        for c in out:
            if c.state in (ChunkState.COMPLETED, ChunkState.PROCESSING):
                c.artifacts = [a for a in arts.get(c.job_id, []) if a.chunk_index == c.index]
        return out

    async def count_chunks(
        self, job_id: str, states: Iterable[ChunkState], kind: str, error_reasons: Sequence[str]
    ) -> int:
        return sum(1 for c in self._filtered(states, kind, error_reasons) if c.job_id == job_id)

    async def list_chunks_across(
        self,
        owner: str | None,
        states: Iterable[ChunkState],
        kind: str,
        error_reasons: Sequence[str],
        after: tuple[str, int] | None,
        limit: int,
    ) -> list[Chunk]:
        jobs = self.tables.jobs
        found = sorted(
            (
                c
                for c in self._filtered(states, kind, error_reasons)
                if (owner is None or jobs[c.job_id].owner == owner)
                and (after is None or (c.job_id, c.index) < after)
            ),
            key=lambda c: (c.job_id, c.index),
            reverse=True,
        )
        return await self._with_artifacts([_chunk_row(c) for c in found[:limit]])

    async def failure_groups(
        self,
        owner: str | None,
        kind: str,
        created_after: int | None,
        created_before: int | None,
        limit: int,
    ) -> list[FailureGroup]:
        jobs = self.tables.jobs
        by_reason: dict[str, list[Chunk]] = {}
        for c in self._filtered([ChunkState.FAILED], kind, ()):
            j = jobs[c.job_id]
            if owner is not None and j.owner != owner:
                continue
            if (created_after is not None and j.create_time < created_after) or (
                created_before is not None and j.create_time >= created_before
            ):
                continue
            by_reason.setdefault(c.error_reason, []).append(c)
        groups = []
        for reason, chunks in by_reason.items():
            last = max(chunks, key=lambda c: (c.end_time or 0, c.job_id))
            groups.append(
                FailureGroup(
                    reason, len(chunks), len({c.job_id for c in chunks}), last.end_time, last.error_message
                )
            )
        groups.sort(key=lambda g: (-(g.last_time or 0), g.reason))
        return groups[:limit]

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        out: dict[str, list[Artifact]] = {}
        for job_id in job_ids:
            mine = [copy.copy(a) for j, a in self.tables.artifacts if j == job_id]
            mine.sort(key=lambda a: a.chunk_index)  # stable: insertion order within a chunk
            if mine:
                out[job_id] = mine[:limit]
        return out

    async def list_jobs(self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int) -> list[Job]:
        cols, desc = ORDERS[order_by]

        def key(job: Job) -> tuple[Any, ...]:
            return tuple(getattr(job, _SORT_ATTRS[c]) for c in cols)

        found = [j for j in self.tables.jobs.values() if _matches(j, f)]
        if after is not None:
            bound = tuple(after)
            found = [j for j in found if (key(j) < bound if desc else key(j) > bound)]
        found.sort(key=key, reverse=desc)
        return [_job_row(j) for j in found[:limit]]

    async def list_job_heads(
        self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int
    ) -> list[JobHead]:
        return [
            JobHead(
                j.id,
                j.revision,
                j.state,
                j.start_time,
                j.items_done,
                j.total_items,
                j.update_time,
                j.priority,
                j.schedule_time,
                j.n_held,
                j.summary.pending,
                j.summary.processing,
            )
            for j in await self.list_jobs(f, order_by, after, limit)
        ]

    async def count_jobs(self, f: JobFilter) -> int:
        return sum(1 for j in self.tables.jobs.values() if _matches(j, f))

    async def change_horizon(self) -> int:
        return self.tables.seq + 1

    async def chunk_states(self, job_id: str) -> str:
        found = sorted((c for c in self.tables.chunks.values() if c.job_id == job_id), key=lambda c: c.index)
        return "".join(str(int(c.state)) for c in found)

    async def find_job_by_request(self, owner: str, request_id: str) -> Job | None:
        for job in self.tables.jobs.values():
            if job.owner == owner and job.request_id == request_id:
                return _job_row(job)
        return None

    async def request_fingerprint(self, job_id: str) -> str | None:
        return self.tables.requests.get(job_id)

    async def expiry_candidates(
        self, state: JobState, after: tuple[int, str], before: int, limit: int
    ) -> list[ExpiryCandidate]:
        found = sorted(
            (j for j in self.tables.jobs.values() if j.state == state and j.update_time < before),
            key=lambda j: (j.update_time, j.id),
        )
        return [_candidate(j) for j in found if (j.update_time, j.id) > after][:limit]

    async def own_ttl_expired(self, now: int, limit: int) -> list[ExpiryCandidate]:
        found = [
            j
            for j in self.tables.jobs.values()
            if j.ttl is not None and j.ttl > 0 and j.end_time is not None and j.end_time + j.ttl < now
        ]
        found.sort(key=lambda j: (j.end_time or 0) + (j.ttl or 0))
        return [_candidate(j) for j in found[:limit]]

    async def feed_floor(self) -> int:
        return self.tables.floor

    async def overdue_cancels(self, cancel_before: int) -> list[str]:
        # The SQL has no ORDER BY; id order here.
        return sorted(
            j.id
            for j in self.tables.jobs.values()
            if j.cancel_requested
            and j.summary.processing
            and j.cancel_time is not None
            and j.cancel_time < cancel_before
        )[:_OVERDUE_LIMIT]

    async def set_deadline(self, job: Job) -> None:
        stored = self.tables.jobs.get(job.id)
        if stored is not None:
            stored.deadline_time = job.deadline_time

    async def past_deadline(self, now: int) -> list[str]:
        late = [
            j
            for j in self.tables.jobs.values()
            if j.deadline_time is not None
            and j.deadline_time <= now
            and j.end_time is None
            and not j.cancel_requested
        ]
        late.sort(key=lambda j: (j.deadline_time or 0, j.id))
        return [j.id for j in late[:_OVERDUE_LIMIT]]

    async def get_chunk(self, job_id: str, chunk_id: str) -> Chunk | None:
        c = self.tables.chunks.get(chunk_id)
        return copy.copy(c) if c is not None and c.job_id == job_id else None

    async def processing_chunks(self, job_id: str) -> list[Chunk]:
        return await self.list_chunks(job_id, states=[ChunkState.PROCESSING])

    async def get_kind(self, kind: str) -> Kind | None:
        found = self.tables.kinds.get(kind)
        return dataclasses.replace(found) if found is not None else None

    async def list_kinds(self, after: str, limit: int, owner: str | None) -> list[Kind]:
        counts: dict[str, list[int]] = {}
        for job in self.tables.jobs.values():
            s = job.summary
            if job.state.terminal or not (s.pending or s.processing) or (owner and job.owner != owner):
                continue
            n = counts.setdefault(job.kind, [0, 0])
            n[0] += s.pending
            n[1] += s.processing
        names = sorted(k for k in set(counts) | set(self.tables.kinds) if k > after)[:limit]
        out = []
        for name in names:
            stored = self.tables.kinds.get(name) or Kind(name)
            pending, running = counts.get(name, (0, 0))
            out.append(dataclasses.replace(stored, pending_chunks=pending, running_chunks=running))
        return out

    async def kind_chunks(self, kind: str, owner: str | None) -> tuple[int, int]:
        found = await self.list_kinds("", 1 << 30, owner)
        return next(((k.pending_chunks, k.running_chunks) for k in found if k.kind == kind), (0, 0))

    async def kind_controls(self, kinds: Sequence[str]) -> dict[str, Kind]:
        return {
            k.kind: dataclasses.replace(k)
            for k in self.tables.kinds.values()
            if (k.paused or k.max_running_chunks) and (not kinds or k.kind in kinds)
        }

    async def job_stats(self, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
        """``repository.job_stats``: per (kind, state) group the count, items done, the earliest
        start and the latest update, summed into one row per kind and one overall (a group's latest
        update counts only when one of its jobs started, as there); then the nearest-rank p50 / p95
        / p99 / max of end_time - create_time over the finished jobs, and end_time - start_time summed
        over the finished jobs that started. Exact, not approximated."""
        matching = [j for j in self.tables.jobs.values() if _matches(j, f)]
        groups: dict[tuple[str, JobState], list[Job]] = {}
        for job in matching:
            groups.setdefault((job.kind, job.state), []).append(job)
        per_kind: dict[str, StatsRow] = {}
        overall = StatsRow("", 0, {}, 0, {})
        for (kind, state), members in groups.items():
            starts = [j.start_time for j in members if j.start_time is not None]
            first_start = min(starts) if starts else None
            last_update = max(j.update_time for j in members)
            row = per_kind.setdefault(kind, StatsRow(kind, 0, {}, 0, {}))
            for target in (row, overall):
                target.total += len(members)
                target.by_state[state] = target.by_state.get(state, 0) + len(members)
                target.items_done += sum(j.items_done for j in members)
                processed = [j for j in members if j.end_time is not None and j.start_time is not None]
                target.processed_jobs += len(processed)
                target.processing_us += sum(j.end_time - j.start_time for j in processed)  # type: ignore[operator]
                if first_start is not None:
                    target.first_start = min(filter(None, (target.first_start, first_start)))
                    target.last_update = max(target.last_update or 0, last_update)
        overall.durations = _durations(matching)
        for kind, row in per_kind.items():
            row.durations = _durations([j for j in matching if j.kind == kind])
        return overall, [per_kind[k] for k in sorted(per_kind)]

    async def changed_jobs(
        self, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
    ) -> tuple[list[FeedEntry], bool]:
        def wanted(row: Job | Tombstone) -> bool:
            return _matches(row, f) and (row.change_seq, row.id) > tuple(after) and row.change_seq < horizon

        def first(rows: Iterable[Job | Tombstone]) -> list[Any]:
            return sorted((r for r in rows if wanted(r)), key=lambda r: (r.change_seq, r.id))[:limit]

        found = [FeedEntry(j.change_seq, j.id, _job_row(j)) for j in first(self.tables.jobs.values())]
        found += [FeedEntry(t.change_seq, t.id, None) for t in first(self.tables.tombstones.values())]
        found.sort(key=lambda e: (e.change_seq, e.job_id))
        # One writer at a time: nothing committed lies beyond the horizon (as on SQLite).
        return found[:limit], False


class FakeWrite(FakeRead):
    """One write transaction on a private copy of the tables; added rows wait for ``save``."""

    def __init__(
        self, tables: _Tables, changes: Changes, fault: Callable[[], BaseException | None] = lambda: None
    ) -> None:
        super().__init__(tables, changes)
        self._artifacts: list[tuple[str, Artifact]] = []
        self._outbox: list[dict[str, Any]] = []
        self._fault = fault
        self.fair = True

    async def claim(
        self,
        kinds: Sequence[str],
        now: int,
        limit: int,
        *,
        skip_locked: bool,
        held: Mapping[str, Job] = NO_JOBS,
    ) -> tuple[dict[str, Job], list[Chunk]]:
        ready = [
            c
            for c in self.tables.chunks.values()
            if c.state == ChunkState.PENDING
            and (c.next_attempt_time is None or c.next_attempt_time <= now)
            and (not kinds or c.kind in kinds)
        ]
        ready.sort(key=lambda c: (-c.priority, c.job_id, c.index))
        allowed: list[Chunk] = []
        room: dict[str, int | None] = {}  # each job's Job.claimable, as SqlTx keeps it
        kind_room: dict[str, int] = {}  # each controlled kind's Kind.claimable
        for kind, controls in (await self.kind_controls(kinds)).items():
            running = sum(
                1 for c in self.tables.chunks.values() if c.kind == kind and c.state == ChunkState.PROCESSING
            )
            kind_room[kind] = controls.claimable(running) or 0
        for c in ready:
            left = room.get(c.job_id, (held.get(c.job_id) or self.tables.jobs[c.job_id]).claimable())
            if left is not None and left <= 0:
                room[c.job_id] = 0
                continue
            allowed.append(c)
            room[c.job_id] = None if left is None else left - 1
        # Fair share, as the server's default (fair_order: the owner with the fewest running first).
        owner_of = {job_id: job.owner for job_id, job in self.tables.jobs.items()}
        by_job: dict[str, int] = {}
        for c in self.tables.chunks.values():
            if c.state == ChunkState.PROCESSING:
                by_job[c.job_id] = by_job.get(c.job_id, 0) + 1
        by_job.update((job_id, job.summary.processing) for job_id, job in held.items())  # as SqlTx
        running: dict[str, int] = {}
        for job_id, n in by_job.items():
            running[owner_of[job_id]] = running.get(owner_of[job_id], 0) + n
        ordered = fair_order(allowed, owner_of, running, now) if self.fair else allowed
        # Then each controlled kind's room, in that order (as PostgreSQL's claim; SQLite's deals the
        # owners' chunks within it, which can differ only while a kind's cap binds in a claim of several).
        picked = []
        for c in ordered:
            if len(picked) == limit:
                break
            if kind_room.get(c.kind, 1) <= 0:
                continue
            if c.kind in kind_room:
                kind_room[c.kind] -= 1
            picked.append(_chunk_row(c))
        picked.sort(key=lambda c: (-c.priority, c.job_id, c.index))  # returned in claim order, as SqlTx
        wanted = [c.job_id for c in picked if c.job_id not in held]  # as SqlTx on SQLite
        return (await self.get_jobs(wanted, None) if wanted else {}), picked

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        return await self.get_jobs(job_ids, None) if job_ids else {}

    async def lock_leased(
        self, job_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> tuple[dict[str, Job], dict[str, Chunk]]:
        """As SqlTx on SQLite: the jobs, then the chunks of those jobs."""
        jobs = await self.lock_jobs(job_ids)
        wanted = sorted({c for c in chunk_ids if chunk_job_id(c) in jobs})
        return jobs, {c: _chunk_row(self.tables.chunks[c]) for c in wanted if c in self.tables.chunks}

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]:
        expired = [
            c
            for c in self.tables.chunks.values()
            if c.state == ChunkState.PROCESSING
            and c.lease_expire_time is not None
            and c.lease_expire_time < now
        ]
        expired.sort(key=lambda c: c.lease_expire_time or 0)
        return [_chunk_row(c) for c in expired[:limit]]

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        # Copied now: SqliteWrite takes the values when they are added, too.
        self._artifacts += [(job_id, copy.copy(a)) for a in artifacts]

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox += [{c: r[c] for c in OUTBOX_COLUMNS} for r in rows]

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        fault = self._fault()
        if fault is not None:
            raise fault
        t = self.tables
        # The attempts these moves ended (Job.move_chunk), as SqlTx.save writes them.
        t.attempts += [copy.copy(c.ended) for c in chunks if c.ended is not None]
        for c in chunks:
            c.ended = None
        t.save_chunks(chunks)
        for job in jobs:
            t.save_job(job)
            self.changes.jobs[job.id] = max(job.revision, self.changes.jobs.get(job.id, 0))
        if self._artifacts:
            # A chunk's artifact replaces its earlier one of the same name, as SqlTx.save does.
            new = {(job_id, a.chunk_index, a.name) for job_id, a in self._artifacts}
            t.artifacts[:] = [(j, a) for j, a in t.artifacts if (j, a.chunk_index, a.name) not in new]
            t.artifacts += self._artifacts
            self._artifacts = []
        if self._outbox:
            t.add_outbox(self._outbox)
            self._outbox = []
            self.changes.webhooks = True

    async def finish(self) -> None:
        """Nothing to tell other replicas (as on SQLite)."""

    async def insert_job(self, job: Job, chunks: Sequence[Chunk], request_fingerprint: str = "") -> None:
        t = self.tables
        # ux_jobs_owner_request_id (NULL request ids never clash), then the primary keys: SqlJobsTx
        # reports any integrity error of a job with a request_id as RequestIdTaken.
        if job.request_id is not None and any(
            j.owner == job.owner and j.request_id == job.request_id for j in t.jobs.values()
        ):
            raise RequestIdTaken(job.request_id)
        if job.id in t.jobs or any(c.id in t.chunks for c in chunks):
            if job.request_id:
                raise RequestIdTaken(job.request_id)
            raise ValueError(f"job {job.id} or one of its chunks exists")
        row = _job_row(job)
        row.change_seq = t.next_seq()
        t.jobs[job.id] = row
        for c in chunks:
            t.chunks[c.id] = _chunk_row(c)
        if request_fingerprint:
            t.requests[job.id] = request_fingerprint
        self.changed(job.id, job.revision)

    async def cancel_pending_chunks(self, job_id: str, revision: int, now: int) -> int:
        t = self.tables
        moved = t.update_chunks(
            job_id,
            [ChunkState.PENDING],
            state=ChunkState.CANCELLED,
            revision=revision,
            end_time=now,
            next_attempt_time=None,
        )
        return sum(moved.values())

    def snapshot(self, jobs: Any) -> None:
        """The store's narrowed PostgreSQL save; nothing to note here."""

    async def cancel_pending_chunks_many(self, revisions: dict[str, int], now: int) -> dict[str, int]:
        return {job: await self.cancel_pending_chunks(job, rev, now) for job, rev in revisions.items()}

    async def reset_for_retry_many(
        self, jobs: Sequence[tuple[str, int, int, int]]
    ) -> dict[str, tuple[int, int, int]]:
        return {job[0]: await self.reset_for_retry(*job) for job in jobs}

    async def reset_for_retry(
        self, job_id: str, revision: int, priority: int, attempts: int, chunk_id: str | None = None
    ) -> tuple[int, int, int]:
        t = self.tables
        retryable = (ChunkState.FAILED, ChunkState.CANCELLED)

        def chosen(c: Chunk) -> bool:
            return c.job_id == job_id and c.state in retryable and chunk_id in (None, c.id)

        items = sum(c.items_done for c in t.chunks.values() if chosen(c))
        # max_attempts depends on each chunk's own attempt: set it before the shared values.
        for c in [c for c in t.chunks.values() if chosen(c)]:
            t.chunks[c.id] = dataclasses.replace(c, max_attempts=c.attempt + attempts)
        moved = t.update_chunks(
            job_id,
            retryable,
            only=chunk_id,
            state=ChunkState.PENDING,
            items_done=0,
            error_reason="",
            error_message="",
            error_details="",
            worker_id="",
            lease_token=None,
            lease_expire_time=None,
            next_attempt_time=None,
            start_time=None,
            end_time=None,
            revision=revision,
            priority=priority,
        )
        return moved.get(ChunkState.FAILED, 0), moved.get(ChunkState.CANCELLED, 0), items

    # --- pipelines (as SqlTx's, services/pipeline.py) ---

    async def link_dependencies(self, job_id: str, after: Sequence[str], mode: int) -> None:
        for after_id in after:
            self.tables.dependencies[(after_id, job_id)] = mode
            stored = self.tables.jobs.get(after_id)
            if stored is not None and not stored.pipeline:
                self.tables.jobs[after_id] = dataclasses.replace(stored, pipeline=True)

    async def dependants(self, job_id: str) -> list[tuple[str, int]]:
        return sorted((j, m) for (a, j), m in self.tables.dependencies.items() if a == job_id)

    async def unfinished_dependencies(self, job_id: str) -> list[str]:
        t = self.tables
        return [
            a
            for (a, j) in t.dependencies
            if j == job_id and a in t.jobs and t.jobs[a].state != JobState.COMPLETED
        ]

    async def completed_indexes(self, job_id: str) -> set[int]:
        return {
            c.index
            for c in self.tables.chunks.values()
            if c.job_id == job_id and c.state == ChunkState.COMPLETED
        }

    def _held(self, job_id: str, indexes: Sequence[int] | None, held: bool) -> list[Chunk]:
        return [
            c
            for c in self.tables.chunks.values()
            if c.job_id == job_id
            and c.state == ChunkState.PENDING
            and (c.next_attempt_time == HELD) == held
            and (indexes is None or c.index in indexes)
        ]

    async def release_held(self, job: Job, indexes: Sequence[int] | None, now: int) -> int:
        if indexes is not None and not indexes:
            return 0
        later = job.schedule_time if job.schedule_time is not None and job.schedule_time > now else None
        rev = job.touch(now)
        found = self._held(job.id, indexes, True)
        for c in found:
            self.tables.chunks[c.id] = dataclasses.replace(c, next_attempt_time=later, revision=rev)
        await self.move_held(job, -len(found))
        if found:
            if later is None:
                self.changes.new_work = True
            else:
                self.changes.work_later.append((later - now) / 1e6)
        return len(found)

    async def hold_pending(self, job: Job, indexes: Sequence[int], now: int) -> int:
        rev = job.touch(now)
        found = self._held(job.id, indexes, False)
        for c in found:
            self.tables.chunks[c.id] = dataclasses.replace(c, next_attempt_time=HELD, revision=rev)
        await self.move_held(job, len(found))
        return len(found)

    async def move_held(self, job: Job, n: int) -> None:
        if n:
            stored = self.tables.jobs.get(job.id)
            if stored is not None:
                self.tables.jobs[job.id] = dataclasses.replace(stored, n_held=stored.n_held + n)
            job.n_held += n

    async def clear_held(self, job: Job) -> None:
        if job.n_held:
            await self.move_held(job, -job.n_held)

    async def set_controls(self, job: Job) -> None:
        stored = self.tables.jobs.get(job.id)
        if stored is not None:
            stored.paused, stored.max_running_chunks = job.paused, job.max_running_chunks

    async def update_kind(
        self, kind: str, *, paused: bool | None, max_running_chunks: int | None, now: int
    ) -> Kind:
        stored = self.tables.kinds.get(kind) or Kind(kind)
        row = dataclasses.replace(stored, update_time=now)
        if paused is not None:
            row.paused = paused
        if max_running_chunks is not None:
            row.max_running_chunks = max_running_chunks
        self.tables.kinds[kind] = row  # replaced, never mutated: committed versions share it
        return dataclasses.replace(row)

    async def set_pending_priority(self, job_id: str, priority: int) -> None:
        self.tables.update_chunks(job_id, [ChunkState.PENDING], priority=priority)

    async def delete_job(self, job_id: str, now: int) -> None:
        await self.delete_jobs([job_id], now)

    async def delete_jobs(self, job_ids: Sequence[str], now: int) -> None:
        """As the SQL: one change_seq for all their tombstones."""
        t = self.tables
        gone = [j for j in job_ids if j in t.jobs]
        if gone:
            seq = t.next_seq()
            for job_id in gone:
                _delete_job(t, job_id, now, seq)
        self.changes.deleted.update(job_ids)

    async def delete_expired(self, job_ids: Sequence[str], now: int, retention: Retention) -> list[str]:
        """As the SQL: the jobs still expired (ttl of their own: end_time + ttl; default: update_time
        past the state's default), deleted with one change_seq for all their tombstones."""
        t = self.tables

        def expired(job: Job) -> bool:
            if job.end_time is None:
                return False
            if job.ttl is not None:
                return job.ttl > 0 and job.end_time + job.ttl < now
            default = retention.default_for(job.state)
            return default > 0 and job.update_time < now - default

        gone = sorted(j for j in set(job_ids) if j in t.jobs and expired(t.jobs[j]))
        if gone:
            seq = t.next_seq()
            for job_id in gone:
                _delete_job(t, job_id, now, seq)
        self.changes.deleted.update(gone)
        return gone

    async def trim_tombstones(self, before: int, limit: int) -> int:
        t = self.tables
        # As the SQL: the tombstones with the largest change_seq stay (SQLite's next change_seq).
        newest = max((ts.change_seq for ts in t.tombstones.values()), default=0)
        old = sorted(
            (ts for ts in t.tombstones.values() if ts.delete_time < before and ts.change_seq < newest),
            key=lambda ts: ts.delete_time,
        )
        for ts in old[:limit]:
            del t.tombstones[ts.id]
            t.floor = max(t.floor, ts.change_seq)
        return len(old[:limit])


def new_job(
    job_id: str | None = None,
    *,
    total_items: int = 10,
    chunk_size: int = 5,
    priority: int = DEFAULT_PRIORITY,
    kind: str = "k",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    owner: str = "anonymous",
    webhook_url: str = "",
    webhook_progress: bool = False,
    now: int = 0,
    display_name: str = "",
    labels: dict[str, str] | None = None,
) -> tuple[Job, list[Chunk]]:
    """A new job and its PENDING chunks, as JobService.create_job makes them."""
    job = Job(
        id=job_id or ids.new_job_id(),
        owner=owner,
        kind=kind,
        display_name=display_name,
        priority=priority,
        labels=dict(labels or {}),
        total_items=total_items,
        chunk_size=chunk_size,
        max_attempts=max_attempts,
        webhook_url=webhook_url,
        webhook_progress=webhook_progress,
        revision=1,
        create_time=now,
        update_time=now,
    )
    chunks = [
        Chunk(
            id=ids.chunk_id(job.id, i),
            job_id=job.id,
            index=i,
            state=ChunkState.PENDING,
            item_start=start,
            item_count=count,
            max_attempts=max_attempts,
            revision=1,
            priority=priority,
            kind=kind,
        )
        for i, (start, count) in enumerate(split_items(total_items, chunk_size))
    ]
    job.summary.pending = len(chunks)
    job.refresh_state(now)
    return job, chunks


class FakeStore:
    """The Store, in memory. ``on_commit`` gets what each commit changed (``ChangeHub.publish``)."""

    # No group-committed paths: the services take the general path, as on SQLite.
    batch = None

    def __init__(self, on_commit: Callable[[Changes], None] | None = None) -> None:
        self.on_commit = on_commit
        self._tables = _Tables()
        self._write_lock = asyncio.Lock()
        # Every Changes handed to on_commit, in order.
        self.published: list[Changes] = []
        self.commits = 0
        self.rollbacks = 0
        # Raised by the next save (then cleared): a write failing mid-transaction.
        self.fail_next_save: BaseException | None = None
        # Claims in fair_order (the server's default); False: priority, then the oldest job.
        self.fair_share = True

    # --- lifecycle: nothing to open ---------------------------------------------
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def dispose(self) -> None:
        return None

    async def chunks_added(self, n: int) -> None:
        return None

    # --- transactions -----------------------------------------------------------
    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[FakeRead]:
        yield FakeRead(self._tables)

    async def write(self, body: Callable[[Any], Awaitable[T]], *, bulk: bool = False) -> T:
        async with self._transaction() as (work, changes):
            tx = FakeWrite(work, changes, self._take_fault)
            tx.fair = self.fair_share
            result = await body(tx)
            await tx.finish()
        return result

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[tuple[_Tables, Changes]]:
        """One write transaction: queues on the write lock, hands out a copy of the tables and the
        Changes to fill, swaps the copy in when the
        block completes and then publishes; an exception (or cancellation) rolls back."""
        changes = Changes()
        async with self._write_lock:
            work = self._tables.fork()
            try:
                yield work, changes
            except BaseException:
                self.rollbacks += 1
                raise
            self._tables = work
            self.commits += 1
        self._publish(changes)

    def _take_fault(self) -> BaseException | None:
        fault, self.fail_next_save = self.fail_next_save, None
        return fault

    def _publish(self, changes: Changes) -> None:
        # Database.publish: only changes that concern someone.
        if changes.jobs or changes.deleted or changes.new_work or changes.webhooks:
            self.published.append(changes)
            if self.on_commit is not None:
                self.on_commit(changes)

    # --- seeding ----------------------------------------------------------------
    def add_job(self, job: Job, chunks: Sequence[Chunk], *, publish: bool = True) -> Job:
        """Inserts a job and its chunks (committed at once), as repository.insert_job does, and
        publishes it as new work as JobService.create_job does. The job's counts must match its
        chunks. Returns the job as stored."""
        if job.id in self._tables.jobs:
            raise ValueError(f"job {job.id} exists")
        counted = Summary.recount([c.state for c in chunks])
        if counted != job.summary:
            raise ValueError(f"job {job.id}'s summary {job.summary} does not match its chunks ({counted})")
        if job.items_done != sum(c.items_done for c in chunks):
            raise ValueError(f"job {job.id}'s items_done does not match its chunks")
        tables = self._tables.fork()
        for c in chunks:
            if c.job_id != job.id or c.id != ids.chunk_id(job.id, c.index) or c.id in tables.chunks:
                raise ValueError(f"chunk {c.id} does not belong to job {job.id}, or exists")
            tables.chunks[c.id] = _chunk_row(c)
        row = _job_row(job)
        row.change_seq = tables.next_seq()
        tables.jobs[job.id] = row
        self._tables = tables
        if publish:
            self._publish(Changes(jobs={job.id: job.revision}, new_work=True))
        return _job_row(row)

    # --- inspection (committed state, as copies) ----------------------------------
    def job(self, job_id: str) -> Job:
        return _job_row(self._tables.jobs[job_id])

    def chunk(self, chunk_id: str) -> Chunk:
        return _chunk_row(self._tables.chunks[chunk_id])

    def chunks_of(self, job_id: str) -> list[Chunk]:
        return sorted(
            (_chunk_row(c) for c in self._tables.chunks.values() if c.job_id == job_id), key=lambda c: c.index
        )

    def artifacts_of(self, job_id: str) -> list[Artifact]:
        return [copy.copy(a) for j, a in self._tables.artifacts if j == job_id]

    @property
    def outbox_rows(self) -> list[dict[str, Any]]:
        """The committed webhook_deliveries rows, in insertion order."""
        return [dict(r) for r in self._tables.outbox]

    @property
    def tombstones(self) -> list[Tombstone]:
        """The committed job_tombstones rows, in change order."""
        return sorted(self._tables.tombstones.values(), key=lambda t: t.change_seq)

    @property
    def job_ids(self) -> list[str]:
        """The ids of the committed jobs, sorted."""
        return sorted(self._tables.jobs)


# How many overdue cancels one sweep takes (SqlTx.overdue_cancels' limit).
_OVERDUE_LIMIT = 100


def _delete_job(t: _Tables, job_id: str, now: int, seq: int) -> None:
    """``repository.delete_jobs`` for one job: a tombstone with ``seq``; the job, its chunks,
    artifacts and request fingerprint gone (not its outbox rows)."""
    job = t.jobs[job_id]
    if job_id in t.tombstones:
        raise ValueError(f"job {job_id} has a tombstone already (its primary key)")
    t.tombstones[job_id] = Tombstone(
        id=job.id,
        owner=job.owner,
        display_name=job.display_name,
        kind=job.kind,
        state=job.state,
        priority=job.priority,
        labels=dict(job.labels),
        create_time=job.create_time,
        delete_time=now,
        change_seq=seq,
    )
    t.artifacts = [(j, a) for j, a in t.artifacts if j != job_id]
    t.attempts = [a for a in t.attempts if a.job_id != job_id]
    t.chunks = {k: c for k, c in t.chunks.items() if c.job_id != job_id}
    t.requests.pop(job_id, None)
    # job_dependencies' foreign keys cascade from either side.
    t.dependencies = {k: m for k, m in t.dependencies.items() if job_id not in k}
    del t.jobs[job_id]


def _candidate(job: Job) -> ExpiryCandidate:
    return ExpiryCandidate(job.id, job.update_time, job.ttl, job.summary.total)


def _durations(jobs: Iterable[Job]) -> dict[str, int | None]:
    """Nearest-rank percentiles of the finished jobs' end_time - create_time (repository._durations)."""
    spans = sorted(j.end_time - j.create_time for j in jobs if j.end_time is not None)
    out: dict[str, int | None] = {"p50": None, "p95": None, "p99": None, "max": None}
    n = len(spans)
    if n == 0:
        return out
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        x = q * n
        rank = min(n, max(1, int(x) if int(x) == x else int(x) + 1))  # the ceil(q*n)-th smallest
        out[name] = spans[rank - 1]
    return out
