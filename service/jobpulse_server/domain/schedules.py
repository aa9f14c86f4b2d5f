"""Schedules (ScheduleService): a cron expression read in a time zone, and the arithmetic of its ticks.

A tick is a time the expression names, in the schedule's zone (daylight saving time as the zone has it),
kept as microseconds since the epoch (UTC). ``next_run_time`` is the first tick not yet served; a pass
of the ticker at ``now`` serves what is due (``plan``): the one tick due, if it is at most a grace late,
else (missed ticks: a server was down, or the schedule could not be served) as the misfire policy says.
Plain Python over ``croniter`` and ``zoneinfo``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# jobpulse.v1.MisfirePolicy's and OverlapPolicy's numbers (the schedules table keeps them).
MISFIRE_UNSPECIFIED = 0
MISFIRE_RUN_ONCE = 1
MISFIRE_SKIP = 2
MISFIRE_POLICIES = (MISFIRE_UNSPECIFIED, MISFIRE_RUN_ONCE, MISFIRE_SKIP)
OVERLAP_UNSPECIFIED = 0
OVERLAP_ALLOW = 1
OVERLAP_SKIP = 2
OVERLAP_POLICIES = (OVERLAP_UNSPECIFIED, OVERLAP_ALLOW, OVERLAP_SKIP)

# A Schedule's resource name is this and its id.
SCHEDULE_NAME_PREFIX = "schedules/"
MAX_CRON = 256
MAX_TIME_ZONE = 64
_US = 1_000_000


@dataclass
class Schedule:
    """A stored schedule. ``job_template`` holds the fields of the NewJob each tick creates (without a
    request_id: each tick sets its own). Times in microseconds since the epoch; ``next_run_time`` is None
    while paused."""

    id: str
    owner: str
    cron: str
    job_template: dict[str, Any]
    display_name: str = ""
    time_zone: str = ""
    paused: bool = False
    misfire_policy: int = MISFIRE_RUN_ONCE
    overlap_policy: int = OVERLAP_ALLOW
    next_run_time: int | None = None
    last_run_time: int | None = None
    last_job_id: str | None = None
    create_time: int = 0
    update_time: int = 0

    @property
    def name(self) -> str:
        return SCHEDULE_NAME_PREFIX + self.id

    @property
    def job_prefix(self) -> str:
        """The start of the request_id of every job this schedule makes."""
        return f"{SCHEDULE_NAME_PREFIX}{self.id}/"


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is no 5-field cron expression jobpulse runs (None: it is one)."""
    fields = expression.split()
    if not expression.strip():
        return "is required, e.g. '*/5 * * * *' (minute hour day-of-month month day-of-week)"
    if len(expression) > MAX_CRON:
        return f"must be at most {MAX_CRON} characters (got {len(expression)})"
    if len(fields) != 5:
        return (
            f"must have 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}: "
            "no seconds, no years, no @-shortcuts"
        )
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid cron expression"
    try:
        next_tick(expression, "", 0)
    except (ValueError, KeyError, ArithmeticError):
        return f"{expression!r} names no time that ever comes"
    return None


def time_zone_problem(name: str) -> str | None:
    """Why ``name`` is no IANA time zone (None: it is one, or empty: UTC)."""
    if not name:
        return None
    if len(name) > MAX_TIME_ZONE:
        return f"must be at most {MAX_TIME_ZONE} characters (got {len(name)})"
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"{name!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'America/New_York', 'UTC')"
    return None


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | timezone:
    if not name:
        return timezone.utc
    if "\x00" in name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(name)
    return ZoneInfo(name)


def _at(us: int, zone: str) -> datetime:
    at = datetime.fromtimestamp(us // _US, _zone(zone))
    return at.replace(microsecond=us % _US)


def _us(at: datetime) -> int:
    return round(at.timestamp()) * _US


def next_tick(cron: str, zone: str, after: int) -> int:
    """The first tick of ``cron`` (read in ``zone``; empty: UTC) strictly after ``after``.

    Raises:
        ValueError: The expression names no time that ever comes (croniter's CroniterBadDateError).
    """
    found = croniter(cron, _at(after, zone)).get_next(datetime)
    return _us(found)


def last_tick(cron: str, zone: str, at_or_before: int) -> int:
    """The latest tick of ``cron`` at or before ``at_or_before``."""
    found = croniter(cron, _at(at_or_before + 1, zone)).get_prev(datetime)
    return _us(found)


@dataclass(frozen=True)
class Plan:
    """What a pass of the ticker does with a due schedule: make a job for ``tick`` (None: none), and
    move ``next_run_time`` to ``next_run_time``. ``missed``: whether ticks were missed (several due, or
    the one due later than the grace)."""

    tick: int | None
    next_run_time: int
    missed: bool = False
    reason: str = field(default="", compare=False)


def plan(schedule: Schedule, now: int, grace: int) -> Plan | None:
    """What to do with ``schedule`` at ``now`` (None: nothing is due). ``grace``: how late (us) the one
    tick due may be and still run as any tick does.

    The ticks due are those from ``next_run_time`` up to ``now``. One due, at most ``grace`` late: it
    runs. Otherwise (several due, or the one later than that) the misfire policy decides: RUN_ONCE (and
    UNSPECIFIED) makes one job, for the latest tick due; SKIP makes none. Either way the next run is the
    first tick after ``now``."""
    due = schedule.next_run_time
    if due is None or schedule.paused or due > now:
        return None
    cron, zone = schedule.cron, schedule.time_zone
    following = next_tick(cron, zone, now)
    second = next_tick(cron, zone, due)
    if second > now and now - due <= grace:
        return Plan(due, following)
    if schedule.misfire_policy == MISFIRE_SKIP:
        return Plan(None, following, missed=True, reason="missed ticks skipped (MISFIRE_POLICY_SKIP)")
    latest = last_tick(cron, zone, now) if second <= now else due
    return Plan(latest, following, missed=True, reason="missed ticks run once (MISFIRE_POLICY_RUN_ONCE)")


def rfc3339(us: int) -> str:
    """``us`` as an RFC 3339 UTC time, e.g. ``2026-11-29T05:00:00Z`` (fractions only when there are)."""
    at = datetime.fromtimestamp(us // _US, timezone.utc)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if us % _US:
        text += f".{us % _US:06d}".rstrip("0")
    return text + "Z"


def tick_request_id(schedule_id: str, tick: int) -> str:
    """The request_id of the job of one tick: the same for every replica and every retry of that tick,
    so the tick makes one job (CreateJob's request_id idempotency)."""
    return f"{SCHEDULE_NAME_PREFIX}{schedule_id}/{rfc3339(tick)}"


def trigger_request_id(schedule_id: str, trigger_id: str) -> str:
    """The request_id of the job of one TriggerSchedule."""
    return f"{SCHEDULE_NAME_PREFIX}{schedule_id}/trigger/{trigger_id}"
