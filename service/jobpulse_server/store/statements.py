"""Every statement the server runs, each written once, its parameters named (``:now``, ``:job_id``) and
given as a mapping; what differs between SQLite and PostgreSQL is a ``Dialect`` value. The drivers send
a text as ``for_postgres`` or ``for_sqlite`` renders it: numbered placeholders (``$1`` on PostgreSQL,
``?1`` on SQLite; a name used twice is one number) and the function that picks their values, in that
order, out of the mapping; rendered once per text.

The few real differences: where the next change_seq and the change horizon come from, row locks (SQLite
has one writer at a time and needs none), list parameters (one array on PostgreSQL, one placeholder per
value on SQLite: ``Dialect.any_of`` and ``Dialect.values``), a label lookup in JSON, and whether several
rows go as arrays in one statement (``unnest``) or as one statement per row. PostgreSQL's group-committed
claim and completion, which repeat domain rules in SQL, are in ``batch/sql.py``; their shared pieces are
here: the claim's reads (``pg_candidate_jobs``, ``pg_ready_of_jobs``, one text for every PostgreSQL
claim) and ``derive_state_sql``.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy.dialects import postgresql

import jobpulse_server.store.tables as tables
from jobpulse_server.domain.filters import ORDERS, JobFilter
from jobpulse_server.domain.model import AFTER_PER_CHUNK, FAILED_AT_ONCE, HELD, ChunkState, JobState
from jobpulse_server.domain.webhooks import PENDING
from jobpulse_server.store.rows import (
    ARTIFACT_SELECT,
    CHUNK_COLUMNS,
    CHUNK_INSERTED,
    CHUNK_SAVED,
    CHUNK_SELECT,
    JOB_CONTROLS,
    JOB_CREATED_ONLY,
    JOB_INDEXED,
    JOB_PIPELINE,
    JOB_SAVED,
    JOB_SELECT,
)

# The statements built from a Dialect and a few numbers are built once per shape (they were rebuilt on every
# call: a 35-column UPDATE cost more to format than to run on SQLite). Bounded: list lengths vary.
_built = functools.lru_cache(maxsize=4096)

# --- parameters ---------------------------------------------------------------------------------------

NO_PARAMS: Mapping[str, Any] = MappingProxyType({})

# A parameter: a colon and a name, the colon after neither a word nor a colon (PostgreSQL's ``x::type``
# casts are no parameters). No statement has a colon in a string literal.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Rendered(NamedTuple):
    """A statement as a driver sends it: ``sql`` with numbered placeholders, ``names`` the name of each
    number in order, and ``values`` the function that picks their values out of a mapping."""

    sql: str
    names: tuple[str, ...]
    values: Callable[[Mapping[str, Any]], Sequence[Any]]


def _render(sql: str, mark: str) -> Rendered:
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m[1] not in names:
            names.append(m[1])
        return f"{mark}{names.index(m[1]) + 1}"

    text = _PARAM.sub(number, sql)
    if not names:
        return Rendered(text, (), lambda given: ())
    if len(names) == 1:
        only = names[0]
        return Rendered(text, (only,), lambda given: (given[only],))
    # itemgetter: 35 values picked in 0.15 us (a comprehension took 0.6; sqlite3's own named binding,
    # which makes a string of every name on every call, 3.2).
    return Rendered(text, tuple(names), operator.itemgetter(*names))


@functools.lru_cache(maxsize=2048)
def for_postgres(sql: str) -> Rendered:
    """``sql`` with PostgreSQL's ``$1, $2, ...``. Bounded: listing statements vary with the filters."""
    return _render(sql, "$")


@functools.lru_cache(maxsize=2048)
def for_sqlite(sql: str) -> Rendered:
    """``sql`` with SQLite's ``?1, ?2, ...``."""
    return _render(sql, "?")


