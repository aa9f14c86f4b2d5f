"""An in-memory ``Store`` with SqliteStore's observable semantics, for testing services without a database.

What it mirrors (``store/sqlite.py``, ``store/sql.py``, ``store/rows.py``, ``store/engine.py``):

* Reads hand out fresh copies, as rows mapped to objects would be: a job read has
  ``loaded_state`` = its state, no artifacts, ``bumped`` false; COMPLETED chunks from
  ``list_chunks`` carry their artifacts (``chunk_index``, then insertion order).
* ``claim`` picks the first ``limit`` ready chunks (PENDING, past ``next_attempt_time``, of the
  wanted kinds) in claim order ``priority DESC, job_id, idx`` and reads their jobs; locks just read
  (one writer at a time, as on SQLite).
* ``save`` writes only the chunk columns of ``rows.CHUNK_SAVED`` and every job column but ``id``
  and ``change_seq``; each saved job gets the next ``change_seq`` (one more than the largest handed
  out); rows that do not exist are left alone (an UPDATE of nothing), but the job's revision is
  still recorded in ``changes``. Artifacts and outbox rows added so far are written by the next
  ``save`` (and dropped if no ``save`` follows); outbox rows set ``changes.webhooks``.
* ``write(body)`` is atomic: writers queue on a lock, the body works on a copy of the tables, and
  the copy replaces them only when the body returns. After the commit the ``Changes`` go to
  ``on_commit`` (e.g. ``ChangeHub.publish``) when they name a job, a deletion, new work or
  webhooks, as ``Database.publish`` filters them. An exception (or cancellation) rolls back and
  publishes nothing.
* Reads see one snapshot: a ``read()`` keeps the tables as they were when it began, since a commit
  replaces them rather than changing them in place (stored rows are never mutated).
* The one-statement operations decline (``GeneralPathsOnly``), as SqliteStore's do.

Seed data with ``add_job`` (``new_job`` builds a job and its chunks as JobService.create_job
does); inspect committed state with ``job``, ``chunk``, ``chunks_of``, ``artifacts_of``,
``outbox_rows`` and ``published``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobpulse_server.domain import ids
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Artifact,
    Chunk,
    ChunkState,
    Job,
    Summary,
    split_items,
)
from jobpulse_server.store import GeneralPathsOnly, TwoStepLocks, WriteTx
from jobpulse_server.store.repository import ORDERS
from jobpulse_server.store.rows import CHUNK_SAVED
from jobpulse_server.store.sql import OUTBOX_COLUMNS

T = TypeVar("T")

# Job attributes behind the sort columns of ListJobs (repository.ORDERS names columns).
_SORT_ATTRS = {"id": "id", "priority": "priority", "update_time": "update_time"}


@dataclass
class _Tables:
    """One version of the database. Committed versions are never changed in place: a write works
    on ``fork()`` and the store swaps it in on commit."""

    jobs: dict[str, Job] = field(default_factory=dict)
    chunks: dict[str, Chunk] = field(default_factory=dict)
    # (job id, artifact) in insertion order, which stands for the artifacts' autoincrement id.
    artifacts: list[tuple[str, Artifact]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # The largest change_seq handed out.
    seq: int = 0

    def fork(self) -> _Tables:
        # Shallow copies suffice: rows are replaced on write, never mutated.
        return _Tables(dict(self.jobs), dict(self.chunks), list(self.artifacts), list(self.outbox), self.seq)


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


def _matches(job: Job, f: JobFilter) -> bool:
    """``sql.job_filter`` in Python."""
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
    """Reads of one snapshot of the tables."""

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables

    async def get_job(self, job_id: str, owner: str | None) -> Job | None:
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

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
    ) -> list[Chunk]:
        wanted = set(states)
        found = sorted(
            (
                c
                for c in self.tables.chunks.values()
                if c.job_id == job_id
                and c.index > after_index
                and (not wanted or c.state in wanted)
                and (after_revision is None or c.revision > after_revision)
            ),
            key=lambda c: c.index,
        )
        if limit is not None:
            found = found[:limit]
        out = [_chunk_row(c) for c in found]
        by_index: dict[int, list[Artifact]] = {}
        for a in await self.job_artifacts(job_id):
            by_index.setdefault(a.chunk_index, []).append(a)
        for c in out:
            if c.state == ChunkState.COMPLETED:
                c.artifacts = by_index.get(c.index, [])
        return out

    async def job_artifacts(self, job_id: str) -> list[Artifact]:
        mine = [copy.copy(a) for j, a in self.tables.artifacts if j == job_id]
        return sorted(mine, key=lambda a: a.chunk_index)  # stable: insertion order within a chunk

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

    async def count_jobs(self, f: JobFilter) -> int:
        return sum(1 for j in self.tables.jobs.values() if _matches(j, f))

    async def change_horizon(self) -> int:
        return self.tables.seq + 1


class FakeWrite(FakeRead, TwoStepLocks):
    """One write transaction on a private copy of the tables; added rows wait for ``save``."""

    def __init__(
        self, tables: _Tables, changes: Changes, fault: Callable[[], BaseException | None] = lambda: None
    ) -> None:
        super().__init__(tables)
        self.changes = changes
        self._artifacts: list[tuple[str, Artifact]] = []
        self._outbox: list[dict[str, Any]] = []
        self._fault = fault

    async def claim(
        self, kinds: Sequence[str], now: int, limit: int, *, skip_locked: bool
    ) -> tuple[dict[str, Job], list[Chunk]]:
        ready = [
            c
            for c in self.tables.chunks.values()
            if c.state == ChunkState.PENDING
            and (c.next_attempt_time is None or c.next_attempt_time <= now)
            and (not kinds or c.kind in kinds)
        ]
        ready.sort(key=lambda c: (-c.priority, c.job_id, c.index))
        picked = [_chunk_row(c) for c in ready[:limit]]
        return (await self.get_jobs([c.job_id for c in picked], None) if picked else {}), picked

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        return await self.get_jobs(job_ids, None) if job_ids else {}

    async def lock_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        return {
            c: _chunk_row(self.tables.chunks[c]) for c in sorted(set(chunk_ids)) if c in self.tables.chunks
        }

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
        for c in chunks:
            stored = t.chunks.get(c.id)
            if stored is None:
                continue
            new = copy.deepcopy(stored)
            for name in CHUNK_SAVED:
                setattr(new, name, getattr(c, name))
            t.chunks[c.id] = new
        for job in jobs:
            if job.id in t.jobs:
                t.seq += 1
                row = _job_row(job)
                row.change_seq = t.seq
                t.jobs[job.id] = row
            job.bumped = False
            self.changes.jobs[job.id] = max(job.revision, self.changes.jobs.get(job.id, 0))
        if self._artifacts:
            t.artifacts += self._artifacts
            self._artifacts = []
        if self._outbox:
            t.outbox += self._outbox
            self._outbox = []
            self.changes.webhooks = True


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


class FakeStore(GeneralPathsOnly):
    """The Store, in memory. ``on_commit`` gets what each commit changed (``ChangeHub.publish``)."""

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

    async def write(self, body: Callable[[WriteTx], Awaitable[T]]) -> T:
        changes = Changes()
        async with self._write_lock:
            work = self._tables.fork()
            try:
                result = await body(FakeWrite(work, changes, self._take_fault))
            except BaseException:
                self.rollbacks += 1
                raise
            self._tables = work
            self.commits += 1
        self._publish(changes)
        return result

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
        tables.seq += 1
        row = _job_row(job)
        row.change_seq = tables.seq
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
