"""Schedules between the domain and jobpulse.v1: a stored Schedule as its message (with its template as
the CreateJobRequest it was given, after defaults), a schedule's name, and the shape checks of a Schedule
message (its cron expression, time zone, names and policies)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from google.protobuf import struct_pb2

from jobpulse.v1 import job_service_pb2, schedule_service_pb2
from jobpulse_server.domain.schedules import (
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    SCHEDULE_NAME_PREFIX,
    Schedule,
    cron_problem,
    time_zone_problem,
)
from jobpulse_server.wire.convert import duration_from_us, timestamp
from jobpulse_server.wire.validation import MAX_DISPLAY_NAME, Checker

# A schedule's id: what ids.new_job_id makes (26 characters), with room.
MAX_SCHEDULE_ID = 32
# The fields UpdateSchedule may name in its mask.
UPDATABLE = ("display_name", "cron", "time_zone", "job", "paused", "misfire_policy", "overlap_policy")


def template_pb(template: dict[str, Any]) -> job_service_pb2.CreateJobRequest:
    """A schedule's kept template as the CreateJobRequest each tick makes (its request_id empty)."""
    t = template
    request = job_service_pb2.CreateJobRequest(
        display_name=t.get("display_name", ""),
        kind=t.get("kind", ""),
        labels=t.get("labels") or {},
        total_items=t.get("total_items", 0),
        chunk_size=t.get("chunk_size", 0),
        max_attempts=t.get("max_attempts", 0),
        webhook_url=t.get("webhook_url", ""),
        webhook_progress=t.get("webhook_progress", False),
        max_running_chunks=t.get("max_running_chunks", 0),
        after=t.get("after") or [],
        after_mode=t.get("after_mode", 0),
        finalize_kind=t.get("finalize_kind", ""),
        max_failed_chunks=t.get("max_failed_chunks", 0),
        unique_key=t.get("unique_key", ""),
    )
    if t.get("priority") is not None:
        request.priority = t["priority"]
    if t.get("metadata"):
        metadata = struct_pb2.Struct()
        metadata.update(t["metadata"])
        request.metadata.CopyFrom(metadata)
    if t.get("ttl") is not None:
        request.ttl.CopyFrom(duration_from_us(t["ttl"]))
    for name in ("attempt_timeout", "timeout"):
        if t.get(name):
            getattr(request, name).CopyFrom(duration_from_us(t[name]))
    return request


def schedule_pb(s: Schedule) -> schedule_service_pb2.Schedule:
    """A stored schedule as its message (next_run_time unset while paused)."""
    return schedule_service_pb2.Schedule(
        name=s.name,
        display_name=s.display_name,
        cron=s.cron,
        time_zone=s.time_zone,
        job=template_pb(s.job_template),
        paused=s.paused,
        misfire_policy=s.misfire_policy,  # type: ignore[arg-type]
        overlap_policy=s.overlap_policy,  # type: ignore[arg-type]
        next_run_time=timestamp(None if s.paused else s.next_run_time),
        last_run_time=timestamp(s.last_run_time),
        last_job_id=s.last_job_id or "",
        owner=s.owner,
        create_time=timestamp(s.create_time),
    )


def schedule_id(name: str, field: str, c: Checker) -> str:
    """The id in a schedule's name (``schedules/{id}``); a bad name is a violation of ``field``."""
    if not name:
        c.fail(field, f"is required: {SCHEDULE_NAME_PREFIX}{{id}}")
        return ""
    found = name[len(SCHEDULE_NAME_PREFIX) :] if name.startswith(SCHEDULE_NAME_PREFIX) else ""
    if not found or "/" in found or len(found) > MAX_SCHEDULE_ID or "\x00" in found:
        c.fail(field, f"must be {SCHEDULE_NAME_PREFIX}{{id}} (got {name[:64]!r})")
        return ""
    return found


def check_schedule(given: schedule_service_pb2.Schedule, c: Checker, fields: Collection[str]) -> None:
    """The shape checks of the ``fields`` of a Schedule message (the job template is CreateJob's to
    check), each violation named ``schedule.<field>``."""
    if "display_name" in fields:
        c.text(given.display_name, "schedule.display_name", MAX_DISPLAY_NAME)
    if "cron" in fields:
        problem = cron_problem(given.cron)
        if problem is not None:
            c.fail("schedule.cron", problem)
    if "time_zone" in fields:
        problem = time_zone_problem(given.time_zone)
        if problem is not None:
            c.fail("schedule.time_zone", problem)
    if "misfire_policy" in fields:
        c.enums([given.misfire_policy], MISFIRE_POLICIES, "schedule.misfire_policy")
    if "overlap_policy" in fields:
        c.enums([given.overlap_policy], OVERLAP_POLICIES, "schedule.overlap_policy")
    if "job" in fields:
        c.check(given.HasField("job"), "schedule.job", "is required: the CreateJob request each tick makes")
        c.check(
            not given.job.request_id,
            "schedule.job.request_id",
            "must be empty: each tick sets its own (schedules/<id>/<tick>)",
        )
        c.check(
            not given.job.HasField("schedule_time"),
            "schedule.job.schedule_time",
            "must be unset: the schedule says when its jobs start",
        )