def named(columns: Iterable[str], prefix: str = "") -> str:
    """``:a, :b, ...``: a parameter per column, named as the column (after ``prefix``)."""
    return ", ".join(f":{prefix}{c}" for c in columns)


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases, as SQL fragments and flags."""

    name: str
    # The change_seq of a job written now (WatchJobs' order): one more than the largest handed out on
    # SQLite (one writer at a time, so that is commit order); the writing transaction's id on PostgreSQL.
    next_seq: str
    # Every change with a change_seq below this is committed and visible to the reading transaction.
    horizon: str
    # Row locks: SQLite's writer holds the whole database already.
    for_update: str
    skip_locked: str
    # Lists as one array parameter (PostgreSQL) or one placeholder per value (SQLite); several rows
    # written by one statement of arrays (``unnest``) or by one statement each.
    arrays: bool

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def any_of(self, column: str, n: int, name: str = "") -> str:
        """``column`` is one of n values, the parameter ``name`` (the column's name unless given): one
        array, or on SQLite ``name_0, name_1, ...``; their values from ``values``. One value is a plain
        equality: an array of one would keep PostgreSQL from seeking a composite index on it in order (a
        deep page of ListJobs for one state walked ix_jobs_priority_id and filtered, not
        ix_jobs_state_priority_id)."""
        name = name or column
        if n == 1:
            return f"{column} = :{name}"
        if self.arrays:
            return f"{column} = ANY(:{name})"
        return f"{column} IN ({', '.join(f':{name}_{i}' for i in range(n))})"

    def values(self, name: str, items: Iterable[Any]) -> dict[str, Any]:
        """The parameters of ``any_of`` named ``name`` (as many items as it was told)."""
        found = list(items)
        if len(found) == 1:
            return {name: found[0]}
        if self.arrays:
            return {name: found}
        return {f"{name}_{i}": v for i, v in enumerate(found)}

    def label(self, key: str, value: Any, name: str) -> tuple[str, dict[str, Any]]:
        """A clause: the JSON label ``key`` is ``value``; its parameters named ``name`` and ``name_key``."""
        if self.postgres:
            return f"(labels ->> :{name}_key) = :{name}", {f"{name}_key": key, name: value}
        path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"json_extract(labels, :{name}_key) = :{name}", {f"{name}_key": path, name: value}


_SQLITE_LARGEST_SEQ = (
    "max(coalesce((SELECT max(change_seq) FROM jobs), 0), "
    "coalesce((SELECT max(change_seq) FROM job_tombstones), 0))"
)
SQLITE = Dialect(
    name="sqlite",
    next_seq=f"({_SQLITE_LARGEST_SEQ} + 1)",
    horizon=f"SELECT {_SQLITE_LARGEST_SEQ} + 1",
    for_update="",
    skip_locked="",
    arrays=False,
)
POSTGRES = Dialect(
    name="postgresql",
    next_seq="pg_current_xact_id()::text::bigint",
    horizon="SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    arrays=True,
)


class Where:
    """WHERE clauses and their parameters, by name (each name once)."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, clause: str, params: Mapping[str, Any] = NO_PARAMS, /, **named: Any) -> None:
        given = {**params, **named}
        if given.keys() & self.params.keys():
            raise ValueError(f"parameters named twice: {sorted(given.keys() & self.params.keys())}")
        self.clauses.append(clause)
        self.params.update(given)

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


# --- jobs -------------------------------------------------------------------------------------------

GET_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = :id"
GET_OWNED_JOB = f"SELECT {JOB_SELECT} FROM jobs WHERE id = :id AND owner = :owner"
FIND_JOB_BY_REQUEST = f"SELECT {JOB_SELECT} FROM jobs WHERE owner = :owner AND request_id = :request_id"
# The live job holding a unique key (ux_jobs_unique_key: its WHERE, written out so the planner uses it).
LIVE_JOB_WITH_KEY = (
    "SELECT id FROM jobs WHERE owner = :owner AND kind = :kind AND unique_key = :unique_key "
    "AND unique_key IS NOT NULL AND state < 4"
)


@_built
def get_jobs(d: Dialect, n: int, owned: bool, *, lock: str = "") -> str:
    """Jobs by id (``d.values("id", ids)``, and ``owner`` if ``owned``), in id order; ``lock`` a lock
    clause."""
    owner = " AND owner = :owner" if owned else ""
    return f"SELECT {JOB_SELECT} FROM jobs WHERE {d.any_of('id', n)}{owner} ORDER BY id{lock}"


@_built
def insert_job(d: Dialect) -> str:
    """A new job: its JOB_SAVED, JOB_CREATED_ONLY and JOB_CONTROLS columns and id, each a parameter named
    as the column;
    the change_seq comes from the database."""
    cols = (*JOB_SAVED, "id", *JOB_CREATED_ONLY, *JOB_CONTROLS, *JOB_PIPELINE)
    return f"INSERT INTO jobs ({', '.join(cols)}, change_seq) VALUES ({named(cols)}, {d.next_seq})"


@_built
def save_job(d: Dialect) -> str:
    """Writes a job's JOB_SAVED columns (parameters named as the columns; the row's ``id``) with a new
    change_seq."""
    return save_job_changed(d, tuple(range(len(JOB_INDEXED))))


@functools.lru_cache(maxsize=512)
def save_job_changed(d: Dialect, changed: tuple[int, ...]) -> str:
    """Writes a job's JOB_SAVED columns that no index holds, and of those an index holds only the ones
    at the positions ``changed`` (indexes of JOB_INDEXED), with a new change_seq; parameters as
    ``save_job``'s. At most 2^8 shapes. (A job's row is rewritten on every chunk change: on SQLite
    setting all 33 columns rewrote all 11 index entries of the row, 10 pages written to the WAL at each
    commit instead of 4.)"""
    left_out = {c for i, c in enumerate(JOB_INDEXED) if i not in changed}
    sets = ", ".join(f"{c} = :{c}" for c in JOB_SAVED if c not in left_out)
    return f"UPDATE jobs SET {sets}, change_seq = {d.next_seq} WHERE id = :id"


INSERT_FINGERPRINT = "INSERT INTO job_requests (job_id, fingerprint) VALUES (:job_id, :fingerprint)"
GET_FINGERPRINT = "SELECT fingerprint FROM job_requests WHERE job_id = :job_id"

# Jobs with a cancel asked before :before and chunks still running (CANCELLING, or failed at once:
# Job.fail_now), found from the running chunks (the partial ix_chunks_lease): a FAILED job's row does not
# say whether chunks of it still run without reading every FAILED job.
OVERDUE_CANCELS = (
    "SELECT DISTINCT j.id FROM chunks AS c JOIN jobs AS j ON j.id = c.job_id "
    f"WHERE c.state = {tables.RUNNING} AND j.cancel_requested AND j.cancel_time < :before LIMIT :limit"
)
SET_DEADLINE = "UPDATE jobs SET deadline_time = :deadline_time WHERE id = :id"
# Jobs not ended (nor ending: no cancel asked) whose deadline_time has passed (ix_jobs_deadline).
PAST_DEADLINE = (
    "SELECT id FROM jobs WHERE deadline_time <= :now AND end_time IS NULL AND NOT cancel_requested "
    "ORDER BY deadline_time LIMIT :limit"
)

COUNT_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"

_TOMBSTONE_COLUMNS = "id, owner, display_name, kind, state, priority, labels, create_time"


@_built
def delete_jobs(d: Dialect, n: int) -> tuple[str, ...]:
    """Deletes n jobs (parameters, the same for each statement: ``d.values("id", ids)`` and the delete
    time ``now``) with their chunks, artifacts and request fingerprints, leaving a tombstone each for
    WatchJobs. The tombstones take their change_seq before the jobs' rows go (on SQLite the next one is
    one more than the largest in either table, the jobs' own included)."""
    ids = d.any_of("id", n)
    return (
        f"INSERT INTO job_tombstones ({_TOMBSTONE_COLUMNS}, delete_time, change_seq) "
        f"SELECT {_TOMBSTONE_COLUMNS}, :now, {d.next_seq} FROM jobs WHERE {ids}",
        f"DELETE FROM artifacts WHERE {d.any_of('job_id', n, 'id')}",
        f"DELETE FROM chunk_attempts WHERE {d.any_of('job_id', n, 'id')}",
        f"DELETE FROM job_failures WHERE {d.any_of('job_id', n, 'id')}",
        f"DELETE FROM job_requests WHERE {d.any_of('job_id', n, 'id')}",
        f"DELETE FROM chunks WHERE {d.any_of('job_id', n, 'id')}",
        f"DELETE FROM jobs WHERE {ids}",
    )


# --- chunks -----------------------------------------------------------------------------------------

GET_CHUNK = f"SELECT {CHUNK_SELECT} FROM chunks WHERE id = :id"


@_built
def get_chunks(d: Dialect, n: int, *, lock: str = "") -> str:
    return f"SELECT {CHUNK_SELECT} FROM chunks WHERE {d.any_of('id', n)} ORDER BY id{lock}"


@_built
def insert_chunks(d: Dialect) -> str:
    """New chunks: one row per statement (SQLite), or every row from arrays, one per column (PostgreSQL);
    each parameter named as its column."""
    cols = ", ".join(CHUNK_INSERTED)
    if not d.arrays:
        return f"INSERT INTO chunks ({cols}) VALUES ({named(CHUNK_INSERTED)})"
    return f"INSERT INTO chunks ({cols}) SELECT * FROM unnest({_arrays(CHUNK_INSERTED, 'chunks')})"


# A chunk's CHUNK_SAVED columns, parameters named as the columns; the row's ``id``.
SAVE_CHUNK = "UPDATE chunks SET " + ", ".join(f"{c} = :{c}" for c in CHUNK_SAVED) + " WHERE id = :id"


# Pending and not waiting out a retry backoff (store/waiting.py: a due one has been promoted): the
# predicate of the partial ix_chunks_claim, written in so the planner walks it.
READY = f"state = {tables.PENDING} AND retry_at IS NULL"


@_built
def ready(d: Dialect, n_kinds: int) -> str:
    """Chunks ready to run: READY, of the wanted kinds (``ready_params``)."""
    return READY + (f" AND {d.any_of('kind', n_kinds)}" if n_kinds else "")


def ready_params(d: Dialect, kinds: Sequence[str]) -> dict[str, Any]:
    return d.values("kind", kinds) if kinds else {}


# --- chunks waiting out a retry backoff (store/waiting.py) -----------------------------------------

_WAITING = f"state = {tables.PENDING} AND retry_at IS NOT NULL"
# SQLite, in the claim's transaction (one writer): the due ones at ``now`` back into the claim order (at
# most ``limit``, the earliest first), then when the next one comes due.
SQLITE_PROMOTE = (
    f"UPDATE chunks SET retry_at = NULL WHERE id IN (SELECT id FROM chunks WHERE {_WAITING} "
    "AND retry_at <= :now ORDER BY retry_at LIMIT :limit)"
)
NEXT_RETRY = f"SELECT min(retry_at) FROM chunks WHERE {_WAITING}"
# PostgreSQL, a statement that is its own transaction (never inside one that goes on to lock jobs:
# CancelJob locks a job, then its pending chunks). Chunks another transaction holds are skipped (a
# cancel or a retry of their job is changing them). Returns how many moved and when the next one that
# was not due comes due. Parameters: now, limit.
PG_PROMOTE = (
    "WITH p AS (UPDATE chunks SET retry_at = NULL WHERE id IN (SELECT id FROM chunks WHERE "
    f"{_WAITING} AND retry_at <= :now ORDER BY retry_at LIMIT :limit FOR UPDATE SKIP LOCKED) RETURNING 1) "
    "SELECT (SELECT count(*) FROM p), "
    f"(SELECT min(retry_at) FROM chunks WHERE {_WAITING} AND retry_at > :now)"
)


# Highest priority first, then the oldest job (ids sort by creation), then the chunk's index: the order
# of ix_chunks_claim, so a claim reads the first rows of the index and sorts nothing.
CLAIM_ORDER = " ORDER BY priority DESC, job_id, idx LIMIT :limit"


@_built
def pick_ready(d: Dialect, n_kinds: int) -> str:
    """The first ``limit`` ready chunks in claim order (SQLite's claim: one writer, nothing to lock)."""
    return f"SELECT {CHUNK_SELECT} FROM chunks WHERE {ready(d, n_kinds)}{CLAIM_ORDER}"


# SQLite: where ``ready_after`` reads on from a position (priority p, job j, index i) of the claim order,
# each a range of ix_chunks_claim: the same job's later chunks, the later jobs of the same priority, the
# lower priorities.
AFTER_INDEX, AFTER_JOB, AFTER_PRIORITY = (
    "priority = :p AND job_id = :j AND idx > :i",
    "priority = :p AND job_id > :j",
    "priority < :p",
)


@_built
def ready_after(d: Dialect, n_kinds: int, after: str) -> str:
    """SQLite: the first ``limit`` ready chunks in claim order within one of the ranges above: a claim
    that passes over a paused job or one at its max_running_chunks seeks past the job's chunks instead of
    reading them (store/tx.py ``SqlTx.claim``)."""
    return f"SELECT {CHUNK_SELECT} FROM chunks WHERE {ready(d, n_kinds)} AND {after}{CLAIM_ORDER}"


# --- fair share on SQLite (store/tx.py SqlTx._fair; domain/model.py fair_order) ------------------------

# Whether an owner other than :o has a job with pending chunks (ix_jobs_fair, a probe each side).
OTHER_OWNER = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE n_pending > 0 AND owner < :o) "
    "OR EXISTS (SELECT 1 FROM jobs WHERE n_pending > 0 AND owner > :o)"
)
# The owners with pending chunks, one probe each: the first, then the next after :o.
FIRST_OWNER = "SELECT owner FROM jobs WHERE n_pending > 0 ORDER BY owner LIMIT 1"
NEXT_OWNER = "SELECT owner FROM jobs WHERE n_pending > 0 AND owner > :o ORDER BY owner LIMIT 1"
# Each job's running chunks with its owner, counted from the running chunks (named: without statistics
# the planner walked every chunk in job order to group them).
SQLITE_RUNNING_BY_JOB = (
    "SELECT c.job_id, j.owner, count(*) FROM chunks AS c INDEXED BY ix_chunks_lease "
    "JOIN jobs AS j ON j.id = c.job_id "
    f"WHERE c.state = {tables.RUNNING} GROUP BY c.job_id, j.owner"
)
# Where ``owner_ready`` reads: from the start, or on from a position (priority p, job j, index i) of the
# owner's claim order, as AFTER_INDEX, AFTER_JOB and AFTER_PRIORITY do. (``+j.id``: a plain j.id > :j
# was carried over to c.job_id, and SQLite then read the chunks of every later job and sorted them.)
OWNER_FROM_START = "1 = 1"
OWNER_AFTER_INDEX, OWNER_AFTER_JOB, OWNER_AFTER_PRIORITY = (
    "j.id = :j AND c.idx > :i",
    "j.priority = :p AND +j.id > :j",
    "j.priority < :p",
)
_OWNER_CHUNK = ", ".join(f"c.{c}" for c in CHUNK_COLUMNS)


@_built
def owner_ready(d: Dialect, n_kinds: int, after: str) -> str:
    """SQLite: the first ``limit`` ready chunks of owner :o's jobs that may be claimed (may_claim; room
    within a job is the caller's to count), in claim order within ``after`` (above): the owner's jobs
    in claim order off ix_jobs_fair, each one's chunks off ix_chunks_claim, no sort."""
    kinds = f" AND {d.any_of('c.kind', n_kinds, 'kind')}" if n_kinds else ""
    return (
        f"SELECT {_OWNER_CHUNK} FROM jobs AS j CROSS JOIN chunks AS c WHERE j.owner = :o AND j.n_pending > 0 "
        f"AND {may_claim('j.')} AND c.priority = j.priority AND c.job_id = j.id "
        f"AND c.state = {tables.PENDING} AND c.retry_at IS NULL{kinds} AND {after} "
        "ORDER BY j.priority DESC, j.id, c.idx LIMIT :limit"
    )


def may_claim(alias: str) -> str:
    """PostgreSQL: a job whose chunks a claim may take now, as ``Job.claimable`` says (not paused, fewer
    than max_running_chunks running); ``alias`` the job row's, with its dot."""
    a = alias
    return f"NOT {a}paused AND ({a}max_running_chunks = 0 OR {a}n_processing < {a}max_running_chunks)"


def kind_open(alias: str) -> str:
    """PostgreSQL: a job whose kind is not paused (UpdateKind; ``Kind.claimable``), a probe of the kinds
    table's key; ``alias`` the job row's, with its dot. Every claim statement reads the kinds table, so
    UpdateKind's lock on it (SqlTx.update_kind) waits for the claims under way and orders the later
    ones after its change. (A chunk has its job's kind; a finalize chunk, its job's finalize_kind.)"""
    return f"NOT EXISTS (SELECT 1 FROM kinds AS kk WHERE kk.kind = {alias}kind AND kk.paused)"


def kind_capped(jobs: str, kinds: str = "", locked: str = "") -> str:
    """PostgreSQL: whether a job of the relation ``jobs`` (with kind and finalize_kind) is of a kind, or has
    a finalize chunk of a kind, with a max_running_chunks that the claim may take (``kinds``: the
    placeholder of the claim's kinds, when it names them) and whose row it did not lock first
    (``locked``: the placeholder of those it did, store/caps.py): the group commit's claims leave those
    to the general path, which counts the kind's running chunks under the kind's lock (SqlTx.claim)."""
    among = f" AND ck.kind = ANY({kinds})" if kinds else ""
    among += f" AND ck.kind <> ALL({locked})" if locked else ""
    return (
        f"EXISTS (SELECT 1 FROM {jobs} AS cj JOIN kinds AS ck ON ck.kind IN (cj.kind, cj.finalize_kind) "
        f"WHERE ck.max_running_chunks > 0{among})"
    )


