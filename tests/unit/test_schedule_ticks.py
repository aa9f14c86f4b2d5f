"""The arithmetic of a schedule's ticks (domain/schedules.py, over croniter): the next tick in a time zone
across daylight saving time, what a pass does with the ticks due (one on time, one late, several
missed) under each misfire policy, the checks of a cron expression and a time zone, and the request_id
of a tick's job."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from jobpulse_server.domain.schedules import (
    MISFIRE_RUN_ONCE,
    MISFIRE_SKIP,
    MISFIRE_UNSPECIFIED,
    Plan,
    Schedule,
    cron_problem,
    last_tick,
    next_tick,
    plan,
    rfc3339,
    tick_request_id,
    time_zone_problem,
)

MINUTE = 60_000_000
GRACE = MINUTE


def _us(text: str) -> int:
    """An RFC 3339 UTC time in microseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()) * 1_000_000


def _schedule(cron: str, next_run: str, misfire: int = MISFIRE_RUN_ONCE, zone: str = "") -> Schedule:
    return Schedule(
        id="S",
        owner="alice",
        cron=cron,
        job_template={},
        time_zone=zone,
        misfire_policy=misfire,
        next_run_time=_us(next_run),
    )


def test_the_next_tick_is_strictly_after_and_in_utc_by_default() -> None:
    assert next_tick("*/5 * * * *", "", _us("2026-11-29T05:00:00Z")) == _us("2026-11-29T05:05:00Z")
    assert next_tick("*/5 * * * *", "", _us("2026-11-29T05:03:59Z")) == _us("2026-11-29T05:05:00Z")
    # Sunday 29 November 2026 -> Monday.
    assert next_tick("0 3 * * mon-fri", "", _us("2026-11-29T05:00:00Z")) == _us("2026-11-30T03:00:00Z")
    assert last_tick("*/5 * * * *", "", _us("2026-11-29T05:05:00Z")) == _us("2026-11-29T05:05:00Z")
    assert last_tick("*/5 * * * *", "", _us("2026-11-29T05:09:59Z")) == _us("2026-11-29T05:05:00Z")


def test_ticks_are_read_in_the_time_zone_across_daylight_saving_time() -> None:
    berlin = "Europe/Berlin"
    # 03:00 in Berlin is 02:00Z in winter (CET) and 01:00Z in summer (CEST).
    assert next_tick("0 3 * * *", berlin, _us("2026-03-28T12:00:00Z")) == _us("2026-03-29T01:00:00Z")
    assert next_tick("0 3 * * *", berlin, _us("2026-03-27T12:00:00Z")) == _us("2026-03-28T02:00:00Z")
    # 02:30 does not exist on 29 March 2026 in Berlin (02:00 -> 03:00): the tick is at 03:00 CEST.
    assert next_tick("30 2 * * *", berlin, _us("2026-03-28T12:00:00Z")) == _us("2026-03-29T01:00:00Z")
    # New York's 09:00 moves from 14:00Z (EST) to 13:00Z (EDT) on 8 March 2026.
    ny = "America/New_York"
    assert next_tick("0 9 * * *", ny, _us("2026-03-07T20:00:00Z")) == _us("2026-03-08T13:00:00Z")
    assert next_tick("0 9 * * *", ny, _us("2026-03-06T20:00:00Z")) == _us("2026-03-07T14:00:00Z")


def test_nothing_is_due_before_the_next_run_nor_while_paused() -> None:
    s = _schedule("*/5 * * * *", "2026-11-29T05:05:00Z")
    assert plan(s, _us("2026-11-29T05:04:59Z"), GRACE) is None
    s.paused = True
    assert plan(s, _us("2026-11-29T06:00:00Z"), GRACE) is None
    s.paused, s.next_run_time = False, None
    assert plan(s, _us("2026-11-29T06:00:00Z"), GRACE) is None


@pytest.mark.parametrize("misfire", [MISFIRE_RUN_ONCE, MISFIRE_SKIP, MISFIRE_UNSPECIFIED])
def test_the_one_tick_due_runs_on_time_and_within_the_grace_whatever_the_policy(misfire: int) -> None:
    s = _schedule("*/5 * * * *", "2026-11-29T05:05:00Z", misfire)
    following = _us("2026-11-29T05:10:00Z")
    assert plan(s, _us("2026-11-29T05:05:00Z"), GRACE) == Plan(_us("2026-11-29T05:05:00Z"), following)
    assert plan(s, _us("2026-11-29T05:06:00Z"), GRACE) == Plan(_us("2026-11-29T05:05:00Z"), following)


