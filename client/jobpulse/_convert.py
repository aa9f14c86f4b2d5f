"""Conversions between friendly Python values and the protobuf types of jobpulse.v1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse.v1 import job_pb2, job_service_pb2

JobStateLike: TypeAlias = "job_pb2.JobState.ValueType | int | str"
ChunkStateLike: TypeAlias = "job_pb2.ChunkState.ValueType | int | str"
JobViewLike: TypeAlias = "job_pb2.JobView.ValueType | int | str"
TimeLike: TypeAlias = "datetime | Timestamp | str"

TERMINAL_JOB_STATES: frozenset[int] = frozenset(
    {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)


def parse_datetime(text: str) -> datetime:
    """Parses an ISO 8601 timestamp ("2024-05-01", "2024-05-01T12:00:00Z"); naive values are UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def to_timestamp(value: TimeLike | None) -> Timestamp | None:
    """Returns a Timestamp for a datetime (naive means UTC), ISO 8601 string or Timestamp; None stays None."""
    if value is None:
        return None
    if isinstance(value, Timestamp):
        return value
    if isinstance(value, str):
        value = parse_datetime(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_duration(value: float | timedelta | None) -> Duration | None:
    """Returns a Duration for seconds (int/float) or a timedelta; None stays None."""
    if value is None:
        return None
    duration = Duration()
    if isinstance(value, timedelta):
        duration.FromTimedelta(value)
    else:
        duration.FromNanoseconds(round(float(value) * 1_000_000_000))
    return duration


def to_struct(value: Mapping[str, Any] | Struct | None) -> Struct | None:
    """Returns a Struct for a JSON-like dict; None stays None."""
    if value is None:
        return None
    if isinstance(value, Struct):
        return value
    struct = Struct()
    struct.update(dict(value))
    return struct


def struct_to_dict(value: Struct) -> dict[str, Any]:
    """Returns a Struct as a plain dict (numbers come back as floats, as JSON has them)."""
    return json_format.MessageToDict(value)


def _enum_value(wrapper: Any, prefix: str, value: int | str, what: str) -> int:
    if isinstance(value, int):
        wrapper.Name(value)  # raises ValueError for numbers the enum does not define
        return value
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    try:
        number: int = wrapper.Value(name)
    except ValueError:
        choices = ", ".join(n[len(prefix) :].lower() for n in wrapper.keys() if not n.endswith("UNSPECIFIED"))
        raise ValueError(f"unknown {what} {value!r}; expected one of: {choices}") from None
    return number


def job_state(value: JobStateLike) -> job_pb2.JobState.ValueType:
    """Returns the JobState for "completed", "JOB_STATE_COMPLETED" or a JobState number."""
    return job_pb2.JobState.ValueType(_enum_value(job_pb2.JobState, "JOB_STATE_", value, "job state"))


def chunk_state(value: ChunkStateLike) -> job_pb2.ChunkState.ValueType:
    """Returns the ChunkState for "failed", "CHUNK_STATE_FAILED" or a ChunkState number."""
    return job_pb2.ChunkState.ValueType(_enum_value(job_pb2.ChunkState, "CHUNK_STATE_", value, "chunk state"))


def job_view(value: JobViewLike) -> job_pb2.JobView.ValueType:
    """Returns the JobView for "basic", "full", "JOB_VIEW_BASIC" or a JobView number."""
    return job_pb2.JobView.ValueType(_enum_value(job_pb2.JobView, "JOB_VIEW_", value, "job view"))


def job_states(values: Iterable[JobStateLike] | None) -> list[job_pb2.JobState.ValueType]:
    """Converts an optional list of job states (see :func:`job_state`)."""
    return [job_state(v) for v in values or ()]


def chunk_states(values: Iterable[ChunkStateLike] | None) -> list[job_pb2.ChunkState.ValueType]:
    """Converts an optional list of chunk states (see :func:`chunk_state`)."""
    return [chunk_state(v) for v in values or ()]


def job_state_name(value: int) -> str:
    """Returns the short upper-case name of a JobState ("COMPLETED")."""
    try:
        return job_pb2.JobState.Name(job_pb2.JobState.ValueType(value)).removeprefix("JOB_STATE_")
    except ValueError:
        return str(value)


def chunk_state_name(value: int) -> str:
    """Returns the short upper-case name of a ChunkState ("PROCESSING")."""
    try:
        return job_pb2.ChunkState.Name(job_pb2.ChunkState.ValueType(value)).removeprefix("CHUNK_STATE_")
    except ValueError:
        return str(value)


def event_type_name(value: int) -> str:
    """Returns the short upper-case name of a WatchEventType ("SNAPSHOT", "CHANGE", "HEARTBEAT"): what a
    ``watch_job`` or ``watch_jobs`` message is."""
    try:
        name = job_service_pb2.WatchEventType.Name(job_service_pb2.WatchEventType.ValueType(value))
        return name.removeprefix("WATCH_EVENT_TYPE_")
    except ValueError:
        return str(value)


def is_terminal(state: int) -> bool:
    """Tells whether a JobState is terminal (COMPLETED, FAILED or CANCELLED)."""
    return state in TERMINAL_JOB_STATES