# PostgreSQL: the kinds with a max_running_chunks now (store/caps.py).
CAPPED_NOW = "SELECT coalesce(array_agg(kind), '{}') FROM kinds WHERE max_running_chunks > 0"
# PostgreSQL: CTE kr0, the room of each capped kind of :locked (store/caps.py), its row locked and its
# running chunks counted by jobpulse_kind_rooms (migration 0020) in a snapshot taken after the lock, so
# the count holds every claim of the kind committed before. A claim statement calls it before it locks
# any job (KIND_ROOMS_BEFORE in the condition of the CTE that locks them: an InitPlan, run when that
# CTE's first row is tested, before the row is locked): kinds, then jobs, as SqlTx.claim locks them.
KIND_ROOMS_FIRST = "kr0 AS (SELECT kind_name AS kind, room FROM jobpulse_kind_rooms(:locked)), "
KIND_ROOMS_BEFORE = "(SELECT count(*) FROM kr0) >= 0"


def kind_rooms(ending: str = "") -> str:
    """PostgreSQL: CTE kr, how many more chunks of each locked capped kind may run (kr0's room);
    ``ending``: a relation of chunks (with kind) this statement ends, counted as running by kr0; their
    places are free."""
    freed = f" + (SELECT count(*) FROM {ending} AS fe WHERE fe.kind = kr0.kind)" if ending else ""
    return f"kr AS (SELECT kr0.kind, kr0.room{freed} AS room FROM kr0), "


@_built
def running_of_kinds(d: Dialect, n_kinds: int) -> str:
    """The chunks of each of ``n_kinds`` kinds (parameters ``kind``, as ``Dialect.values``) PROCESSING
    now, from the running chunks (at most one per lease)."""
    index = "" if d.postgres else " INDEXED BY ix_chunks_lease"
    return (
        f"SELECT kind, count(*) FROM chunks{index} WHERE state = {tables.RUNNING} "
        f"AND {d.any_of('kind', n_kinds)} GROUP BY kind"
    )


@functools.cache
def capped_kinds(n_kinds: int, *, lock: bool) -> str:
    """PostgreSQL: the kinds with a max_running_chunks (not paused), among :kinds when ``n_kinds``, in
    kind order and, with ``lock``, locked (the order every claim that counts them locks them in)."""
    kinds = " AND kind = ANY(:kinds)" if n_kinds else ""
    locked = " FOR UPDATE" if lock else ""
    return (
        f"SELECT kind, max_running_chunks FROM kinds WHERE max_running_chunks > 0 AND NOT paused{kinds} "
        f"ORDER BY kind{locked}"
    )


def room(alias: str, limit: str) -> str:
    """PostgreSQL: how many of a job's ready chunks one claim may take, ``Job.claimable`` capped by
    ``limit``: what max_running_chunks leaves, or ``limit`` when the job has none."""
    a = alias
    left = f"greatest(0, {a}max_running_chunks - {a}n_processing)"
    return f"least({limit}, CASE WHEN {a}max_running_chunks = 0 THEN {limit} ELSE {left} END)"


def pg_ready(kinds: str) -> str:
    """PostgreSQL: chunks ready to run; ``kinds``: the placeholder of the wanted kinds as one array, empty
    for any kind."""
    return READY + (f" AND kind = ANY({kinds})" if kinds else "")


def owner_running(owner: str, held: str = "") -> str:
    """PostgreSQL: the chunks of ``owner``'s jobs PROCESSING now, as a relation of one row (``n``), from
    the jobs with running chunks (ix_jobs_running): fair share's count (domain/model.py fair_order).
    ``held``: a relation (id, n) of jobs whose count this statement knows better than their rows say
    (the completions of its own transaction or flush, not yet written): n counts for those."""
    if not held:
        return (
            "SELECT coalesce(sum(rj.n_processing), 0) AS n FROM jobs AS rj "
            f"WHERE rj.owner = {owner} AND rj.n_processing > 0"
        )
    return (
        "SELECT coalesce(sum(coalesce(h.n, rj.n_processing)), 0) AS n FROM jobs AS rj "
        f"LEFT JOIN {held} AS h(id, n) ON h.id = rj.id WHERE rj.owner = {owner} AND rj.n_processing > 0"
    )


# PostgreSQL, a transaction's claim: the jobs it has changed already, and their running counts now.
HELD_RUNNING = "unnest(:held_ids::text[], :held_n::bigint[])"


# PostgreSQL: the owners of jobs with pending chunks, one index probe each (a loose scan of ix_jobs_fair;
# the last row is NULL).
PG_OWNERS = (
    "WITH RECURSIVE o(owner) AS ((SELECT owner FROM jobs WHERE n_pending > 0 ORDER BY owner LIMIT 1) "
    "UNION ALL SELECT (SELECT oj.owner FROM jobs AS oj WHERE oj.n_pending > 0 AND oj.owner > o.owner "
    "ORDER BY oj.owner LIMIT 1) FROM o WHERE o.owner IS NOT NULL) "
)

# PostgreSQL: the first owner with pending chunks, and whether there is another (store/owners.py).
OWNERS_NOW = (
    "WITH m AS (SELECT owner FROM jobs WHERE n_pending > 0 ORDER BY owner LIMIT 1) "
    "SELECT (SELECT owner FROM m), "
    "EXISTS (SELECT 1 FROM jobs WHERE n_pending > 0 AND owner > (SELECT owner FROM m))"
)

# The order of fair_order over rows with priority, job_id, idx, turn and tie (``fair_turn``).
FAIR_ORDER = "priority DESC, turn, tie, job_id, idx"


def fair_turn(row: str, owner: str, running: str) -> str:
    """PostgreSQL: fair_order's turn of a row ``row`` (its alias, with the dot; columns priority, job_id,
    idx) of ``owner``, whose running chunks are ``running``, and its tie (domain/model.py fair_tie; the
    claim's spin is the parameter ``spin``, as text)."""
    r = row
    return (
        f"row_number() OVER (PARTITION BY {r}priority, {owner} ORDER BY {r}job_id, {r}idx) "
        f"+ {running} AS turn, decode(md5(:spin || ':' || {owner}), 'hex') AS tie"
    )


def pg_candidate_jobs(
    ready: str, limit: str, kinds: str = "", *, fair: bool = False, held: str = "", full: str = ""
) -> str:
    """PostgreSQL: the jobs of the first ``limit`` ``ready`` chunks in claim order (a claim's candidates,
    locked before their chunks); ``kinds``: the kinds' placeholder when the claim names kinds. ``limit``
    is a number written in (the group commit's generic plans guess a bound LIMIT takes a tenth of the
    rows) or a placeholder.

    Found job by job: the jobs with pending chunks in claim order (ix_jobs_claimable), then each one's
    ready chunks (ix_chunks_claim, descended to that job's own entries: a pending chunk has its job's
    priority). A claim leaves its chunk's entry in ix_chunks_claim dead until a vacuum, and job ids sort
    by creation, so a scan of that index from its start read past the dead entries of every older job of
    the priority (719 buffers, 0.87 ms behind two drained jobs of 50,000 chunks; 6 buffers this way).
    Ordered by job alone: the first ``limit`` rows hold the same jobs whatever their order within a job,
    and the jobs' index gives that order with no sort.

    ``fair`` (domain/model.py fair_order): the same walk owner by owner (PG_OWNERS, then each owner's
    first ``limit`` rows through ix_jobs_fair), the rows of all owners ordered by their turns; ``held``
    as owner_running's. Jobs of a paused kind are passed over (kind_open); ``full``: the placeholder of
    the kinds at their max_running_chunks, passed over too."""
    # A job's finalize chunk has the job's finalize_kind (services/pipeline.py): a claim of that kind
    # finds the job by it, and passes over the chunk while that kind is paused.
    job_kinds = f" AND (pj.kind = ANY({kinds}) OR pj.finalize_kind = ANY({kinds}))" if kinds else ""
    job_kinds += f" AND NOT (pj.kind = ANY({full}))" if full else ""
    job_kinds += f" AND {kind_open('pj.')}"
    walk = (
        f"FROM jobs AS pj CROSS JOIN LATERAL (SELECT idx FROM chunks WHERE {ready} "
        f"AND (NOT chunks.finalize OR {kind_open('chunks.')}) "
        f"AND priority = pj.priority AND job_id = pj.id ORDER BY idx LIMIT {room('pj.', limit)}) AS r "
        f"WHERE pj.n_pending > 0{job_kinds} AND {may_claim('pj.')}"
    )
    if not fair:
        return f"SELECT pj.id AS job_id {walk} ORDER BY pj.priority DESC, pj.id LIMIT {limit}"
    rows = (
        f"SELECT pj.id AS job_id, pj.priority, r.idx {walk} AND pj.owner = o.owner "
        f"ORDER BY pj.priority DESC, pj.id LIMIT {limit}"
    )
    return (
        f"SELECT f.job_id FROM ({PG_OWNERS}SELECT f.*, {fair_turn('f.', 'o.owner', 'run.n')} FROM o "
        f"CROSS JOIN LATERAL ({rows}) AS f CROSS JOIN LATERAL ({owner_running('o.owner', held)}) AS run "
        f"WHERE o.owner IS NOT NULL) AS f ORDER BY {FAIR_ORDER} LIMIT {limit}"
    )


def is_candidate(
    ready: str, limit: str, kinds: str = "", *, fair: bool = False, held: str = "", full: str = ""
) -> str:
    """PostgreSQL: a job row (unaliased) is one of pg_candidate_jobs', as an array, each job found by
    its key: as an IN of the subquery, a generic plan of 256 slots hashed it against a scan of every job
    once a hundred jobs had pending chunks (test_worker_plans)."""
    found = pg_candidate_jobs(ready, limit, kinds, fair=fair, held=held, full=full)
    return f"id = ANY(ARRAY({found}))"


def pg_ready_of_jobs(
    ready: str, jobs: str, limit: str, columns: str, *, fair: bool = False, held: str = ""
) -> str:
    """PostgreSQL: the first ``limit`` ``ready`` chunks of the locked candidate jobs ``jobs`` (a relation
    with id, priority, max_running_chunks and n_processing, each job as locked; and owner when ``fair``)
    in claim order, locked (SKIP LOCKED), each job's read from its own entries of ix_chunks_claim as in
    pg_candidate_jobs, and no more of a job's than its ``room``; ``columns`` of ``ch``. Each job's read
    locks what it returns: every ready chunk of the candidates before the last is in the first
    ``limit``, so at most ``limit`` - 1 of the last one's are locked and left (until the commit).

    ``fair``: the jobs' rows ordered by fair_order's turns first, and only the first ``limit`` locked
    (a candidate's rows are not all among them in this order); ``held`` as owner_running's."""
    each = (
        f"FROM {jobs} AS pj CROSS JOIN LATERAL (SELECT {{}} FROM chunks ch WHERE {ready} "
        f"AND ch.priority = pj.priority AND ch.job_id = pj.id ORDER BY ch.idx LIMIT {room('pj.', limit)}"
    )
    if not fair:
        return (
            f"SELECT r.* {each.format(columns)} FOR UPDATE OF ch SKIP LOCKED) AS r "
            f"ORDER BY r.priority DESC, r.job_id, r.idx LIMIT {limit}"
        )
    turns = (
        f"SELECT r.*, {fair_turn('r.', 'pj.owner', 'run.n')} "
        f"{each.format('ch.id, ch.priority, ch.job_id, ch.idx')}) AS r "
        f"CROSS JOIN LATERAL ({owner_running('pj.owner', held)}) AS run"
    )
    return (
        f"SELECT {columns} FROM chunks ch WHERE ch.id = ANY(ARRAY(SELECT f.id FROM ({turns}) AS f "
        f"ORDER BY {FAIR_ORDER} LIMIT {limit})) AND {ready} FOR UPDATE OF ch SKIP LOCKED"
    )


