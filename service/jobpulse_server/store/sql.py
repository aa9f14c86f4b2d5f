"""The hot paths' SQL, written once with ``?`` placeholders; ``numbered`` makes PostgreSQL's ``$n``.

Every dialect difference of these statements is in this file: the next change_seq, locking
clauses, JSON label lookups, list parameters and the change horizon.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.store.repository import ORDERS, JobFilter
from jobpulse_server.store.rows import (
    ARTIFACT_SELECT,
    CHUNK_COLUMNS,
    CHUNK_SAVED,
    CHUNK_SELECT,
    JOB_COLUMNS,
    JOB_SAVED,
    JOB_SELECT,
)

SQLITE = "sqlite"
POSTGRES = "postgresql"


@functools.cache
def numbered(sql: str, start: int = 1) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (none of our statements has a literal ``?``), or
    from ``$start`` on."""
    parts = sql.split("?")
    out = [parts[0]]
    for n, part in enumerate(parts[1:], start):
        out.append(f"${n}{part}")
    return "".join(out)


def marks(n: int) -> str:
    """``?, ?, ...`` for a list of n values (SQLite ``IN``)."""
    return ", ".join("?" * n)


# --- jobs -------------------------------------------------------------------------------------

GET_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?"
GET_OWNED_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = ? AND owner = ?"

# SQLite: the next change_seq is one more than the largest handed out, to a job or to a
# tombstone (one writer at a time, so that is commit order). PostgreSQL: the transaction's id.
SQLITE_LARGEST_SEQ = (
    "max(coalesce((SELECT max(change_seq) FROM jobs), 0), "
    "coalesce((SELECT max(change_seq) FROM job_tombstones), 0))"
)
PG_NEXT_SEQ = "pg_current_xact_id()::text::bigint"

SQLITE_SAVE_JOB = (
    "UPDATE jobs SET "
    + ", ".join(f"{c} = ?" for c in JOB_SAVED)
    + f", change_seq = {SQLITE_LARGEST_SEQ} + 1 WHERE id = ?"
)

SQLITE_HORIZON = f"SELECT {SQLITE_LARGEST_SEQ} + 1"
PG_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


# --- chunks -----------------------------------------------------------------------------------

SQLITE_SAVE_CHUNK = "UPDATE chunks SET " + ", ".join(f"{c} = ?" for c in CHUNK_SAVED) + " WHERE id = ?"

INSERT_ARTIFACT = (
    "INSERT INTO artifacts (job_id, chunk_index, name, uri, media_type, size_bytes) VALUES (?, ?, ?, ?, ?, ?)"
)

OUTBOX_COLUMNS = (
    "id",
    "job_id",
    "owner",
    "event_type",
    "url",
    "payload",
    "state",
    "attempts",
    "next_attempt_time",
    "last_status",
    "last_error",
    "create_time",
    "delivered_time",
)
INSERT_OUTBOX = (
    f"INSERT INTO webhook_deliveries ({', '.join(OUTBOX_COLUMNS)}) VALUES ({marks(len(OUTBOX_COLUMNS))})"
)


def _ready(dialect: str, n_kinds: int) -> str:
    """Chunks ready to run: pending, past any retry backoff, of the wanted kinds.

    Parameters: state, now, the kinds (see ``ready_params``)."""
    where = "state = ? AND (next_attempt_time IS NULL OR next_attempt_time <= ?)"
    if n_kinds:
        where += " AND kind = ANY(?)" if dialect == POSTGRES else f" AND kind IN ({marks(n_kinds)})"
    return where


_CLAIM_ORDER = " ORDER BY priority DESC, job_id, idx LIMIT ?"


def _first_ready(n_kinds: int) -> str:
    """PostgreSQL: the jobs of the first ``?`` ready chunks in claim order (params: ready, limit)."""
    return f"SELECT job_id FROM chunks WHERE {_ready(POSTGRES, n_kinds)}{_CLAIM_ORDER}"


