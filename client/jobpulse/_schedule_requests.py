"""ScheduleService request builders shared by the sync and async clients (and the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask

from jobpulse import _convert, _requests
from jobpulse.v1 import job_service_pb2, schedule_service_pb2

#: A schedule's job template: a CreateJobRequest, or the keyword arguments of ``create_job``
#: (``{"kind": "report", "total_items": 1, "chunk_size": 1}``).
JobTemplate = job_service_pb2.CreateJobRequest | Mapping[str, Any]
#: A misfire or overlap policy: its name (``"skip"``, ``"MISFIRE_POLICY_SKIP"``) or number.
PolicyLike = str | int

PREFIX = "schedules/"


def schedule_name(schedule: str) -> str:
    """``schedules/{id}`` for a schedule's id or name.

    Raises:
        ValueError: ``schedule`` is empty.
    """
    if not schedule:
        raise ValueError("a schedule's id or name (schedules/{id}) is required")
    return schedule if schedule.startswith(PREFIX) else PREFIX + schedule


def template(job: JobTemplate) -> job_service_pb2.CreateJobRequest:
    """The CreateJobRequest of a template given as a message or as ``create_job``'s arguments."""
    if isinstance(job, job_service_pb2.CreateJobRequest):
        return job
    given = dict(job)
    try:
        kind, total_items = given.pop("kind"), given.pop("total_items")
    except KeyError:
        raise ValueError("a job template needs at least kind and total_items") from None
    defaults: dict[str, Any] = {
        "display_name": "",
        "chunk_size": 0,
        "priority": None,
        "labels": None,
        "metadata": None,
        "max_attempts": 0,
        "request_id": "",
    }
    try:
        return _requests.create_job(kind, total_items, **{**defaults, **given})
    except TypeError as exc:
        raise ValueError(f"a job template takes create_job's arguments: {exc}") from None


def misfire_policy(value: PolicyLike) -> schedule_service_pb2.MisfirePolicy.ValueType:
    """The MisfirePolicy for ``"run_once"``, ``"skip"``, its full name or its number."""
    number = _convert._enum_value(
        schedule_service_pb2.MisfirePolicy, "MISFIRE_POLICY_", value, "misfire policy"
    )
    return schedule_service_pb2.MisfirePolicy.ValueType(number)


def overlap_policy(value: PolicyLike) -> schedule_service_pb2.OverlapPolicy.ValueType:
    """The OverlapPolicy for ``"allow"``, ``"skip"``, its full name or its number."""
    number = _convert._enum_value(
        schedule_service_pb2.OverlapPolicy, "OVERLAP_POLICY_", value, "overlap policy"
    )
    return schedule_service_pb2.OverlapPolicy.ValueType(number)


def create_schedule(
    cron: str,
    job: JobTemplate,
    *,
    display_name: str,
    time_zone: str,
    paused: bool,
    misfire: PolicyLike,
    overlap: PolicyLike,
) -> schedule_service_pb2.CreateScheduleRequest:
    schedule = schedule_service_pb2.Schedule(
        cron=cron,
        job=template(job),
        display_name=display_name,
        time_zone=time_zone,
        paused=paused,
        misfire_policy=misfire_policy(misfire),
        overlap_policy=overlap_policy(overlap),
    )
    return schedule_service_pb2.CreateScheduleRequest(schedule=schedule)


def update_schedule(
    schedule: str,
    *,
    display_name: str | None = None,
    cron: str | None = None,
    time_zone: str | None = None,
    job: JobTemplate | None = None,
    paused: bool | None = None,
    misfire: PolicyLike | None = None,
    overlap: PolicyLike | None = None,
) -> schedule_service_pb2.UpdateScheduleRequest:
    """An UpdateScheduleRequest whose update_mask names exactly the arguments that are not None.

    Raises:
        ValueError: Nothing to change was given, or a policy is not one.
    """
    named = schedule_service_pb2.Schedule(name=schedule_name(schedule))
    paths: list[str] = []
    if display_name is not None:
        named.display_name = display_name
        paths.append("display_name")
    if cron is not None:
        named.cron = cron
        paths.append("cron")
    if time_zone is not None:
        named.time_zone = time_zone
        paths.append("time_zone")
    if job is not None:
        named.job.CopyFrom(template(job))
        paths.append("job")
    if paused is not None:
        named.paused = paused
        paths.append("paused")
    if misfire is not None:
        named.misfire_policy = misfire_policy(misfire)
        paths.append("misfire_policy")
    if overlap is not None:
        named.overlap_policy = overlap_policy(overlap)
        paths.append("overlap_policy")
    if not paths:
        raise ValueError(
            "update_schedule needs at least one of display_name, cron, time_zone, job, paused, "
            "misfire_policy or overlap_policy"
        )
    return schedule_service_pb2.UpdateScheduleRequest(schedule=named, update_mask=FieldMask(paths=paths))
