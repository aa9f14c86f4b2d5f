"""AIP-214 expiry: when a finished job is due for deletion.

A job stores its own ttl only when CreateJob asked for one (``Job.ttl``); None means "the server's
default for the terminal state it reached", which is resolved when the job is shown or swept, so a
changed default applies to jobs already finished. ``expire_time`` is the job's end_time plus that
ttl; a ttl of 0 keeps the job for ever (no expire_time).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobpulse_server.domain.model import Job, JobState

DAY_US = 86_400 * 1_000_000
# The longest ttl CreateJob accepts (the contract's limit).
MAX_TTL_US = 3650 * DAY_US


@dataclass(frozen=True)
class Retention:
    """The server's default ttl per terminal state, in microseconds; 0 keeps such jobs for ever."""

    completed: int = 7 * DAY_US
    failed: int = 30 * DAY_US
    cancelled: int = 30 * DAY_US

    @classmethod
    def from_seconds(cls, completed: float, failed: float, cancelled: float) -> Retention:
        return cls(int(completed * 1e6), int(failed * 1e6), int(cancelled * 1e6))

    def default_for(self, state: JobState) -> int:
        """The default ttl of a job that ended in ``state`` (0 for states that are not terminal)."""
        if state == JobState.COMPLETED:
            return self.completed
        if state == JobState.FAILED:
            return self.failed
        if state == JobState.CANCELLED:
            return self.cancelled
        return 0

    def defaults(self) -> list[tuple[JobState, int]]:
        """(terminal state, default ttl) for each terminal state whose jobs do expire by default."""
        found = [
            (JobState.COMPLETED, self.completed),
            (JobState.FAILED, self.failed),
            (JobState.CANCELLED, self.cancelled),
        ]
        return [(state, ttl) for state, ttl in found if ttl > 0]

    def ttl_of(self, job: Job) -> int:
        """The job's effective ttl (its own, or the default of its state)."""
        return job.ttl if job.ttl is not None else self.default_for(job.state)

    def expire_time(self, job: Job) -> int | None:
        """When the job is deleted: None while it runs, or when it is kept for ever."""
        if job.end_time is None or not job.state.terminal:
            return None
        ttl = self.ttl_of(job)
        return job.end_time + ttl if ttl > 0 else None


@dataclass
class ExpiryCandidate:
    """A finished job the expiry sweep looked at: its own ttl (None: the default) and its size."""

    job_id: str
    update_time: int
    ttl: int | None
    chunks: int


# Keeps every job for ever: what code without a configured policy shows (no expire_time).
KEEP_ALL = Retention(0, 0, 0)