def claim_jobs(n_kinds: int, *, skip_locked: bool) -> str:
    """PostgreSQL: locks and reads the jobs of the first ready chunks, jobs before chunks being the
    order every writer that waits uses; the chunks are then picked from these jobs (``pg_claim``)."""
    lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
    return f"SELECT {JOB_SELECT} FROM jobs WHERE id IN ({_first_ready(n_kinds)}) ORDER BY id {lock}"


def pick_ready(dialect: str, n_kinds: int) -> str:
    """The first ``?`` ready chunks in claim order (SQLite: read straight off ix_chunks_claim)."""
    return f"SELECT {CHUNK_SELECT} FROM chunks WHERE {_ready(dialect, n_kinds)}{_CLAIM_ORDER}"


def pg_claim(n_kinds: int, *, skip_locked: bool) -> str:
    """PostgreSQL: ``claim_jobs`` and the ready chunks of those jobs in one round trip, as two arrays of rows
    (parameters: ready_params + limit, twice)."""
    jobs = claim_jobs(n_kinds, skip_locked=skip_locked)
    ready = _ready(POSTGRES, n_kinds)
    picked = (
        f"SELECT {CHUNK_SELECT} FROM chunks WHERE {ready} AND job_id IN (SELECT id FROM j)"
        f"{_CLAIM_ORDER} FOR UPDATE SKIP LOCKED"
    )
    return numbered(
        f"WITH j AS ({jobs}), c AS ({picked}) "
        "SELECT (SELECT array_agg(j) FROM j), "
        "(SELECT array_agg(c ORDER BY c.priority DESC, c.job_id, c.idx) FROM c)"
    )


# PostgreSQL: jobs, then the chunks of those jobs, locked in one round trip.
PG_LOCK_LEASED = (
    f"WITH j AS (SELECT {JOB_SELECT} FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE), "
    f"c AS (SELECT {CHUNK_SELECT} FROM chunks WHERE id = ANY($2::text[]) AND job_id IN (SELECT id FROM j) "
    "ORDER BY id FOR UPDATE) "
    "SELECT (SELECT array_agg(j) FROM j), (SELECT array_agg(c) FROM c)"
)


def ready_params(dialect: str, kinds: Sequence[str], now: int) -> list[Any]:
    params: list[Any] = [int(ChunkState.PENDING), now]
    if kinds:
        if dialect == POSTGRES:
            params.append(list(kinds))
        else:
            params.extend(kinds)
    return params


EXPIRED_LEASES = (
    f"SELECT {CHUNK_SELECT} FROM chunks WHERE state = ? AND lease_expire_time < ? "
    "ORDER BY lease_expire_time LIMIT ?"
)


def chunk_list(
    job_id: str, after_index: int, limit: int | None, states: Iterable[ChunkState], after_revision: int | None
) -> tuple[str, list[Any]]:
    """A job's chunks after an index, optionally of some states / changed after a revision."""
    st = [int(s) for s in states]
    sql = f"SELECT {CHUNK_SELECT} FROM chunks WHERE job_id = ? AND idx > ?"
    params: list[Any] = [job_id, after_index, *st]
    if st:
        sql += f" AND state IN ({marks(len(st))})"
    if after_revision is not None:
        sql += " AND revision > ?"
        params.append(after_revision)
    sql += " ORDER BY idx"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


# Every chunk's state of a job in index order, for the dashboard's chunk grid: one column, no objects.
CHUNK_STATES = "SELECT state FROM chunks WHERE job_id = ? ORDER BY idx"
# PostgreSQL folds them into one text value: one row to send instead of one per chunk.
PG_CHUNK_STATES = "SELECT string_agg(state::text, '' ORDER BY idx) FROM chunks WHERE job_id = ?"


ARTIFACTS_BETWEEN = (
    f"SELECT {ARTIFACT_SELECT} FROM artifacts WHERE job_id = ? AND chunk_index BETWEEN ? AND ? "
    "ORDER BY chunk_index, id"
)


# One job's first ``?`` artifacts: the plain index range, cheaper than numbering rows (GetJob's case).
JOB_ARTIFACTS = (
    f"SELECT {ARTIFACT_SELECT}, job_id FROM artifacts WHERE job_id = ? ORDER BY chunk_index, id LIMIT ?"
)


