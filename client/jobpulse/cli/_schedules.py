"""The ``schedules`` commands: create, list, show, change, pause, resume, delete and trigger schedules
(ScheduleService), each tick of which makes a job from the schedule's template."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

import jobpulse.cli._connection as _connection
from jobpulse.cli import _render
from jobpulse.cli._output import _print_json
from jobpulse.v1 import job_service_pb2, schedule_service_pb2

# The template flags `schedules create` and `schedules update` share: (flag's dest, create_job argument).
_JOB_FLAGS = (
    ("kind", "kind"),
    ("items", "total_items"),
    ("chunk_size", "chunk_size"),
    ("priority", "priority"),
    ("metadata", "metadata"),
    ("max_attempts", "max_attempts"),
    ("job_name", "display_name"),
    ("unique_key", "unique_key"),
)


def _id(schedule: schedule_service_pb2.Schedule) -> str:
    return schedule.name.removeprefix("schedules/")


def _policy(value: int, wrapper: Any, prefix: str) -> str:
    return str(wrapper.Name(value)).removeprefix(prefix).lower()


def _misfire(schedule: schedule_service_pb2.Schedule) -> str:
    return _policy(schedule.misfire_policy, schedule_service_pb2.MisfirePolicy, "MISFIRE_POLICY_")


def _overlap(schedule: schedule_service_pb2.Schedule) -> str:
    return _policy(schedule.overlap_policy, schedule_service_pb2.OverlapPolicy, "OVERLAP_POLICY_")


def schedules_table(schedules: Iterable[schedule_service_pb2.Schedule]) -> str:
    """The table printed by ``jobpulse schedules``."""
    rows = (
        (
            _id(s),
            s.display_name,
            s.cron,
            s.time_zone or "UTC",
            s.job.kind,
            "paused" if s.paused else _render.format_timestamp(s.next_run_time),
            s.last_job_id or "-",
        )
        for s in schedules
    )
    return _render.table(("ID", "NAME", "CRON", "TIME ZONE", "KIND", "NEXT RUN", "LAST JOB"), rows)


def schedule_text(s: schedule_service_pb2.Schedule) -> str:
    """The lines printed by ``jobpulse schedules get``."""
    job = s.job
    lines = [
        f"schedule {_id(s)}" + (f" ({s.display_name})" if s.display_name else ""),
        f"  cron        {s.cron} ({s.time_zone or 'UTC'})",
        f"  state       {'paused' if s.paused else 'active'}",
        f"  next run    {'-' if s.paused else _render.format_timestamp(s.next_run_time)}",
        f"  last run    {_render.format_timestamp(s.last_run_time) or '-'}"
        + (f" (job {s.last_job_id})" if s.last_job_id else ""),
        f"  misfire     {_misfire(s)}",
        f"  overlap     {_overlap(s)}",
        f"  job         kind {job.kind}, {job.total_items} items in chunks of {job.chunk_size}, "
        f"priority {job.priority}" + (f", named {job.display_name!r}" if job.display_name else ""),
        f"  owner       {s.owner}",
        f"  created     {_render.format_timestamp(s.create_time)}",
    ]
    return "\n".join(lines)


def _template(args: argparse.Namespace, base: job_service_pb2.CreateJobRequest | None = None) -> Any:
    """The job template the flags give: create_job's arguments (create), or ``base`` with the flags
    given applied (update; None when no template flag was given)."""
    given = {arg: getattr(args, dest) for dest, arg in _JOB_FLAGS if getattr(args, dest, None) is not None}
    labels = getattr(args, "label", None)
    if base is None:
        return {**given, "labels": dict(labels or [])}
    if not given and labels is None:
        return None
    job = job_service_pb2.CreateJobRequest()
    job.CopyFrom(base)
    for arg, value in given.items():
        if arg == "metadata":
            job.metadata.Clear()
            job.metadata.update(value)
        else:
            setattr(job, arg, value)
    if labels is not None:
        job.labels.clear()
        job.labels.update(dict(labels))
    return job


def _cmd_list(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        schedules = list(client.list_schedules())
    if args.json:
        _print_json({"schedules": [_render.to_dict(s) for s in schedules]})
        return 0
    if not schedules:
        print("no schedules: `jobpulse schedules create --cron '0 3 * * *' --kind KIND --items N` makes one")
        return 0
    print(schedules_table(schedules))
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        made = client.create_schedule(
            args.cron,
            _template(args),
            display_name=args.name,
            time_zone=args.time_zone,
            paused=args.paused,
            misfire_policy=args.misfire,
            overlap_policy=args.overlap,
        )
    if args.json:
        _print_json(made)
    elif made.paused:
        print(f"created schedule {_id(made)} ({made.cron}), paused")
    else:
        at = _render.format_timestamp(made.next_run_time)
        print(f"created schedule {_id(made)} ({made.cron}, {made.time_zone or 'UTC'}): first run at {at}")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        found = client.get_schedule(args.schedule)
    if args.json:
        _print_json(found)
    else:
        print(schedule_text(found))
    return 0


def _cmd_update(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        job = None
        if any(getattr(args, dest, None) is not None for dest, _ in _JOB_FLAGS) or args.label is not None:
            job = _template(args, client.get_schedule(args.schedule).job)
        updated = client.update_schedule(
            args.schedule,
            display_name=args.name,
            cron=args.cron,
            time_zone=args.time_zone,
            job=job,
            misfire_policy=args.misfire,
            overlap_policy=args.overlap,
        )
    return _said(args, updated, "updated")


def _cmd_pause(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        updated = client.update_schedule(args.schedule, paused=True)
    return _said(args, updated, "paused: it makes no jobs until it is resumed")


def _cmd_resume(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        updated = client.update_schedule(args.schedule, paused=False)
    return _said(args, updated, "resumed")


def _cmd_delete(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        client.delete_schedule(args.schedule)
    if args.json:
        _print_json({"deleted": args.schedule})
    else:
        print(f"deleted schedule {args.schedule.removeprefix('schedules/')} (the jobs it made are kept)")
    return 0


def _cmd_trigger(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        response = client.trigger_schedule(args.schedule)
    if args.json:
        _print_json(response)
    else:
        print(f"triggered schedule {_id(response.schedule)}: created job {response.job.id}")
    return 0


def _said(args: argparse.Namespace, schedule: schedule_service_pb2.Schedule, what: str) -> int:
    if args.json:
        _print_json(schedule)
    else:
        at = "paused" if schedule.paused else f"next run {_render.format_timestamp(schedule.next_run_time)}"
        print(f"schedule {_id(schedule)} {what} ({schedule.cron}, {at})")
    return 0
