"""PostgreSQL over an asyncpg pool of the store's own, with statements prepared once per connection.

A completion of one chunk, and a claim, of jobs without webhooks are each one statement
(``sql.PG_COMPLETE_ONE``, ``sql.pg_claim_one_statement``): every worker of a job changes that job's
row, so the row's lock is held for one statement and its commit, not for a transaction's round
trips. Everything else is a transaction: BEGIN; the locking reads it needs (jobs before chunks, the
lock order of every writer that waits; one round trip); one statement that updates every changed
chunk and job from arrays (``unnest``) and sends the NOTIFY for other replicas; COMMIT. A deadlock
or a serialization failure (SQLSTATE 40P01 / 40001) runs the statement or transaction again, up to
``WRITE_ATTEMPTS`` times; the last failure reaches the caller as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from jobpulse_server.domain.changes import CHANNEL, Changes, encode
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.store import WRITE_ATTEMPTS, CompletedOne, WriteTx, sql
from jobpulse_server.store.engine import Database
from jobpulse_server.store.rows import (
    CHUNK_SAVED,
    JOB_SAVED,
    chunk_from_row,
    chunk_saved_values,
    job_from_row,
    job_saved_values,
)
from jobpulse_server.store.sqlite import artifacts_by_job, attach_artifacts

T = TypeVar("T")
log = logging.getLogger(__name__)

_jitter = random.Random()

# PostgreSQL types of the saved columns, for the arrays a save sends.
_PG_TYPES = {
    "id": "text",
    "owner": "text",
    "request_id": "text",
    "display_name": "text",
    "kind": "text",
    "state": "smallint",
    "stage": "text",
    "message": "text",
    "priority": "smallint",
    "labels": "text",
    "job_metadata": "text",
    "total_items": "bigint",
    "chunk_size": "bigint",
    "max_attempts": "int",
    "revision": "bigint",
    "n_pending": "bigint",
    "n_processing": "bigint",
    "n_completed": "bigint",
    "n_failed": "bigint",
    "n_cancelled": "bigint",
    "items_done": "bigint",
    "error_reason": "text",
    "error_message": "text",
    "error_chunk_index": "bigint",
    "cancel_requested": "boolean",
    "cancel_reason": "text",
    "cancel_time": "bigint",
    "create_time": "bigint",
    "update_time": "bigint",
    "start_time": "bigint",
    "end_time": "bigint",
    "webhook_url": "text",
    "webhook_progress": "boolean",
    "last_progress_event": "bigint",
    "ttl": "bigint",
    "attempt": "int",
    "worker_id": "text",
    "external_task_id": "text",
    "lease_token": "text",
    "lease_expire_time": "bigint",
    "lease_duration": "bigint",
    "next_attempt_time": "bigint",
}
_JSON_COLUMNS = ("labels", "job_metadata")


def _unnest_update(table: str, columns: Sequence[str], first: int, extra: str = "") -> str:
    """UPDATE ``table`` from arrays $first.. (id first, then ``columns``), one row per element."""
    names = ("id", *columns)
    arrays = ", ".join(f"${first + i}::{_PG_TYPES[c]}[]" for i, c in enumerate(names))
    sets = ", ".join(f"{c} = v.{c}::json" if c in _JSON_COLUMNS else f"{c} = v.{c}" for c in columns)
    return (
        f"UPDATE {table} AS t SET {sets}{extra} FROM unnest({arrays}) AS v({', '.join(names)}) "
        "WHERE t.id = v.id RETURNING 1"
    )


_N_CHUNK = 1 + len(CHUNK_SAVED)
_N_JOB = 1 + len(JOB_SAVED)
# Chunks, jobs (each a new change_seq) and the NOTIFY for other replicas, in one round trip.
SAVE = (
    f"WITH c AS ({_unnest_update('chunks', CHUNK_SAVED, 1)}), "
    f"j AS ({_unnest_update('jobs', JOB_SAVED, 1 + _N_CHUNK, f', change_seq = {sql.PG_NEXT_SEQ}')}) "
    f"SELECT pg_notify(${1 + _N_CHUNK + _N_JOB}, ${2 + _N_CHUNK + _N_JOB})"
)
LOCK_JOBS = f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
LOCK_JOBS_SKIP = LOCK_JOBS + " SKIP LOCKED"
GET_JOBS = f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id = ANY($1::text[])"
GET_OWNED_JOBS = GET_JOBS + " AND owner = $2"
INSERT_ARTIFACTS = (
    "INSERT INTO artifacts (job_id, chunk_index, name, uri, media_type, size_bytes) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[])"
)
RETRY_SQLSTATES = ("40001", "40P01")


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(width)] if rows else [[] for _ in range(width)]


class PgRead:
    """Reads on one pooled connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def get_job(self, job_id: str, owner: str | None) -> Job | None:
        if owner is None:
            row = await self.conn.fetchrow(sql.numbered(sql.GET_JOB), job_id)
        else:
            row = await self.conn.fetchrow(sql.numbered(sql.GET_OWNED_JOB), job_id, owner)
        return job_from_row(row) if row else None

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]:
        ids = sorted(set(job_ids))
        if owner is None:
            rows = await self.conn.fetch(GET_JOBS, ids)
        else:
            rows = await self.conn.fetch(GET_OWNED_JOBS, ids, owner)
        return {j.id: j for j in map(job_from_row, rows)}

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
    ) -> list[Chunk]:
        q, params = sql.chunk_list(job_id, after_index, limit, states, after_revision)
        found = list(map(chunk_from_row, await self.conn.fetch(sql.numbered(q), *params)))
        done = [c for c in found if c.state == ChunkState.COMPLETED]
        if done:
            rows = await self.conn.fetch(
                sql.numbered(sql.ARTIFACTS_BETWEEN), job_id, done[0].index, done[-1].index
            )
            attach_artifacts(done, rows)
        return found

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        q = sql.JOB_ARTIFACTS if len(job_ids) == 1 else sql.jobs_artifacts(len(job_ids))
        rows = await self.conn.fetch(sql.numbered(q), *job_ids, limit)
        return artifacts_by_job(rows)

    async def list_jobs(self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int) -> list[Job]:
        q, params = sql.list_jobs(sql.POSTGRES, f, order_by, after, limit)
        return list(map(job_from_row, await self.conn.fetch(sql.numbered(q), *params)))

    async def count_jobs(self, f: JobFilter) -> int:
        """Exact up to sql.COUNT_EXACT_UP_TO; beyond that, the planner's estimate (never below it)."""
        capped, explain, params = sql.count_jobs_capped(f)
        n = int(await self.conn.fetchval(capped, *params))
        if n <= sql.COUNT_EXACT_UP_TO:
            return n
        plan = json.loads(await self.conn.fetchval(explain, *params))
        return max(n, int(plan[0]["Plan"]["Plan Rows"]))

    async def change_horizon(self) -> int:
        return int(await self.conn.fetchval(sql.PG_HORIZON))

    async def chunk_states(self, job_id: str) -> str:
        return str(await self.conn.fetchval(sql.numbered(sql.PG_CHUNK_STATES), job_id) or "")