def jobs_artifacts(n: int) -> str:
    """The first ``?`` (a limit) artifacts of each of ``n`` jobs, each job's in chunk order, numbered
    per job on the (job_id, chunk_index) index; rows are ARTIFACT_COLUMNS then job_id."""
    return (
        f"SELECT {ARTIFACT_SELECT}, job_id FROM (SELECT {ARTIFACT_SELECT}, job_id, id, row_number() "
        "OVER (PARTITION BY job_id ORDER BY chunk_index, id) AS n "
        f"FROM artifacts WHERE job_id IN ({marks(n)})) AS a WHERE n <= ? ORDER BY job_id, chunk_index, id"
    )


# --- listing ----------------------------------------------------------------------------------


class Where:
    """WHERE clauses and their parameters, built in order."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def job_filter(dialect: str, f: JobFilter) -> Where:
    """ListJobs' filters on ``jobs`` (the same meaning as repository._filter_clauses)."""
    w = Where()
    if f.owner is not None:
        w.add("owner = ?", f.owner)
    if f.states:
        states = [int(JobState(s)) for s in f.states]
        w.add(f"state IN ({marks(len(states))})", *states)
    if f.kind:
        w.add("kind = ?", f.kind)
    if f.min_priority is not None:
        w.add("priority >= ?", f.min_priority)
    if f.max_priority is not None:
        w.add("priority <= ?", f.max_priority)
    if f.created_after is not None:
        w.add("create_time >= ?", f.created_after)
    if f.created_before is not None:
        w.add("create_time < ?", f.created_before)
    if f.search:
        pattern = "%" + f.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        w.add("lower(display_name) LIKE ? ESCAPE '\\'", pattern)
    for key, value in sorted(f.labels.items()):
        if dialect == POSTGRES:
            w.add("(labels ->> ?) = ?", key, value)
        else:
            w.add(
                "json_extract(labels, ?) = ?",
                '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"',
                value,
            )
    return w


def list_jobs(
    dialect: str, f: JobFilter, order_by: str, after: list[Any] | None, limit: int
) -> tuple[str, list[Any]]:
    """One page of jobs in ``order_by`` order, after the sort key ``after`` (keyset)."""
    cols, desc = ORDERS[order_by]
    w = job_filter(dialect, f)
    if after is not None:
        # One row-value comparison: both databases seek an index on it (see repository._keyset_after).
        row = ", ".join(cols)
        w.add(f"({row}) {'<' if desc else '>'} ({marks(len(cols))})", *after)
    direction = " DESC" if desc else ""
    order = ", ".join(c + direction for c in cols)
    return f"SELECT {JOB_SELECT} FROM jobs{w.sql()} ORDER BY {order} LIMIT ?", [*w.params, limit]


def count_jobs(dialect: str, f: JobFilter) -> tuple[str, list[Any]]:
    w = job_filter(dialect, f)
    return f"SELECT count(*) FROM jobs{w.sql()}", w.params


# PostgreSQL counts matching jobs exactly up to this many; beyond, total_size is the planner's
# estimate (AIP-158 allows an estimate): counting 1,000,000 rows took 60-90 ms per first page.
COUNT_EXACT_UP_TO = 10_000


def count_jobs_capped(f: JobFilter) -> tuple[str, str, list[Any]]:
    """PostgreSQL: (count up to COUNT_EXACT_UP_TO + 1, the planner's estimate as JSON, parameters)."""
    w = job_filter(POSTGRES, f)
    rows = f"SELECT 1 FROM jobs{w.sql()}"
    capped = f"SELECT count(*) FROM ({rows} LIMIT {COUNT_EXACT_UP_TO + 1}) AS matching"
    return numbered(capped), numbered(f"EXPLAIN (FORMAT JSON) {rows}"), w.params


