"""The statements of PostgreSQL's group commit (flushes.py writes them): one statement per kind of flush,
each an implicit transaction, its parameters given as arrays (``unnest``) with one entry per queued item.

They repeat rules of the domain in SQL: ``Job.move_chunk`` and ``derive_state`` (domain/model.py); the
lease fence ``fence``, the rules ``take``, ``reported``, ``completed`` and ``settle``, and
``backoff_seconds`` (services/worker_path.py); the outbox's rule of which change makes a webhook event, to
decline those (services/outbox.py). Each block names the function it mirrors, and
tests/integration/test_fast_paths.py holds them to the domain on random job states and groups. Why the
rules are not run in Python over a flush instead: ARCHITECTURE.md, "Where the worker rules live".
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jobpulse_server.store.statements as q
from jobpulse_server.domain.model import AFTER_PER_CHUNK, HELD, AttemptOutcome, ChunkState, JobState
from jobpulse_server.store.rows import CHUNK_COLUMNS, JOB_COLUMNS

_RUNNING = int(ChunkState.PROCESSING)
_DONE = int(ChunkState.COMPLETED)
_CANCELLED = int(ChunkState.CANCELLED)
_TERMINAL = f"({int(JobState.COMPLETED)}, {int(JobState.FAILED)}, {int(JobState.CANCELLED)})"


def _input(columns: str) -> str:
    """CTE i: a flush's items, one row each with its position from 1 (``pos``), from one array per column;
    ``columns``: "name type" pairs, each column bound by its name."""
    pairs = [c.split() for c in columns.split(", ")]
    arrays = ", ".join(f":{name}::{kind}[]" for name, kind in pairs)
    names = ", ".join(n for n, _ in pairs)
    return f"WITH i AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY AS i({names}, pos)), "


def _prefixed(columns: Sequence[str], alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


_NEW_STATE = q.derive_state_sql(
    "j.n_pending",
    "(j.n_processing - g.n)",
    "(j.n_completed + g.done)",
    "j.n_failed",
    "(j.n_cancelled + g.cancelled)",
)


def _locked_jobs(columns: str, condition: str) -> str:
    """CTE j0: the jobs of the flush's items ``i`` that meet ``condition``, locked first and in id order
    (every writer's lock order: jobs, then their chunks)."""
    return (
        f"j0 AS (SELECT id, revision, {columns} FROM jobs WHERE id IN (SELECT job_id FROM i) "
        f"AND {condition} ORDER BY id FOR UPDATE), "
    )


def _fenced(now: str, columns: str, also: str = "") -> str:
    """CTE c0: the items ``i`` whose chunk passes the lease fence (worker_path.py ``fence``), each by its
    own token: the chunk is PROCESSING under this very token, its lease has not run out at ``now``, and
    its job is one of the locked ``j0``; ``also``: a further condition of the item's kind. ``columns``:
    what the later CTEs need, beside the chunk's id, job and items done before (``old_done``) and the
    item's position. Each chunk is found by its primary key: the state is tested as ``state + 0`` so that
    the partial ix_chunks_lease (running chunks, by lease end) cannot serve the lookup. The generic plan
    chose it whenever the statistics saw few running chunks, and then read every running chunk for each
    item of the flush (20 x 10 rows a flush in the batch benchmark; 20 x 1,000 with a thousand running)."""
    return (
        f"c0 AS (SELECT c.id, c.job_id, c.items_done AS old_done, {columns}, i.pos FROM chunks c "
        "JOIN i ON c.id = i.chunk_id AND c.job_id = i.job_id JOIN j0 ON j0.id = c.job_id "
        f"WHERE c.state + 0 = {_RUNNING} AND c.lease_token = i.token "
        f"AND (c.lease_expire_time IS NULL OR c.lease_expire_time >= {now}){also} FOR UPDATE OF c), "
    )


# Each chunk of a job takes a revision of its own above the job's: one change each, in the order the
# items were asked for.
_STEP = "row_number() OVER (PARTITION BY c0.job_id ORDER BY c0.pos) AS step"


def _completing(now: str) -> str:
    """The completions ``i`` of a flush over their locked jobs ``j0``, as CTEs c0, r, c1 and g (the moved
    chunks and the counts they move per job); ``now`` is the placeholder of the flush's clock."""
    return (
        _fenced(now, "c.idx, i.ext") + f"r AS (SELECT c0.*, {_STEP} FROM c0), "
        # TransactionPath.completed (Job.move_chunk): COMPLETED with every item done, or CANCELLED (items
        # kept) when a cancel was asked; the lease ends.
        "c1 AS (UPDATE chunks AS c SET "
        f"state = CASE WHEN j0.cancel_requested THEN {_CANCELLED} ELSE {_DONE} END, "
        "items_done = CASE WHEN j0.cancel_requested THEN c.items_done ELSE c.item_count END, "
        "external_task_id = CASE WHEN r.ext = '' THEN c.external_task_id ELSE r.ext END, "
        f"revision = j0.revision + r.step, end_time = {now}, lease_token = NULL, lease_expire_time = NULL "
        "FROM r JOIN j0 ON j0.id = r.job_id WHERE c.id = r.id "
        "RETURNING c.job_id, c.state, c.items_done - r.old_done AS gained, r.idx, r.pos, c.kind, "
        "c.item_count AS items, c.start_time, c.attempt, c.worker_id, c.items_done AS done_items), "
        "g AS (SELECT job_id, count(*) AS n, "
        f"count(*) FILTER (WHERE state = {_DONE}) AS done, "
        f"count(*) FILTER (WHERE state = {_CANCELLED}) AS cancelled, sum(gained) AS gained "
        "FROM c1 GROUP BY job_id), "
        # The attempts they end but do not complete (domain.model.ended_attempt): CANCELLED, with no
        # error. (A completed attempt is its chunk's last, and the chunk row is it.)
        + _attempts_of(now, str(int(AttemptOutcome.CANCELLED)), "c1.done_items", where=f"c1.state <> {_DONE}")
    )


def _attempts_of(now: str, outcome: str, items: str, error: str = "'', '', ''", where: str = "TRUE") -> str:
    """CTE a1: a row of chunk_attempts for each chunk of c1 (job_id, idx, attempt, worker_id,
    start_time) meeting ``where`` whose attempt this statement ends at ``now``: its ``outcome``,
    ``items`` done and ``error`` (reason, message, details), as Job.move_chunk notes them
    (domain.model.ended_attempt)."""
    return (
        "a1 AS (INSERT INTO chunk_attempts (job_id, chunk_index, attempt, worker_id, start_time, end_time, "
        "outcome, items_done, error_reason, error_message, error_details) SELECT c1.job_id, c1.idx, "
        f"c1.attempt, c1.worker_id, c1.start_time, {now}, {outcome}, {items}, {error} "
        f"FROM c1 WHERE {where}), "
    )


def _artifacts(pos: str, name: str, uri: str, media: str, size: str, role: str) -> str:
    """CTE a: a completed chunk's artifacts (a cancelled one's are dropped, as in complete_many), from
    six arrays (the completion's position from 1, name, uri, media type, size, role); CTE ad first deletes
    the chunk's earlier artifacts of those names (a preview its progress reported: SqlTx.save does the
    same)."""
    return (
        "ad AS (DELETE FROM artifacts AS x USING c1, "
        f"unnest({pos}::bigint[], {name}::text[]) AS u(pos, name) WHERE u.pos = c1.pos "
        f"AND c1.state = {_DONE} AND x.job_id = c1.job_id AND x.chunk_index = c1.idx AND x.name = u.name), "
        "a AS (INSERT INTO artifacts (job_id, chunk_index, name, uri, media_type, size_bytes, role) "
        "SELECT c1.job_id, c1.idx, u.name, u.uri, u.media_type, u.size_bytes, u.role FROM c1 JOIN "
        f"unnest({pos}::bigint[], {name}::text[], {uri}::text[], {media}::text[], {size}::bigint[], "
        f"{role}::smallint[]) AS u(pos, name, uri, media_type, size_bytes, role) "
        f"ON u.pos = c1.pos WHERE c1.state = {_DONE}), "
    )


def _quiet(now: str, interval: str) -> str:
    """Whether saving a job of the locked rows now makes no job.progress webhook event (services/outbox.py
    ``events_for``): progress events not asked for, or the last one less than ``interval`` (us) before
    ``now``. Conservative: a job that asked for them and is due declines even where the event would not
    go out (a state other than PROCESSING); the general path then decides."""
    return (
        f"(NOT webhook_progress OR (last_progress_event IS NOT NULL "
        f"AND {now}::bigint - last_progress_event < {interval}::bigint))"
    )


def _no_event(now: str, interval: str, asked: str) -> str:
    """Whether the completions of a flush to a locked job make no webhook event: a job without webhooks,
    or one that cannot end in this flush (more chunks pending or running than ``asked``, the flush's
    completions of it, can move on) and has no progress event due (``_quiet``). The general path writes
    the events of the others (services/outbox.py: in Python, in the same transaction)."""
    # (The pipeline rule, _pipeline_may, is the other reason a completion declines.)
    return f"(webhook_url = '' OR (n_pending + n_processing > ({asked}) AND {_quiet(now, interval)}))"


# A held chunk (services/pipeline.py) and DependencyMode.PER_CHUNK.
_HELD = str(HELD)
_PER_CHUNK = str(AFTER_PER_CHUNK)


def _pipeline_may(alias: str, asked: str, released: bool) -> str:
    """Whether the completions of a flush to a locked job (``alias``: its row's, with the dot) may be
    written here although it is a pipeline job (services/pipeline.py ``follow``): they can neither end
    it nor bring it to its finalize chunk's turn (more chunks pending or running than ``asked``, plus the
    finalize chunk), so all they can do in pipelines is free chunk i of each PER_CHUNK dependant
    (``_released``). The others decline: Python writes them.

    Without ``released`` (no PER_CHUNK dependant holds chunks anywhere, as last seen: store/holds.py),
    every pipeline job's completions decline, and the statement leaves the dependants alone."""
    a = alias
    if not released:
        return f"NOT {a}pipeline"
    return (
        f"(NOT {a}pipeline OR {a}n_pending + {a}n_processing > ({asked}) + "
        f"CASE WHEN {a}finalize_kind = '' THEN 0 ELSE 1 END)"
    )


def _locking(ids: str, released: bool) -> str:
    """The ids of the jobs a completion statement locks (in id order, first): its own, ``ids`` (a query
    of them), and with ``released`` the PER_CHUNK dependants of those, whose chunks it may free. One
    lock set in id order, taken at once: the order of every writer's locks."""
    if not released:
        return f"ARRAY({ids})"
    return (
        f"ARRAY({ids} UNION SELECT d.job_id FROM job_dependencies AS d WHERE d.after_id IN ({ids}) "
        f"AND d.after_mode = {_PER_CHUNK})"
    )


def _released(now: str, locked: str, counts: str, steps: str) -> str:
    """CTEs rl, hx and rj: services/pipeline.py ``follow`` for the completions ``c1`` that went through
    (TransactionPath writes the rest): each COMPLETED chunk i frees chunk i of each PER_CHUNK dependant
    not ended nor being cancelled (SqlTx.release_held: due at once, or at the dependant's schedule_time
    still to come). The dependants are rows of ``locked`` (``_locking``). A dependant the statement
    changes anyway (its row in ``counts``, with ``steps`` the revisions the statement gives it) takes the
    freeing into that change (the caller's update of it subtracts hx's count from n_held); any other is
    a change of its own (rj: a revision, a change_seq, its held count lowered). rj: (id, revision)."""
    return (
        "rl AS (UPDATE chunks AS hc SET "
        f"next_attempt_time = CASE WHEN dl.schedule_time > {now} THEN dl.schedule_time END, "
        f"retry_at = CASE WHEN dl.schedule_time > {now} THEN dl.schedule_time END, "
        f"revision = dl.revision + coalesce({steps}, 1) "
        f"FROM c1 JOIN job_dependencies AS d ON d.after_id = c1.job_id AND d.after_mode = {_PER_CHUNK} "
        f"JOIN {locked} AS dl ON dl.id = d.job_id LEFT JOIN {counts} AS gd ON gd.job_id = dl.id "
        f"WHERE c1.state = {_DONE} AND NOT dl.cancel_requested AND dl.state NOT IN {_TERMINAL} "
        f"AND hc.job_id = d.job_id AND hc.idx = c1.idx AND hc.state = {int(ChunkState.PENDING)} "
        f"AND hc.retry_at = {_HELD} RETURNING hc.job_id), "
        "hx AS (SELECT job_id, count(*) AS n FROM rl GROUP BY job_id), "
        "rj AS (UPDATE jobs AS rjj SET n_held = rjj.n_held - hx.n, revision = dl.revision + 1, "
        f"update_time = greatest(rjj.update_time, {now}), change_seq = {q.POSTGRES.next_seq} "
        f"FROM hx JOIN {locked} AS dl ON dl.id = hx.job_id WHERE rjj.id = hx.job_id "
        f"AND hx.job_id NOT IN (SELECT job_id FROM {counts}) RETURNING rjj.id, rjj.revision), "
    )


def _held_less(released: bool) -> str:
    """A completion statement's update of its own jobs ``j``: n_held less what ``_released`` freed of
    them (nothing without ``released``)."""
    return (
        "n_held = j.n_held - coalesce((SELECT hx.n FROM hx WHERE hx.job_id = j.id), 0), " if released else ""
    )


def _notify_with_released(channel: str, replica: str) -> str:
    """CTE n of a completion statement: ``_notify``'s NOTIFY of the jobs of ``j1`` and of the dependants
    ``rj`` freed chunks of; chunks freed (rl) are new work (``w``) for the other replicas' claimers."""
    return (
        f"n AS (SELECT pg_notify({channel}, json_build_object('r', {replica}::text, "
        "'j', json_object_agg(x.id, x.revision), 'd', json_build_array(), "
        "'w', (SELECT count(*) > 0 FROM rl))::text) AS sent "
        "FROM (SELECT id, revision FROM j1 UNION ALL SELECT id, revision FROM rj) AS x HAVING count(*) > 0) "
    )


# ``_released``'s CTEs when a statement frees nothing (store/holds.py: no PER_CHUNK dependant holds).
_NO_RELEASE = (
    "rl AS (SELECT NULL::text AS job_id WHERE false), "
    "rj AS (SELECT NULL::text AS id, NULL::bigint AS revision WHERE false), "
)

# What a completion statement freed: {"j": the dependants changed on their own, id -> revision (or
# null), "n": the chunks freed}.
_RELEASED = (
    "json_build_object('j', (SELECT json_object_agg(id, revision) FROM rj), 'n', (SELECT count(*) FROM rl))"
)


def _touched(now: str) -> str:
    """Job.touch of the job ``j`` of a flush's items, counted per job in ``g``: a revision per item, its
    update time never going back."""
    return f"revision = j.revision + g.n, update_time = greatest(j.update_time, {now}), "


def _notify(channel: str, replica: str) -> str:
    """The pg_notify call telling the other replicas the jobs of ``j1`` at their new revisions (to be
    selected from j1, with ``HAVING count(*) > 0``: no notice when no job changed)."""
    return (
        f"pg_notify({channel}, json_build_object('r', {replica}::text, "
        "'j', json_object_agg(j1.id, j1.revision), 'd', json_build_array())::text)"
    )


# The completions of a flush as one statement (an implicit transaction). Parameters: chunk ids, job ids,
# lease tokens, external task ids (one per completion, in order), now; the artifacts as five arrays (the
# completion's position from 1, name, uri, media type, size); the NOTIFY channel, this replica's id; the
# least time between a job's job.progress webhook events (us). One row per completion that went through:
# its position, the job's state and revision after the flush, the chunk's new state, the job's kind and
# the chunk's item count (for the throughput counts), the chunk's index and attempt and the job's
# trace_parent (for the completion's span).
# The completions' input (``_input``): chunk id, job id, lease token, external task id.
_COMPLETIONS = "chunk_id text, job_id text, token text, ext text"


@functools.cache
def complete_group(released: bool) -> str:
    """COMPLETE_GROUP; ``released``: with the freeing of PER_CHUNK dependants' chunks (``_released``)."""
    now = ":now"
    asked = "(SELECT count(*) FROM i WHERE i.job_id = jx.id)"
    return (
        _input(_COMPLETIONS)
        +
        # The jobs first, by id (every writer's lock order), with the dependants whose chunks their
        # completions may free. A job whose completions here make a webhook event (its end, a progress
        # event due) declines: its outbox rows are built in Python.
        (
            "jx AS (SELECT id, revision, cancel_requested, state, schedule_time, webhook_url, "
            "webhook_progress, last_progress_event, n_pending, n_processing, pipeline, finalize_kind, "
            "id IN (SELECT job_id FROM i) AS comp FROM jobs "
            f"WHERE id = ANY({_locking('SELECT job_id FROM i', released)}) ORDER BY id FOR UPDATE), "
            "j0 AS (SELECT id, revision, cancel_requested FROM jx WHERE comp AND "
            f"{_no_event(now, ':interval', asked)} AND {_pipeline_may('jx.', asked, released)}), "
            if released
            # None held anywhere: the jobs that meet the conditions only, as before pipelines.
            else _locked_jobs(
                "cancel_requested",
                _no_event(now, ":interval", "(SELECT count(*) FROM i WHERE i.job_id = jobs.id)")
                + " AND NOT jobs.pipeline",
            )
        )
        + _completing(now)
        + (_released(now, "jx", "g", "gd.n") if released else _NO_RELEASE)
        +
        # Job.touch + the counts move with the chunks + derive_state; end_time once terminal; a new
        # change_seq.
        f"j1 AS (UPDATE jobs AS j SET {_touched(now)}{_held_less(released)}"
        "n_processing = j.n_processing - g.n, n_completed = j.n_completed + g.done, "
        "n_cancelled = j.n_cancelled + g.cancelled, items_done = j.items_done + g.gained, "
        f"state = {_NEW_STATE}, "
        f"end_time = CASE WHEN {_NEW_STATE} IN {_TERMINAL} THEN coalesce(j.end_time, {now}) ELSE NULL END, "
        f"change_seq = {q.POSTGRES.next_seq} "
        "FROM g WHERE j.id = g.job_id RETURNING j.id, j.revision, j.state, j.create_time, j.trace_parent), "
        + _artifacts(":a_pos", ":a_name", ":a_uri", ":a_media", ":a_size", ":a_role")
        + _notify_with_released(":channel", ":replica")
        + "SELECT c1.pos, j1.state, j1.revision, c1.state, c1.kind, c1.items, c1.start_time, c1.attempt, "
        f"j1.create_time, c1.idx, j1.trace_parent, {_RELEASED} FROM c1 JOIN j1 ON j1.id = c1.job_id "
        "CROSS JOIN n"
    )


# The progress reports (heartbeats) of a flush as one statement: TransactionPath.report for each,
# in turn. Parameters: chunk ids, job ids, lease tokens, items done, stages, messages, external task ids,
# lease durations (us, 0: keep the chunk's), one each per report in order; now; the NOTIFY channel, this
# replica's id; the least time between a job's job.progress webhook events (us). A report declines (no
# row: the general path decides, and says why) when its lease is not current, its items_done is past the
# chunk's item_count, or its job's save would make a job.progress event (``_quiet``; a report never ends
# a job). One row per report that went through: its position, the job's revision after the flush, whether
# a cancel was asked, the chunk's new lease end.
def _progress_group() -> str:
    now = ":now"
    return (
        _input(
            "chunk_id text, job_id text, token text, items bigint, stage text, message text, ext text, "
            "lease bigint",
        )
        +
        # The jobs first, by id (every writer's lock order).
        _locked_jobs("webhook_url, attempt_timeout", f"(webhook_url = '' OR {_quiet(now, ':interval')})")
        # The fence, and items_done within the chunk.
        + _fenced(now, "i.items, i.stage, i.message, i.ext, i.lease", " AND i.items <= c.item_count")
        + f"r AS (SELECT c0.*, {_STEP} FROM c0), "
        # TransactionPath.reported (Job.move_chunk to PROCESSING) with the items (never fewer than before);
        # the lease is extended from now by the duration given, else the chunk's own (60 s when it has none),
        # never past the attempt's start plus the job's attempt_timeout (Job.lease_end).
        "c1 AS (UPDATE chunks AS c SET items_done = greatest(r.items, c.items_done), "
        "external_task_id = CASE WHEN r.ext = '' THEN c.external_task_id ELSE r.ext END, "
        "stage = CASE WHEN r.stage = '' THEN c.stage ELSE r.stage END, "
        "message = CASE WHEN r.message = '' THEN c.message ELSE r.message END, "
        "lease_duration = CASE WHEN r.lease > 0 THEN r.lease ELSE c.lease_duration END, "
        f"lease_expire_time = least({now} + coalesce(nullif(CASE WHEN r.lease > 0 THEN r.lease "
        "ELSE c.lease_duration END, "
        "0), 60000000), CASE WHEN j0.attempt_timeout > 0 THEN c.start_time + j0.attempt_timeout END), "
        "revision = j0.revision + r.step FROM r JOIN j0 ON j0.id = r.job_id WHERE c.id = r.id "
        "RETURNING c.job_id, c.items_done - r.old_done AS gained, r.pos, r.stage, r.message, "
        "c.lease_expire_time), "
        # The job: a revision per report, the items gained, the last stage and message given.
        "g AS (SELECT job_id, count(*) AS n, sum(gained) AS gained, "
        "(array_agg(stage ORDER BY pos DESC) FILTER (WHERE stage <> ''))[1] AS stage, "
        "(array_agg(message ORDER BY pos DESC) FILTER (WHERE message <> ''))[1] AS message "
        "FROM c1 GROUP BY job_id), "
        f"j1 AS (UPDATE jobs AS j SET {_touched(now)}"
        "items_done = j.items_done + g.gained, stage = coalesce(g.stage, j.stage), "
        f"message = coalesce(g.message, j.message), start_time = coalesce(j.start_time, {now}), "
        f"change_seq = {q.POSTGRES.next_seq} "
        "FROM g WHERE j.id = g.job_id RETURNING j.id, j.revision, j.cancel_requested), "
        f"n AS (SELECT {_notify(':channel', ':replica')} AS sent FROM j1 HAVING count(*) > 0) "
        "SELECT c1.pos, j1.revision, j1.cancel_requested, c1.lease_expire_time FROM c1 "
        "JOIN j1 ON j1.id = c1.job_id CROSS JOIN n"
    )


PROGRESS_GROUP = _progress_group()


_PENDING = int(ChunkState.PENDING)
_AGAIN_STATE = q.derive_state_sql(
    "(j.n_pending + g.n)", "(j.n_processing - g.n)", "j.n_completed", "j.n_failed", "j.n_cancelled"
)


# The retryable failures of a flush as one statement: TransactionPath.fail for each, in turn, where the
# chunk goes back to PENDING to wait out its backoff. Parameters: chunk ids, job ids, lease tokens, error
# reasons, error messages, jitters (each in [0, 1)), backoff bases and caps (seconds), one each per
# failure in order; now; the NOTIFY channel, this replica's id; the least time between a job's
# job.progress webhook events (us). A failure declines (no row: the general path decides, and says why)
# when its lease is not current, its chunk has no attempt left (it fails for good), its job has a cancel
# asked (the chunk is cancelled) or its job's save would make a job.progress event (``_quiet``; a retry
# never ends a job). One row per failure that went through: its position, the chunk's next attempt time
# and its backoff (seconds, as computed: the change hub's and the notice's wake-up), the job's revision
# after the flush, the chunk's kind, start time, attempt and index, and the job's trace_parent.
def _fail_group() -> str:
    now = ":now"
    return (
        _input(
            "chunk_id text, job_id text, token text, reason text, message text, details text, "
            "jitter float8, base float8, cap float8",
        )
        +
        # The jobs first, by id (every writer's lock order).
        _locked_jobs(
            "priority, max_attempts",
            f"NOT cancel_requested AND (webhook_url = '' OR {_quiet(now, ':interval')})",
        )
        # The fence; only a chunk with an attempt left is retried here.
        + _fenced(
            now,
            "c.attempt, c.max_attempts AS budget, j0.max_attempts AS job_budget, i.reason, i.message, "
            "i.details, i.jitter, i.base, i.cap",
            " AND c.attempt < c.max_attempts",
        )
        # Each chunk a revision of its own above the job's, in the order asked; its backoff as
        # services/worker_path.py ``backoff_seconds`` computes it (the same float arithmetic, truncated
        # to us as int() does), the attempts counted from the job's last manual retry.
        + f"r AS (SELECT c0.*, {_STEP}, w.delay_s, "
        "trunc(w.delay_s * 1000000::float8)::bigint AS delay FROM c0 CROSS JOIN LATERAL "
        "(SELECT x.ceiling / 2 + c0.jitter * x.ceiling / 2 AS delay_s FROM (SELECT least(c0.cap, c0.base "
        "* power(2::float8, greatest(0, c0.attempt - (c0.budget - c0.job_budget) - 1)::float8)) AS ceiling) "
        "AS x) AS w), "
        # TransactionPath.settle (Job.move_chunk to PENDING) with no items done, at the job's priority, the
        # lease ended; the next attempt time, and retry_at (store/waiting.py: out of the claim index until
        # it comes due).
        f"c1 AS (UPDATE chunks AS c SET state = {_PENDING}, items_done = 0, error_reason = r.reason, "
        "error_message = r.message, error_details = r.details, priority = j0.priority, end_time = NULL, "
        "lease_token = NULL, "
        f"lease_expire_time = NULL, next_attempt_time = {now} + r.delay, retry_at = {now} + r.delay, "
        "revision = j0.revision + r.step FROM r JOIN j0 ON j0.id = r.job_id WHERE c.id = r.id "
        "RETURNING c.job_id, r.old_done AS lost, r.pos, c.next_attempt_time, r.delay_s, c.kind, "
        "c.start_time, c.attempt, c.idx, c.worker_id, c.error_reason, c.error_message, c.error_details), "
        # The attempts they end (domain.model.ended_attempt): FAILED (or as its reason says), the items
        # of the attempt, its error.
        + _attempts_of(
            now,
            f"CASE c1.error_reason WHEN 'LEASE_EXPIRED' THEN {int(AttemptOutcome.LEASE_EXPIRED)} "
            f"WHEN 'ATTEMPT_TIMEOUT' THEN {int(AttemptOutcome.TIMED_OUT)} "
            f"ELSE {int(AttemptOutcome.FAILED)} END",
            "c1.lost",
            "c1.error_reason, c1.error_message, c1.error_details",
        )
        + "g AS (SELECT job_id, count(*) AS n, sum(lost) AS lost FROM c1 GROUP BY job_id), "
        # Job.touch + the counts move (processing -> pending), the items of the failed attempts are taken
        # back, derive_state (never terminal: a chunk is pending); a new change_seq.
        f"j1 AS (UPDATE jobs AS j SET {_touched(now)}"
        "n_processing = j.n_processing - g.n, n_pending = j.n_pending + g.n, "
        f"items_done = j.items_done - g.lost, state = {_AGAIN_STATE}, end_time = NULL, "
        f"change_seq = {q.POSTGRES.next_seq} "
        "FROM g WHERE j.id = g.job_id RETURNING j.id, j.revision, j.trace_parent), "
        # The notice carries when the retries come due ('l', seconds from now, as domain/changes.py encode
        # writes them), so a claim waiting on another replica wakes then.
        f"n AS (SELECT pg_notify(:channel, json_build_object('r', :replica::text, "
        "'j', json_object_agg(j1.id, j1.revision), "
        "'d', json_build_array(), 'l', (SELECT json_agg(x ORDER BY x) FROM (SELECT DISTINCT "
        "round(c1.delay_s::numeric, 3) AS x FROM c1 ORDER BY x LIMIT 20) AS l))::text) "
        "AS sent FROM j1 HAVING count(*) > 0) "
        "SELECT c1.pos, c1.next_attempt_time, c1.delay_s, j1.revision, c1.kind, c1.start_time, c1.attempt, "
        "c1.idx, j1.trace_parent FROM c1 JOIN j1 ON j1.id = c1.job_id CROSS JOIN n"
    )


FAIL_GROUP = _fail_group()


def _picked(
    ready: str,
    jobs: str,
    limit: str,
    now: str,
    interval: str,
    fair: bool,
    held: str = "",
    *,
    kinds: str = "",
    capped: bool = False,
    ending: str = "",
) -> str:
    """CTE c: the ready chunks of the locked candidate jobs ``jobs`` (id, priority, webhook columns), in
    claim order, locked (statements.pg_ready_of_jobs); none when a claim would make a candidate job's
    webhook event (a progress event due: a claim never ends a job), and then the general path claims,
    keeping the claim order; none either when a candidate job's kind (or finalize kind), among the
    claim's ``kinds``, has a max_running_chunks and its row was not locked before the statement (the
    general path counts the kind's running chunks under its lock: statements.kind_capped). ``capped``:
    the statement locked the rows of the kinds :locked first (statements.KIND_ROOMS_FIRST), and takes no
    more of each kind's chunks than its room (statements.kind_rooms; ``ending`` as there). ``fair``: in
    fair_order (``jobs`` has owner), ``held`` as statements.owner_running's."""
    quiet = f"(SELECT 1 FROM {jobs} WHERE webhook_url <> '' AND NOT {_quiet(now, interval)})"
    locked = ":locked" if capped else ""
    candidates = (
        f"(SELECT id, owner, priority, max_running_chunks, n_processing FROM {jobs} "
        f"WHERE NOT EXISTS {quiet} AND NOT {q.kind_capped(jobs, kinds, locked)})"
    )
    columns = "ch.id, ch.job_id, ch.priority, ch.idx, ch.items_done, ch.next_attempt_time AS due"
    if not capped:
        return f"c AS ({q.pg_ready_of_jobs(ready, candidates, limit, columns, fair=fair, held=held)}), "
    # Each capped kind's chunks in claim order, as many as its room.
    picked = q.pg_ready_of_jobs(ready, candidates, limit, f"{columns}, ch.kind", fair=fair, held=held)
    return (
        q.kind_rooms(ending) + f"cr AS ({picked}), "
        "c AS (SELECT cr.id, cr.job_id, cr.priority, cr.idx, cr.items_done, cr.due FROM (SELECT cr.*, "
        "row_number() OVER (PARTITION BY cr.kind ORDER BY cr.priority DESC, cr.job_id, cr.idx) AS kn "
        "FROM cr) AS cr LEFT JOIN kr ON kr.kind = cr.kind WHERE kr.kind IS NULL OR cr.kn <= kr.room), "
    )


def _rooms_first(capped: bool) -> str:
    """The condition that makes the CTE locking a claim's jobs call jobpulse_kind_rooms (CTE kr0) before
    it locks the first of them (statements.KIND_ROOMS_BEFORE), when the claim may take capped kinds."""
    return f" AND {q.KIND_ROOMS_BEFORE}" if capped else ""


def _slotted(steps: str, workers: str, leases: str, callers: str) -> str:
    """CTEs s and ``steps``: slot n of the claim order goes to the caller holding it (the slots' worker
    ids, lease durations and callers as three arrays); one revision step per caller a job's chunks go to
    (a claim of several chunks is one change)."""
    return (
        "s AS (SELECT c.*, w.worker, w.lease, w.caller FROM (SELECT c.*, row_number() OVER "
        "(ORDER BY c.priority DESC, c.job_id, c.idx) AS slot FROM c) AS c "
        f"JOIN unnest({workers}::text[], {leases}::bigint[], {callers}::bigint[]) "
        "WITH ORDINALITY AS w(worker, lease, caller, slot) ON w.slot = c.slot), "
        f"{steps} AS (SELECT s.*, dense_rank() OVER (PARTITION BY s.job_id ORDER BY s.caller) AS step "
        "FROM s), "
    )


def _claiming(name: str, steps: str, now: str, revision: str, joined: str, job: str) -> str:
    """CTE ``name``: Job.move_chunk to PROCESSING of the slotted chunks ``steps``, as
    services/worker_path.py ``TransactionPath.take`` does it: attempt + 1, this worker, started now,
    items reset, a fresh unguessable lease token (two random UUIDs, 244 bits) and its expiry, no later
    than the job's attempt_timeout allows (``Job.lease_end``: the attempt starts now); the chunk's
    revision is ``revision``, ``joined`` the FROM and WHERE that bring it and the row ``job`` of its job.
    Returns the chunk, the items of its previous attempt, its caller, step and due time."""
    lease = (
        f"CASE WHEN {job}.attempt_timeout > 0 THEN least({steps}.lease, {job}.attempt_timeout) "
        f"ELSE {steps}.lease END"
    )
    return (
        f"{name} AS (UPDATE chunks AS ch SET state = {_RUNNING}, attempt = ch.attempt + 1, "
        f"worker_id = {steps}.worker, start_time = {now}, end_time = NULL, next_attempt_time = NULL, "
        "items_done = 0, lease_token = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), "
        f"lease_expire_time = {now}::bigint + {lease}, lease_duration = {steps}.lease, "
        f"revision = {revision} {joined} RETURNING {_prefixed(CHUNK_COLUMNS, 'ch')}, "
        f"{steps}.items_done AS old_done, {steps}.caller, {steps}.step, {steps}.due), "
    )


def _claim_counts(name: str, claimed: str) -> str:
    """CTE ``name``: per job, the chunks claimed, the items of their previous attempts, the steps."""
    return (
        f"{name} AS (SELECT job_id, count(*) AS n, sum(old_done) AS lost, max(step) AS steps "
        f"FROM {claimed} GROUP BY job_id), "
    )


def claim_group_statement(n_kinds: int, limit: int, fair: bool = False, capped: bool = False) -> str:
    """The claims of a flush (of workers naming the same kinds) as one statement, for jobs without
    webhooks. The claimed chunks go to the callers in turn: the first caller's ``limit`` slots first,
    then the next caller's. Returns one row: how many candidate jobs were locked, the claimed chunks and
    their jobs as they are now, and for each chunk its slot (empty when nothing was claimed; with
    candidates, the callers take the general path, which handles jobs with webhooks too).
    ``limit`` (how many chunks the flush claims at most: its slots) is written into the text, not bound:
    the flusher's connection plans each statement once, generically, and a generic plan guesses that a
    bound LIMIT takes a tenth of the rows; then it read and sorted every pending chunk of the candidate
    jobs (with 30,000 pending chunks over 100 jobs, 12 ms a claim) where the first few rows of
    ix_chunks_claim were all it needed. One statement per limit and form (at most MAX_GROUP of each).
    Parameters: kinds (when named), now, interval (the least time between job.progress events, us),
    workers, leases (us) and callers (from 1) of the slots, channel, replica; with ``capped``, locked
    (the capped kinds whose rows the flush's transaction locked first: store/caps.py)."""
    # Built once for each form and limit: building it is a few dozen joins and formats (19 us), on every
    # claim flush's path.
    return _claim_group_statement(bool(n_kinds), limit, fair, capped)


@functools.cache
def _claim_group_statement(kinds: bool, limit: int, fair: bool, capped: bool) -> str:
    ready = q.pg_ready(":kinds" if kinds else "")
    now = ":now"
    state = (
        f"CASE WHEN jj.cancel_requested THEN {int(JobState.CANCELLING)} ELSE {int(JobState.PROCESSING)} END"
    )
    order = "c1.priority DESC, c1.job_id, c1.idx"
    return (
        # Lock order: the capped kinds (when any), the jobs of the first ready chunks in claim order, then
        # their chunks (SKIP LOCKED).
        "WITH "
        + (q.KIND_ROOMS_FIRST if capped else "")
        + "j AS (SELECT id, owner, kind, finalize_kind, priority, revision, webhook_url, "
        "webhook_progress, last_progress_event, max_running_chunks, n_processing, attempt_timeout "
        "FROM jobs WHERE "
        f"{q.is_candidate(ready, str(int(limit)), ':kinds' if kinds else '', fair=fair)} "
        # may_claim again: a job locked after another claim's commit is judged as that commit left it.
        f"AND {q.may_claim('')}{_rooms_first(capped)} ORDER BY id FOR UPDATE), "
        + _picked(
            ready,
            "j",
            str(int(limit)),
            now,
            ":interval",
            fair,
            kinds=":kinds" if kinds else "",
            capped=capped,
        )
        + _slotted("r", ":workers", ":leases", ":callers")
        + _claiming(
            "c1", "r", now, "j.revision + r.step", "FROM r, j WHERE ch.id = r.id AND j.id = ch.job_id", "j"
        )
        +
        # The counts move (pending -> processing), items of a previous attempt are taken back, the job
        # starts (start_time once), touch + derive_state, a new change_seq.
        _claim_counts("g", "c1")
        + "j1 AS (UPDATE jobs AS jj SET revision = jj.revision + g.steps, "
        f"update_time = greatest(jj.update_time, {now}), "
        "n_pending = jj.n_pending - g.n, n_processing = jj.n_processing + g.n, "
        f"items_done = jj.items_done - g.lost, start_time = coalesce(jj.start_time, {now}), "
        f"state = {state}, end_time = NULL, change_seq = {q.POSTGRES.next_seq} "
        f"FROM g WHERE jj.id = g.job_id RETURNING {_prefixed(JOB_COLUMNS, 'jj')}) "
        f"SELECT (SELECT count(*) FROM j) AS n_jobs, "
        f"(SELECT array_agg(ROW({_prefixed(CHUNK_COLUMNS, 'c1')}) ORDER BY {order}) FROM c1) AS chunk_rows, "
        f"(SELECT array_agg(c1.caller ORDER BY {order}) FROM c1) AS callers, "
        "(SELECT array_agg(j1) FROM j1) AS job_rows, "
        f"(SELECT {_notify(':channel', ':replica')} FROM j1 HAVING count(*) > 0) AS notified, "
        f"(SELECT array_agg(c1.due ORDER BY {order}) FROM c1) AS dues"
    )


def slots_given(slots: Sequence[tuple[str, int, int]]) -> dict[str, list[Any]]:
    """The slots' parameters (worker id, lease us, caller from 1, one per chunk wanted) as named binds."""
    workers, leases, callers = (list(x) for x in zip(*slots, strict=True))
    return {"workers": workers, "leases": leases, "callers": callers}


# The completions of a flush to the job of jl's row.
_ASKED_JL = "(SELECT count(*) FROM i WHERE i.job_id = jl.id)"


@functools.cache
def complete_then_claim(
    kinds: bool, limit: int, fair: bool = False, released: bool = True, capped: bool = False
) -> str:
    """A flush's completions and then the claims of one set of kinds, written by one statement: what
    complete_group and then claim_group_statement would write, in one round trip and one commit, with
    each job row updated once. The claims are made only if every completion went through (``tried``);
    otherwise the completions alone are written and the flusher claims as before.

    How it keeps the two statements' meaning: every job either part touches is locked first, in id
    order (every writer's lock order); the completed chunks take revisions above the job's as in
    complete_group, the claimed chunks above those (the job's revision plus the flush's completions
    of that job plus the caller's step, as the claim statement would have found it); the job row gets
    the counts of both parts, the claim's state when it claimed (a claimed chunk is running) and
    derive_state of the completions otherwise. Each completion's answer (the job's state and revision
    after the completions) is computed from the locked row, as complete_group's update would have left
    it. One change_seq and one NOTIFY with the job revisions after both. ``limit``: the claims' slots,
    written in as claim_group_statement writes it; ``capped`` as there (a capped kind's chunks that
    this statement completes leave their places to its claims)."""
    ready = q.pg_ready(":kinds" if kinds else "")
    done_state = q.derive_state_sql(
        "j.n_pending",
        "(j.n_processing - g.n)",
        "(j.n_completed + g.done)",
        "j.n_failed",
        "(j.n_cancelled + g.cancelled)",
    )
    after_done = q.derive_state_sql(
        "j.n_pending",
        "(j.n_processing - d.cn)",
        "(j.n_completed + d.done)",
        "j.n_failed",
        "(j.n_cancelled + d.cancelled)",
    )
    claimed_state = (
        f"CASE WHEN j.cancel_requested THEN {int(JobState.CANCELLING)} ELSE {int(JobState.PROCESSING)} END"
    )
    order = "k1.priority DESC, k1.job_id, k1.idx"
    now_c = ":now_c"
    # Fair share's running counts of the jobs of the completions: less the chunks they end.
    ended = (
        "(SELECT i.job_id AS id, max(ej.n_processing) - count(*) AS n FROM i JOIN jobs AS ej "
        "ON ej.id = i.job_id GROUP BY i.job_id)"
    )
    held = ended if fair else ""
    candidates = q.pg_candidate_jobs(ready, str(int(limit)), ":kinds" if kinds else "", fair=fair, held=held)
    return (
        _input(_COMPLETIONS) + (q.KIND_ROOMS_FIRST if capped else "") +
        # The jobs of the first ready chunks, in claim order (the claim's candidates).
        f"f AS ({candidates}), "
        # Every job of either part, locked in id order, as each part's rows are now. The ids as one
        # array, each job found by its key: an OR of the two IN lists could only be tested row by row,
        # and the plan walked every job in the table (with 50,000 finished jobs, all of them each flush);
        # an IN of their UNION still read the whole table once the claims' first chunks were many.
        "jl AS (SELECT id, owner, kind, finalize_kind, priority, revision, cancel_requested, webhook_url, "
        "webhook_progress, "
        "last_progress_event, paused, max_running_chunks, pipeline, state, schedule_time, "
        "n_pending, n_processing, n_completed, n_failed, n_cancelled, start_time, create_time, trace_parent, "
        "error_reason, attempt_timeout, id IN (SELECT job_id FROM f) AS cand, "
        "id IN (SELECT job_id FROM i) AS comp FROM jobs "
        f"WHERE id = ANY({_locking('SELECT job_id FROM i UNION SELECT job_id FROM f', released)})"
        f"{_rooms_first(capped)} ORDER BY id FOR UPDATE), "
        # The completions: complete_group's, over the locked rows.
        "j0 AS (SELECT id, revision, cancel_requested FROM jl WHERE comp AND "
        f"{_no_event(now_c, ':interval', '(SELECT count(*) FROM i WHERE i.job_id = jl.id)')} AND "
        f"{_pipeline_may('jl.', _ASKED_JL, released)}), " + _completing(now_c) +
        # The claims, only when every completion went through: the claim statement's, over the locked
        # rows, each claimed chunk's revision above the flush's completions of its job.
        # The candidates as locked, each judged by may_claim as it is before this flush's completions
        # (which only leave more room).
        "jk AS (SELECT id, owner, kind, finalize_kind, priority, revision, webhook_url, webhook_progress, "
        "last_progress_event, "
        "max_running_chunks, n_processing, attempt_timeout FROM jl "
        f"WHERE cand AND {q.may_claim('')} AND (SELECT count(*) FROM c1) = :n), "
        + _picked(
            ready,
            "jk",
            str(int(limit)),
            ":now_k",
            ":interval",
            fair,
            held,
            kinds=":kinds" if kinds else "",
            capped=capped,
            ending="c1",
        )
        + _slotted("rk", ":workers", ":leases", ":callers")
        + _claiming(
            "k1",
            "rk",
            ":now_k",
            "jk.revision + coalesce(g.n, 0) + rk.step",
            "FROM rk JOIN jk ON jk.id = rk.job_id LEFT JOIN g ON g.job_id = rk.job_id WHERE ch.id = rk.id",
            "jk",
        )
        + _claim_counts("gk", "k1")
        +
        # Each job's row once, with both parts' changes.
        "d AS (SELECT coalesce(g.job_id, gk.job_id) AS job_id, coalesce(g.n, 0) AS cn, "
        "coalesce(g.done, 0) AS done, coalesce(g.cancelled, 0) AS cancelled, "
        "coalesce(g.gained, 0) AS gained, "
        "coalesce(gk.n, 0) AS kn, coalesce(gk.lost, 0) AS lost, coalesce(gk.steps, 0) AS steps "
        "FROM g FULL JOIN gk ON gk.job_id = g.job_id), "
        + (_released(now_c, "jl", "d", "gd.cn + gd.steps") if released else _NO_RELEASE)
        + "j1 AS (UPDATE jobs AS j SET revision = j.revision + d.cn + d.steps, "
        + _held_less(released)
        + f"update_time = greatest(j.update_time, CASE WHEN d.cn > 0 THEN {now_c} END, "
        f"CASE WHEN d.kn > 0 THEN :now_k END), "
        "n_pending = j.n_pending - d.kn, n_processing = j.n_processing - d.cn + d.kn, "
        "n_completed = j.n_completed + d.done, n_cancelled = j.n_cancelled + d.cancelled, "
        "items_done = j.items_done + d.gained - d.lost, "
        f"start_time = CASE WHEN d.kn > 0 THEN coalesce(j.start_time, :now_k) ELSE j.start_time END, "
        f"state = CASE WHEN d.kn > 0 THEN {claimed_state} ELSE {after_done} END, "
        f"end_time = CASE WHEN d.kn > 0 THEN NULL WHEN {after_done} IN {_TERMINAL} "
        f"THEN coalesce(j.end_time, {now_c}) ELSE NULL END, "
        f"change_seq = {q.POSTGRES.next_seq} "
        f"FROM d WHERE j.id = d.job_id RETURNING {_prefixed(JOB_COLUMNS, 'j')}), "
        + _artifacts(":a_pos", ":a_name", ":a_uri", ":a_media", ":a_size", ":a_role")
        + _notify_with_released(":channel", ":replica")
        # One row: the completions as complete_group answers them (the job's state and revision after the
        # completions), whether the claims were tried, and the claim statement's answer.
        + f"SELECT (SELECT array_agg(ROW(c1.pos, {done_state}, j.revision + g.n, c1.state, c1.kind, "
        "c1.items, c1.start_time, c1.attempt, j.create_time, c1.idx, j.trace_parent)) "
        "FROM c1 JOIN jl AS j ON j.id = c1.job_id JOIN g ON g.job_id = c1.job_id) AS done_rows, "
        f"(SELECT count(*) FROM c1) = :n AS tried, "
        "(SELECT count(*) FROM jk) AS n_jobs, "
        f"(SELECT array_agg(ROW({_prefixed(CHUNK_COLUMNS, 'k1')}) ORDER BY {order}) FROM k1) AS chunk_rows, "
        f"(SELECT array_agg(k1.caller ORDER BY {order}) FROM k1) AS callers, "
        "(SELECT array_agg(j1) FROM j1) AS job_rows, "
        f"(SELECT array_agg(k1.due ORDER BY {order}) FROM k1) AS dues, "
        f"(SELECT count(*) FROM n) AS notified, {_RELEASED} AS released"
    )
