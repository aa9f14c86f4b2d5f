"""Reads and writes of jobs, chunks and artifacts (SQLAlchemy Core, one connection per call).

Functions here neither commit nor decide anything: the services do, inside a
``Database.write()`` unit of work. Whatever changes a chunk also saves its job,
so counts, state and revision land in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from jobpulse_server.domain.filters import ORDERS, JobFilter, job_sort_key  # noqa: F401 (used by the stores)
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.reports import FeedEntry, StatsRow
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.store import rows as store_rows
from jobpulse_server.store.tables import artifacts, chunks, feed_floor, job_requests, job_tombstones, jobs

# --- mapping ---------------------------------------------------------------

_JOB_COUNTS = ("n_pending", "n_processing", "n_completed", "n_failed", "n_cancelled")


def _job_from_row(r: Row[Any]) -> Job:
    # select(jobs) yields the table's columns in the order store.rows.JOB_COLUMNS names them.
    return store_rows.job_from_row(tuple(r))


def _job_values(job: Job) -> dict[str, Any]:
    return dict(zip(store_rows.JOB_SAVED, store_rows.job_saved_values(job, json_text=False), strict=True))


def _chunk_from_row(r: Row[Any]) -> Chunk:
    return store_rows.chunk_from_row(tuple(r))


_CHUNK_MUTABLE = store_rows.CHUNK_SAVED


def _chunk_values(c: Chunk) -> dict[str, Any]:
    return {
        "id": c.id,
        "job_id": c.job_id,
        "idx": c.index,
        "state": int(c.state),
        "item_start": c.item_start,
        "item_count": c.item_count,
        "items_done": c.items_done,
        "attempt": c.attempt,
        "max_attempts": c.max_attempts,
        "worker_id": c.worker_id,
        "external_task_id": c.external_task_id,
        "error_reason": c.error_reason,
        "error_message": c.error_message,
        "lease_token": c.lease_token,
        "lease_expire_time": c.lease_expire_time,
        "lease_duration": c.lease_duration,
        "next_attempt_time": c.next_attempt_time,
        "revision": c.revision,
        "priority": c.priority,
        "kind": c.kind,
        "start_time": c.start_time,
        "end_time": c.end_time,
    }


# --- jobs ------------------------------------------------------------------


def _next_change_seq(conn: AsyncConnection) -> Any:
    """The change_seq of a job written now (see WatchJobs).

    PostgreSQL: the writing transaction's id, read back only once every older
    transaction has ended (change_horizon). SQLite: one more than the largest,
    which is commit order because SQLite has one writer at a time.
    """
    if conn.dialect.name == "postgresql":
        return literal_column("pg_current_xact_id()::text::bigint")
    return _sqlite_next_seq()


def _sqlite_largest_seq() -> Any:
    """The largest change_seq handed out on SQLite, by a job change or by a delete (tombstone)."""
    other = jobs.alias("seq_jobs")
    largest_job = select(func.coalesce(func.max(other.c.change_seq), 0)).scalar_subquery()
    largest_tomb = select(func.coalesce(func.max(job_tombstones.c.change_seq), 0)).scalar_subquery()
    return func.max(largest_job, largest_tomb)  # SQLite's two-argument max() is the larger value


def _sqlite_next_seq() -> Any:
    return select(_sqlite_largest_seq() + 1).scalar_subquery()


async def change_horizon(conn: AsyncConnection) -> int:
    """Every job change with change_seq below this is committed and visible to this transaction."""
    if conn.dialect.name == "postgresql":
        q: Select[Any] = select(literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    else:
        q = select(_sqlite_largest_seq() + 1)
    return int((await conn.execute(q)).scalar_one())


async def changed_jobs(
    conn: AsyncConnection, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
) -> tuple[list[FeedEntry], bool]:
    """Jobs matching ``f`` changed or deleted after ``after`` (change_seq, id) and below ``horizon``, in
    change order.

    Also says whether changes at or beyond the horizon exist (committed but not yet safe to hand out).
    """
    found: list[FeedEntry] = []
    beyond = False
    for table in (jobs, job_tombstones):
        q = (
            select(table)
            .where(
                *_filter_clauses(conn, f, table),
                tuple_(table.c.change_seq, table.c.id) > tuple_(literal(after[0]), literal(after[1])),
                table.c.change_seq < horizon,
            )
            .order_by(table.c.change_seq, table.c.id)
            .limit(limit)
        )
        rows = (await conn.execute(q)).all()
        if table is jobs:
            found += [FeedEntry(r.change_seq, r.id, _job_from_row(r)) for r in rows]
        else:
            found += [FeedEntry(r.change_seq, r.id, None) for r in rows]
        if conn.dialect.name == "postgresql" and not beyond:
            # (On SQLite the horizon is one past the largest change_seq in this same snapshot.)
            found_beyond = select(table.c.id).where(table.c.change_seq >= horizon).limit(1)
            beyond = (await conn.execute(found_beyond)).first() is not None
    found.sort(key=lambda e: (e.change_seq, e.job_id))
    return found[:limit], beyond


async def insert_job(conn: AsyncConnection, job: Job, new_chunks: Sequence[Chunk]) -> None:
    await conn.execute(
        insert(jobs).values(id=job.id, change_seq=_next_change_seq(conn), ttl=job.ttl, **_job_values(job))
    )
    batch = 2000
    for start in range(0, len(new_chunks), batch):
        await conn.execute(insert(chunks), [_chunk_values(c) for c in new_chunks[start : start + batch]])


async def get_job(
    conn: AsyncConnection, job_id: str, owner: str | None = None, *, for_update: bool = False
) -> Job | None:
    q = select(jobs).where(jobs.c.id == job_id)
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    if for_update and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    return _job_from_row(row) if row else None


async def lock_jobs_skip_locked(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, Job]:
    """Locks and returns the given jobs, leaving out any another transaction holds (PostgreSQL)."""
    if not job_ids:
        return {}
    q = select(jobs).where(jobs.c.id.in_(list(job_ids))).order_by(jobs.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return {j.id: j for j in (_job_from_row(r) for r in (await conn.execute(q)).all())}


async def job_id_of_chunk(conn: AsyncConnection, chunk_id: str) -> str | None:
    value = (await conn.execute(select(chunks.c.job_id).where(chunks.c.id == chunk_id))).scalar_one_or_none()
    return str(value) if value is not None else None


async def get_jobs(conn: AsyncConnection, job_ids: Sequence[str], owner: str | None = None) -> dict[str, Job]:
    q = select(jobs).where(jobs.c.id.in_(list(set(job_ids))))
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    return {j.id: j for j in (_job_from_row(r) for r in (await conn.execute(q)).all())}


async def find_job_by_request(conn: AsyncConnection, owner: str, request_id: str) -> Job | None:
    q = select(jobs).where(jobs.c.owner == owner, jobs.c.request_id == request_id)
    row = (await conn.execute(q)).first()
    return _job_from_row(row) if row else None


@functools.cache
def _save_job_statement(dialect: str) -> Any:
    # Built once per dialect: building a 35-column UPDATE per save cost more than running it.
    names = store_rows.JOB_SAVED
    values: dict[str, Any] = {name: bindparam(f"b_{name}") for name in names}
    if dialect == "postgresql":
        values["change_seq"] = literal_column("pg_current_xact_id()::text::bigint")
    else:
        values["change_seq"] = _sqlite_next_seq()
    return update(jobs).where(jobs.c.id == bindparam("b_id")).values(values)


async def save_job(conn: AsyncConnection, job: Job) -> None:
    params = {f"b_{name}": value for name, value in _job_values(job).items()}
    params["b_id"] = job.id
    await conn.execute(_save_job_statement(conn.dialect.name), params)
    job.bumped = False


async def delete_job(conn: AsyncConnection, job_id: str, now: int) -> None:
    await delete_jobs(conn, [job_id], now)


async def delete_jobs(conn: AsyncConnection, job_ids: Sequence[str], now: int) -> None:
    """Deletes the jobs, their chunks, artifacts and request fingerprints, leaving a tombstone each.

    The tombstones take their change_seq before the jobs' rows go (on SQLite the next one is one more
    than the largest in either table, the jobs' own included; one value for the whole statement, as
    every row a PostgreSQL transaction writes shares its id)."""
    ids = list(job_ids)
    if not ids:
        return
    cols = ["id", "owner", "display_name", "kind", "state", "priority", "labels", "create_time"]
    source = select(
        *[jobs.c[c] for c in cols],
        literal(now).label("delete_time"),
        _next_change_seq(conn).label("change_seq"),
    ).where(jobs.c.id.in_(ids))
    await conn.execute(insert(job_tombstones).from_select([*cols, "delete_time", "change_seq"], source))
    await conn.execute(delete(artifacts).where(artifacts.c.job_id.in_(ids)))
    await conn.execute(delete(job_requests).where(job_requests.c.job_id.in_(ids)))
    await conn.execute(delete(chunks).where(chunks.c.job_id.in_(ids)))
    await conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))


# --- expiry (AIP-214) ----------------------------------------------------------


def _chunk_total() -> ColumnElement[Any]:
    return jobs.c.n_pending + jobs.c.n_processing + jobs.c.n_completed + jobs.c.n_failed + jobs.c.n_cancelled


def _own_expiry() -> ColumnElement[Any]:
    # Spelled as ix_jobs_own_expiry's expression, so both databases read that index.
    return jobs.c.end_time + jobs.c.ttl


async def expiry_candidates(
    conn: AsyncConnection, state: JobState, after: tuple[int, str], before: int, limit: int
) -> list[ExpiryCandidate]:
    """Jobs in ``state`` with (update_time, id) after ``after`` and update_time before ``before``, in
    that order, read from the (state, update_time, id) index. Those on the default ttl are expired
    when ``before`` is now minus that default: a terminal job's update_time is at least its end_time
    (a change after it ended only postpones its deletion)."""
    key = tuple_(jobs.c.update_time, jobs.c.id)
    q = (
        select(jobs.c.id, jobs.c.update_time, jobs.c.ttl, _chunk_total())
        .where(
            jobs.c.state == int(state),
            key > tuple_(literal(after[0]), literal(after[1])),
            jobs.c.update_time < before,
        )
        .order_by(jobs.c.update_time, jobs.c.id)
        .limit(limit)
    )
    return [ExpiryCandidate(r[0], int(r[1]), r[2], int(r[3])) for r in (await conn.execute(q)).all()]


async def own_ttl_expired(conn: AsyncConnection, now: int, limit: int) -> list[ExpiryCandidate]:
    """Jobs with a ttl of their own whose end_time + ttl is past, soonest expired first."""
    q = (
        select(jobs.c.id, jobs.c.update_time, jobs.c.ttl, _chunk_total())
        .where(jobs.c.ttl > 0, _own_expiry() < now)
        .order_by(_own_expiry())
        .limit(limit)
    )
    return [ExpiryCandidate(r[0], int(r[1]), r[2], int(r[3])) for r in (await conn.execute(q)).all()]


def _expired(retention: Retention, now: int) -> ColumnElement[bool]:
    """The jobs whose expire_time has passed, as the sweep selects them."""
    by_default = [
        and_(jobs.c.ttl.is_(None), jobs.c.state == int(state), jobs.c.update_time < now - ttl)
        for state, ttl in retention.defaults()
    ]
    own = and_(jobs.c.ttl > 0, _own_expiry() < now)
    return and_(jobs.c.end_time.is_not(None), or_(own, *by_default))


async def delete_expired(
    conn: AsyncConnection, job_ids: Sequence[str], now: int, retention: Retention
) -> list[str]:
    """Deletes those of ``job_ids`` that are still expired (looked for in another snapshot, a job may
    have been retried or deleted since), as DeleteJob does; returns their ids. PostgreSQL locks them
    in id order first (the lock order of every writer of several jobs)."""
    if not job_ids:
        return []
    q = select(jobs.c.id).where(jobs.c.id.in_(list(job_ids)), _expired(retention, now)).order_by(jobs.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    gone = [r[0] for r in (await conn.execute(q)).all()]
    await delete_jobs(conn, gone, now)
    return gone


async def trim_tombstones(conn: AsyncConnection, before: int, limit: int) -> int:
    """Deletes up to ``limit`` tombstones of jobs deleted before ``before`` and raises the feed's floor
    to the largest change_seq among them; returns how many.

    The tombstones with the largest change_seq stay, however old: on SQLite the next change_seq is one
    more than the largest in jobs and tombstones, and must never go back to one handed out before
    (cursors past it would miss the change)."""
    newest = select(func.max(job_tombstones.c.change_seq)).scalar_subquery()
    oldest = (
        select(job_tombstones.c.id, job_tombstones.c.change_seq)
        .where(job_tombstones.c.delete_time < before, job_tombstones.c.change_seq < newest)
        .order_by(job_tombstones.c.delete_time)
        .limit(limit)
    )
    rows = (await conn.execute(oldest)).all()
    if not rows:
        return 0
    await conn.execute(delete(job_tombstones).where(job_tombstones.c.id.in_([r[0] for r in rows])))
    top = max(int(r[1]) for r in rows)
    insert_floor = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    q = insert_floor(feed_floor).values(id=1, change_seq=top)
    await conn.execute(
        q.on_conflict_do_update(
            index_elements=[feed_floor.c.id],
            set_={
                "change_seq": case(
                    (q.excluded.change_seq > feed_floor.c.change_seq, q.excluded.change_seq),
                    else_=feed_floor.c.change_seq,
                )
            },
        )
    )
    return len(rows)


async def feed_floor_seq(conn: AsyncConnection) -> int:
    """The largest change_seq of a trimmed tombstone (0 when none was trimmed)."""
    value = (await conn.execute(select(feed_floor.c.change_seq).where(feed_floor.c.id == 1))).scalar()
    return int(value) if value is not None else 0


# --- chunks ----------------------------------------------------------------


async def list_chunks(
    conn: AsyncConnection,
    job_id: str,
    *,
    after_index: int = -1,
    limit: int | None = None,
    states: Iterable[ChunkState] = (),
    after_revision: int | None = None,
) -> list[Chunk]:
    q = select(chunks).where(chunks.c.job_id == job_id, chunks.c.idx > after_index)
    st = [int(s) for s in states]
    if st:
        q = q.where(chunks.c.state.in_(st))
    if after_revision is not None:
        q = q.where(chunks.c.revision > after_revision)
    q = q.order_by(chunks.c.idx)
    if limit is not None:
        q = q.limit(limit)
    found = [_chunk_from_row(r) for r in (await conn.execute(q)).all()]
    await _attach_artifacts(conn, job_id, found)
    return found


async def chunk_states(conn: AsyncConnection, job_id: str) -> str:
    q = select(chunks.c.state).where(chunks.c.job_id == job_id).order_by(chunks.c.idx)
    return "".join(str(r[0]) for r in (await conn.execute(q)).all())


async def count_chunks(conn: AsyncConnection, job_id: str, states: Iterable[ChunkState] = ()) -> int:
    q = select(func.count()).select_from(chunks).where(chunks.c.job_id == job_id)
    st = [int(s) for s in states]
    if st:
        q = q.where(chunks.c.state.in_(st))
    return int((await conn.execute(q)).scalar_one())


async def get_chunk(conn: AsyncConnection, chunk_id: str, *, for_update: bool = False) -> Chunk | None:
    q = select(chunks).where(chunks.c.id == chunk_id)
    if for_update and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    return _chunk_from_row(row) if row else None


async def save_chunks(conn: AsyncConnection, changed: Sequence[Chunk]) -> None:
    if not changed:
        return
    params = []
    for c in changed:
        values = _chunk_values(c)
        row = {f"b_{name}": values[name] for name in _CHUNK_MUTABLE}
        row["b_id"] = c.id
        params.append(row)
    await conn.execute(_SAVE_CHUNKS, params)


_SAVE_CHUNKS = (
    update(chunks)
    .where(chunks.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _CHUNK_MUTABLE})
)


def _ready_chunks(kinds: Sequence[str], now: int) -> list[ColumnElement[bool]]:
    where = [
        chunks.c.state == int(ChunkState.PENDING),
        or_(chunks.c.next_attempt_time.is_(None), chunks.c.next_attempt_time <= now),
    ]
    if kinds:
        where.append(chunks.c.kind.in_(list(kinds)))
    return where


_CLAIM_ORDER = (chunks.c.priority.desc(), chunks.c.job_id, chunks.c.idx)


async def claim_jobs(
    conn: AsyncConnection, *, kinds: Sequence[str], now: int, limit: int, skip_locked: bool
) -> dict[str, Job]:
    """Locks and reads the jobs of the first ``limit`` ready chunks (see store.sql.claim_jobs)."""
    first = select(chunks.c.job_id).where(*_ready_chunks(kinds, now)).order_by(*_CLAIM_ORDER).limit(limit)
    q = select(jobs).where(jobs.c.id.in_(first.scalar_subquery())).order_by(jobs.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=skip_locked)
    return {j.id: j for j in (_job_from_row(r) for r in (await conn.execute(q)).all())}


async def pick_claimable(
    conn: AsyncConnection, *, kinds: Sequence[str], now: int, limit: int, job_ids: Sequence[str] | None = None
) -> list[Chunk]:
    """Ready chunks (of ``job_ids``, unless None): highest priority, then oldest job, then index."""
    where = _ready_chunks(kinds, now)
    if job_ids is not None:
        where.append(chunks.c.job_id.in_(list(job_ids)))
    q = select(chunks).where(*where).order_by(*_CLAIM_ORDER).limit(limit)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return [_chunk_from_row(r) for r in (await conn.execute(q)).all()]


async def expired_leases(conn: AsyncConnection, now: int, limit: int = 500) -> list[Chunk]:
    q = (
        select(chunks)
        .where(chunks.c.state == int(ChunkState.PROCESSING), chunks.c.lease_expire_time < now)
        .order_by(chunks.c.lease_expire_time)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return [_chunk_from_row(r) for r in (await conn.execute(q)).all()]


async def overdue_cancels(conn: AsyncConnection, cancel_before: int, limit: int = 100) -> list[str]:
    """Jobs still CANCELLING whose cancel was asked before ``cancel_before``."""
    q = (
        select(jobs.c.id)
        .where(jobs.c.state == int(JobState.CANCELLING), jobs.c.cancel_time < cancel_before)
        .limit(limit)
    )
    return [r[0] for r in (await conn.execute(q)).all()]


async def cancel_pending_chunks(conn: AsyncConnection, job_id: str, revision: int, now: int) -> int:
    """Moves every PENDING chunk of a job to CANCELLED; returns how many."""
    result = await conn.execute(
        update(chunks)
        .where(chunks.c.job_id == job_id, chunks.c.state == int(ChunkState.PENDING))
        .values(
            state=int(ChunkState.CANCELLED),
            revision=revision,
            end_time=now,
            next_attempt_time=None,
        )
    )
    return int(result.rowcount or 0)


async def reset_for_retry(
    conn: AsyncConnection,
    job_id: str,
    revision: int,
    priority: int,
    attempts: int,
    chunk_id: str | None = None,
) -> tuple[int, int, int]:
    """FAILED and CANCELLED chunks (only ``chunk_id``, if given) back to PENDING at the job's
    ``priority``, each allowed ``attempts`` more claims than it has had: ``attempt`` keeps counting.

    Returns (failed moved, cancelled moved, items_done those chunks had).
    """
    retryable = [int(ChunkState.FAILED), int(ChunkState.CANCELLED)]
    where = [chunks.c.job_id == job_id, chunks.c.state.in_(retryable)]
    if chunk_id is not None:
        where.append(chunks.c.id == chunk_id)
    rows = (
        await conn.execute(
            select(chunks.c.state, func.count(), func.coalesce(func.sum(chunks.c.items_done), 0))
            .where(*where)
            .group_by(chunks.c.state)
        )
    ).all()
    counts = {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
    await conn.execute(
        update(chunks)
        .where(*where)
        .values(
            state=int(ChunkState.PENDING),
            max_attempts=chunks.c.attempt + attempts,
            items_done=0,
            error_reason="",
            error_message="",
            worker_id="",
            lease_token=None,
            lease_expire_time=None,
            next_attempt_time=None,
            start_time=None,
            end_time=None,
            revision=revision,
            priority=priority,
        )
    )
    failed = counts.get(int(ChunkState.FAILED), (0, 0))
    cancelled = counts.get(int(ChunkState.CANCELLED), (0, 0))
    return failed[0], cancelled[0], failed[1] + cancelled[1]


async def set_pending_priority(conn: AsyncConnection, job_id: str, priority: int) -> None:
    # Only pending chunks: running ones are locked by their workers, and a chunk that
    # goes back to PENDING takes its job's priority then (Job.move_chunk).
    await conn.execute(
        update(chunks)
        .where(chunks.c.job_id == job_id, chunks.c.state == int(ChunkState.PENDING))
        .values(priority=priority)
    )


# --- artifacts -------------------------------------------------------------


async def insert_artifacts(conn: AsyncConnection, job_id: str, items: Sequence[Artifact]) -> None:
    if not items:
        return
    await conn.execute(
        insert(artifacts),
        [
            {
                "job_id": job_id,
                "chunk_index": a.chunk_index,
                "name": a.name,
                "uri": a.uri,
                "media_type": a.media_type,
                "size_bytes": a.size_bytes,
            }
            for a in items
        ],
    )


async def jobs_artifacts(
    conn: AsyncConnection, job_ids: Sequence[str], limit: int
) -> dict[str, list[Artifact]]:
    """The first ``limit`` artifacts of each job, in chunk order."""
    n = (
        func.row_number()
        .over(partition_by=artifacts.c.job_id, order_by=(artifacts.c.chunk_index, artifacts.c.id))
        .label("n")
    )
    numbered = select(artifacts, n).where(artifacts.c.job_id.in_(list(job_ids))).subquery()
    q = (
        select(numbered)
        .where(numbered.c.n <= limit)
        .order_by(numbered.c.job_id, numbered.c.chunk_index, numbered.c.id)
    )
    out: dict[str, list[Artifact]] = {}
    for r in (await conn.execute(q)).all():
        out.setdefault(r._mapping["job_id"], []).append(_artifact(r))
    return out


def _artifact(r: Row[Any]) -> Artifact:
    m = r._mapping
    return Artifact(
        name=m["name"],
        uri=m["uri"],
        media_type=m["media_type"],
        size_bytes=m["size_bytes"],
        chunk_index=m["chunk_index"],
    )


async def _attach_artifacts(conn: AsyncConnection, job_id: str, found: list[Chunk]) -> None:
    done = [c for c in found if c.state == ChunkState.COMPLETED]
    if not done:
        return
    lo, hi = done[0].index, done[-1].index
    q = (
        select(artifacts)
        .where(artifacts.c.job_id == job_id, artifacts.c.chunk_index.between(lo, hi))
        .order_by(artifacts.c.chunk_index, artifacts.c.id)
    )
    by_index: dict[int, list[Artifact]] = {}
    for r in (await conn.execute(q)).all():
        a = _artifact(r)
        by_index.setdefault(a.chunk_index, []).append(a)
    for c in done:
        c.artifacts = by_index.get(c.index, [])


# --- listing ---------------------------------------------------------------


def _filter_clauses(conn: AsyncConnection, f: JobFilter, table: Table = jobs) -> list[ColumnElement[bool]]:
    """ListJobs' filters as WHERE clauses on ``jobs`` (or on ``job_tombstones``, which has the same
    filtered columns)."""
    where: list[ColumnElement[bool]] = []
    if f.owner is not None:
        where.append(table.c.owner == f.owner)
    if f.states:
        where.append(table.c.state.in_([int(s) for s in f.states]))
    if f.kind:
        where.append(table.c.kind == f.kind)
    if f.min_priority is not None:
        where.append(table.c.priority >= f.min_priority)
    if f.max_priority is not None:
        where.append(table.c.priority <= f.max_priority)
    if f.created_after is not None:
        where.append(table.c.create_time >= f.created_after)
    if f.created_before is not None:
        where.append(table.c.create_time < f.created_before)
    if f.search:
        pattern = "%" + f.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(func.lower(table.c.display_name).like(pattern, escape="\\"))
    for key, value in sorted(f.labels.items()):
        if conn.dialect.name == "postgresql":
            where.append(table.c.labels[key].as_string() == value)
        else:
            where.append(func.json_extract(table.c.labels, literal("$." + _json_key(key))) == value)
    return where


def _json_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def list_jobs(
    conn: AsyncConnection, f: JobFilter, order_by: str, after: list[Any] | None, limit: int
) -> list[Job]:
    cols, desc = ORDERS[order_by]
    q: Select[Any] = select(jobs).where(*_filter_clauses(conn, f))
    if after is not None:
        keys = [jobs.c[name] for name in cols]
        q = q.where(_keyset_after(keys, after, desc))
    q = q.order_by(*[(jobs.c[name].desc() if desc else jobs.c[name]) for name in cols]).limit(limit)
    return [_job_from_row(r) for r in (await conn.execute(q)).all()]


def _keyset_after(keys: list[Any], values: list[Any], desc: bool) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in (keys...) order, as one row-value comparison.

    Both databases seek an index on a row value; the OR-of-ANDs spelling made
    PostgreSQL filter every earlier row instead (885 ms against 0.14 ms, 900,000 deep).
    """
    row = tuple_(*keys)
    bound = tuple_(*[literal(v) for v in values])
    return row < bound if desc else row > bound