def _derive_state(pending: str, processing: str, completed: str, failed: str, cancelled: str) -> str:
    """domain.derive_state in SQL, over the job row ``j`` and the given new counts."""
    return (
        f"CASE WHEN {pending} + {processing} > 0 THEN "
        f"CASE WHEN j.cancel_requested THEN {int(JobState.CANCELLING)} "
        f"WHEN j.start_time IS NOT NULL OR {completed} > 0 OR {failed} > 0 THEN {int(JobState.PROCESSING)} "
        f"ELSE {int(JobState.PENDING)} END "
        f"WHEN j.cancel_requested THEN {int(JobState.CANCELLED)} "
        f"WHEN {failed} > 0 THEN {int(JobState.FAILED)} "
        f"WHEN {cancelled} > 0 THEN {int(JobState.CANCELLED)} "
        f"ELSE {int(JobState.COMPLETED)} END"
    )


_NEW_STATE = _derive_state(
    "j.n_pending",
    "(j.n_processing - 1)",
    f"(j.n_completed + (c1.state = {int(ChunkState.COMPLETED)})::int)",
    "j.n_failed",
    f"(j.n_cancelled + (c1.state = {int(ChunkState.CANCELLED)})::int)",
)
_TERMINAL = f"({int(JobState.COMPLETED)}, {int(JobState.FAILED)}, {int(JobState.CANCELLED)})"

# PostgreSQL: one chunk's completion as one statement (an implicit transaction), for jobs without
# webhooks (their outbox rows are built in Python). Locks the job, then the chunk, fences the lease,
# moves the chunk to COMPLETED (CANCELLED if the job is being cancelled), updates the job's counts,
# items, state, revision and change_seq, inserts the artifacts and notifies other replicas; the
# job's lock is held for this one statement and its commit instead of a transaction's round trips.
# The state logic mirrors domain.Job.move_chunk / derive_state; no row comes back when anything is
# off (stale or expired lease, unknown chunk, a job with webhooks), and the caller then takes the
# general path, which says why.
# Parameters: chunk id, job id, lease token, now, external_task_id, artifact names, uris, media
# types, sizes, the NOTIFY channel, this replica's id.
PG_COMPLETE_ONE = (
    "WITH j0 AS (SELECT id, revision, cancel_requested FROM jobs WHERE id = $2 AND webhook_url = '' "
    "FOR UPDATE), "
    "c0 AS (SELECT c.id, c.idx, c.items_done AS old_done FROM chunks c JOIN j0 ON c.job_id = j0.id "
    f"WHERE c.id = $1 AND c.state = {int(ChunkState.PROCESSING)} AND c.lease_token = $3 "
    "AND (c.lease_expire_time IS NULL OR c.lease_expire_time >= $4) FOR UPDATE OF c), "
    "c1 AS (UPDATE chunks AS c SET "
    f"state = CASE WHEN j0.cancel_requested THEN {int(ChunkState.CANCELLED)} "
    f"ELSE {int(ChunkState.COMPLETED)} END, "
    "items_done = CASE WHEN j0.cancel_requested THEN c.items_done ELSE c.item_count END, "
    "external_task_id = CASE WHEN $5 = '' THEN c.external_task_id ELSE $5 END, "
    "revision = j0.revision + 1, end_time = $4, lease_token = NULL, lease_expire_time = NULL "
    "FROM j0, c0 WHERE c.id = c0.id "
    "RETURNING c.state AS state, c.items_done - c0.old_done AS gained, c0.idx AS idx, "
    "c.kind AS kind, c.item_count AS items), "
    "j1 AS (UPDATE jobs AS j SET revision = j.revision + 1, update_time = greatest(j.update_time, $4), "
    "n_processing = j.n_processing - 1, "
    f"n_completed = j.n_completed + (c1.state = {int(ChunkState.COMPLETED)})::int, "
    f"n_cancelled = j.n_cancelled + (c1.state = {int(ChunkState.CANCELLED)})::int, "
    f"items_done = j.items_done + c1.gained, state = {_NEW_STATE}, "
    f"end_time = CASE WHEN {_NEW_STATE} IN {_TERMINAL} THEN coalesce(j.end_time, $4) ELSE NULL END, "
    f"change_seq = {PG_NEXT_SEQ} "
    "FROM c1 WHERE j.id = $2 RETURNING j.id, j.revision, j.state), "
    "a AS (INSERT INTO artifacts (job_id, chunk_index, name, uri, media_type, size_bytes) "
    "SELECT $2, c1.idx, u.name, u.uri, u.media_type, u.size_bytes FROM c1, "
    "unnest($6::text[], $7::text[], $8::text[], $9::bigint[]) AS u(name, uri, media_type, size_bytes) "
    f"WHERE c1.state = {int(ChunkState.COMPLETED)}) "
    "SELECT j1.state AS job_state, j1.revision AS revision, c1.state AS chunk_state, "
    "c1.kind AS kind, c1.items AS items, pg_notify($10, json_build_object('r', $11::text, "
    "'j', json_build_object(j1.id, j1.revision), 'd', json_build_array())::text) AS notified FROM j1, c1"
)
# How many parameters PG_COMPLETE_ONE takes.
PG_COMPLETE_ONE_PARAMS = 11


