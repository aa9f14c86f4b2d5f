"""JobFilter: the filters of ListJobs, one type for every call that takes them (ListJobs, ExportJobs,
WatchJobs, CancelJobs, RetryJobs, PurgeJobs), in the sync and async clients alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict, TypeVar

from jobpulse import _convert
from jobpulse._convert import JobStateLike, TimeLike


class JobFilter(TypedDict, total=False):
    """Which jobs a call means: a job matches when it matches every key given (none: every job the
    caller may see). The calls that take it take its keys as keywords; one filter can serve several::

        failed = jobpulse.JobFilter(kind="thumbnails", states=["failed"])
        print(client.retry_jobs(**failed, validate_only=True).matched, "to retry")
        client.retry_jobs(**failed)

    Keys:
        states: Only jobs in one of these states (``"completed"``, ``JOB_STATE_COMPLETED``, ...; a
            watch: the states jobs are in now).
        kind: Only jobs of this kind.
        min_priority: Only jobs with at least this priority.
        max_priority: Only jobs with at most this priority.
        created_after: Only jobs created at or after this time (datetime; naive means UTC).
        created_before: Only jobs created before this time.
        search: Case-insensitive substring of the display name.
        labels: Only jobs carrying all of these labels.
    """

    states: Iterable[JobStateLike] | None
    kind: str
    min_priority: int | None
    max_priority: int | None
    created_after: TimeLike | None
    created_before: TimeLike | None
    search: str
    labels: Mapping[str, str] | None


KEYS = frozenset(JobFilter.__annotations__)

_R = TypeVar("_R")


def with_filters(request: _R, filters: Mapping[str, Any], call: str) -> _R:
    """Sets the filter fields of a ListJobs, ExportJobs, WatchJobs or bulk request from a JobFilter's
    keys; a key it does not know is a TypeError naming ``call``, as Python's own for a keyword."""
    unknown = sorted(set(filters) - KEYS)
    if unknown:
        raise TypeError(f"{call}() got an unexpected keyword argument {unknown[0]!r}")
    r: Any = request
    r.states.extend(_convert.job_states(filters.get("states")))
    r.kind = filters.get("kind") or ""
    r.search = filters.get("search") or ""
    r.labels.update(dict(filters.get("labels") or {}))
    for key in ("min_priority", "max_priority"):
        value = filters.get(key)
        if value is not None:
            setattr(r, key, value)
    for key in ("created_after", "created_before"):
        stamp = _convert.to_timestamp(filters.get(key))
        if stamp is not None:
            getattr(r, key).CopyFrom(stamp)
    return request