async def count_jobs(conn: AsyncConnection, f: JobFilter) -> int:
    q = select(func.count()).select_from(jobs).where(*_filter_clauses(conn, f))
    return int((await conn.execute(q)).scalar_one())


# --- stats -----------------------------------------------------------------


async def job_stats(conn: AsyncConnection, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
    """Counts by state and duration percentiles, computed in SQL, overall and per kind."""
    where = _filter_clauses(conn, f)
    processed = and_(jobs.c.end_time.is_not(None), jobs.c.start_time.is_not(None))
    rows = (
        await conn.execute(
            select(
                jobs.c.kind,
                jobs.c.state,
                func.count(),
                func.coalesce(func.sum(jobs.c.items_done), 0),
                func.min(jobs.c.start_time),
                func.max(jobs.c.update_time),
                func.count(case((processed, 1))),
                func.coalesce(func.sum(case((processed, jobs.c.end_time - jobs.c.start_time))), 0),
            )
            .where(*where)
            .group_by(jobs.c.kind, jobs.c.state)
        )
    ).all()
    per_kind: dict[str, StatsRow] = {}
    overall = StatsRow("", 0, {}, 0, {})
    for kind, state, n, items, first_start, last_update, n_processed, processing in rows:
        row = per_kind.setdefault(kind, StatsRow(kind, 0, {}, 0, {}))
        for target in (row, overall):
            target.total += int(n)
            target.by_state[JobState(state)] = target.by_state.get(JobState(state), 0) + int(n)
            target.items_done += int(items)
            target.processed_jobs += int(n_processed)
            target.processing_us += int(processing)
            if first_start is not None:
                target.first_start = min(filter(None, (target.first_start, int(first_start))))
                target.last_update = max(target.last_update or 0, int(last_update))
    overall.durations = await _durations(conn, where)
    for kind, row in per_kind.items():
        row.durations = await _durations(conn, [*where, jobs.c.kind == kind])
    return overall, [per_kind[k] for k in sorted(per_kind)]


async def _durations(conn: AsyncConnection, where: list[ColumnElement[bool]]) -> dict[str, int | None]:
    finished = [*where, jobs.c.end_time.is_not(None)]
    duration = (jobs.c.end_time - jobs.c.create_time).label("d")
    n = int((await conn.execute(select(func.count()).select_from(jobs).where(*finished))).scalar_one())
    out: dict[str, int | None] = {"p50": None, "p95": None, "p99": None, "max": None}
    if n == 0:
        return out
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        # Nearest-rank percentile: the ceil(q*n)-th smallest duration.
        rank = min(n, max(1, _ceil(q * n)))
        value = (
            await conn.execute(select(duration).where(*finished).order_by(duration).offset(rank - 1).limit(1))
        ).scalar_one()
        out[name] = int(value)
    return out


def _ceil(x: float) -> int:
    i = int(x)
    return i if i == x else i + 1


async def count_by_state(conn: AsyncConnection) -> dict[JobState, int]:
    rows = (await conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))).all()
    return {JobState(state): int(n) for state, n in rows}


async def add_request_fingerprint(conn: AsyncConnection, job_id: str, fingerprint: str) -> None:
    await conn.execute(insert(job_requests).values(job_id=job_id, fingerprint=fingerprint))


async def request_fingerprint(conn: AsyncConnection, job_id: str) -> str | None:
    q = select(job_requests.c.fingerprint).where(job_requests.c.job_id == job_id)
    value = (await conn.execute(q)).scalar_one_or_none()
    return str(value) if value is not None else None
