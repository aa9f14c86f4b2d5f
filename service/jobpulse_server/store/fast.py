"""PostgreSQL's one-statement paths: a claim, a completion, a completion and the next claim in one round
trip, and a lease of rate-limit tokens. Reached only through ``Store.fast``, which is None on SQLite
(there a transaction on the loop costs no round trips, and the services take the general path).

Why: every worker of a job changes that job's row, so its lock must be held for one statement and its
commit, not for a transaction's round trips (BEGIN, the locking reads, the write, COMMIT). The price is
that these statements repeat rules of the domain in SQL; each block below names the rule it mirrors
(``domain/model.py``: ``Job.move_chunk``, ``derive_state``), and tests/integration/test_fast_paths.py
holds them to the domain on random job states. They decline (None) for jobs with webhooks, whose outbox
rows are built in Python, and when a lease or chunk is not as required: the general path then decides,
and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import jobpulse_server.store.statements as q
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.usage import Lease
from jobpulse_server.store.group import ClaimAsk, CompletedOne, Completion, GroupCommit
from jobpulse_server.store.rows import CHUNK_COLUMNS, JOB_COLUMNS


class _Runs(Protocol):
    """What the fast paths need of the store (``database.SqlStore``)."""

    replica_id: str

    async def statement(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None: ...

    def publish(self, changes: Changes) -> None: ...


_P = int(ChunkState.PENDING)
_RUNNING = int(ChunkState.PROCESSING)
_DONE = int(ChunkState.COMPLETED)
_CANCELLED = int(ChunkState.CANCELLED)


def _numbered_from(sql: str, start: int) -> str:
    """``?`` placeholders as ``$start, $start+1, ...``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start))


# The job's state once chunk c1 left PROCESSING for COMPLETED (or CANCELLED).
_NEW_STATE = q.derive_state_sql(
    "j.n_pending",
    "(j.n_processing - 1)",
    f"(j.n_completed + (c1.state = {_DONE})::int)",
    "j.n_failed",
    f"(j.n_cancelled + (c1.state = {_CANCELLED})::int)",
)
_TERMINAL = f"({int(JobState.COMPLETED)}, {int(JobState.FAILED)}, {int(JobState.CANCELLED)})"

# One chunk's completion as one statement (an implicit transaction). Parameters: chunk id, job id, lease
# token, now, external_task_id, artifact names, uris, media types, sizes, the NOTIFY channel, this
# replica's id. No row comes back when anything is off: the caller takes the general path.
COMPLETE_ONE = (
    # Lock order of every writer that waits: the job, then its chunk. Jobs with webhooks decline.
    "WITH j0 AS (SELECT id, revision, cancel_requested FROM jobs WHERE id = $2 AND webhook_url = '' "
    "FOR UPDATE), "
    # Fencing (services/workers.py ``_leased``): the chunk is PROCESSING under this very token and its
    # lease has not run out.
    "c0 AS (SELECT c.id, c.idx, c.items_done AS old_done FROM chunks c JOIN j0 ON c.job_id = j0.id "
    f"WHERE c.id = $1 AND c.state = {_RUNNING} AND c.lease_token = $3 "
    "AND (c.lease_expire_time IS NULL OR c.lease_expire_time >= $4) FOR UPDATE OF c), "
    # Job.move_chunk: COMPLETED with every item done, or CANCELLED (items kept) when a cancel was asked;
    # the lease ends; the chunk takes the job's next revision.
    "c1 AS (UPDATE chunks AS c SET "
    f"state = CASE WHEN j0.cancel_requested THEN {_CANCELLED} ELSE {_DONE} END, "
    "items_done = CASE WHEN j0.cancel_requested THEN c.items_done ELSE c.item_count END, "
    "external_task_id = CASE WHEN $5 = '' THEN c.external_task_id ELSE $5 END, "
    "revision = j0.revision + 1, end_time = $4, lease_token = NULL, lease_expire_time = NULL "
    "FROM j0, c0 WHERE c.id = c0.id "
    "RETURNING c.state AS state, c.items_done - c0.old_done AS gained, c0.idx AS idx, "
    "c.kind AS kind, c.item_count AS items), "
    # Job.touch + the counts move with the chunk + derive_state; end_time once terminal; a new change_seq.
    "j1 AS (UPDATE jobs AS j SET revision = j.revision + 1, update_time = greatest(j.update_time, $4), "
    "n_processing = j.n_processing - 1, "
    f"n_completed = j.n_completed + (c1.state = {_DONE})::int, "
    f"n_cancelled = j.n_cancelled + (c1.state = {_CANCELLED})::int, "
    f"items_done = j.items_done + c1.gained, state = {_NEW_STATE}, "
    f"end_time = CASE WHEN {_NEW_STATE} IN {_TERMINAL} THEN coalesce(j.end_time, $4) ELSE NULL END, "
    f"change_seq = {q.POSTGRES.next_seq} "
    "FROM c1 WHERE j.id = $2 RETURNING j.id, j.revision, j.state), "
    # A completed chunk's artifacts (a cancelled one's are dropped, as in complete_many).
    "a AS (INSERT INTO artifacts (job_id, chunk_index, name, uri, media_type, size_bytes) "
    "SELECT $2, c1.idx, u.name, u.uri, u.media_type, u.size_bytes FROM c1, "
    "unnest($6::text[], $7::text[], $8::text[], $9::bigint[]) AS u(name, uri, media_type, size_bytes) "
    f"WHERE c1.state = {_DONE}) "
    "SELECT j1.state AS job_state, j1.revision AS revision, c1.state AS chunk_state, "
    "c1.kind AS kind, c1.items AS items, pg_notify($10, json_build_object('r', $11::text, "
    "'j', json_build_object(j1.id, j1.revision), 'd', json_build_array())::text) AS notified FROM j1, c1"
)