@functools.cache
def pg_claim(n_kinds: int, *, skip_locked: bool, fair: bool = False) -> str:
    """PostgreSQL's claim in a transaction: locks the jobs of the first ready chunks (jobs before chunks,
    the lock order of every writer that waits; with ``skip_locked``, jobs another transaction holds are
    passed over), then takes those jobs' ready chunks (SKIP LOCKED), in one round trip, as two arrays of
    rows. The candidates and their chunks are read as the group commit's claim reads them; ``fair``: in
    fair_order, the running counts of the jobs the transaction changed already as it has them (held_ids,
    held_n). Jobs of paused kinds and of the kinds ``full`` (at their max_running_chunks) are passed over.
    Parameters: kinds (an array, when named), limit, full (an array); held_ids, held_n, spin when
    ``fair``."""
    kinds = ":kinds" if n_kinds else ""
    ready = pg_ready(kinds)
    limit = ":limit"
    lock = POSTGRES.skip_locked if skip_locked else POSTGRES.for_update
    held = HELD_RUNNING if fair else ""
    # may_claim again: a job locked after another claim's commit is judged as that commit left it.
    jobs = (
        f"SELECT {JOB_SELECT} FROM jobs WHERE "
        f"{is_candidate(ready, limit, kinds, fair=fair, held=held, full=':full')} "
        f"AND {may_claim('')} ORDER BY id{lock}"
    )
    columns = ", ".join(f"ch.{c}" for c in CHUNK_COLUMNS)
    picked = pg_ready_of_jobs(ready, "j", limit, columns, fair=fair, held=held)
    return (
        f"WITH j AS ({jobs}), c AS ({picked}) SELECT (SELECT array_agg(j) FROM j), "
        "(SELECT array_agg(c ORDER BY c.priority DESC, c.job_id, c.idx) FROM c)"
    )


# PostgreSQL: jobs, then the chunks of those jobs, locked in one round trip (a leased call's reads).
PG_LOCK_LEASED = (
    f"WITH j AS (SELECT {JOB_SELECT} FROM jobs WHERE id = ANY(:job_ids) ORDER BY id FOR UPDATE), "
    f"c AS (SELECT {CHUNK_SELECT} FROM chunks WHERE id = ANY(:chunk_ids) AND job_id IN (SELECT id FROM j) "
    "ORDER BY id FOR UPDATE) SELECT (SELECT array_agg(j) FROM j), (SELECT array_agg(c) FROM c)"
)


@_built
def expired_leases(d: Dialect) -> str:
    """Leases that ran out, oldest first (PostgreSQL skips chunks a worker is completing right now)."""
    return (
        f"SELECT {CHUNK_SELECT} FROM chunks WHERE state = {tables.RUNNING} AND lease_expire_time < :now "
        f"ORDER BY lease_expire_time LIMIT :limit{d.skip_locked}"
    )


def _chunk_filters(
    d: Dialect, states: Iterable[ChunkState], kind: str, reasons: Sequence[str], params: dict[str, Any]
) -> str:
    """ListJobChunks' filters on chunks ``c`` (states, kind, error reasons) as AND-ed conditions, each
    starting " AND "; their values put in ``params``."""
    sql = ""
    st = [int(s) for s in states]
    if st:
        sql += f" AND {d.any_of('c.state', len(st), 'state')}"
        params.update(d.values("state", st))
    if kind:
        sql += " AND c.kind = :kind"
        params["kind"] = kind
    if reasons:
        sql += f" AND {d.any_of('c.error_reason', len(reasons), 'reason')}"
        params.update(d.values("reason", list(reasons)))
    return sql