def _prefixed(columns: Sequence[str], alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


def pg_claim_params(kinds: Sequence[str], limit: int, worker_id: str, now: int, lease_us: int) -> list[Any]:
    """The parameters of ``pg_claim_one_statement`` but the last two (the NOTIFY channel and the
    replica id)."""
    ready = [*ready_params(POSTGRES, kinds, now), limit]
    return [*ready, *ready, worker_id, now, now, lease_us, lease_us, now, now]


def pg_claim_one_statement(n_kinds: int) -> str:
    """PostgreSQL: a whole claim as one statement; see ``_pg_claim``."""
    return numbered(_pg_claim(n_kinds))


def _pg_claim(n_kinds: int, *, as_json: bool = False) -> str:
    """PostgreSQL: a whole claim as one statement, for jobs without webhooks (see PG_COMPLETE_ONE).

    Locks the jobs of the first ready chunks (jobs before chunks), takes those jobs' ready chunks
    with SKIP LOCKED, moves them to PROCESSING under fresh lease tokens (two random UUIDs, 244
    bits), updates each job's counts, items, start time, state, revision and change_seq, and
    notifies other replicas. Returns one row: how many candidate jobs were locked, and the claimed
    chunks and their jobs as they are now (empty when nothing was claimed; with candidates, the
    caller takes the general path, which also handles jobs with webhooks).
    Parameters: ready_params + limit (twice), worker id, now, lease (us), channel, replica id.
    """
    ready = _ready(POSTGRES, n_kinds)
    first = _first_ready(n_kinds)
    # Nothing is taken when any candidate job has webhooks: the general path keeps the claim order.
    picked = (
        f"SELECT ch.id, ch.items_done FROM chunks ch WHERE {ready} "
        "AND ch.job_id IN (SELECT id FROM j) AND NOT EXISTS (SELECT 1 FROM j WHERE webhook_url <> '')"
        " ORDER BY ch.priority DESC, ch.job_id, ch.idx LIMIT ? FOR UPDATE OF ch SKIP LOCKED"
    )
    # Chunks are running now (and the job has started): PROCESSING, or CANCELLING if a cancel is on.
    state = (
        f"CASE WHEN jj.cancel_requested THEN {int(JobState.CANCELLING)} ELSE {int(JobState.PROCESSING)} END"
    )
    chunks = f"array_agg(ROW({_prefixed(CHUNK_COLUMNS, 'c1')}) ORDER BY c1.priority DESC, c1.job_id, c1.idx)"
    jobs = "array_agg(j1)"
    if as_json:
        # Rows as JSON arrays in CHUNK_COLUMNS / JOB_COLUMNS order: a PL/pgSQL function cannot hand
        # back arrays of anonymous rows.
        chunks = (
            f"json_agg(json_build_array({_prefixed(CHUNK_COLUMNS, 'c1')}) "
            "ORDER BY c1.priority DESC, c1.job_id, c1.idx)"
        )
        jobs = f"json_agg(json_build_array({_prefixed(JOB_COLUMNS, 'j1')}))"
    return (
        f"WITH j AS (SELECT id, revision, webhook_url FROM jobs WHERE id IN ({first}) "
        "ORDER BY id FOR UPDATE), "
        f"c AS ({picked}), "
        f"c1 AS (UPDATE chunks AS ch SET state = {int(ChunkState.PROCESSING)}, attempt = ch.attempt + 1, "
        "worker_id = ?, start_time = ?, end_time = NULL, next_attempt_time = NULL, items_done = 0, "
        "lease_token = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), "
        "lease_expire_time = ?::bigint + ?::bigint, lease_duration = ?, revision = j.revision + 1 "
        f"FROM c, j WHERE ch.id = c.id AND j.id = ch.job_id RETURNING {_prefixed(CHUNK_COLUMNS, 'ch')}, "
        "c.items_done AS old_done), "
        "agg AS (SELECT job_id, count(*) AS n, sum(old_done) AS lost FROM c1 GROUP BY job_id), "
        "j1 AS (UPDATE jobs AS jj SET revision = jj.revision + 1, update_time = greatest(jj.update_time, ?), "
        "n_pending = jj.n_pending - agg.n, n_processing = jj.n_processing + agg.n, "
        "items_done = jj.items_done - agg.lost, start_time = coalesce(jj.start_time, ?), "
        f"state = {state}, end_time = NULL, change_seq = {PG_NEXT_SEQ} "
        f"FROM agg WHERE jj.id = agg.job_id RETURNING {_prefixed(JOB_COLUMNS, 'jj')}) "
        f"SELECT (SELECT count(*) FROM j) AS n_jobs, (SELECT {chunks} FROM c1) AS chunk_rows, "
        f"(SELECT {jobs} FROM j1) AS job_rows, "
        "(SELECT pg_notify(?, json_build_object('r', ?::text, 'j', json_object_agg(j1.id, j1.revision), "
        "'d', json_build_array())::text) FROM j1 HAVING count(*) > 0) AS notified"
    )


def pg_complete_and_claim_function(
    n_kinds: int, complete_types: Sequence[str], claim_types: Sequence[str]
) -> str:
    """PostgreSQL: a session-local function (``pg_temp``) that runs PG_COMPLETE_ONE and then, if the
    completion went through, the one-statement claim, in one round trip and one transaction; each
    statement sees the one before. It returns NULL when the completion did nothing (the caller
    takes the general path), else JSON ``[job state, revision, chunk state, [n_jobs, chunks, jobs],
    kind, items]`` (the completed chunk's kind and item_count last).

    Why a function: one statement cannot do both, since the next claim is usually of the same job,
    and a statement may update a row only once. Why in ``pg_temp``: it is created on each of the
    store's connections as it opens, so it always matches this code, needs no migration, and
    replicas of different versions never share it.
    The parameters are PG_COMPLETE_ONE's, then the claim's (see ``pg_claim_one_statement``), with
    the types PostgreSQL inferred for them when the two statements were prepared."""
    params = ", ".join([*complete_types, *claim_types])
    claim = numbered(_pg_claim(n_kinds, as_json=True), start=len(complete_types) + 1)
    return (
        f"CREATE FUNCTION {pg_complete_and_claim_name(n_kinds)}({params}) RETURNS json "
        "LANGUAGE plpgsql AS $jobpulse$ DECLARE done record; claimed record; BEGIN "
        f"{PG_COMPLETE_ONE} INTO done; "
        "IF NOT FOUND THEN RETURN NULL; END IF; "
        f"{claim} INTO claimed; "
        "RETURN json_build_array(done.job_state, done.revision, done.chunk_state, "
        "json_build_array(claimed.n_jobs, claimed.chunk_rows, claimed.job_rows), done.kind, done.items); "
        "END $jobpulse$"
    )


def pg_complete_and_claim_name(n_kinds: int) -> str:
    return f"pg_temp.jobpulse_complete_and_claim_{1 if n_kinds else 0}"


def pg_complete_and_claim_call(n_kinds: int, n_params: int) -> str:
    return (
        f"SELECT {pg_complete_and_claim_name(n_kinds)}({', '.join(f'${i}' for i in range(1, n_params + 1))})"
    )