def _prefixed(columns: Sequence[str], alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


def _ready(n_kinds: int) -> str:
    """Chunks ready to run (statements.ready), the kinds always as one array: the claim is prepared, and
    made into the complete-and-claim function, once for "some kinds", however many a worker names."""
    where = "state = ? AND (next_attempt_time IS NULL OR next_attempt_time <= ?)"
    return where + (" AND kind = ANY(?)" if n_kinds else "")


def _claim(n_kinds: int, *, as_json: bool = False) -> str:
    """A whole claim as one statement, for jobs without webhooks. Returns one row: how many candidate
    jobs were locked, the claimed chunks and their jobs as they are now (empty when nothing was claimed;
    with candidates, the caller takes the general path, which handles jobs with webhooks too), the
    NOTIFY. Parameters: ready_params + limit (twice), worker id, now, now, lease (us), lease (us), now,
    now, channel, replica id."""
    d = q.POSTGRES
    ready = _ready(n_kinds)
    # Lock order: the jobs of the first ready chunks in claim order, then their chunks (SKIP LOCKED).
    # Nothing is taken when a candidate job has webhooks: the general path keeps the claim order.
    picked = (
        f"SELECT ch.id, ch.items_done FROM chunks ch WHERE {ready} "
        "AND ch.job_id IN (SELECT id FROM j) AND NOT EXISTS (SELECT 1 FROM j WHERE webhook_url <> '')"
        " ORDER BY ch.priority DESC, ch.job_id, ch.idx LIMIT ? FOR UPDATE OF ch SKIP LOCKED"
    )
    # derive_state while chunks run: CANCELLING if a cancel is on, else PROCESSING.
    state = (
        f"CASE WHEN jj.cancel_requested THEN {int(JobState.CANCELLING)} ELSE {int(JobState.PROCESSING)} END"
    )
    chunks = f"array_agg(ROW({_prefixed(CHUNK_COLUMNS, 'c1')}) ORDER BY c1.priority DESC, c1.job_id, c1.idx)"
    jobs = "array_agg(j1)"
    if as_json:
        # Rows as JSON arrays in CHUNK_COLUMNS / JOB_COLUMNS order: a PL/pgSQL function cannot hand back
        # arrays of anonymous rows.
        chunks = (
            f"json_agg(json_build_array({_prefixed(CHUNK_COLUMNS, 'c1')}) "
            "ORDER BY c1.priority DESC, c1.job_id, c1.idx)"
        )
        jobs = f"json_agg(json_build_array({_prefixed(JOB_COLUMNS, 'j1')}))"
    first = f"SELECT job_id FROM chunks WHERE {ready}{q.CLAIM_ORDER}"
    return (
        f"WITH j AS (SELECT id, revision, webhook_url FROM jobs WHERE id IN ({first}) "
        "ORDER BY id FOR UPDATE), "
        f"c AS ({picked}), "
        # Job.move_chunk to PROCESSING, as services/workers.py ``_claim_in`` does it: attempt + 1, this
        # worker, started now, items reset, a fresh unguessable lease token (two random UUIDs, 244 bits)
        # and its expiry, the job's next revision.
        f"c1 AS (UPDATE chunks AS ch SET state = {_RUNNING}, attempt = ch.attempt + 1, "
        "worker_id = ?, start_time = ?, end_time = NULL, next_attempt_time = NULL, items_done = 0, "
        "lease_token = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), "
        "lease_expire_time = ?::bigint + ?::bigint, lease_duration = ?, revision = j.revision + 1 "
        f"FROM c, j WHERE ch.id = c.id AND j.id = ch.job_id RETURNING {_prefixed(CHUNK_COLUMNS, 'ch')}, "
        "c.items_done AS old_done), "
        # The counts move (pending -> processing), items of a previous attempt are taken back, the job
        # starts (start_time once), touch + derive_state, a new change_seq.
        "agg AS (SELECT job_id, count(*) AS n, sum(old_done) AS lost FROM c1 GROUP BY job_id), "
        "j1 AS (UPDATE jobs AS jj SET revision = jj.revision + 1, update_time = greatest(jj.update_time, ?), "
        "n_pending = jj.n_pending - agg.n, n_processing = jj.n_processing + agg.n, "
        "items_done = jj.items_done - agg.lost, start_time = coalesce(jj.start_time, ?), "
        f"state = {state}, end_time = NULL, change_seq = {d.next_seq} "
        f"FROM agg WHERE jj.id = agg.job_id RETURNING {_prefixed(JOB_COLUMNS, 'jj')}) "
        f"SELECT (SELECT count(*) FROM j) AS n_jobs, (SELECT {chunks} FROM c1) AS chunk_rows, "
        f"(SELECT {jobs} FROM j1) AS job_rows, "
        "(SELECT pg_notify(?, json_build_object('r', ?::text, 'j', json_object_agg(j1.id, j1.revision), "
        "'d', json_build_array())::text) FROM j1 HAVING count(*) > 0) AS notified"
    )


def claim_statement(n_kinds: int) -> str:
    return _numbered_from(_claim(n_kinds), 1)


def claim_params(kinds: Sequence[str], limit: int, worker_id: str, now: int, lease_us: int) -> list[Any]:
    """The claim statement's parameters but the last two (the NOTIFY channel and the replica id)."""
    ready = [int(ChunkState.PENDING), now, *([list(kinds)] if kinds else []), limit]
    return [*ready, *ready, worker_id, now, now, lease_us, lease_us, now, now]


def _function_name(n_kinds: int) -> str:
    return f"pg_temp.jobpulse_complete_and_claim_{1 if n_kinds else 0}"


def complete_and_claim_statement(n_kinds: int, n_params: int) -> str:
    """The call of the complete-and-claim function (its parameters: COMPLETE_ONE's, then the claim's)."""
    return f"SELECT {_function_name(n_kinds)}({', '.join(f'${i}' for i in range(1, n_params + 1))})"


def complete_and_claim_function(
    n_kinds: int, complete_types: Sequence[str], claim_types: Sequence[str]
) -> str:
    """A session-local function (``pg_temp``) that runs COMPLETE_ONE and then, if the completion went
    through, the claim, in one round trip and one transaction; each statement sees the one before. It
    returns NULL when the completion did nothing, else JSON ``[job state, revision, chunk state,
    [n_jobs, chunks, jobs], kind, items]``.

    Why a function: one statement cannot do both, since the next claim is usually of the same job and a
    statement may update a row only once. Why in ``pg_temp``: it is made on each pooled connection as it
    opens, so it always matches this code, needs no migration, and replicas of different versions never
    share it. The parameters are COMPLETE_ONE's, then the claim's, with the types PostgreSQL inferred for
    them when the two statements were prepared."""
    params = ", ".join([*complete_types, *claim_types])
    claim = _numbered_from(_claim(n_kinds, as_json=True), len(complete_types) + 1)
    return (
        f"CREATE FUNCTION {_function_name(n_kinds)}({params}) RETURNS json "
        "LANGUAGE plpgsql AS $jobpulse$ DECLARE done record; claimed record; BEGIN "
        f"{COMPLETE_ONE} INTO done; "
        "IF NOT FOUND THEN RETURN NULL; END IF; "
        f"{claim} INTO claimed; "
        "RETURN json_build_array(done.job_state, done.revision, done.chunk_state, "
        "json_build_array(claimed.n_jobs, claimed.chunk_rows, claimed.job_rows), done.kind, done.items); "
        "END $jobpulse$"
    )


async def define_functions(conn: Any) -> None:
    """Makes this connection's complete-and-claim functions (the asyncpg pool's ``init``)."""

    async def types(sql: str) -> list[str]:
        stmt = await conn.prepare(sql)
        return [f"{t.schema}.{t.name}" for t in stmt.get_parameters()]

    complete = await types(COMPLETE_ONE)
    for n_kinds in (0, 1):
        claim = await types(claim_statement(n_kinds))
        await conn.execute(complete_and_claim_function(n_kinds, complete, claim))


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

    def __init__(self, store: _Runs) -> None:
        self.store = store
        self.group = GroupCommit(store)  # type: ignore[arg-type]

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
        (a job with webhooks, a lease not current: the general path then decides, and says why)."""
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