def chunk_list(
    d: Dialect,
    job_id: str,
    after_index: int,
    limit: int | None,
    states: Iterable[ChunkState],
    after_revision: int | None,
    kind: str = "",
    reasons: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """A job's chunks after an index, in index order, optionally of some states, kind and error reasons /
    changed after a revision."""
    sql = f"SELECT {CHUNK_SELECT} FROM chunks AS c WHERE job_id = :job_id AND idx > :after_index"
    params: dict[str, Any] = {"job_id": job_id, "after_index": after_index}
    sql += _chunk_filters(d, states, kind, reasons, params)
    if after_revision is not None:
        sql += " AND revision > :after_revision"
        params["after_revision"] = after_revision
    sql += " ORDER BY idx"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return sql, params


def chunk_count(
    d: Dialect, job_id: str, states: Iterable[ChunkState], kind: str, reasons: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """How many of a job's chunks the filters let through (when the job's counts by state cannot say)."""
    params: dict[str, Any] = {"job_id": job_id}
    where = _chunk_filters(d, states, kind, reasons, params)
    return f"SELECT count(*) FROM chunks AS c WHERE job_id = :job_id{where}", params


def chunks_across(
    d: Dialect,
    owner: str | None,
    states: Iterable[ChunkState],
    kind: str,
    reasons: Sequence[str],
    after: tuple[str, int] | None,
    limit: int,
) -> tuple[str, dict[str, Any]]:
    """ListJobChunks over "-": the chunks of every job (of ``owner``'s, unless None) the filters let
    through, newest job first and each job's from its last chunk (backwards along ux_chunks_job_idx),
    after the (job id, index) ``after``."""
    params: dict[str, Any] = {"limit": limit}
    sql = f"SELECT {CHUNK_SELECT} FROM chunks AS c WHERE 1 = 1"
    sql += _chunk_filters(d, states, kind, reasons, params)
    if owner is not None:
        sql += " AND c.job_id IN (SELECT id FROM jobs WHERE owner = :owner)"
        params["owner"] = owner
    if after is not None:
        sql += " AND (c.job_id < :after_job OR (c.job_id = :after_job AND c.idx < :after_idx))"
        params.update(after_job=after[0], after_idx=after[1])
    return sql + " ORDER BY c.job_id DESC, c.idx DESC LIMIT :limit", params


def failure_groups(
    owner: str | None, kind: str, created_after: int | None, created_before: int | None, limit: int
) -> tuple[str, dict[str, Any]]:
    """SummarizeFailures: the chunks FAILED for good (of ``owner``'s jobs, unless None; of a kind; of jobs
    created in a range) by error reason, the reason failed most lately first: chunks, jobs, the last
    end_time. Read from failure_counts (a row per owner, kind and reason), or with a range of creation
    from job_failures (a row per job, kind and reason), never from the chunks: over 1,000,000 failed
    chunks on PostgreSQL one pass over their index took 274 ms (1,000 jobs) to 696 ms (100,000).

    A reason's rows count each job once summed over kinds: a job's FAILED chunks are all of one kind at
    any time (only a finalize chunk has another kind, and it runs only once every other chunk COMPLETED,
    which no RetryChunk undoes). So job_failures' rows of a reason are its jobs (count(DISTINCT job_id)
    sorted them: 456 ms over 400,000 rows, where count(*) is what the scan costs)."""
    params: dict[str, Any] = {"limit": limit}
    ranged = created_after is not None or created_before is not None
    where = _failures_where(owner, kind, created_after, created_before, params)
    table, jobs = ("job_failures", "count(*)") if ranged else ("failure_counts", "sum(f.jobs)")
    return (
        f"SELECT f.error_reason, sum(f.chunks), {jobs}, max(f.last_time) FROM {table} AS f "
        f"WHERE {where} GROUP BY f.error_reason ORDER BY max(f.last_time) DESC, f.error_reason LIMIT :limit",
        params,
    )


def last_failure(
    owner: str | None, kind: str, created_after: int | None, created_before: int | None
) -> tuple[str, dict[str, Any]]:
    """The message of a chunk that failed last with the reason :reason among those ``failure_groups``
    counted (a FailureGroup's sample), given when that was (:last): the chunks of that reason that ended
    then (ix_chunks_failed_last), the first of them the filters let through."""
    params: dict[str, Any] = {}
    where = f"c.state = {int(ChunkState.FAILED)} AND c.error_reason = :reason AND c.end_time = :last"
    if kind:
        where += " AND c.kind = :kind"
        params["kind"] = kind
    jobs = []
    if owner is not None:
        jobs.append("owner = :owner")
        params["owner"] = owner
    if created_after is not None:
        jobs.append("create_time >= :created_after")
        params["created_after"] = created_after
    if created_before is not None:
        jobs.append("create_time < :created_before")
        params["created_before"] = created_before
    if jobs:
        where += f" AND c.job_id IN (SELECT id FROM jobs WHERE {' AND '.join(jobs)})"
    return f"SELECT c.error_message FROM chunks AS c WHERE {where} LIMIT 1", params


def _failures_where(
    owner: str | None,
    kind: str,
    created_after: int | None,
    created_before: int | None,
    params: dict[str, Any],
) -> str:
    """The job_failures or failure_counts rows (``f``) that SummarizeFailures' filters let through (the
    range of creation: job_failures only)."""
    where = ["TRUE"]
    if owner is not None:
        where.append("f.owner = :owner")
        params["owner"] = owner
    if kind:
        where.append("f.kind = :kind")
        params["kind"] = kind
    if created_after is not None:
        where.append("f.create_time >= :created_after")
        params["created_after"] = created_after
    if created_before is not None:
        where.append("f.create_time < :created_before")
        params["created_before"] = created_before
    return " AND ".join(where)


# A chunk's move to FAILED, counted in its job_failures row (SqlTx.save): the row made, or added to;
# its owner and chunks now (as many as were added: the row is new).
ADD_JOB_FAILURES = (
    "INSERT INTO job_failures (job_id, kind, error_reason, owner, create_time, chunks, last_time) "
    "SELECT j.id, :kind, :error_reason, j.owner, j.create_time, :chunks, :last_time FROM jobs AS j "
    "WHERE j.id = :job_id ON CONFLICT (job_id, kind, error_reason) DO UPDATE SET "
    "chunks = job_failures.chunks + excluded.chunks, last_time = CASE WHEN excluded.last_time > "
    "job_failures.last_time THEN excluded.last_time ELSE job_failures.last_time END "
    "RETURNING owner, chunks"
)


def count_job_failures(where: str = "") -> str:
    """Counts job_failures rows from the chunks FAILED for good (those of ``c`` matching ``where`` too)."""
    return (
        "INSERT INTO job_failures (job_id, kind, error_reason, owner, create_time, chunks, last_time) "
        "SELECT c.job_id, c.kind, c.error_reason, j.owner, j.create_time, count(*), "
        "coalesce(max(c.end_time), 0) "
        f"FROM chunks AS c JOIN jobs AS j ON j.id = c.job_id WHERE c.state = {int(ChunkState.FAILED)}"
        + (f" AND {where}" if where else "")
        + " GROUP BY c.job_id, c.kind, c.error_reason, j.owner, j.create_time"
    )


# failure_counts made from job_failures (what migration 0026 does; bench/failures.py after a bulk load).
COUNT_FAILURE_COUNTS = (
    "INSERT INTO failure_counts (owner, kind, error_reason, chunks, jobs, last_time) "
    "SELECT owner, kind, error_reason, sum(chunks), count(*), max(last_time) FROM job_failures "
    "GROUP BY owner, kind, error_reason"
)
_FAILURE_ROW = "SELECT owner, kind, error_reason, chunks FROM job_failures WHERE "


@_built
def job_failure_rows(d: Dialect, n: int) -> str:
    """The job_failures rows of n jobs (``d.values("id", ids)``): owner, kind, reason, chunks."""
    return _FAILURE_ROW + d.any_of("job_id", n, "id")


# RetryJob: the job's FAILED chunks are all PENDING again.
FORGET_JOB_FAILURES = "DELETE FROM job_failures WHERE job_id = :job_id"


@_built
def forget_failures_of(d: Dialect, n: int) -> str:
    """FORGET_JOB_FAILURES of n jobs (``d.values("id", ids)``): RetryJobs' batches."""
    return f"DELETE FROM job_failures WHERE {d.any_of('job_id', n, 'id')}"


# RetryChunk: the chunk's kind and reason before it moves; its row counted again after.
FAILED_CHUNK_KEY = (
    f"SELECT kind, error_reason FROM chunks WHERE id = :chunk_id AND state = {int(ChunkState.FAILED)}"
)
_ONE_ROW = "job_id = :job_id AND kind = :kind AND error_reason = :error_reason"
CHUNK_FAILURE_ROW = _FAILURE_ROW + _ONE_ROW
FORGET_CHUNK_FAILURES = "DELETE FROM job_failures WHERE " + _ONE_ROW
RECOUNT_CHUNK_FAILURES = count_job_failures(
    "c.error_reason = :error_reason AND c.job_id = :job_id AND c.kind = :kind"
)
# failure_counts: a key's change in this transaction (store/failure_counts.py); its last_time found again
# when rows left it; the key gone once it counts no chunk.
_KEY = "owner = :owner AND kind = :kind AND error_reason = :error_reason"
ADD_FAILURE_COUNTS = (
    "INSERT INTO failure_counts (owner, kind, error_reason, chunks, jobs, last_time) VALUES (:owner, "
    ":kind, :error_reason, :chunks, :jobs, :last_time) ON CONFLICT (owner, kind, error_reason) DO UPDATE "
    "SET chunks = failure_counts.chunks + excluded.chunks, jobs = failure_counts.jobs + excluded.jobs, "
    "last_time = CASE WHEN excluded.last_time > failure_counts.last_time THEN excluded.last_time "
    "ELSE failure_counts.last_time END"
)
FIND_FAILURE_LAST = (
    "UPDATE failure_counts SET last_time = coalesce((SELECT max(f.last_time) FROM job_failures AS f "
    "WHERE f.owner = :owner AND f.kind = :kind AND f.error_reason = :error_reason), 0) WHERE " + _KEY
)
DROP_EMPTY_FAILURES = "DELETE FROM failure_counts WHERE chunks <= 0 AND " + _KEY


@_built
def chunk_states(d: Dialect) -> str:
    """Every chunk's state of a job in index order, for the dashboard's grid: one text value on
    PostgreSQL (one row to send instead of one per chunk), one small row per chunk on SQLite."""
    if d.postgres:
        return "SELECT string_agg(state::text, '' ORDER BY idx) FROM chunks WHERE job_id = :job_id"
    return "SELECT state FROM chunks WHERE job_id = :job_id ORDER BY idx"


CANCEL_PENDING_CHUNKS = (
    "UPDATE chunks SET state = :cancelled, revision = :revision, end_time = :now, next_attempt_time = NULL, "
    "retry_at = NULL WHERE job_id = :job_id AND state = :pending"
)
# CANCEL_PENDING_CHUNKS for many jobs at once (PostgreSQL), each at its own new revision: the job of
# each chunk moved, a row per chunk (CancelJobs' batches).
PG_CANCEL_PENDING_MANY = (
    "UPDATE chunks AS c SET state = :cancelled, revision = v.rev, end_time = :now, next_attempt_time = NULL, "
    "retry_at = NULL FROM unnest(:job_ids::text[], :revs::bigint[]) AS v(job_id, rev) "
    "WHERE c.job_id = v.job_id AND c.state = :pending RETURNING c.job_id"
)

# --- pipelines: dependencies and the finalize step (services/pipeline.py) ---------------------------

# A held chunk waits at this next_attempt_time (domain.model.HELD), out of the claim index.
_HELD = str(HELD)
LINK_DEPENDENCY = (
    "INSERT INTO job_dependencies (after_id, job_id, after_mode) VALUES (:after_id, :job_id, :mode)"
)
# A dependency's completions free or cancel its dependants' chunks: written by the transaction path.
MARK_PIPELINE = "UPDATE jobs SET pipeline = TRUE WHERE id = :id AND NOT pipeline"
DEPENDANTS = "SELECT job_id, after_mode FROM job_dependencies WHERE after_id = :id ORDER BY job_id"
# The dependencies of a job not COMPLETED (each row read after the dependant's lock: see pipeline.py).
UNFINISHED_DEPENDENCIES = (
    "SELECT d.after_id FROM job_dependencies AS d JOIN jobs AS j ON j.id = d.after_id "
    f"WHERE d.job_id = :id AND j.state <> {int(JobState.COMPLETED)}"
)
COMPLETED_INDEXES = f"SELECT idx FROM chunks WHERE job_id = :job_id AND state = {int(ChunkState.COMPLETED)}"
# PostgreSQL: whether a PER_CHUNK dependant holds chunks (store/holds.py), off ix_jobs_per_chunk_held.
PER_CHUNK_HOLDS = f"SELECT EXISTS (SELECT 1 FROM jobs WHERE n_held > 0 AND after_mode = {AFTER_PER_CHUNK})"
MOVE_HELD = "UPDATE jobs SET n_held = n_held + :n WHERE id = :id"
CLEAR_HELD = "UPDATE jobs SET n_held = 0 WHERE id = :id"


def release_held(d: Dialect, n: int) -> str:
    """The held pending chunks of a job (those at ``n`` indexes, parameters ``idx``; 0: all) let go: due
    at :due (NULL: ready now, in the claim index), at revision :revision."""
    where = f"job_id = :job_id AND state = {tables.PENDING} AND retry_at = {_HELD}"
    if n:
        where += f" AND {d.any_of('idx', n)}"
    return f"UPDATE chunks SET next_attempt_time = :due, retry_at = :due, revision = :revision WHERE {where}"


def hold_pending(d: Dialect, n: int) -> str:
    """Pending chunks of a job at ``n`` indexes (parameters ``idx``) held (a finalize chunk a retry put
    back while its job's other chunks run again)."""
    return (
        f"UPDATE chunks SET next_attempt_time = {_HELD}, retry_at = {_HELD}, revision = :revision "
        f"WHERE job_id = :job_id AND state = {tables.PENDING} AND (retry_at IS NULL OR retry_at <> {_HELD}) "
        f"AND {d.any_of('idx', n)}"
    )


SET_PENDING_PRIORITY = "UPDATE chunks SET priority = :priority WHERE job_id = :job_id AND state = :pending"
# PauseJob / ResumeJob / UpdateJob: a job's controls on the claim (rows.JOB_CONTROLS).
SET_JOB_CONTROLS = "UPDATE jobs SET paused = :paused, max_running_chunks = :max_running_chunks WHERE id = :id"


@_built
def _retry_set(revision: str, priority: str, attempts: str) -> str:
    """The SET of chunks put back to PENDING by a retry, with these expressions for the new revision, the
    job's priority and the claims allowed more than the chunk has had."""
    return (
        f"SET state = {int(ChunkState.PENDING)}, revision = {revision}, priority = {priority}, "
        f"max_attempts = attempt + {attempts}, items_done = 0, error_reason = '', error_message = '', "
        "error_details = '', worker_id = '', "
        "lease_token = NULL, lease_expire_time = NULL, next_attempt_time = NULL, retry_at = NULL, "
        "start_time = NULL, end_time = NULL"
    )


def retryable_chunks(d: Dialect, one: bool) -> tuple[str, str]:
    """(how many FAILED and CANCELLED chunks by state and their items done, the UPDATE that puts them
    back to PENDING); parameters: job_id, the two states (``d.values("state", ...)``), then chunk_id if
    ``one``; the UPDATE's also revision, priority, attempts."""
    where = f"job_id = :job_id AND {d.any_of('state', 2)}" + (" AND id = :chunk_id" if one else "")
    count = f"SELECT state, count(*), coalesce(sum(items_done), 0) FROM chunks WHERE {where} GROUP BY state"
    update = f"UPDATE chunks {_retry_set(':revision', ':priority', ':attempts')} WHERE {where}"
    return count, update


# RetryJobs' batches on PostgreSQL: retryable_chunks of many whole jobs (job_ids; the UPDATE's also revs,
# priorities and attempts, one of each a job).
_RETRYABLE_MANY = (
    f"c.job_id = ANY(:job_ids) AND c.state IN ({int(ChunkState.FAILED)}, {int(ChunkState.CANCELLED)})"
)
PG_RETRYABLE_MANY = (
    "SELECT c.job_id, c.state, count(*), coalesce(sum(c.items_done), 0) FROM chunks AS c "
    f"WHERE {_RETRYABLE_MANY} GROUP BY c.job_id, c.state"
)
PG_RESET_FOR_RETRY_MANY = (
    f"UPDATE chunks AS c {_retry_set('v.rev', 'v.priority', 'v.attempts')} "
    "FROM unnest(:job_ids::text[], :revs::bigint[], :priorities::bigint[], :attempts::bigint[]) "
    f"AS v(job_id, rev, priority, attempts) WHERE c.job_id = v.job_id AND {_RETRYABLE_MANY}"
)


# --- artifacts --------------------------------------------------------------------------------------

ARTIFACT_INSERTED = ("job_id", "chunk_index", "name", "uri", "media_type", "size_bytes", "role")


@_built
def delete_named_artifacts(d: Dialect) -> str:
    """The artifacts of a chunk with the names about to be written (a later one of a name replaces the
    earlier): one row of (job_id, chunk_index, name) each."""
    if not d.arrays:
        return "DELETE FROM artifacts WHERE job_id = :job_id AND chunk_index = :chunk_index AND name = :name"
    return (
        "DELETE FROM artifacts AS x USING unnest(:job_id::text[], :chunk_index::bigint[], :name::text[]) "
        "AS u(job_id, chunk_index, name) WHERE x.job_id = u.job_id AND x.chunk_index = u.chunk_index "
        "AND x.name = u.name"
    )


def insert_artifacts(d: Dialect) -> str:
    cols = ", ".join(ARTIFACT_INSERTED)
    if not d.arrays:
        return f"INSERT INTO artifacts ({cols}) VALUES ({named(ARTIFACT_INSERTED)})"
    return f"INSERT INTO artifacts ({cols}) SELECT * FROM unnest({_arrays(ARTIFACT_INSERTED, 'artifacts')})"


# --- attempts (ListChunkAttempts; migration 0022) ---------------------------------------------------

ATTEMPT_COLUMNS = tuple(c.name for c in tables.chunk_attempts.columns)


def insert_attempts(d: Dialect) -> str:
    cols = ", ".join(ATTEMPT_COLUMNS)
    if not d.arrays:
        return f"INSERT INTO chunk_attempts ({cols}) VALUES ({named(ATTEMPT_COLUMNS)})"
    arrays = _arrays(ATTEMPT_COLUMNS, "chunk_attempts")
    return f"INSERT INTO chunk_attempts ({cols}) SELECT * FROM unnest({arrays})"


# A job's ended attempts after (chunk_index, attempt) = (:after_index, :after_attempt), in that order, of
# one chunk when :one (its index :index), at most :limit.
LIST_ATTEMPTS = (
    f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM chunk_attempts WHERE job_id = :job_id "
    "AND (chunk_index > :after_index OR (chunk_index = :after_index AND attempt > :after_attempt)) "
    "AND (NOT :one OR chunk_index = :index) ORDER BY chunk_index, attempt LIMIT :limit"
)
# A job's running and completed chunks after (idx, attempt) = (:after_index, :after_attempt) (each one's
# current or last attempt), of one chunk when :one, at most :limit.
CURRENT_ATTEMPTS = (
    f"SELECT {CHUNK_SELECT} FROM chunks WHERE job_id = :job_id "
    f"AND state IN ({tables.RUNNING}, {int(ChunkState.COMPLETED)}) "
    "AND (idx > :after_index OR (idx = :after_index AND attempt > :after_attempt)) "
    "AND (NOT :one OR idx = :index) ORDER BY idx LIMIT :limit"
)


ARTIFACTS_BETWEEN = (
    f"SELECT {ARTIFACT_SELECT} FROM artifacts WHERE job_id = :job_id "
    "AND chunk_index BETWEEN :first AND :last "
    "ORDER BY chunk_index, id"
)
# One job's first ``limit`` artifacts: the plain index range, cheaper than numbering rows (GetJob's case).
JOB_ARTIFACTS = (
    f"SELECT {ARTIFACT_SELECT}, job_id FROM artifacts WHERE job_id = :job_id "
    "ORDER BY chunk_index, id LIMIT :limit"
)


@_built
def jobs_artifacts(d: Dialect, n: int) -> str:
    """The first ``limit`` artifacts of each of n jobs (``d.values("job_id", ids)``), in chunk order,
    numbered per job on the (job_id, chunk_index) index; rows are ARTIFACT_COLUMNS then job_id."""
    return (
        f"SELECT {ARTIFACT_SELECT}, job_id FROM (SELECT {ARTIFACT_SELECT}, job_id, id, row_number() "
        "OVER (PARTITION BY job_id ORDER BY chunk_index, id) AS n "
        f"FROM artifacts WHERE {d.any_of('job_id', n)}) AS a WHERE n <= :limit "
        "ORDER BY job_id, chunk_index, id"
    )


# --- the webhook outbox -----------------------------------------------------------------------------

OUTBOX_COLUMNS = tuple(c.name for c in tables.webhook_deliveries.columns)
_OUTBOX_SELECT = ", ".join(f"d.{c}" for c in OUTBOX_COLUMNS)
INSERT_OUTBOX = (
    f"INSERT INTO webhook_deliveries ({', '.join(OUTBOX_COLUMNS)}) VALUES ({named(OUTBOX_COLUMNS)})"
)


@_built
def due_deliveries(d: Dialect) -> str:
    """Up to ``limit`` deliveries due at ``now``, oldest first, each with its owner's webhook secret (NULL for
    owners without a key); PostgreSQL skips rows another replica holds."""
    lock = " FOR UPDATE OF d SKIP LOCKED" if d.postgres else ""
    return (
        f"SELECT {_OUTBOX_SELECT}, k.webhook_secret FROM webhook_deliveries d "
        f"LEFT JOIN api_keys k ON k.name = d.owner WHERE d.state = {PENDING} AND d.next_attempt_time <= :now "
        f"ORDER BY d.next_attempt_time LIMIT :limit{lock}"
    )


@_built
def hold_deliveries(d: Dialect, n: int) -> str:
    return f"UPDATE webhook_deliveries SET next_attempt_time = :until WHERE {d.any_of('id', n)}"


# The columns an attempt's outcome may set (services/webhooks.py): checked, since they name columns.
DELIVERY_OUTCOME = ("state", "attempts", "last_status", "last_error", "delivered_time", "next_attempt_time")


@_built
def record_delivery(columns: tuple[str, ...]) -> str:
    if not set(columns) <= set(DELIVERY_OUTCOME):
        raise ValueError(f"not an outcome column: {sorted(set(columns) - set(DELIVERY_OUTCOME))}")
    """Sets ``columns`` (parameters named as the columns) of the delivery ``id``."""
    return "UPDATE webhook_deliveries SET " + ", ".join(f"{c} = :{c}" for c in columns) + " WHERE id = :id"


JOB_DELIVERIES = (
    f"SELECT {_OUTBOX_SELECT} FROM webhook_deliveries d WHERE d.job_id = :job_id "
    "ORDER BY d.create_time DESC, d.id DESC LIMIT :limit"
)
GET_DELIVERY = f"SELECT {_OUTBOX_SELECT} FROM webhook_deliveries d WHERE d.id = :id"
GET_OWNED_DELIVERY = GET_DELIVERY + " AND d.owner = :owner"
REQUEUE_DELIVERY = "UPDATE webhook_deliveries SET state = :state, next_attempt_time = :now WHERE id = :id"
JOB_EXISTS = "SELECT id FROM jobs WHERE id = :id"
OWNED_JOB_EXISTS = "SELECT id FROM jobs WHERE id = :id AND owner = :owner"
OUTBOX_PENDING = "SELECT count(*) FROM webhook_deliveries WHERE state = :state"
OUTBOX_OLDEST_DUE = (
    "SELECT min(create_time) FROM webhook_deliveries WHERE state = :state AND next_attempt_time <= :now"
)
# Done deliveries (delivered or dead) whose last attempt was before ``before``: a done delivery's
# next_attempt_time is when its last attempt was made; read from the (state, next_attempt_time) index.
DONE_DELIVERIES = (
    "SELECT id FROM webhook_deliveries WHERE state = :state AND next_attempt_time < :before LIMIT :limit"
)


@_built
def delete_deliveries(d: Dialect, n: int) -> str:
    return f"DELETE FROM webhook_deliveries WHERE {d.any_of('id', n)}"


# --- listing and the feed ---------------------------------------------------------------------------


def job_filter(d: Dialect, f: JobFilter) -> Where:
    """ListJobs' filters, on ``jobs`` or on ``job_tombstones`` (which has the same filtered columns)."""
    w = Where()
    if f.owner is not None:
        w.add("owner = :owner", owner=f.owner)
    if f.states:
        states = [int(JobState(s)) for s in f.states]
        w.add(d.any_of("state", len(states)), d.values("state", states))
    if f.kind:
        w.add("kind = :kind", kind=f.kind)
    if f.min_priority is not None:
        w.add("priority >= :min_priority", min_priority=f.min_priority)
    if f.max_priority is not None:
        w.add("priority <= :max_priority", max_priority=f.max_priority)
    if f.created_after is not None:
        w.add("create_time >= :created_after", created_after=f.created_after)
    if f.created_before is not None:
        w.add("create_time < :created_before", created_before=f.created_before)
    if f.search:
        pattern = "%" + f.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        w.add("lower(display_name) LIKE :search ESCAPE '\\'", search=pattern)
    for i, (key, value) in enumerate(sorted(f.labels.items())):
        w.add(*d.label(key, value, f"label_{i}"))
    return w


def list_jobs(
    d: Dialect,
    f: JobFilter,
    order_by: str,
    after: list[Any] | None,
    limit: int,
    columns: str = JOB_SELECT,
) -> tuple[str, dict[str, Any]]:
    """One page of jobs (``columns`` of them) in ``order_by`` order after the sort key ``after``
    (keyset). The key is one row-value comparison, which both databases seek an index on (an OR of ANDs
    made PostgreSQL filter every earlier row instead: 885 ms against 0.14 ms, 900,000 deep)."""
    cols, desc = ORDERS[order_by]
    w = job_filter(d, f)
    if after is not None:
        keys = {f"after_{i}": v for i, v in enumerate(after)}
        w.add(f"({', '.join(cols)}) {'<' if desc else '>'} ({named(keys)})", keys)
    order = ", ".join(c + (" DESC" if desc else "") for c in cols)
    return f"SELECT {columns} FROM jobs{w.sql()} ORDER BY {order} LIMIT :limit", {**w.params, "limit": limit}


# PostgreSQL counts matching jobs exactly up to this many; beyond, total_size is the planner's estimate
# (AIP-158 allows one): counting 1,000,000 rows took 60-90 ms per first page. SQLite counts exactly.
COUNT_EXACT_UP_TO = 10_000


def count_jobs(d: Dialect, f: JobFilter) -> tuple[str, str | None, dict[str, Any]]:
    """(the count, capped on PostgreSQL at COUNT_EXACT_UP_TO + 1; the planner's estimate as JSON on
    PostgreSQL, else None; the parameters of both)."""
    w = job_filter(d, f)
    if not d.postgres:
        return f"SELECT count(*) FROM jobs{w.sql()}", None, w.params
    rows = f"SELECT 1 FROM jobs{w.sql()}"
    capped = f"SELECT count(*) FROM ({rows} LIMIT {COUNT_EXACT_UP_TO + 1}) AS matching"
    return capped, f"EXPLAIN (FORMAT JSON) {rows}", w.params


def changed(
    d: Dialect, table: str, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
) -> tuple[str, dict[str, Any]]:
    """Rows of ``jobs`` (every column) or ``job_tombstones`` (change_seq, id) matching ``f`` changed after
    ``after`` (change_seq, id) and below ``horizon``, in change order."""
    w = job_filter(d, f)
    w.add("(change_seq, id) > (:after_seq, :after_id)", after_seq=after[0], after_id=after[1])
    w.add("change_seq < :horizon", horizon=horizon)
    cols = JOB_SELECT if table == "jobs" else "change_seq, id"
    return f"SELECT {cols} FROM {table}{w.sql()} ORDER BY change_seq, id LIMIT :limit", {
        **w.params,
        "limit": limit,
    }


# PostgreSQL: whether changes at or beyond the horizon exist (committed but not yet safe to hand out).
# (On SQLite the horizon is one past the largest change_seq in the same snapshot: there are none.)
BEYOND_HORIZON = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE change_seq >= :horizon) "
    "OR EXISTS (SELECT 1 FROM job_tombstones WHERE change_seq >= :horizon)"
)

