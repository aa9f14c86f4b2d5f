"""Query parameters as the request messages the services' filters are read from: ``/v1/events`` fills a
WatchJobsRequest, the dashboard's jobs page a ListJobsRequest; ``wire.filters.job_filter`` then checks
both as it checks the RPCs'. Empty values (what a form sends for a field left blank) mean "no filter"."""

from __future__ import annotations

import datetime as dt
import re
from typing import TypeVar
from urllib.parse import parse_qsl

from jobpulse.v1 import job_service_pb2
from jobpulse_server.domain.errors import FieldViolation, InvalidArgument
from jobpulse_server.domain.model import JobState

R = TypeVar("R", job_service_pb2.WatchJobsRequest, job_service_pb2.ListJobsRequest)
_WHOLE = re.compile(r"-?[0-9]{1,5}")
_ALIASES = {
    "states": "state",
    "minPriority": "min_priority",
    "maxPriority": "max_priority",
    "createdAfter": "created_after",
    "createdBefore": "created_before",
}


def parse(query_string: bytes | str) -> list[tuple[str, str]]:
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    try:
        return parse_qsl(text, keep_blank_values=True)
    except ValueError as exc:
        raise InvalidArgument([FieldViolation("query", f"cannot be read: {exc}")]) from None


def job_state(value: str) -> JobState | None:
    """'JOB_STATE_PROCESSING', 'processing' or 'PROCESSING'; None for anything else."""
    name = value.strip().upper()
    if name.startswith("JOB_STATE_"):
        name = name[len("JOB_STATE_") :]
    return JobState[name] if name in JobState.__members__ else None


def _time(value: str) -> dt.datetime | None:
    """A date ('2026-11-25', midnight UTC), a browser's datetime-local ('2026-11-25T10:30', UTC) or
    an RFC 3339 time."""
    text = value.strip().replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def filter_request(params: list[tuple[str, str]], request: R) -> R:
    """Fills ``request``'s filter fields from ``params`` (others are left to the caller)."""
    bad: list[FieldViolation] = []
    for name, value in params:
        if not value.strip():
            continue
        # The JSON face's names for the same filters (its OpenAPI document lists those): the request's
        # fields by proto or lowerCamel name, a label as labels.<key>=<value>.
        if name.startswith("labels."):
            name, value = "label", f"{name[len('labels.') :]}={value}"
        name = _ALIASES.get(name, name)
        if name == "state":
            state = job_state(value)
            if state is None:
                bad.append(
                    FieldViolation("state", f"{value[:40]!r} is not a job state (e.g. JOB_STATE_PROCESSING)")
                )
            elif int(state) not in request.states:
                request.states.append(int(state))  # type: ignore[arg-type]
        elif name == "label":
            key, sep, label_value = value.partition("=")
            if not sep or not key.strip():
                bad.append(FieldViolation("label", f"{value[:40]!r} is not key=value"))
            else:
                request.labels[key.strip()] = label_value.strip()
        elif name in ("kind", "search"):
            setattr(request, name, value.strip())
        elif name == "cursor" and isinstance(request, job_service_pb2.WatchJobsRequest):
            request.cursor = value
        elif name in ("min_priority", "max_priority"):
            if _WHOLE.fullmatch(value.strip()):  # ASCII digits: str.isdigit() takes "²", int() does not
                setattr(request, name, int(value))
            else:
                bad.append(FieldViolation(name, f"must be a whole number from 0 to 10 (got {value[:40]!r})"))
        elif name in ("created_after", "created_before"):
            when = _time(value)
            if when is None:
                bad.append(
                    FieldViolation(name, f"must be a date like 2026-11-25 or a time (got {value[:40]!r})")
                )
            else:
                getattr(request, name).FromDatetime(when)
    if bad:
        raise InvalidArgument(bad)
    return request
