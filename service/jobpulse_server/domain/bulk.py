"""Bulk operations over a filter (CancelJobs, RetryJobs, PurgeJobs): what one is and how far it has got."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from jobpulse_server.domain.filters import JobFilter


class BulkAction(enum.IntEnum):
    """Mirrors jobpulse.v1.BulkAction (same numbers)."""

    CANCEL = 1
    RETRY = 2
    PURGE = 3


# Operation names: "operations/bulk-<id>" (a job's operation is "operations/<job id>"; job ids never
# start with "bulk-").
NAME_PREFIX = "bulk-"


@dataclass
class BulkOperation:
    """One bulk operation. ``cursor`` is the id of the last job it has acted on or passed: the jobs it
    matches are taken in id order (creation order), each batch after the cursor, and the cursor moves in
    the same transaction as the batch's actions, so a job is acted on at most once whatever restarts."""

    id: str
    owner: str  # the caller's name
    sees_all: bool  # whether the caller sees every owner's jobs (else only ``owner``'s)
    action: BulkAction
    filter: JobFilter = field(default_factory=JobFilter)
    reason: str = ""  # CancelJobs' reason
    force: bool = False  # PurgeJobs' force
    matched: int = 0  # the jobs matching when it began
    done: int = 0
    skipped: int = 0
    cursor: str = ""
    create_time: int = 0
    update_time: int = 0
    end_time: int | None = None
    # Stopped by CancelOperation before it reached its last job.
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.end_time is not None

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.id