class PgWrite(PgRead):
    """One write transaction; changes are buffered until ``save``."""

    def __init__(self, conn: asyncpg.Connection, changes: Changes, replica: str) -> None:
        super().__init__(conn)
        self.changes = changes
        self.replica = replica
        self._artifacts: list[tuple[Any, ...]] = []
        self._outbox: list[tuple[Any, ...]] = []
        self.notified = False

    async def claim(
        self, kinds: Sequence[str], now: int, limit: int, *, skip_locked: bool
    ) -> tuple[dict[str, Job], list[Chunk]]:
        params = [*sql.ready_params(sql.POSTGRES, kinds, now), limit]
        jobs, chunks = await self.conn.fetchrow(
            sql.pg_claim(len(kinds), skip_locked=skip_locked), *params, *params
        )
        return {j.id: j for j in map(job_from_row, jobs or ())}, list(map(chunk_from_row, chunks or ()))

    async def lock_leased(
        self, job_ids: Sequence[str], chunk_ids: Sequence[str]
    ) -> tuple[dict[str, Job], dict[str, Chunk]]:
        jobs, chunks = await self.conn.fetchrow(
            sql.PG_LOCK_LEASED, sorted(set(job_ids)), sorted(set(chunk_ids))
        )
        return (
            {j.id: j for j in map(job_from_row, jobs or ())},
            {c.id: c for c in map(chunk_from_row, chunks or ())},
        )

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        if not job_ids:
            return {}
        rows = await self.conn.fetch(LOCK_JOBS_SKIP if skip_locked else LOCK_JOBS, sorted(set(job_ids)))
        return {j.id: j for j in map(job_from_row, rows)}

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]:
        q = sql.numbered(sql.EXPIRED_LEASES) + " FOR UPDATE SKIP LOCKED"
        return list(map(chunk_from_row, await self.conn.fetch(q, int(ChunkState.PROCESSING), now, limit)))

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        self._artifacts += [
            (job_id, a.chunk_index, a.name, a.uri, a.media_type, a.size_bytes) for a in artifacts
        ]

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox += [tuple(r[c] for c in sql.OUTBOX_COLUMNS) for r in rows]

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        jobs = list(jobs)
        for job in jobs:
            self.changes.jobs[job.id] = max(job.revision, self.changes.jobs.get(job.id, 0))
        payloads = encode(self.changes, self.replica)
        chunk_rows = [(c.id, *chunk_saved_values(c)) for c in chunks]
        job_rows = [(j.id, *job_saved_values(j)) for j in jobs]
        await self.conn.fetchval(
            SAVE,
            *_columns(chunk_rows, _N_CHUNK),
            *_columns(job_rows, _N_JOB),
            CHANNEL,
            payloads[0],
        )
        for payload in payloads[1:]:
            await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        self.notified = True
        for job in jobs:
            job.bumped = False
        if self._artifacts:
            await self.conn.execute(INSERT_ARTIFACTS, *_columns(self._artifacts, 6))
            self._artifacts = []
        if self._outbox:
            await self.conn.executemany(sql.numbered(sql.INSERT_OUTBOX), self._outbox)
            self._outbox = []
            self.changes.webhooks = True