FEED_FLOOR = "SELECT change_seq FROM feed_floor WHERE id = 1"
# The oldest tombstones deleted before ``before``, but never the newest: on SQLite the next change_seq is one
# more than the largest in jobs and tombstones and must never go back to one handed out before.
OLD_TOMBSTONES = (
    "SELECT id, change_seq FROM job_tombstones WHERE delete_time < :before "
    "AND change_seq < (SELECT max(change_seq) FROM job_tombstones) ORDER BY delete_time LIMIT :limit"
)


@_built
def delete_tombstones(d: Dialect, n: int) -> str:
    return f"DELETE FROM job_tombstones WHERE {d.any_of('id', n)}"


RAISE_FEED_FLOOR = (
    "INSERT INTO feed_floor (id, change_seq) VALUES (1, :change_seq) "
    "ON CONFLICT (id) DO UPDATE SET change_seq = "
    "CASE WHEN excluded.change_seq > feed_floor.change_seq THEN excluded.change_seq "
    "ELSE feed_floor.change_seq END"
)


# --- expiry (AIP-214) -------------------------------------------------------------------------------

_CHUNK_TOTAL = "n_pending + n_processing + n_completed + n_failed + n_cancelled"
# Jobs in a state, (update_time, id) after a position, update_time before a cutoff, from the
# (state, update_time, id) index: those on the default ttl are expired when the cutoff is now minus it.
EXPIRY_CANDIDATES = (
    f"SELECT id, update_time, ttl, {_CHUNK_TOTAL} FROM jobs WHERE state = :state "
    "AND (update_time, id) > (:after_time, :after_id) AND update_time < :before ORDER BY update_time, id "
    "LIMIT :limit"
)
# Jobs with a ttl of their own whose end_time + ttl is past, soonest expired first. Spelled as
# ix_jobs_own_expiry's expression, so both databases read that index.
OWN_TTL_EXPIRED = (
    f"SELECT id, update_time, ttl, {_CHUNK_TOTAL} FROM jobs WHERE ttl > 0 AND end_time + ttl < :now "
    "ORDER BY end_time + ttl LIMIT :limit"
)