def test_one_tick_later_than_the_grace_runs_once_or_is_skipped() -> None:
    now = _us("2026-11-29T05:06:01Z")
    run_once = plan(_schedule("*/5 * * * *", "2026-11-29T05:05:00Z"), now, GRACE)
    assert run_once == Plan(_us("2026-11-29T05:05:00Z"), _us("2026-11-29T05:10:00Z"), missed=True)
    skip = plan(_schedule("*/5 * * * *", "2026-11-29T05:05:00Z", MISFIRE_SKIP), now, GRACE)
    assert skip == Plan(None, _us("2026-11-29T05:10:00Z"), missed=True)


@pytest.mark.parametrize("misfire", [MISFIRE_RUN_ONCE, MISFIRE_UNSPECIFIED])
def test_missed_ticks_make_one_job_for_the_latest_with_run_once(misfire: int) -> None:
    # Down from 05:04 to 08:07:30: 37 ticks missed; even a few seconds after the latest, one job.
    s = _schedule("*/5 * * * *", "2026-11-29T05:05:00Z", misfire)
    got = plan(s, _us("2026-11-29T08:07:30Z"), GRACE)
    assert got == Plan(_us("2026-11-29T08:05:00Z"), _us("2026-11-29T08:10:00Z"), missed=True)
    # Two due, the second just now.
    got = plan(s, _us("2026-11-29T05:10:00Z"), GRACE)
    assert got == Plan(_us("2026-11-29T05:10:00Z"), _us("2026-11-29T05:15:00Z"), missed=True)


def test_missed_ticks_make_no_job_with_skip_and_the_next_run_is_after_now() -> None:
    s = _schedule("*/5 * * * *", "2026-11-29T05:05:00Z", MISFIRE_SKIP)
    got = plan(s, _us("2026-11-30T00:00:00Z"), GRACE)
    assert got == Plan(None, _us("2026-11-30T00:05:00Z"), missed=True)


def test_a_year_of_missed_minutes_is_planned_without_walking_them() -> None:
    s = _schedule("* * * * *", "2025-11-29T05:05:00Z")
    got = plan(s, _us("2026-11-29T05:05:30Z"), GRACE)
    assert got == Plan(_us("2026-11-29T05:05:00Z"), _us("2026-11-29T05:06:00Z"), missed=True)


def test_missed_ticks_in_a_time_zone() -> None:
    s = _schedule("0 3 * * *", "2026-03-27T02:00:00Z", zone="Europe/Berlin")
    got = plan(s, _us("2026-03-30T00:00:00Z"), GRACE)
    # The latest 03:00 in Berlin before then: 29 March, in summer time.
    assert got == Plan(_us("2026-03-29T01:00:00Z"), _us("2026-03-30T01:00:00Z"), missed=True)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("*/5 * * * *", None),
        ("0 3 * * mon-fri", None),
        ("0 0 29 2 *", None),
        ("", "is required"),
        ("* * * * * *", "5 fields"),
        ("0 0 1 1 * 2030", "5 fields"),
        ("@daily", "5 fields"),
        ("* * *", "5 fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("a b c d e", "not a valid cron expression"),
        ("0 0 30 2 *", "names no time that ever comes"),
        ("* " * 200 + "*", "at most 256 characters"),
    ],
)
def test_cron_expressions_jobpulse_runs(expression: str, problem: str | None) -> None:
    found = cron_problem(expression)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("", True),
        ("UTC", True),
        ("Europe/Berlin", True),
        ("America/Argentina/Buenos_Aires", True),
        ("Mars/Olympus_Mons", False),
        ("../../etc/passwd", False),
        ("/etc/localtime", False),
        ("Europe/Berlin\x00", False),
        ("x" * 65, False),
    ],
)
def test_time_zones(name: str, ok: bool) -> None:
    assert (time_zone_problem(name) is None) == ok


def test_a_ticks_request_id_names_the_schedule_and_the_tick_in_rfc_3339_utc() -> None:
    tick = _us("2026-11-29T05:00:00Z")
    assert tick_request_id("01ABC", tick) == "schedules/01ABC/2026-11-29T05:00:00Z"
    assert rfc3339(tick + 250_000) == "2026-11-29T05:00:00.25Z"
    assert datetime.fromisoformat(rfc3339(tick).replace("Z", "+00:00")) == datetime(
        2026, 11, 29, 5, tzinfo=timezone.utc
    )
