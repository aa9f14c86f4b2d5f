"""The job/chunk state machine, free of I/O.

A job keeps counts of its chunks by state. Every chunk change goes through
``Job.move_chunk`` so the counts, the items done and the derived job state can
never drift from the chunks; ``derive_state`` is the one definition of a job's
state in terms of those counts.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.IntEnum):
    """Mirrors jobpulse.v1.JobState (same numbers)."""

    PENDING = 1
    PROCESSING = 2
    CANCELLING = 3
    COMPLETED = 4
    FAILED = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class ChunkState(enum.IntEnum):
    """Mirrors jobpulse.v1.ChunkState (same numbers)."""

    PENDING = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def terminal(self) -> bool:
        return self in (ChunkState.COMPLETED, ChunkState.FAILED, ChunkState.CANCELLED)


DEFAULT_CHUNK_SIZE = 500
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PRIORITY = 5
DEFAULT_KIND = "default"
# The most of ChunkError.details a chunk keeps, in bytes of UTF-8 (trimmed_details).
MAX_ERROR_DETAILS = 8192
# Job.error's reason for a job its dependency's failure or cancel cancelled (services/pipeline.py).
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
# Job.error's reasons for a job failed at once (``Job.fail_now``): max_failed_chunks reached, and its
# deadline_time passed with the job not ended (the sweeper: services/workers.py).
TOO_MANY_FAILED_CHUNKS = "TOO_MANY_FAILED_CHUNKS"
JOB_DEADLINE_EXCEEDED = "JOB_DEADLINE_EXCEEDED"
FAILED_AT_ONCE = (TOO_MANY_FAILED_CHUNKS, JOB_DEADLINE_EXCEEDED)
# ChunkError's reason for an attempt that ran past its job's attempt_timeout.
ATTEMPT_TIMEOUT = "ATTEMPT_TIMEOUT"
# A claim's lease when the worker asks for none.
DEFAULT_LEASE_US = 60_000_000
FULL_VIEW_CHUNK_LIMIT = 1000
# Job-level artifacts a Job message carries (the rest are on the chunks, in ListJobChunks).
JOB_ARTIFACT_LIMIT = 1000

# A chunk held by a dependency (or a finalize chunk held by its job's other chunks) has this
# next_attempt_time: it waits as a retry waits out its backoff, at a time that never comes, until the
# completion that lets it go clears it in the same transaction (services/pipeline.py). Never shown.
HELD = 1 << 62  # store/waiting.py NEVER: noting it wakes nobody
# DependencyMode's numbers (job.proto).
AFTER_ALL = 1
AFTER_PER_CHUNK = 2
# ArtifactRole.ARTIFACT_ROLE_RESULT: the artifact whose uri is Job.result_uri.
RESULT_ROLE = 5
# Most jobs one job may wait for (CreateJobRequest.after).
MAX_AFTER = 20


@dataclass
class Summary:
    """Chunk counts by state."""

    pending: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.processing + self.completed + self.failed + self.cancelled

    def add(self, state: ChunkState, n: int) -> None:
        name = state.name.lower()
        setattr(self, name, getattr(self, name) + n)

    @classmethod
    def recount(cls, states: list[ChunkState]) -> Summary:
        s = cls()
        for st in states:
            s.add(st, 1)
        return s


def derive_state(
    summary: Summary, *, cancel_requested: bool, started: bool, failed_at_once: bool = False
) -> JobState:
    """The job state implied by its chunk counts.

    Args:
        summary: chunk counts by state.
        cancel_requested: CancelJob was called (and not undone by RetryJob).
        started: at least one chunk has ever been claimed.
        failed_at_once: the job was failed at once (``Job.fail_now``, which asks a cancel too): FAILED
            whatever its chunks, the running ones told to stop.
    """
    if failed_at_once:
        return JobState.FAILED
    active = summary.pending + summary.processing
    if active:
        if cancel_requested:
            return JobState.CANCELLING
        if started or summary.completed or summary.failed:
            return JobState.PROCESSING
        return JobState.PENDING
    if cancel_requested:
        return JobState.CANCELLED
    if summary.failed:
        return JobState.FAILED
    if summary.cancelled:
        return JobState.CANCELLED
    return JobState.COMPLETED


def split_items(total_items: int, chunk_size: int) -> list[tuple[int, int]]:
    """(item_start, item_count) of each chunk: ceil(total / size) chunks."""
    n = math.ceil(total_items / chunk_size)
    return [(i * chunk_size, min(chunk_size, total_items - i * chunk_size)) for i in range(n)]


@dataclass
class Chunk:
    """One chunk as stored."""

    id: str
    job_id: str
    index: int
    state: ChunkState
    item_start: int
    item_count: int
    items_done: int = 0
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    worker_id: str = ""
    external_task_id: str = ""
    error_reason: str = ""
    error_message: str = ""
    lease_token: str | None = None
    lease_expire_time: int | None = None
    lease_duration: int | None = None
    next_attempt_time: int | None = None
    revision: int = 0
    priority: int = DEFAULT_PRIORITY
    kind: str = ""
    start_time: int | None = None
    end_time: int | None = None
    # The job's finalize chunk (CreateJobRequest.finalize_kind): held until every other chunk completed.
    finalize: bool = False
    # ChunkError.details of its last failure (a worker's traceback), at most MAX_ERROR_DETAILS.
    error_details: str = ""
    # What its worker last said it is doing (ReportChunkProgress stage and message).
    stage: str = ""
    message: str = ""
    # The attempt a move out of PROCESSING ended (Job.move_chunk), until the save writes it (never read
    # from the database: chunk_attempts holds it).
    ended: Attempt | None = field(default=None, repr=False, compare=False)
    artifacts: list[Artifact] = field(default_factory=list)
    # A chunk just claimed: the next_attempt_time it had until then, when its retry was due (claims only,
    # never stored; services/latency.py measures queue waits from it).
    due_time: int | None = field(default=None, repr=False, compare=False)


class AttemptOutcome(enum.IntEnum):
    """Mirrors jobpulse.v1.AttemptOutcome (same numbers): how one attempt of a chunk ended."""

    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    LEASE_EXPIRED = 4
    CANCELLED = 5
    TIMED_OUT = 6


@dataclass
class Attempt:
    """One attempt of a chunk (one claim of it): a row of chunk_attempts once it ended, or a running
    chunk seen as its current attempt (outcome RUNNING, no end_time)."""

    job_id: str
    chunk_index: int
    attempt: int
    worker_id: str
    start_time: int | None
    end_time: int | None
    outcome: AttemptOutcome
    items_done: int
    error_reason: str = ""
    error_message: str = ""
    error_details: str = ""


# The chunk errors that say how an attempt ended other than by its worker's failure.
_OUTCOME_OF_REASON = {
    "LEASE_EXPIRED": AttemptOutcome.LEASE_EXPIRED,
    "ATTEMPT_TIMEOUT": AttemptOutcome.TIMED_OUT,
}


def ended_attempt(job_id: str, chunk: Chunk, new_state: ChunkState, now: int, items_done: int) -> Attempt:
    """The attempt a running ``chunk`` ends by moving to ``new_state`` at ``now`` with ``items_done``: its
    outcome from the new state (and from the error the move was given: a lease that ran out, a timeout),
    with that error unless the attempt completed or was cancelled by its job's cancel. Job.move_chunk
    notes it for every end but a completion (a chunk's completed attempt is its last, and the chunk row
    is it: store/tx.py ``list_attempts``). (The group commit's statements write the same rows:
    store/batch/sql.py ``_attempts_of``.)"""
    if new_state == ChunkState.COMPLETED:
        outcome = AttemptOutcome.COMPLETED
    elif new_state == ChunkState.CANCELLED:
        outcome = AttemptOutcome.CANCELLED
    else:
        outcome = _OUTCOME_OF_REASON.get(chunk.error_reason, AttemptOutcome.FAILED)
    with_error = outcome not in (AttemptOutcome.COMPLETED, AttemptOutcome.CANCELLED) or (
        chunk.error_reason == "CANCEL_DEADLINE"
    )
    return Attempt(
        job_id,
        chunk.index,
        chunk.attempt,
        chunk.worker_id,
        chunk.start_time,
        now,
        outcome,
        items_done,
        chunk.error_reason if with_error else "",
        chunk.error_message if with_error else "",
        chunk.error_details if with_error else "",
    )


def current_attempt(chunk: Chunk) -> Attempt:
    """A running chunk's attempt (RUNNING), or a completed chunk's last (COMPLETED, which no row holds:
    the chunk is it)."""
    done = chunk.state == ChunkState.COMPLETED
    return Attempt(
        chunk.job_id,
        chunk.index,
        chunk.attempt,
        chunk.worker_id,
        chunk.start_time,
        chunk.end_time if done else None,
        AttemptOutcome.COMPLETED if done else AttemptOutcome.RUNNING,
        chunk.items_done,
    )


@dataclass
class Artifact:
    """Something a chunk produced, by reference."""

    name: str
    uri: str
    media_type: str = ""
    size_bytes: int = 0
    chunk_index: int = 0
    # ArtifactRole's number (0: unspecified, an output; RESULT_ROLE: the job's result).
    role: int = 0


@dataclass
class Job:
    """One job as stored, with its chunk counts."""

    id: str
    owner: str
    kind: str
    display_name: str = ""
    state: JobState = JobState.PENDING
    stage: str = ""
    message: str = ""
    priority: int = DEFAULT_PRIORITY
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    total_items: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    request_id: str | None = None
    revision: int = 1
    summary: Summary = field(default_factory=Summary)
    items_done: int = 0
    error_reason: str = ""
    error_message: str = ""
    error_chunk_index: int | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    cancel_time: int | None = None
    create_time: int = 0
    update_time: int = 0
    start_time: int | None = None
    end_time: int | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    # Position of the job's last change in the WatchJobs order (set by the database).
    change_seq: int = 0
    webhook_url: str = ""
    webhook_progress: bool = False
    last_progress_event: int | None = None
    # The ttl CreateJob asked for, in microseconds (0: keep for ever); None: the server's default for
    # the terminal state reached (see domain/retention.py). Never changes after the job is made.
    ttl: int | None = None
    # The trace context of the request that created the job: a W3C traceparent, then a space and its
    # tracestate if it had one; None when the server did not trace. Never changes after the job is made.
    trace_parent: str | None = None
    # When CreateJob said the job may start (its chunks wait until then); None: at once. Never changes
    # after the job is made.
    schedule_time: int | None = None
    # PauseJob holds the job (no claim takes its chunks) until ResumeJob.
    paused: bool = False
    # At most this many of the job's chunks PROCESSING at once; 0: no limit.
    max_running_chunks: int = 0
    # The jobs this one waits for and how (DependencyMode's number: ALL or PER_CHUNK); never change.
    after: list[str] = field(default_factory=list)
    after_mode: int = 0
    # The kind of the job's finalize chunk; empty: none. Never changes.
    finalize_kind: str = ""
    # Pending chunks held until a dependency (or, for the finalize chunk, the job's other chunks) lets
    # them go (their next_attempt_time is HELD). Written by the statements that hold and release them.
    n_held: int = 0
    # Whether the job's completions release or cancel other chunks (it has dependants or a finalize
    # chunk): PostgreSQL's batch declines its completions, which the transaction path writes.
    pipeline: bool = False
    # Fail fast: FAILED at once when this many chunks have FAILED for good; 0: no limit. Never changes.
    max_failed_chunks: int = 0
    # The longest one attempt may run, in microseconds (0: no limit): no lease runs past the attempt's
    # start plus this (``lease_end``). Never changes.
    attempt_timeout: int = 0
    # When the job fails (JOB_DEADLINE_EXCEEDED) if it has not ended; None: never. Never changes.
    deadline_time: int | None = None
    # CreateJob's unique key (empty: none): no other job of the owner and kind with it may be live while
    # this one is. The database holds it (the store's ux_jobs_unique_key). Never changes.
    unique_key: str = ""
    # The state when this copy was read, to tell which transition a save makes.
    loaded_state: JobState | None = None
    # True once this in-memory copy has had its revision bumped for the current change.
    bumped: bool = field(default=False, repr=False, compare=False)
    # Set by ``fail_now``: the save is to cancel the job's pending chunks (never stored).
    stopping: bool = field(default=False, repr=False, compare=False)

    # --- transitions -------------------------------------------------
    def touch(self, now: int) -> int:
        """Starts a change: bumps the revision once per transaction and returns it."""
        if not self.bumped:
            self.revision += 1
            self.bumped = True
        self.update_time = max(self.update_time, now)
        return self.revision

    def move_chunk(
        self, chunk: Chunk, new_state: ChunkState, now: int, items_done: int | None = None
    ) -> None:
        """Moves one chunk to ``new_state`` keeping counts, items and state consistent."""
        rev = self.touch(now)
        if chunk.state == ChunkState.PROCESSING and new_state not in (
            ChunkState.PROCESSING,
            ChunkState.COMPLETED,
        ):
            # A completed attempt is the chunk's last, and the chunk keeps it (SqlTx.list_attempts).
            chunk.ended = ended_attempt(self.id, chunk, new_state, now, chunk.items_done)
        if new_state != chunk.state:
            self.summary.add(chunk.state, -1)
            self.summary.add(new_state, 1)
        if items_done is not None and items_done != chunk.items_done:
            self.items_done += items_done - chunk.items_done
            chunk.items_done = items_done
        if new_state == ChunkState.PROCESSING and self.start_time is None:
            self.start_time = now
        chunk.state = new_state
        chunk.revision = rev
        if new_state.terminal:
            chunk.end_time = now
            chunk.lease_token = None
            chunk.lease_expire_time = None
        elif new_state == ChunkState.PENDING:
            chunk.priority = self.priority
            chunk.end_time = None
            chunk.lease_token = None
            chunk.lease_expire_time = None
        if new_state == ChunkState.FAILED and self.error_chunk_index is None:
            self.error_chunk_index = chunk.index
            self.error_reason = chunk.error_reason or "CHUNK_FAILED"
            self.error_message = chunk.error_message
        if (
            new_state == ChunkState.FAILED
            and self.max_failed_chunks
            and self.summary.failed >= self.max_failed_chunks
            and not self.cancel_requested
        ):
            first = f"; the first, chunk {self.error_chunk_index}: {self.error_reason}"
            if self.error_message:
                first += f": {self.error_message}"
            self.fail_now(
                now,
                TOO_MANY_FAILED_CHUNKS,
                f"{self.summary.failed} chunks failed for good, the job's max_failed_chunks{first}",
            )
        self.refresh_state(now)

    def fail_now(self, now: int, reason: str, message: str) -> None:
        """Fails the job at once (``reason`` one of FAILED_AT_ONCE): FAILED whatever its chunks, with its
        running chunks told to stop as CancelJob tells them (a cancel is asked: they end CANCELLED) and its
        pending ones to be CANCELLED by the save (``stopping``: a statement moves them, as CancelJob's)."""
        self.touch(now)
        self.cancel_requested = True
        self.cancel_reason = message
        self.cancel_time = now
        self.error_reason = reason
        self.error_message = message
        self.stopping = True
        self.refresh_state(now)

    @property
    def failed_at_once(self) -> bool:
        """Whether ``fail_now`` failed the job (until RetryJob clears its cancel and error)."""
        return self.cancel_requested and self.error_reason in FAILED_AT_ONCE

    def lease_end(self, chunk: Chunk, now: int, lease_us: int) -> int:
        """When a lease of ``lease_us`` given at ``now`` on ``chunk`` (its attempt started at its
        start_time) ends: never past the attempt's start plus the job's attempt_timeout. (The batch's
        claim and progress statements write this rule in SQL: store/batch/sql.py.)"""
        end = now + lease_us
        if self.attempt_timeout and chunk.start_time is not None:
            end = min(end, chunk.start_time + self.attempt_timeout)
        return end

    def refresh_state(self, now: int) -> None:
        """Recomputes the job state from the counts; stamps end_time on terminal."""
        self.state = derive_state(
            self.summary,
            cancel_requested=self.cancel_requested,
            started=self.start_time is not None,
            failed_at_once=self.failed_at_once,
        )
        if self.state.terminal:
            if self.end_time is None:
                self.end_time = now
        else:
            self.end_time = None

    def error_shown(self) -> bool:
        """Whether callers see the job's error (Job.error): only once the job has FAILED, or when a
        dependency's failure cancelled it (DEPENDENCY_FAILED). A running job's first chunk failed for
        good is kept (it becomes the error if the job fails), but shows only in its chunk and the
        summary's failed count until then."""
        if not self.error_reason:
            return False
        return self.state == JobState.FAILED or (
            self.state == JobState.CANCELLED and self.error_reason == DEPENDENCY_FAILED
        )

    def blocked(self, now: int) -> bool:
        """Whether the job waits for something other than a worker at ``now``: its schedule_time, or a
        dependency holding every chunk of it not yet ended."""
        s = self.summary
        return blocked(self.state, self.schedule_time, now, self.n_held, s.pending, s.processing)

    def claimable(self) -> int | None:
        """The claim rule of the job's own controls: how many more of its ready chunks a claim may take
        now; None for no limit. None while paused; at max_running_chunks, none until one ends. (The
        PostgreSQL claim writes this rule in SQL: statements.pg_candidate_jobs and pg_ready_of_jobs.)"""
        if self.paused:
            return 0
        if self.max_running_chunks:
            return max(0, self.max_running_chunks - self.summary.processing)
        return None

    @property
    def result_uri(self) -> str:
        """The uri of the job's first RESULT artifact once it has COMPLETED (its artifacts as read)."""
        if self.state != JobState.COMPLETED:
            return ""
        return next((a.uri for a in self.artifacts if a.role == RESULT_ROLE), "")

    # --- progress ----------------------------------------------------
    @property
    def percent(self) -> float:
        if self.total_items <= 0:
            return 0.0
        return min(100.0, 100.0 * self.items_done / self.total_items)

    def eta_seconds(self, now: int) -> float | None:
        """Time left at the average rate since the first claim; None without enough data."""
        return eta_seconds(self.state, self.start_time, self.items_done, self.total_items, now)


def fair_order(
    ready: Iterable[Chunk], owner_of: Mapping[str, str], running: Mapping[str, int], spin: int = 0
) -> list[Chunk]:
    """Fair share's claim order (setting ``fair_share`` = owner): ``ready`` are the chunks a claim may
    take (each job's within its ``Job.claimable``), given in today's claim order (priority DESC, job,
    index). Among chunks of one priority, an owner's n-th chunk has the turn ``running[owner] + n``
    (``running``: the chunks of that owner's jobs PROCESSING now); lower turns are claimed first. So the
    owner with the fewest running chunks goes first, and a claim of several chunks deals them out as if
    claimed one by one. Owners whose turns tie are ordered by ``fair_tie`` of this claim's ``spin`` (its
    time in microseconds: a new one each claim), so over many claims each goes first as often (one
    worker alone: its owners take turns, where the oldest job would win every tie); then today's order.
    The claim writes this rule in SQL on PostgreSQL (statements.pg_candidate_jobs, pg_ready_of_jobs)
    and walks it owner by owner on SQLite (store/tx.py ``SqlTx._fair``);
    tests/integration/test_fair_order.py holds both to it."""
    turns: dict[tuple[int, str], int] = {}

    def key(c: Chunk) -> tuple[int, int, bytes, str, int]:
        owner = owner_of[c.job_id]
        turn = turns[c.priority, owner] = turns.get((c.priority, owner), running.get(owner, 0)) + 1
        return -c.priority, turn, fair_tie(owner, spin), c.job_id, c.index

    return sorted(ready, key=key)


def fair_tie(owner: str, spin: int) -> bytes:
    """Where ``owner`` goes among owners whose turns tie, in the claim of ``spin``: the MD5 of
    "spin:owner" (PostgreSQL's ``decode(md5(...), 'hex')``, statements.fair_turn), as good as a shuffle
    of the owners that changes with every claim."""
    return hashlib.md5(f"{spin}:{owner}".encode()).digest()


def eta_seconds(
    state: JobState, start_time: int | None, items_done: int, total_items: int, now: int
) -> float | None:
    """A job's time left at ``now`` at its average rate since the first claim; None without enough data
    (not started, nothing done yet, under a second in, or over)."""
    if state.terminal or start_time is None or items_done <= 0:
        return None
    elapsed = (now - start_time) / 1e6
    if elapsed < 1.0:
        return None
    rate = items_done / elapsed
    return max(0.0, (total_items - items_done) / rate)


# The largest max_running_chunks a job or a kind may have (the contract's range); 0 is no limit.
MAX_RUNNING_CHUNKS = 1_000_000


@dataclass
class Kind:
    """One kind of work: the controls UpdateKind set on the claim for every job of the kind, whoever
    owns it, and (as ListKinds reads it) its chunks PENDING and PROCESSING now. A kind never updated has
    the defaults (not paused, no cap) and no stored row."""

    kind: str
    # No chunk of the kind is claimed while set; running ones finish.
    paused: bool = False
    # At most this many of the kind's chunks PROCESSING at once, across replicas; 0: no limit.
    max_running_chunks: int = 0
    pending_chunks: int = 0
    running_chunks: int = 0
    # When UpdateKind last wrote the kind's controls; None: never.
    update_time: int | None = None

    def claimable(self, running: int) -> int | None:
        """The claim rule of the kind's controls, as ``Job.claimable`` for a job's: how many more of the
        kind's ready chunks a claim may take while ``running`` of them are PROCESSING; None for no limit.
        None of them while paused; at max_running_chunks, none until one ends."""
        if self.paused:
            return 0
        if self.max_running_chunks:
            return max(0, self.max_running_chunks - running)
        return None


def blocked(
    state: JobState, schedule_time: int | None, now: int, held: int = 0, pending: int = 0, running: int = 0
) -> bool:
    """A job that is not over and none of whose chunks may be claimed for a reason other than workers:
    its schedule_time is still to come (its chunks wait until then, as a retry waits out its backoff),
    or every pending chunk is ``held`` (by a dependency, or the finalize chunk by its job's others) and
    none runs."""
    if state.terminal:
        return False
    return (schedule_time is not None and now < schedule_time) or (0 < held == pending and not running)


@dataclass(slots=True)
class JobHead:
    """The few fields of a job that ListJobs reads first: its id and revision (to find the job's kept
    encoding), what its ETA of the moment needs, and the attributes a page token holds (``ORDERS``).
    Only the jobs whose encoding is not kept are then read whole."""

    id: str
    revision: int
    state: JobState
    start_time: int | None
    items_done: int
    total_items: int
    update_time: int
    priority: int
    schedule_time: int | None
    n_held: int
    n_pending: int
    n_processing: int

    def eta_seconds(self, now: int) -> float | None:
        return eta_seconds(self.state, self.start_time, self.items_done, self.total_items, now)

    def blocked(self, now: int) -> bool:
        return blocked(self.state, self.schedule_time, now, self.n_held, self.n_pending, self.n_processing)


def trimmed_details(text: str, limit: int = MAX_ERROR_DETAILS) -> str:
    """``text`` (ChunkError.details) in at most ``limit`` bytes of UTF-8: when longer, its start and its
    end (a traceback's first frames and the exception itself) around a line saying how much was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = f"\n[... {len(data) - limit:,}+ bytes cut ...]\n"
    room = limit - len(marker.encode())
    head = data[: room // 2].decode(errors="ignore")
    tail = data[len(data) - (room - room // 2) :].decode(errors="ignore")
    return head + marker + tail