@_built
def still_expired(d: Dialect, n: int, n_defaults: int) -> str:
    """Those of n jobs whose expire_time has passed, in id order (locked on PostgreSQL, the lock order
    of every writer of several jobs). Parameters: ``d.values("id", ids)``, now (own ttl), then
    ``default_state_i`` and ``default_cutoff_i`` for each default ttl i."""
    by_default = "".join(
        f" OR (ttl IS NULL AND state = :default_state_{i} AND update_time < :default_cutoff_{i})"
        for i in range(n_defaults)
    )
    return (
        f"SELECT id FROM jobs WHERE {d.any_of('id', n)} AND end_time IS NOT NULL "
        f"AND ((ttl > 0 AND end_time + ttl < :now){by_default}) ORDER BY id{d.for_update}"
    )


# --- stats and health -------------------------------------------------------------------------------


def stats_groups(w: Where) -> str:
    """Per (kind, state): jobs, items done, first start, last update, jobs that ran and their time."""
    ran = "end_time IS NOT NULL AND start_time IS NOT NULL"
    return (
        "SELECT kind, state, count(*), coalesce(sum(items_done), 0), min(start_time), max(update_time), "
        f"count(CASE WHEN {ran} THEN 1 END), "
        f"coalesce(sum(CASE WHEN {ran} THEN end_time - start_time END), 0) "
        f"FROM jobs{w.sql()} GROUP BY kind, state"
    )


def finished_count(w: Where) -> str:
    return f"SELECT count(*) FROM jobs{w.sql()}{' AND' if w.clauses else ' WHERE'} end_time IS NOT NULL"


def duration_at(w: Where) -> str:
    """The duration (create to end) of the finished job at a rank: ``skip`` rows skipped."""
    cond = f"{' AND' if w.clauses else ' WHERE'} end_time IS NOT NULL"
    return f"SELECT end_time - create_time AS d FROM jobs{w.sql()}{cond} ORDER BY d LIMIT 1 OFFSET :skip"


LEASES_IN_FLIGHT = f"SELECT count(*), count(DISTINCT worker_id) FROM chunks WHERE state = {tables.RUNNING}"
SCHEMA_VERSION = "SELECT version_num FROM alembic_version"
# One statement that fails, as the server's own statements would, when a table or column the server uses
# is missing (dropped under it, or the server points at another database); it reads no row. ``SELECT 1``
# answers as long as the database does: a health probe of that kind stayed SERVING while every call failed.
SCHEMA_PROBE = "SELECT " + ", ".join(
    f"EXISTS (SELECT {', '.join(c.name for c in t.columns)} FROM {t.name} WHERE 1 = 0)"
    for t in tables.metadata.sorted_tables
)


# --- API keys and the events-token secrets -----------------------------------------------------------

KEY_NAMED = "SELECT id FROM api_keys WHERE name = :name"
_KEY_COLUMNS = ("name", "role", "key_hash", "key_prefix", "create_time", "webhook_url", "webhook_secret")
INSERT_KEY = f"INSERT INTO api_keys ({', '.join(_KEY_COLUMNS)}) VALUES ({named(_KEY_COLUMNS)})"
LIST_KEYS = "SELECT name, role, key_prefix, create_time, revoke_time FROM api_keys ORDER BY name"
REVOKE_KEY = "UPDATE api_keys SET revoke_time = :now WHERE name = :name AND revoke_time IS NULL"
ACTIVE_KEYS = (
    "SELECT key_hash, name, role, key_prefix, create_time, webhook_url FROM api_keys "
    "WHERE revoke_time IS NULL"
)
KEY_WEBHOOK_SECRET = "SELECT webhook_secret FROM api_keys WHERE name = :name"

EVENTS_SECRETS = "SELECT id, secret, retire_time FROM events_token_secrets"
SIGNING_SECRET = "SELECT id FROM events_token_secrets WHERE retire_time IS NULL LIMIT 1"
INSERT_EVENTS_SECRET = (
    "INSERT INTO events_token_secrets (secret, create_time) VALUES (:secret, :create_time) RETURNING id"
)
DROP_OLD_SECRETS = "DELETE FROM events_token_secrets WHERE retire_time < :before"
RETIRE_SECRETS = "UPDATE events_token_secrets SET retire_time = :now WHERE retire_time IS NULL"


# --- kinds: their controls on the claim (UpdateKind) and their chunks now (ListKinds) ------------------

KIND_SELECT = "kind, paused, max_running_chunks, update_time"

# UpdateKind, in one statement: the kind's row made or changed. A NULL parameter keeps the stored value
# (a new row's default), so two updates of a kind without a row yet, or of different fields, cannot lose
# each other's field; the row lock it takes orders it with any claim that locks the row (FOR SHARE).
# Parameters: kind, paused, max_running_chunks (each NULL to keep), update_time.
UPDATE_KIND = (
    "INSERT INTO kinds (kind, paused, max_running_chunks, update_time) "
    "VALUES (:kind, COALESCE(:paused, false), COALESCE(:max_running_chunks, 0), :update_time) "
    "ON CONFLICT (kind) DO UPDATE SET paused = COALESCE(:paused, kinds.paused), "
    "max_running_chunks = COALESCE(:max_running_chunks, kinds.max_running_chunks), "
    f"update_time = :update_time RETURNING {KIND_SELECT}"
)
# PostgreSQL, UpdateKind's transaction first (SqlTx.update_kind): the claims' reads of the table wait.
LOCK_KINDS = "LOCK TABLE kinds IN ACCESS EXCLUSIVE MODE"
GET_KIND = f"SELECT {KIND_SELECT} FROM kinds WHERE kind = :kind"

# Jobs that may have chunks PENDING or PROCESSING (a terminal job has neither), read through
# ix_jobs_state_id; their n_pending and n_processing are the chunks' counts.
_LIVE_JOBS = (
    f"state IN ({int(JobState.PENDING)}, {int(JobState.PROCESSING)}, {int(JobState.CANCELLING)}) "
    "AND (n_pending > 0 OR n_processing > 0)"
)


@_built
def kind_controls(d: Dialect, n_kinds: int) -> str:
    """The controls in force (paused, or a max_running_chunks) of the kinds a claim asks for, with the
    parameters of ``ready_params`` (``n_kinds`` 0: of every kind): what ``domain.model.Kind.claimable``
    needs beside the kinds' running chunks (``running_of_kinds``). A kind without a row, or whose row is
    back at the defaults, has none."""
    kinds = f" AND {d.any_of('kind', n_kinds)}" if n_kinds else ""
    return f"SELECT {KIND_SELECT} FROM kinds WHERE (paused OR max_running_chunks > 0){kinds}"


@_built
def kind_chunks(owned: bool) -> str:
    """The chunks PENDING and PROCESSING of the kind ``kind`` (``owned``: of the jobs of ``owner``)."""
    owner = " AND owner = :owner" if owned else ""
    return (
        "SELECT CAST(COALESCE(SUM(n_pending), 0) AS BIGINT), CAST(COALESCE(SUM(n_processing), 0) AS BIGINT) "
        f"FROM jobs WHERE {_LIVE_JOBS} AND kind = :kind{owner}"
    )


@_built
def list_kinds(owned: bool) -> str:
    """ListKinds: the first ``limit`` kinds after ``after`` in kind order, of those with a row in kinds
    and those with chunks PENDING or PROCESSING (``owned``: of the jobs of ``owner``), each as KIND_SELECT
    (NULLs for a kind without a row) then its pending and running chunks."""
    owner = " AND owner = :owner" if owned else ""
    return (
        "SELECT u.kind, k.paused, k.max_running_chunks, k.update_time, u.pending, u.running FROM ("
        "SELECT kind, CAST(SUM(pending) AS BIGINT) AS pending, CAST(SUM(running) AS BIGINT) AS running "
        "FROM (SELECT kind, 0 AS pending, 0 AS running FROM kinds WHERE kind > :after UNION ALL "
        f"SELECT kind, n_pending, n_processing FROM jobs WHERE {_LIVE_JOBS} AND kind > :after{owner}) AS a "
        "GROUP BY kind ORDER BY kind LIMIT :limit) AS u "
        "LEFT JOIN kinds AS k ON k.kind = u.kind ORDER BY u.kind"
    )


# --- usage per key, throughput per minute -------------------------------------------------------------

# Adds a key's counts to its stored totals (a replica adds what it counted since its last flush).
ADD_USAGE = (
    "INSERT INTO key_usage (key_name, role, calls, rejected, update_time) "
    "VALUES (:key_name, :role, :calls, :rejected, :update_time) "
    "ON CONFLICT (key_name) DO UPDATE SET role = excluded.role, calls = key_usage.calls + excluded.calls, "
    "rejected = key_usage.rejected + excluded.rejected, update_time = excluded.update_time"
)
USAGE = "SELECT key_name, role, calls, rejected FROM key_usage"

# Adds a (minute, kind)'s completed chunks and items: adding, not overwriting, lets every replica flush
# into the same minute.
ADD_THROUGHPUT = (
    "INSERT INTO throughput_minutes (minute, kind, chunks, items) VALUES (:minute, :kind, :chunks, :items) "
    "ON CONFLICT (minute, kind) DO UPDATE SET chunks = throughput_minutes.chunks + excluded.chunks, "
    "items = throughput_minutes.items + excluded.items"
)
THROUGHPUT_SINCE = (
    "SELECT minute, kind, chunks, items FROM throughput_minutes WHERE minute >= :minute ORDER BY minute, kind"
)
PRUNE_THROUGHPUT = "DELETE FROM throughput_minutes WHERE minute < :minute"


