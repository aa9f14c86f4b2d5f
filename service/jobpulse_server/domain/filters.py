"""The filters of ListJobs, ExportJobs, WatchJobs and GetJobStats, once validated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jobpulse_server.domain.model import Job, JobHead, JobState


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


# ListJobs' orders: order_by value -> (the job attributes it sorts by, descending). Ties break
# by id in the same direction, so one row-value comparison is the keyset and one btree index
# serves both directions of a field. create_time sorts by id alone: ids made later sort after
# ids made earlier (domain.ids). The store keeps an index for each field; page tokens carry the
# last job's values of these attributes.
ORDERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "create_time desc": (("id",), True),
    "create_time": (("id",), False),
    "update_time desc": (("update_time", "id"), True),
    "update_time": (("update_time", "id"), False),
    "priority desc": (("priority", "id"), True),
    "priority": (("priority", "id"), False),
}
DEFAULT_ORDER = "create_time desc"
# A page of ListJobs may be made of JobHeads: each must carry the attributes of every order.
if not {c for cols, _ in ORDERS.values() for c in cols} <= {f.name for f in dataclasses.fields(JobHead)}:
    raise ImportError("an order of ORDERS sorts by an attribute JobHead lacks")


def job_sort_key(job: Job | JobHead, order_by: str) -> list[Any]:
    """The job's values of the attributes ``order_by`` sorts by."""
    cols, _ = ORDERS[order_by]
    return [getattr(job, name) for name in cols]
