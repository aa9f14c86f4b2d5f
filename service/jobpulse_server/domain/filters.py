"""The filters of ListJobs, ExportJobs, WatchJobs and GetJobStats, once validated."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobpulse_server.domain.model import JobState


@dataclass
class JobFilter:
    """ListJobs / GetJobStats filters, already validated."""

    owner: str | None = None
    states: list[JobState] = field(default_factory=list)
    kind: str = ""
    min_priority: int | None = None
    max_priority: int | None = None
    created_after: int | None = None
    created_before: int | None = None
    search: str = ""
    labels: dict[str, str] = field(default_factory=dict)
