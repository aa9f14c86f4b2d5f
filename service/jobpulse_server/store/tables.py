"""The schema, as SQLAlchemy Core tables. Times are integer microseconds since the Unix epoch (UTC).

Migrations under ``migrations/versions`` create exactly this schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

from jobpulse_server.domain.model import ChunkState

metadata = MetaData()

# The chunk states the partial indexes hold (written into the indexes' WHERE clauses and into the
# statements that use them as literals: a planner uses a partial index only for a query whose WHERE
# implies the index's, and a bound parameter does not).
PENDING = int(ChunkState.PENDING)
RUNNING = int(ChunkState.PROCESSING)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("kind", String(128), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("stage", String(256), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("priority", SmallInteger, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("job_metadata", JSON, nullable=False),
    Column("total_items", BigInteger, nullable=False),
    Column("chunk_size", BigInteger, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("n_pending", BigInteger, nullable=False),
    Column("n_processing", BigInteger, nullable=False),
    Column("n_completed", BigInteger, nullable=False),
    Column("n_failed", BigInteger, nullable=False),
    Column("n_cancelled", BigInteger, nullable=False),
    Column("items_done", BigInteger, nullable=False),
    Column("error_reason", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("error_chunk_index", BigInteger, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cancel_reason", Text, nullable=False, default=""),
    Column("cancel_time", BigInteger, nullable=True),
    Column("create_time", BigInteger, nullable=False),
    Column("update_time", BigInteger, nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    # Orders job changes for WatchJobs: a counter on SQLite, the writing transaction's id on PostgreSQL.
    Column("change_seq", BigInteger, nullable=False, default=0),
    Column("webhook_url", Text, nullable=False, server_default=""),
    Column("webhook_progress", Boolean, nullable=False, server_default=false()),
    Column("last_progress_event", BigInteger, nullable=True),
    # The ttl CreateJob asked for (microseconds, 0: keep for ever); NULL: the server's default for the
    # terminal state reached. Jobs on the default are found for expiry by (state, update_time).
    Column("ttl", BigInteger, nullable=True),
    # The W3C traceparent of the span CreateJob ran in (then a space and its tracestate, if any); NULL when
    # the server did not trace. Written once, by CreateJob; the chunks' spans link to it.
    Column("trace_parent", Text, nullable=True),
    # When CreateJob said the job may start (schedule_time); NULL: at once. Written once, by CreateJob:
    # until then its chunks wait as a retry waits out its backoff (chunks.retry_at).
    Column("schedule_time", BigInteger, nullable=True),
    # PauseJob / ResumeJob; the claims pass over a paused job (statements.pg_candidate_jobs, tx.claim).
    Column("paused", Boolean, nullable=False, server_default=false()),
    # At most this many chunks PROCESSING at once (0: no limit); checked by the claims as paused is.
    Column("max_running_chunks", Integer, nullable=False, server_default=text("0")),
    # Dependencies and the finalize step (migration 0019), written by CreateJob: the jobs this one waits
    # for (a JSON list of ids; their rows in job_dependencies), DependencyMode's number, the finalize
    # chunk's kind.
    Column("after_ids", JSON, nullable=True),
    Column("after_mode", SmallInteger, nullable=False, server_default=text("0")),
    Column("finalize_kind", String(128), nullable=False, server_default=""),
    # Pending chunks held (next_attempt_time domain.model.HELD) until a dependency or the job's other
    # chunks let them go; moved only by the statements that hold and release them, never by a save.
    Column("n_held", BigInteger, nullable=False, server_default=text("0")),
    # The job has dependants or a finalize chunk: its completions release or cancel other chunks, which
    # the transaction path does (PostgreSQL's batch declines them: store/batch/sql.py).
    Column("pipeline", Boolean, nullable=False, server_default=false()),
    # The failure policy and timeouts (migration 0024), written by CreateJob: fail fast once this many
    # chunks FAILED for good (0: no limit); the longest one attempt may run (us, 0: no limit); when the job
    # fails if it has not ended (NULL: never).
    Column("max_failed_chunks", Integer, nullable=False, server_default=text("0")),
    Column("attempt_timeout", BigInteger, nullable=False, server_default=text("0")),
    Column("deadline_time", BigInteger, nullable=True),
    # CreateJobRequest.unique_key (migration 0027), written once by CreateJob; NULL: none.
    Column("unique_key", String(128), nullable=True),
    Index("ux_jobs_owner_request_id", "owner", "request_id", unique=True),
    # At most one job per owner, kind and unique key that has not ended (states below COMPLETED): the
    # database holds the rule, so two replicas' creates cannot both commit; a job's key is free once
    # it ends, and RetryJob, which makes it live again, meets this index too.
    Index(
        "ux_jobs_unique_key",
        "owner",
        "kind",
        "unique_key",
        unique=True,
        sqlite_where=text("unique_key IS NOT NULL AND state < 4"),
        postgresql_where=text("unique_key IS NOT NULL AND state < 4"),
    ),
    Index("ix_jobs_state_id", "state", "id"),
    Index("ix_jobs_kind_id", "kind", "id"),
    Index("ix_jobs_priority_id", "priority", "id"),
    Index("ix_jobs_update_time_id", "update_time", "id"),
    # A states filter with the other sort orders: seek within the state instead of sorting it.
    Index("ix_jobs_state_priority_id", "state", "priority", "id"),
    Index("ix_jobs_state_update_time_id", "state", "update_time", "id"),
    Index("ix_jobs_create_time", "create_time"),
    Index("ix_jobs_change_seq", "change_seq", "id"),
    # Jobs with a deadline not ended yet, by deadline: the sweep's statements.PAST_DEADLINE (migration 0024).
    Index(
        "ix_jobs_deadline",
        "deadline_time",
        sqlite_where=text("deadline_time IS NOT NULL AND end_time IS NULL"),
        postgresql_where=text("deadline_time IS NOT NULL AND end_time IS NULL"),
    ),
)

# Jobs with pending chunks, in claim order (migration 0013), on PostgreSQL: a claim takes its candidate
# jobs from here and descends ix_chunks_claim to each one's own entries (statements.pg_candidate_jobs),
# instead of reading ix_chunks_claim from its start past the dead entries of older jobs' claimed chunks
# until a vacuum. SQLite drops an index entry when its row changes (no dead entries to walk), claims
# there scan ix_chunks_claim as before, and there this index would only cost each save that moves
# n_pending an index write.
Index(
    "ix_jobs_claimable",
    jobs.c.priority.desc(),
    jobs.c.id,
    postgresql_where=jobs.c.n_pending > 0,
).ddl_if(dialect="postgresql")

# Fair share (migration 0017; domain/model.py fair_order). The owners with pending chunks, each one's
# jobs in claim order: a claim walks the owners one index probe each (statements.PG_OWNERS; SQLite,
# tx.SqlTx.claim, first asks whether any owner but the one of its chunks has any).
Index(
    "ix_jobs_fair",
    jobs.c.owner,
    jobs.c.priority.desc(),
    jobs.c.id,
    # Unique (it holds the key): SQLite then knows a walk of it gives each job once, and reads each job's
    # chunks off ix_chunks_claim in order instead of sorting all of them (statements.owner_ready).
    unique=True,
    sqlite_where=jobs.c.n_pending > 0,
    postgresql_where=jobs.c.n_pending > 0,
)
# PostgreSQL: the jobs with running chunks by owner, to sum each owner's (statements.owner_running).
# SQLite counts them from the running chunks instead (at most one per lease: fewer rows than an index
# write on every save that moves n_processing would cost).
Index("ix_jobs_running", jobs.c.owner, postgresql_where=jobs.c.n_processing > 0).ddl_if(dialect="postgresql")
# PostgreSQL: the PER_CHUNK dependants still holding chunks (migration 0019; store/holds.py): whether the
# completions' statements carry the freeing of their chunks. Few entries, moved only by those statements.
Index(
    "ix_jobs_per_chunk_held",
    jobs.c.id,
    postgresql_where=text("n_held > 0 AND after_mode = 2"),
).ddl_if(dialect="postgresql")
POSTGRES_ONLY_INDEXES = frozenset({"ix_jobs_claimable", "ix_jobs_running", "ix_jobs_per_chunk_held"})

# Jobs with a ttl of their own, by when they expire (end_time is NULL until the job is terminal).
# Partial: jobs on the server's default (ttl NULL) have no entry, so the hot paths' saves of those
# only test the predicate.
Index(
    "ix_jobs_own_expiry",
    jobs.c.end_time + jobs.c.ttl,
    sqlite_where=jobs.c.ttl > 0,
    postgresql_where=jobs.c.ttl > 0,
)

# A deleted job, kept for WatchJobs: the columns its filters test, and the change_seq of the delete.
job_tombstones = Table(
    "job_tombstones",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("display_name", String(256), nullable=False),
    Column("kind", String(128), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("delete_time", BigInteger, nullable=False),
    Column("change_seq", BigInteger, nullable=False),
    Index("ix_job_tombstones_change_seq", "change_seq", "id"),
    # Old tombstones are trimmed by age (tombstone_retention).
    Index("ix_job_tombstones_delete_time", "delete_time"),
)

# One row (id 1): the largest change_seq of the tombstones trimmed so far (tombstone_retention). A
# WatchJobs cursor from before it may have missed deletions and is refused.
feed_floor = Table(
    "feed_floor",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("change_seq", BigInteger, nullable=False),
)

# The fingerprint of the CreateJob request that made a job with a request_id (AIP-155: the same
# request_id with another request is refused). Jobs made before it existed have no row.
job_requests = Table(
    "job_requests",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("item_start", BigInteger, nullable=False),
    Column("item_count", BigInteger, nullable=False),
    Column("items_done", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("worker_id", String(128), nullable=False, default=""),
    Column("external_task_id", String(256), nullable=False, default=""),
    Column("error_reason", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("lease_token", String(64), nullable=True),
    Column("lease_expire_time", BigInteger, nullable=True),
    Column("lease_duration", BigInteger, nullable=True),
    Column("next_attempt_time", BigInteger, nullable=True),
    Column("revision", BigInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("kind", String(128), nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    # A pending chunk waiting out a retry backoff: its next_attempt_time until that time has passed and a
    # claim found it due (store/waiting.py). Storage only, never read into a Chunk: the claim index holds
    # the chunks without it, so a claim does not read past every chunk still waiting (migration 0014).
    Column("retry_at", BigInteger, nullable=True),
    # The job's finalize chunk (its last, of the job's finalize_kind; migration 0019).
    Column("finalize", Boolean, nullable=False, server_default=false()),
    # ChunkError.details of its last failure (a traceback; at most 8 KiB; migration 0021).
    Column("error_details", Text, nullable=False, server_default=""),
    # Its own stage and message, from its last ReportChunkProgress giving them (migration 0023).
    Column("stage", String(256), nullable=False, server_default=""),
    Column("message", Text, nullable=False, server_default=""),
    Index("ux_chunks_job_idx", "job_id", "idx", unique=True),
    Index("ix_chunks_job_revision", "job_id", "revision"),
    # Running chunks only, by lease end: the sweep's expired leases (migration 0012).
    Index(
        "ix_chunks_lease",
        "lease_expire_time",
        sqlite_where=text(f"state = {RUNNING}"),
        postgresql_where=text(f"state = {RUNNING}"),
    ),
)

# Pending chunks ready to run, in the claim order (priority DESC, job_id, idx): a claim reads the first
# rows, no sort. Partial (migration 0012): a chunk leaves the index when it is claimed and a completion
# does not touch it, where an index over every state moved each changed chunk's entry, and a
# complete-and-claim wrote 14 pages instead of 9-10. Without the chunks waiting out a retry backoff
# (migration 0014): with 10,000 of them ahead of a job's fresh chunks, every claim read past each one
# (and its row, for the time), and workers drained the job at 0.14-0.44 of the rate with none waiting.
_READY = f"state = {PENDING} AND retry_at IS NULL"
Index(
    "ix_chunks_claim",
    chunks.c.priority.desc(),
    chunks.c.job_id,
    chunks.c.idx,
    sqlite_where=text(_READY),
    postgresql_where=text(_READY),
)
# The chunks waiting out a retry backoff, by when they come due: the claims' promotion reads the due ones
# and the time of the next (store/waiting.py).
_WAITING = f"state = {PENDING} AND retry_at IS NOT NULL"
Index("ix_chunks_retry", chunks.c.retry_at, sqlite_where=text(_WAITING), postgresql_where=text(_WAITING))
# The chunks FAILED for good, by error reason and job (migration 0025): ListJobChunks over "-" with
# error_reasons pages through one reason's in its order, and RetryChunk counts a job's again for
# job_failures. Only a chunk entering or leaving FAILED writes an entry.
_FAILED = f"state = {int(ChunkState.FAILED)}"
Index(
    "ix_chunks_failed",
    chunks.c.error_reason,
    chunks.c.job_id,
    chunks.c.idx,
    chunks.c.end_time,
    chunks.c.kind,
    sqlite_where=text(_FAILED),
    postgresql_where=text(_FAILED),
)
# Each reason's failed chunks by when they failed: a chunk of a reason's last failure (its time from
# failure_counts) gives SummarizeFailures' sample (statements.last_failure), one probe a reason.
Index(
    "ix_chunks_failed_last",
    chunks.c.error_reason,
    chunks.c.end_time,
    sqlite_where=text(_FAILED),
    postgresql_where=text(_FAILED),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("chunk_index", BigInteger, nullable=False),
    Column("name", String(256), nullable=False),
    Column("uri", Text, nullable=False),
    Column("media_type", String(128), nullable=False, default=""),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    # ArtifactRole's number (0: an output; 5: the job's result, Job.result_uri); migration 0019.
    Column("role", SmallInteger, nullable=False, server_default=text("0")),
    Index("ix_artifacts_job_chunk", "job_id", "chunk_index"),
)

# Attempt history (ListChunkAttempts): one row per ended attempt of a chunk, written in the transaction
# that ends it, except a completed one: that, and a running one, are the chunk itself (migration 0022).
# Deleted with the job.
chunk_attempts = Table(
    "chunk_attempts",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("chunk_index", BigInteger, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("worker_id", String(128), nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=False),
    # AttemptOutcome's number (domain.model.AttemptOutcome).
    Column("outcome", SmallInteger, nullable=False),
    Column("items_done", BigInteger, nullable=False),
    Column("error_reason", String(128), nullable=False, server_default=""),
    Column("error_message", Text, nullable=False, server_default=""),
    Column("error_details", Text, nullable=False, server_default=""),
)

# The chunks FAILED for good, counted by job, kind and error reason (migration 0026). A chunk's move to
# FAILED adds to its row in the same transaction (SqlTx.save); RetryJob and RetryChunk count the job's rows
# again from the chunks (SqlTx.reset_for_retry); they go with the job. owner and create_time are the
# job's, which never change. SummarizeFailures reads these rows when it is asked for a range of creation.
job_failures = Table(
    "job_failures",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(128), primary_key=True),
    Column("error_reason", String(128), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("chunks", BigInteger, nullable=False),
    # The last end_time of these chunks: which reason failed most lately, and where its sample is.
    Column("last_time", BigInteger, nullable=False),
    # A key's last failure: failure_counts.last_time found again when rows leave the key.
    Index("ix_job_failures_key", "owner", "kind", "error_reason", "last_time"),
)

# job_failures summed by owner, kind and reason: chunks, jobs (rows) and the last end_time, kept with it in
# the same transaction (store/failure_counts.py), applied in a fixed order just before the commit.
# SummarizeFailures reads these few rows: its cost follows the reasons, not the failed chunks or jobs.
failure_counts = Table(
    "failure_counts",
    metadata,
    Column("owner", String(128), primary_key=True),
    Column("kind", String(128), primary_key=True),
    Column("error_reason", String(128), primary_key=True),
    Column("chunks", BigInteger, nullable=False),
    Column("jobs", BigInteger, nullable=False),
    Column("last_time", BigInteger, nullable=False),
)

# A job's dependencies (CreateJobRequest.after), one row each, found from the dependency's side when it
# completes a chunk or ends (services/pipeline.py). Deleted with either job.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("after_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("after_mode", SmallInteger, nullable=False),
    Index("ix_job_dependencies_job", "job_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False),
    Column("role", String(16), nullable=False),
    # SHA-256 of the key: keys are 240 random bits, so a fast hash is enough and lookups stay cheap.
    Column("key_hash", String(64), nullable=False),
    # The first characters of the key, to tell keys apart in listings.
    Column("key_prefix", String(16), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("revoke_time", BigInteger, nullable=True),
    # Where this key's jobs report by default, and the secret their webhooks are signed with.
    Column("webhook_url", Text, nullable=False, server_default=""),
    Column("webhook_secret", String(64), nullable=False, server_default=""),
    Index("ux_api_keys_name", "name", unique=True),
    Index("ux_api_keys_key_hash", "key_hash", unique=True),
)

# The webhook outbox: rows are written in the transaction that changed the job,
# then delivered (at least once) by webhooks.Deliverer.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("job_id", String(32), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_time", BigInteger, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("delivered_time", BigInteger, nullable=True),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_time"),
    Index("ix_webhook_deliveries_job", "job_id", "create_time"),
)

# Calls admitted and rejected per API key, summed over every replica and restart. Each server adds
# what it counted since its previous flush, in one statement per flush (services/usage.py).
key_usage = Table(
    "key_usage",
    metadata,
    Column("key_name", String(63), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("update_time", BigInteger, nullable=False),
)

# PostgreSQL: each rate-limited key's token bucket, shared by the replicas, which take tokens from it
# in blocks (store/usage.py, services/ratelimit.py). Refilled on the database's clock, so the
# replicas' clocks do not matter.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key_name", String(63), primary_key=True),
    Column("tokens", Double, nullable=False),
    Column("refill_time", BigInteger, nullable=False),
    # What the latest lease handed out: the lease statement returns it (RETURNING sees new values only).
    Column("granted", BigInteger, nullable=False),
)

# The secrets events tokens (CreateEventsToken) are signed with: every replica reads them here, so a
# token minted by one is accepted by all. The newest row not retired signs; a rotation retires it, and
# a retired secret still verifies the tokens it signed until they have expired (services/keys.py).
events_token_secrets = Table(
    "events_token_secrets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("secret", String(64), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("retire_time", BigInteger, nullable=True),
)

# Chunks completed (and their items) per minute and job kind, summed over every replica, for the
# dashboard's throughput chart: counting them from the chunks table would scan every chunk completed in
# the hours shown, on each view. Each server adds what it counted since its previous flush, in one
# statement per flush (services/throughput.py); rows older than a week are pruned. ``minute`` is the
# start of the minute (microseconds since the epoch, a multiple of 60,000,000).
throughput_minutes = Table(
    "throughput_minutes",
    metadata,
    Column("minute", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", Text, primary_key=True),
    Column("chunks", BigInteger, nullable=False),
    Column("items", BigInteger, nullable=False),
)

# A kind's controls on the claim (UpdateKind): one row per kind ever updated, kept when its controls
# return to the defaults (a kind without a row has the defaults: not paused, no cap). ListKinds reads
# them beside the kinds' pending and running chunks (statements.list_kinds); the claims read the
# controls in force (statements.KIND_CONTROLS).
kinds = Table(
    "kinds",
    metadata,
    Column("kind", String(128), primary_key=True),
    # No chunk of the kind is claimed while true; running ones finish.
    Column("paused", Boolean, nullable=False, server_default=false()),
    # At most this many of the kind's chunks PROCESSING at once (0: no limit).
    Column("max_running_chunks", Integer, nullable=False, server_default=text("0")),
    # When UpdateKind last wrote the row.
    Column("update_time", BigInteger, nullable=False),
)

# Bulk operations over a filter (CancelJobs, RetryJobs, PurgeJobs; migration 0027;
# services/bulk.py): what each acts on (the caller's name and whether it sees every owner, the
# action, the ListJobs filter, the cancel reason or purge's force), its progress, and its cursor,
# the id of the last job it has acted on or passed: each batch moves the cursor in the same
# transaction as its actions, so a job is acted on at most once and a restart goes on from there.
bulk_operations = Table(
    "bulk_operations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("sees_all", Boolean, nullable=False),
    # jobpulse.v1.BulkAction's number.
    Column("action", SmallInteger, nullable=False),
    Column("job_filter", JSON, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("force", Boolean, nullable=False, server_default=false()),
    Column("matched", BigInteger, nullable=False),
    Column("done", BigInteger, nullable=False, server_default=text("0")),
    Column("skipped", BigInteger, nullable=False, server_default=text("0")),
    Column("cursor", String(32), nullable=False, server_default=""),
    Column("create_time", BigInteger, nullable=False),
    Column("update_time", BigInteger, nullable=False),
    # NULL while it runs: the runners of every replica look for these.
    Column("end_time", BigInteger, nullable=True),
    # CancelOperation stopped it (end_time set then) before it reached its last job.
    Column("cancelled", Boolean, nullable=False, server_default=false()),
    Index(
        "ix_bulk_operations_running",
        "create_time",
        sqlite_where=text("end_time IS NULL"),
        postgresql_where=text("end_time IS NULL"),
    ),
)

# Schedules (ScheduleService; migration 0027; services/schedules.py): a cron expression read in a
# time zone, the CreateJob template each tick makes a job from, and the next tick (NULL while
# paused), found by ix_schedules_due.
schedules = Table(
    "schedules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("display_name", String(256), nullable=False, server_default=""),
    Column("cron", String(256), nullable=False),
    Column("time_zone", String(64), nullable=False, server_default=""),
    Column("job_template", JSON, nullable=False),
    Column("paused", Boolean, nullable=False, server_default=false()),
    # jobpulse.v1.MisfirePolicy's and OverlapPolicy's numbers (1: RUN_ONCE, ALLOW).
    Column("misfire_policy", SmallInteger, nullable=False, server_default=text("1")),
    Column("overlap_policy", SmallInteger, nullable=False, server_default=text("1")),
    Column("next_run_time", BigInteger, nullable=True),
    Column("last_run_time", BigInteger, nullable=True),
    Column("last_job_id", String(32), nullable=True),
    Column("create_time", BigInteger, nullable=False),
    Column("update_time", BigInteger, nullable=False),
    Index("ix_schedules_owner_id", "owner", "id"),
    Index(
        "ix_schedules_due",
        "next_run_time",
        sqlite_where=text("next_run_time IS NOT NULL"),
        postgresql_where=text("next_run_time IS NOT NULL"),
    ),
)