def _claimed(
    n_jobs: int, chunk_rows: Sequence[Sequence[Any]] | None, job_rows: Sequence[Sequence[Any]] | None
) -> tuple[list[tuple[Job, Chunk]] | None, dict[str, int]]:
    """What a one-statement claim returned: the claimed chunks with their jobs ([] when no chunk was
    ready, None when other claims took the work of the jobs it locked: the caller claims on the
    general path), and the claimed jobs' new revisions."""
    if not chunk_rows:
        return ([] if not n_jobs else None), {}
    jobs = {j.id: j for j in map(job_from_row, job_rows or ())}
    return [(jobs[c.job_id], c) for c in map(chunk_from_row, chunk_rows)], {
        j.id: j.revision for j in jobs.values()
    }


async def define_functions(conn: asyncpg.Connection) -> None:
    """Creates this session's complete-and-claim functions (see
    ``sql.pg_complete_and_claim_function``), with the parameter types PostgreSQL infers for the two
    statements they run."""

    async def types(query: str) -> list[str]:
        stmt = await conn.prepare(query)
        return [f"{t.schema}.{t.name}" for t in stmt.get_parameters()]

    complete = await types(sql.PG_COMPLETE_ONE)
    for n_kinds in (0, 1):
        claim = await types(sql.pg_claim_one_statement(n_kinds))
        await conn.execute(sql.pg_complete_and_claim_function(n_kinds, complete, claim))


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from the server's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# Refresh the chunks table's statistics once this many chunks were added since the last time
# (and at least a tenth of the table, autovacuum's own rule). See PgStore.chunks_added.
ANALYZE_MIN_CHUNKS = 1_000


