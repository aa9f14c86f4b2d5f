"""Read models that are not a job or a chunk: a WatchJobs feed entry and a row of job statistics."""

from __future__ import annotations

from dataclasses import dataclass

from jobpulse_server.domain.model import Job, JobState


@dataclass
class FeedEntry:
    """One change in a WatchJobs feed: a job as it is now, or the deletion of one (``job`` None)."""

    change_seq: int
    job_id: str
    job: Job | None


@dataclass
class FailureGroup:
    """SummarizeFailures' count of the chunks FAILED for good with one error reason."""

    reason: str
    chunks: int
    jobs: int
    # When the last of them failed (us), and its message.
    last_time: int | None
    sample_message: str = ""


@dataclass
class StatsRow:
    kind: str
    total: int
    by_state: dict[JobState, int]
    items_done: int
    durations: dict[str, int | None]  # p50/p95/p99/max in microseconds
    first_start: int | None = None
    last_update: int | None = None
    # Finished jobs that had started, and the sum of their end_time - start_time (microseconds).
    processed_jobs: int = 0
    processing_us: int = 0

    @property
    def items_per_second(self) -> float:
        if self.first_start is None or self.last_update is None or self.last_update <= self.first_start:
            return 0.0
        return self.items_done / ((self.last_update - self.first_start) / 1e6)
