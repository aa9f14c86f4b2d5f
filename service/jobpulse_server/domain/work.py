"""The worker path's requests and answers: one set of types for every layer.

The gRPC edge builds the requests from ClaimChunks, CompleteChunk(s), ReportProgress and FailChunk; the
services hand them to the one worker path (services/worker_path.py); the store's batched path
(PostgreSQL's group commit, store/batch/) queues them as they are. The answers come back the same way.
A batched path that will not write an item answers ``DECLINED`` (never None): the transaction path then
decides, and says why.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from jobpulse_server.domain.errors import DomainError
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState


class Declined(enum.Enum):
    """The batched path's answer for an item it leaves to the transaction path: a job whose change
    makes a webhook event (built in Python), a lease not as required, work taken meanwhile."""

    DECLINED = "declined"


DECLINED: Final = Declined.DECLINED


@dataclass
class ClaimRequest:
    """What a worker asks for when it claims: up to ``limit`` chunks of ``kinds`` (empty: any kind) under
    leases of ``lease_us``; ``wait_s`` > 0 waits that long for work to appear."""

    worker_id: str
    kinds: Sequence[str]
    limit: int
    lease_us: int
    wait_s: float = 0.0

    def kinds_key(self) -> tuple[str, ...]:
        """The kinds as one sorted tuple without repeats: claims of equal keys share a statement."""
        return tuple(sorted(set(self.kinds)))


@dataclass
class Completion:
    """One chunk to complete, under its lease."""

    chunk_id: str
    lease_token: str
    artifacts: Sequence[Artifact]
    external_task_id: str = ""

    @property
    def job_id(self) -> str:
        return chunk_job_id(self.chunk_id)


@dataclass
class ProgressReport:
    """A heartbeat: progress of a leased chunk, which also extends its lease (``lease_us`` 0 keeps the
    chunk's lease duration)."""

    chunk_id: str
    lease_token: str
    items_done: int
    stage: str = ""
    message: str = ""
    external_task_id: str = ""
    lease_us: int = 0
    # What the chunk shows while it runs (previews): each replaces its earlier artifact of the same name.
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return chunk_job_id(self.chunk_id)


@dataclass
class Failure:
    """An attempt that failed: retried after a backoff while attempts are left (if ``retryable``)."""

    chunk_id: str
    lease_token: str
    reason: str
    message: str
    retryable: bool
    # ChunkError.details (a traceback), trimmed to MAX_ERROR_DETAILS (domain/model.py trimmed_details).
    details: str = ""

    @property
    def job_id(self) -> str:
        return chunk_job_id(self.chunk_id)


@dataclass
class Claim:
    """A chunk handed to a worker."""

    job: Job
    chunk: Chunk
    lease_token: str
    lease_expire_time: int


@dataclass
class CompletionResult:
    """What happened to one completion: ``error`` None and the job's state after the call, or the
    error that left the chunk unchanged."""

    chunk_id: str
    error: DomainError | None
    job_state: JobState | None


@dataclass
class FailOutcome:
    """What FailChunk did."""

    will_retry: bool
    next_attempt_time: int | None


@dataclass
class Completed:
    """What a batched completion did (the batched path answers with everything the metrics and the span
    of the completion need, since the services hold no job or chunk for it)."""

    job_state: JobState
    revision: int
    chunk_state: ChunkState
    # The job's kind and the chunk's item_count, for the throughput counts (services/throughput.py).
    kind: str = ""
    items: int = 0
    # For the latency metrics (services/latency.py): the chunk's claim and end times and attempts, its
    # job's creation, and whether this completion is the one of its flush that left the job terminal.
    start_time: int | None = None
    end_time: int = 0
    attempt: int = 0
    job_create_time: int = 0
    ends_job: bool = False
    # The chunk's index and its job's trace_parent, for the completion's span.
    index: int = 0
    trace_parent: str | None = None


@dataclass
class Retried:
    """What a batched retryable failure did: the chunk waits until ``next_attempt_time``."""

    next_attempt_time: int
    revision: int
    # For the latency metrics and the failure's span: the chunk's kind, claim time, attempt and index,
    # its job's trace_parent.
    kind: str = ""
    start_time: int | None = None
    attempt: int = 0
    index: int = 0
    trace_parent: str | None = None


@dataclass
class Backoff:
    """A retry's backoff: base * 2^(n - 1) seconds capped at ``cap_s``, its upper half jittered by
    ``jitter`` in [0, 1) (services/worker_path.py ``backoff_seconds``)."""

    base_s: float
    cap_s: float
    jitter: float = field(default=0.0)