class PgStore:
    """The Store for PostgreSQL with asyncpg."""

    def __init__(
        self, db: Database, on_retry: Callable[[str], None] | None = None, max_size: int = 10
    ) -> None:
        self.db = db
        self.on_retry = on_retry
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._added_since_analyze = 0
        self._chunks_at_analyze = 0
        self._analyzing: asyncio.Task[None] | None = None

    async def chunks_added(self, n: int) -> None:
        """Notes that ``n`` chunks were inserted; past ANALYZE_MIN_CHUNKS and a tenth of the table,
        refreshes the planner's statistics of ``chunks`` in the background.

        Until autovacuum gets round to it (a minute or more), a freshly loaded table keeps
        statistics saying almost no chunk is pending, and the claim query is planned as a sort of
        every pending chunk instead of a walk of ix_chunks_claim: 11 ms instead of 0.2 ms per claim
        at 10,000 pending chunks, growing with the backlog.
        """
        self._added_since_analyze += n
        due = max(ANALYZE_MIN_CHUNKS, self._chunks_at_analyze // 10)
        if self._added_since_analyze < due or (self._analyzing is not None and not self._analyzing.done()):
            return
        self._added_since_analyze = 0
        self._analyzing = asyncio.create_task(self._analyze(), name="jobpulse-analyze-chunks")

    async def _analyze(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                await conn.execute("ANALYZE chunks")
                self._chunks_at_analyze = int(
                    await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = 'chunks'")
                    or 0
                )
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("could not refresh the statistics of chunks: %s", exc)

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            asyncpg_dsn(self.db.url),
            min_size=1,
            max_size=self.max_size,
            statement_cache_size=256,
            # The store leaves no session state behind (no LISTEN, advisory locks, SET or cursors), so
            # the reset asyncpg runs on every release, a round trip of its own, is not needed.
            reset=_no_reset,
            init=define_functions,
        )

    async def close(self) -> None:
        if self._analyzing is not None:
            self._analyzing.cancel()
            await asyncio.gather(self._analyzing, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def complete_one(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
    ) -> CompletedOne | None:
        args = self._complete_args(chunk_id, job_id, token, now, external_task_id, artifacts)
        row = await self._statement(sql.PG_COMPLETE_ONE, *args)
        if row is None:
            return None
        done = CompletedOne(JobState(row[0]), int(row[1]), ChunkState(row[2]), str(row[3]), int(row[4]))
        self.db.publish(Changes(jobs={job_id: done.revision}))
        return done

    def _complete_args(
        self,
        chunk_id: str,
        job_id: str,
        token: str,
        now: int,
        external_task_id: str,
        artifacts: Sequence[Artifact],
    ) -> tuple[Any, ...]:
        """PG_COMPLETE_ONE's parameters."""
        return (
            chunk_id,
            job_id,
            token,
            now,
            external_task_id,
            [a.name for a in artifacts],
            [a.uri for a in artifacts],
            [a.media_type for a in artifacts],
            [a.size_bytes for a in artifacts],
            CHANNEL,
            self.db.replica_id,
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
        worker_id, kinds, limit, lease_us = claim
        args = (
            *self._complete_args(chunk_id, job_id, token, now, external_task_id, artifacts),
            *sql.pg_claim_params(kinds, limit, worker_id, now, lease_us),
            CHANNEL,
            self.db.replica_id,
        )
        row = await self._statement(sql.pg_complete_and_claim_call(len(kinds), len(args)), *args)
        if row[0] is None:
            return None
        job_state, revision, chunk_state, (n_jobs, chunk_rows, job_rows), kind, items = json.loads(row[0])
        completed = CompletedOne(
            JobState(job_state), int(revision), ChunkState(chunk_state), kind, int(items)
        )
        claims, revisions = _claimed(n_jobs, chunk_rows, job_rows)
        self.db.publish(Changes(jobs={job_id: completed.revision, **revisions}))
        return completed, claims

    async def claim_one_statement(
        self, worker_id: str, kinds: Sequence[str], limit: int, lease_us: int, now: int
    ) -> list[tuple[Job, Chunk]] | None:
        n_jobs, chunk_rows, job_rows, _ = await self._statement(
            sql.pg_claim_one_statement(len(kinds)),
            *sql.pg_claim_params(kinds, limit, worker_id, now, lease_us),
            CHANNEL,
            self.db.replica_id,
        )
        claims, revisions = _claimed(n_jobs, chunk_rows, job_rows)
        if revisions:
            self.db.publish(Changes(jobs=revisions))
        return claims

    async def _statement(self, query: str, *args: Any) -> Any:
        """One statement (its own transaction) on a pooled connection, run again after a deadlock
        or serialization failure; its first row, or None."""

        async def run() -> Any:
            async with self.pool.acquire() as conn:
                return await conn.fetchrow(query, *args)

        return await self._retrying(run)

    async def _retrying(self, run: Callable[[], Awaitable[T]]) -> T:
        """Runs ``run`` again after a deadlock or serialization failure, up to WRITE_ATTEMPTS times."""
        attempt = 1
        while True:
            try:
                return await run()
            except asyncpg.PostgresError as exc:
                state = getattr(exc, "sqlstate", "")
                if state not in RETRY_SQLSTATES or attempt >= WRITE_ATTEMPTS:
                    raise
                if self.on_retry is not None:
                    self.on_retry(state)
                log.info(
                    "write transaction aborted (SQLSTATE %s); running it again (attempt %d)",
                    state,
                    attempt + 1,
                )
                attempt += 1
                await asyncio.sleep(_jitter.random() * 0.01 * attempt)

    async def dispose(self) -> None:
        if self._pool is not None:
            await self._pool.expire_connections()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store not started")
        return self._pool

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[PgRead]:
        async with self.pool.acquire() as conn:
            if not consistent:
                yield PgRead(conn)
                return
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield PgRead(conn)

    async def write(self, body: Callable[[WriteTx], Awaitable[T]]) -> T:
        async def run() -> tuple[T, Changes]:
            changes = Changes()
            async with self.pool.acquire() as conn, conn.transaction():
                tx = PgWrite(conn, changes, self.db.replica_id)
                result = await body(tx)
                if not tx.notified and (changes.jobs or changes.deleted or changes.new_work):
                    for payload in encode(changes, self.db.replica_id):
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            return result, changes

        result, changes = await self._retrying(run)
        self.db.publish(changes)
        return result
