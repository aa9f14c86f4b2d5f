"""The chunk and job latency metrics (docs/operations.md, Metrics): queue waits, run times, attempts and
job durations, worked out from the jobs and chunks the write paths already hold (no extra reads) and
recorded in the replica that made the change, once its write has committed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from jobpulse_server.domain.model import Chunk, ChunkState, Job
from jobpulse_server.domain.work import Completed
from jobpulse_server.platform.metrics import Metrics

# A chunk's run ends by its worker's call: CompleteChunk or FailChunk.
COMPLETED = "completed"
FAILED = "failed"


def ready_time(job: Job, chunk: Chunk) -> int | None:
    """When a chunk just claimed had become claimable: the time its retry was due (a failure's or an
    expired lease's backoff), else, on its first attempt, its job's creation. None when the store does
    not know: a chunk put back by RetryJob / RetryChunk, which clear its next_attempt_time."""
    if chunk.due_time is not None:
        return chunk.due_time
    if chunk.attempt == 1:
        return job.create_time
    return None


@dataclass
class Ends:
    """What one write transaction ended, recorded once it commits (a body run again starts afresh)."""

    runs: list[tuple[str, str, int]] = field(default_factory=list)  # kind, outcome, microseconds
    attempts: list[tuple[str, int]] = field(default_factory=list)  # kind, attempts
    jobs: list[tuple[str, str, int]] = field(default_factory=list)  # kind, state, microseconds

    def clear(self) -> None:
        self.runs.clear()
        self.attempts.clear()
        self.jobs.clear()

    def add(self, jobs: Iterable[Job], chunks: Iterable[Chunk], now: int, outcome: str | None) -> None:
        """Notes, before the save, the runs of ``chunks`` that ended by a worker's ``outcome`` (None: not
        a worker's call, e.g. a lease expired), the chunks that ended completed or failed for good, and
        the jobs that reached a terminal state in this transaction."""
        by_id = {job.id: job for job in jobs}
        for chunk in chunks:
            job = by_id.get(chunk.job_id)
            if job is None:
                continue
            if outcome is not None and chunk.start_time is not None:
                self.runs.append((job.kind, outcome, now - chunk.start_time))
            if chunk.state in (ChunkState.COMPLETED, ChunkState.FAILED):
                self.attempts.append((job.kind, chunk.attempt))
        for job in by_id.values():
            if job.state.terminal and job.loaded_state is not None and not job.loaded_state.terminal:
                self.jobs.append((job.kind, job.state.name, (job.end_time or now) - job.create_time))


class Latency:
    """Records the latency metrics in ``metrics`` (each an observe: about a microsecond or two)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def claimed(self, claims: Iterable[tuple[Job, Chunk]]) -> None:
        """Queue waits of committed claims (a chunk's start_time is its claim's time)."""
        observe = self.metrics.observe_queue_wait
        for job, chunk in claims:
            ready = ready_time(job, chunk)
            if ready is not None and chunk.start_time is not None:
                observe(job.kind, max(0, chunk.start_time - ready) / 1e6)

    def record(self, ends: Ends) -> None:
        m = self.metrics
        for kind, outcome, us in ends.runs:
            m.observe_chunk_run(kind, outcome, max(0, us) / 1e6)
        for kind, attempts in ends.attempts:
            m.observe_attempts(kind, attempts)
        for kind, state, us in ends.jobs:
            m.observe_job_duration(kind, state, max(0, us) / 1e6)

    def completed_one(self, done: Completed) -> None:
        """A group-committed completion (PostgreSQL), committed when the store returns it."""
        m = self.metrics
        if done.start_time is not None:
            m.observe_chunk_run(done.kind, COMPLETED, max(0, done.end_time - done.start_time) / 1e6)
        if done.chunk_state == ChunkState.COMPLETED:
            m.observe_attempts(done.kind, done.attempt)
        if done.ends_job:
            m.observe_job_duration(
                done.kind, done.job_state.name, max(0, done.end_time - done.job_create_time) / 1e6
            )