# --- PostgreSQL: several rows in one statement -------------------------------------------------------

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def pg_type(table: str, column: str) -> str:
    """The PostgreSQL type of a column, from the table definitions (JSON columns travel as text)."""
    kind = tables.metadata.tables[table].c[column].type.compile(dialect=_PG)
    return "text" if kind == "JSON" else kind.lower()


def _arrays(columns: Sequence[str], table: str, prefix: str = "") -> str:
    """An array parameter per column, named as the column after ``prefix``."""
    return ", ".join(f":{prefix}{c}::{pg_type(table, c)}[]" for c in columns)


def _unnest_update(table: str, columns: Sequence[str], prefix: str, extra: str = "") -> str:
    """UPDATE ``table`` from arrays (id first, then ``columns``; named as the columns after ``prefix``),
    one row per element."""
    names = ("id", *columns)
    json_cols = {
        c.name for c in tables.metadata.tables[table].columns if c.type.compile(dialect=_PG) == "JSON"
    }
    sets = ", ".join(f"{c} = v.{c}::json" if c in json_cols else f"{c} = v.{c}" for c in columns)
    return (
        f"UPDATE {table} AS t SET {sets}{extra} "
        f"FROM unnest({_arrays(names, table, prefix)}) AS v({', '.join(names)}) "
        "WHERE t.id = v.id RETURNING 1"
    )


# PostgreSQL: a write transaction's chunks and jobs (each job a new change_seq) and its NOTIFY for the
# other replicas, in one round trip. Parameters: the chunks' columns (id, then CHUNK_SAVED) as arrays
# named ``c_`` and the column, the jobs' (id, then JOB_SAVED) named ``j_`` and the column; the channel
# and the payload.
PG_SAVE = (
    f"WITH c AS ({_unnest_update('chunks', CHUNK_SAVED, 'c_')}), "
    f"j AS ({_unnest_update('jobs', JOB_SAVED, 'j_', f', change_seq = {POSTGRES.next_seq}')}) "
    "SELECT pg_notify(:channel, :payload)"
)
NOTIFY = "SELECT pg_notify(:channel, :payload)"


@functools.cache
def pg_save_jobs_some(columns: tuple[str, ...]) -> str:
    """PG_SAVE without chunks, writing only ``columns`` of the jobs (those a save changed since the
    transaction's snapshot of them: ``SqlTx.snapshot``), with a new change_seq each, and the NOTIFY."""
    return (
        f"WITH j AS ({_unnest_update('jobs', columns, 'j_', f', change_seq = {POSTGRES.next_seq}')}) "
        "SELECT pg_notify(:channel, :payload)"
    )


def derive_state_sql(pending: str, processing: str, completed: str, failed: str, cancelled: str) -> str:
    """``domain.model.derive_state`` in SQL, over the job row ``j`` and its new counts: a job failed at
    once (``Job.failed_at_once``: a cancel asked with one of the reasons FAILED_AT_ONCE) -> FAILED; chunks
    still to run -> CANCELLING if a cancel was asked, PROCESSING once started (or anything finished),
    else PENDING; none left -> CANCELLED if asked, FAILED if any failed, CANCELLED if any was cancelled,
    else COMPLETED."""
    at_once = ", ".join(f"'{r}'" for r in FAILED_AT_ONCE)
    return (
        f"CASE WHEN j.cancel_requested AND j.error_reason IN ({at_once}) THEN {int(JobState.FAILED)} "
        f"WHEN {pending} + {processing} > 0 THEN "
        f"CASE WHEN j.cancel_requested THEN {int(JobState.CANCELLING)} "
        f"WHEN j.start_time IS NOT NULL OR {completed} > 0 OR {failed} > 0 THEN {int(JobState.PROCESSING)} "
        f"ELSE {int(JobState.PENDING)} END "
        f"WHEN j.cancel_requested THEN {int(JobState.CANCELLED)} "
        f"WHEN {failed} > 0 THEN {int(JobState.FAILED)} "
        f"WHEN {cancelled} > 0 THEN {int(JobState.CANCELLED)} "
        f"ELSE {int(JobState.COMPLETED)} END"
    )


# --- bulk operations over a filter (services/bulk.py) -----------------------------------------------------

BULK_COLUMNS = (
    "id", "owner", "sees_all", "action", "job_filter", "reason", "force", "matched", "done", "skipped",
    "cursor", "create_time", "update_time", "end_time", "cancelled",
)  # fmt: skip
BULK_SELECT = ", ".join(BULK_COLUMNS)
INSERT_BULK = f"INSERT INTO bulk_operations ({BULK_SELECT}) VALUES ({named(BULK_COLUMNS)})"
GET_BULK = f"SELECT {BULK_SELECT} FROM bulk_operations WHERE id = :id"
# The operation's progress, written in the same transaction as the batch it counts.
SAVE_BULK = (
    "UPDATE bulk_operations SET done = :done, skipped = :skipped, cursor = :cursor, "
    "update_time = :update_time, end_time = :end_time, cancelled = :cancelled WHERE id = :id"
)
DELETE_BULK = "DELETE FROM bulk_operations WHERE id = :id"


def list_bulk(after: bool, owned: bool, done: bool | None) -> str:
    """A page of operations, newest first (ids grow with time): after the id ``:after`` if ``after``;
    only ``:owner``'s if ``owned``; only those ended (``done``) or running (not ``done``)."""
    where = ["id < :after"] if after else ["TRUE"]
    if owned:
        where.append("owner = :owner")
    if done is not None:
        where.append("end_time IS NOT NULL" if done else "end_time IS NULL")
    conditions = " AND ".join(where)
    return f"SELECT {BULK_SELECT} FROM bulk_operations WHERE {conditions} ORDER BY id DESC LIMIT :limit"


# Operations not finished, oldest first (ix_bulk_operations_running): what a runner takes up.
RUNNING_BULK = "SELECT id FROM bulk_operations WHERE end_time IS NULL ORDER BY create_time, id"


def bulk_batch(d: Dialect, f: JobFilter, cursor: str, limit: int) -> tuple[str, dict[str, Any]]:
    """The next ``limit`` jobs matching ``f`` after the id ``cursor``, in id order (ListJobs'
    "create_time" order, its keyset on the id), locked (PostgreSQL)."""
    sql, params = list_jobs(d, f, "create_time", [cursor] if cursor else None, limit)
    return sql + d.for_update, params


def count_all_jobs(d: Dialect, f: JobFilter) -> tuple[str, dict[str, Any]]:
    """The exact number of jobs matching ``f`` (a bulk operation's ``matched``)."""
    w = job_filter(d, f)
    return f"SELECT count(*) FROM jobs{w.sql()}", w.params


# --- schedules (ScheduleService; services/schedules.py) -------------------------------------------------

SCHEDULE_COLUMNS = (
    "id",
    "owner",
    "display_name",
    "cron",
    "time_zone",
    "job_template",
    "paused",
    "misfire_policy",
    "overlap_policy",
    "next_run_time",
    "last_run_time",
    "last_job_id",
    "create_time",
    "update_time",
)
SCHEDULE_SELECT = ", ".join(SCHEDULE_COLUMNS)
INSERT_SCHEDULE = f"INSERT INTO schedules ({SCHEDULE_SELECT}) VALUES ({named(SCHEDULE_COLUMNS)})"


def get_schedule(d: Dialect, owned: bool, *, lock: bool = False) -> str:
    """One schedule by ``id`` (and ``owner`` if ``owned``); ``lock``: its row locked (PostgreSQL)."""
    owner = " AND owner = :owner" if owned else ""
    return f"SELECT {SCHEDULE_SELECT} FROM schedules WHERE id = :id{owner}{d.for_update if lock else ''}"


def list_schedules(owned: bool) -> str:
    """ListSchedules: the first ``limit`` schedules after the id ``after``, oldest first (ids sort by
    creation), of ``owner`` if ``owned`` (ix_schedules_owner_id)."""
    owner = " AND owner = :owner" if owned else ""
    return f"SELECT {SCHEDULE_SELECT} FROM schedules WHERE id > :after{owner} ORDER BY id LIMIT :limit"


# UpdateSchedule: every field a caller may change, and the next run it makes.
UPDATE_SCHEDULE = (
    "UPDATE schedules SET display_name = :display_name, cron = :cron, time_zone = :time_zone, "
    "job_template = :job_template, paused = :paused, misfire_policy = :misfire_policy, "
    "overlap_policy = :overlap_policy, next_run_time = :next_run_time, update_time = :update_time "
    "WHERE id = :id"
)


def delete_schedule(owned: bool) -> str:
    owner = " AND owner = :owner" if owned else ""
    return f"DELETE FROM schedules WHERE id = :id{owner}"


# The schedules due at :now, the earliest first (ix_schedules_due; a paused one has no next_run_time).
DUE_SCHEDULES = (
    f"SELECT {SCHEDULE_SELECT} FROM schedules WHERE next_run_time IS NOT NULL AND next_run_time <= :now "
    "ORDER BY next_run_time LIMIT :limit"
)
# The earliest next run of any schedule (ix_schedules_due): how long the ticker may sleep.
NEXT_SCHEDULE_RUN = "SELECT min(next_run_time) FROM schedules WHERE next_run_time IS NOT NULL"
# A tick served: next_run_time moved on, and the job it made recorded (NULLs: keep the last ones), only
# if next_run_time is still the tick this pass read (compare-and-set: of two replicas serving the same
# tick, one moves it on; an UpdateSchedule that set another next run meanwhile wins).
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET next_run_time = :next_run_time, "
    "last_run_time = COALESCE(:last_run_time, last_run_time), "
    "last_job_id = COALESCE(:last_job_id, last_job_id), update_time = :update_time "
    "WHERE id = :id AND next_run_time = :expected"
)
# A tick's job recorded by a pass that lost the move to another (next_run_time untouched), unless a later
# job is recorded already.
RECORD_TICK_JOB = (
    "UPDATE schedules SET last_run_time = :last_run_time, last_job_id = :last_job_id, "
    "update_time = :update_time WHERE id = :id AND (last_run_time IS NULL OR last_run_time <= :last_run_time)"
)
# TriggerSchedule's job recorded (next_run_time untouched).
RECORD_SCHEDULE_RUN = (
    "UPDATE schedules SET last_run_time = :last_run_time, last_job_id = :last_job_id, "
    f"update_time = :update_time WHERE id = :id RETURNING {SCHEDULE_SELECT}"
)
# The jobs a schedule made (their request_id starts with :low, "schedules/<id>/"; :high is the same with
# its last "/" raised to "0", so the range is an index range of ux_jobs_owner_request_id), newest first.
SCHEDULE_JOBS = (
    f"SELECT {JOB_SELECT} FROM jobs WHERE owner = :owner AND request_id >= :low AND request_id < :high "
    "ORDER BY id DESC LIMIT :limit"
)
