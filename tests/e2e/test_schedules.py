"""End-to-end: ScheduleService on both databases, through real servers and channels: CreateSchedule,
GetSchedule, ListSchedules, UpdateSchedule, DeleteSchedule and TriggerSchedule (the SDK, the stubs, the
JSON face and the CLI), their checks naming the field, who sees a schedule, and the ticks: exactly one
job per tick when the ticker runs twice for a tick or two servers share a PostgreSQL database, missed
ticks under each misfire policy, the overlap policy, unique keys and paused schedules.

No test waits a real minute: the ticker's one pass (``app.schedules.tick(now)``) runs with a chosen
``now``; the background ticker is tested by moving a schedule's next run to a tick just passed."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from support.polling import eventually

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2, schedule_service_pb2, schedule_service_pb2_grpc
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.schedules import rfc3339
from jobpulse_server.services import keys

MINUTE = 60_000_000
REPORT = {"kind": "report", "total_items": 2, "chunk_size": 1}


def _us(stamp: Any) -> int:
    return int(stamp.seconds) * 1_000_000 + int(stamp.nanos) // 1000


def _id(schedule: schedule_service_pb2.Schedule) -> str:
    return schedule.name.removeprefix("schedules/")


def _tick(srv: Any, now: int) -> int:
    """One pass of the server's ticker at ``now``; the jobs it made."""
    return int(srv.call(srv.app.schedules.tick(now)))


def _made(srv: Any, schedule: schedule_service_pb2.Schedule) -> list[str]:
    """The request_ids of the jobs the schedule made, newest first."""

    async def read() -> list[str]:
        async with srv.app.db.read() as tx:
            jobs = await tx.schedule_jobs(schedule.owner, f"{schedule.name}/", 100)
        return [j.request_id for j in jobs]

    return list(srv.call(read()))


@pytest.fixture
def stub(server: Any) -> Any:
    channel = grpc.insecure_channel(server.address)
    yield schedule_service_pb2_grpc.ScheduleServiceStub(channel)
    channel.close()


# --- the resource --------------------------------------------------------------------------------


def test_create_get_list_update_trigger_and_delete(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule(
        "0 3 * * mon-fri",
        {"kind": "report", "total_items": 10, "chunk_size": 5, "labels": {"team": "ops"}},
        display_name="Nightly report",
        time_zone="Europe/Berlin",
    )
    assert made.name.startswith("schedules/") and made.owner == "anonymous"
    assert (made.cron, made.time_zone, made.display_name, made.paused) == (
        "0 3 * * mon-fri",
        "Europe/Berlin",
        "Nightly report",
        False,
    )
    assert made.misfire_policy == schedule_service_pb2.MISFIRE_POLICY_RUN_ONCE
    assert made.overlap_policy == schedule_service_pb2.OVERLAP_POLICY_ALLOW
    # The template as CreateJob takes it, after its defaults; the first tick is the next 03:00 in Berlin
    # (02:00Z in winter, 01:00Z in summer), a weekday, after now.
    assert (made.job.kind, made.job.total_items, made.job.chunk_size, made.job.priority) == (
        "report",
        10,
        5,
        5,
    )
    assert dict(made.job.labels) == {"team": "ops"} and not made.job.request_id
    first = made.next_run_time.ToDatetime()
    assert first.minute == 0 and first.hour in (1, 2) and first.weekday() < 5
    assert 0 < _us(made.next_run_time) - time.time() * 1e6 <= 4 * 86_400e6
    assert not made.last_job_id and not made.HasField("last_run_time")

    assert client.get_schedule(made.name) == made
    assert client.get_schedule(_id(made)) == made
    other = client.create_schedule("*/5 * * * *", {"kind": "poll", "total_items": 1})
    assert [s.name for s in client.list_schedules()] == [made.name, other.name]

    # Trigger: a job now, its ticks unmoved.
    triggered = client.trigger_schedule(made.name)
    assert triggered.job.kind == "report" and triggered.job.chunks_summary.total == 2
    assert triggered.job.labels["team"] == "ops" and len(triggered.job.chunks) == 2
    assert triggered.schedule.last_job_id == triggered.job.id
    assert triggered.schedule.next_run_time == made.next_run_time
    assert abs(_us(triggered.schedule.last_run_time) - time.time() * 1e6) < 60e6
    assert _made(server, made) == [f"{made.name}/trigger/" + _made(server, made)[0].rsplit("/", 1)[1]]

    # Update: a new cron counts from now; a pause clears the next run, a resume counts it again.
    updated = client.update_schedule(made.name, cron="*/10 * * * *", time_zone="", display_name="Often")
    assert (updated.cron, updated.time_zone, updated.display_name) == ("*/10 * * * *", "", "Often")
    assert updated.next_run_time.ToDatetime().minute % 10 == 0
    assert updated.last_job_id == triggered.job.id and updated.job == made.job
    paused = client.update_schedule(made.name, paused=True)
    assert paused.paused and not paused.HasField("next_run_time")
    resumed = client.update_schedule(made.name, paused=False)
    assert not resumed.paused and resumed.next_run_time == updated.next_run_time
    templated = client.update_schedule(
        made.name, job={"kind": "digest", "total_items": 1}, misfire_policy="skip", overlap_policy="skip"
    )
    assert (templated.job.kind, templated.job.total_items, templated.job.chunk_size) == ("digest", 1, 500)
    assert templated.misfire_policy == schedule_service_pb2.MISFIRE_POLICY_SKIP
    assert templated.overlap_policy == schedule_service_pb2.OVERLAP_POLICY_SKIP
    assert templated.next_run_time == updated.next_run_time and templated.cron == "*/10 * * * *"

    # Delete: gone, the jobs it made kept.
    client.delete_schedule(made.name)
    with pytest.raises(errors.NotFound) as gone:
        client.get_schedule(made.name)
    assert gone.value.reason == "SCHEDULE_NOT_FOUND"
    with pytest.raises(errors.NotFound):
        client.delete_schedule(made.name)
    assert client.get_job(triggered.job.id).id == triggered.job.id
    assert [s.name for s in client.list_schedules()] == [other.name]


def test_list_schedules_pages_oldest_first(client: jobpulse.Client, stub: Any) -> None:
    names = [client.create_schedule("0 * * * *", {"kind": "k", "total_items": 1}).name for _ in range(5)]
    assert [s.name for s in client.list_schedules(page_size=2)] == names
    seen, sizes, token = [], [], ""
    while True:
        page = stub.ListSchedules(schedule_service_pb2.ListSchedulesRequest(page_size=2, page_token=token))
        seen += [s.name for s in page.schedules]
        sizes.append(len(page.schedules))
        token = page.next_page_token
        if not token:
            break
    assert (seen, sizes) == (names, [2, 2, 1])
    for bad in ("not-a-token", "eyJ2IjoxLCJ0Ijoia2luZHMiLCJmIjoiIiwiayI6WyJ4Il19"):
        with pytest.raises(grpc.RpcError) as info:
            stub.ListSchedules(schedule_service_pb2.ListSchedulesRequest(page_token=bad))
        assert errors.from_rpc_error(info.value).reason == "INVALID_PAGE_TOKEN"


def _create(**schedule: Any) -> schedule_service_pb2.CreateScheduleRequest:
    fields = {"cron": "*/5 * * * *", "job": job_service_pb2.CreateJobRequest(kind="k", total_items=1)}
    fields.update(schedule)
    return schedule_service_pb2.CreateScheduleRequest(schedule=schedule_service_pb2.Schedule(**fields))


def _job(**fields: Any) -> job_service_pb2.CreateJobRequest:
    return job_service_pb2.CreateJobRequest(**{"kind": "k", "total_items": 1, **fields})


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (_create(cron="* * * * * *"), ["schedule.cron"]),
        (_create(cron="@hourly"), ["schedule.cron"]),
        (_create(cron="61 * * * *"), ["schedule.cron"]),
        (_create(cron=""), ["schedule.cron"]),
        (_create(cron="0 0 30 2 *"), ["schedule.cron"]),
        (_create(time_zone="Mars/Olympus_Mons"), ["schedule.time_zone"]),
        (_create(time_zone="Europe/Berlin", cron="nope"), ["schedule.cron"]),
        (_create(job=None), ["schedule.job"]),
        (_create(job=_job(total_items=0)), ["schedule.job.total_items"]),
        (
            _create(job=_job(priority=11, max_attempts=101)),
            ["schedule.job.priority", "schedule.job.max_attempts"],
        ),
        (_create(job=_job(request_id="mine")), ["schedule.job.request_id"]),
        (_create(job=_job(schedule_time={"seconds": 2_000_000_000})), ["schedule.job.schedule_time"]),
        (_create(job=_job(webhook_url="ftp://x")), ["schedule.job.webhook_url"]),
        (_create(job=_job(total_items=10_000_000, chunk_size=1)), ["schedule.job.total_items"]),
        (_create(misfire_policy=7, overlap_policy=9), ["schedule.misfire_policy", "schedule.overlap_policy"]),
        (_create(display_name="x" * 257), ["schedule.display_name"]),
        (
            _create(cron="x", time_zone="Nowhere/Else", job=_job(kind="a\x00b")),
            ["schedule.cron", "schedule.time_zone", "schedule.job.kind"],
        ),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(stub: Any, request_: Any, fields: list[str]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateSchedule(request_)
    error = errors.from_rpc_error(info.value)
    assert isinstance(error, errors.InvalidArgument), error
    assert sorted(f for f, _ in error.field_violations) == sorted(fields)


def test_update_checks_its_mask_and_fields(client: jobpulse.Client, stub: Any) -> None:
    name = client.create_schedule("0 * * * *", REPORT).name

    def refused(request: schedule_service_pb2.UpdateScheduleRequest) -> list[str]:
        with pytest.raises(grpc.RpcError) as info:
            stub.UpdateSchedule(request)
        error = errors.from_rpc_error(info.value)
        assert isinstance(error, errors.InvalidArgument) or isinstance(error, errors.NotFound), error
        return [f for f, _ in getattr(error, "field_violations", [])] or [error.reason]

    def update(mask: list[str] | None = None, **fields: Any) -> schedule_service_pb2.UpdateScheduleRequest:
        request = schedule_service_pb2.UpdateScheduleRequest(schedule=schedule_service_pb2.Schedule(**fields))
        if mask is not None:
            request.update_mask.CopyFrom(FieldMask(paths=mask))
        return request

    assert refused(update(name=name)) == ["update_mask"]
    assert refused(update(["owner"], name=name)) == ["update_mask"]
    assert refused(update(["next_run_time"], name=name)) == ["update_mask"]
    assert refused(update(["cron"], name=name)) == ["schedule.cron"]
    assert refused(update(["cron"], name=name, cron="* * * * * *")) == ["schedule.cron"]
    assert refused(update(["time_zone"], name=name, time_zone="Nowhere")) == ["schedule.time_zone"]
    assert refused(update(["job"], name=name)) == ["schedule.job"]
    assert refused(update(name=name, job=_job(total_items=-1))) == ["schedule.job.total_items"]
    assert refused(update(name="jobs/x", paused=True)) == ["schedule.name"]
    assert refused(update(name="schedules/", paused=True)) == ["schedule.name"]
    assert refused(update(name="schedules/NOPE", paused=True)) == ["SCHEDULE_NOT_FOUND"]
    # Named in the mask, a field is set back to its default: UTC, unpaused.
    client.update_schedule(name, time_zone="Asia/Tokyo", paused=True)
    back = stub.UpdateSchedule(update(["time_zone", "paused"], name=name)).schedule
    assert (back.time_zone, back.paused, back.HasField("next_run_time")) == ("", False, True)
    with pytest.raises(ValueError, match="at least one"):
        client.update_schedule(name)


def test_another_owners_schedule_is_not_found(make_keyed: Callable[..., Any]) -> None:
    srv, made = make_keyed()
    with (
        jobpulse.Client(srv.address, api_key=made["alice"]) as alice,
        jobpulse.Client(srv.address, api_key=made["bob"]) as bob,
        jobpulse.Client(srv.address, api_key=made["root"]) as root,
        jobpulse.Client(srv.address, api_key=made["w"]) as worker,
    ):
        mine = alice.create_schedule("0 3 * * *", REPORT)
        assert mine.owner == "alice"
        for call in (
            lambda: bob.get_schedule(mine.name),
            lambda: bob.update_schedule(mine.name, paused=True),
            lambda: bob.trigger_schedule(mine.name),
            lambda: bob.delete_schedule(mine.name),
        ):
            with pytest.raises(errors.NotFound) as info:
                call()
            assert info.value.reason == "SCHEDULE_NOT_FOUND"
        assert list(bob.list_schedules()) == []
        bobs = bob.create_schedule("0 4 * * *", REPORT)
        assert [s.name for s in alice.list_schedules()] == [mine.name]
        # A key that sees every owner sees (and may act on) both; the job it triggers is the owner's.
        assert [s.name for s in root.list_schedules()] == [mine.name, bobs.name]
        triggered = root.trigger_schedule(mine.name)
        assert triggered.job.owner == "alice"
        assert alice.get_job(triggered.job.id).id == triggered.job.id
        with pytest.raises(errors.NotFound):
            bob.get_job(triggered.job.id)
        # A worker key may not call ScheduleService.
        with pytest.raises(errors.PermissionDenied):
            list(worker.list_schedules())


def test_a_ticks_job_takes_its_owners_default_webhook(make_server: Callable[..., Any]) -> None:
    # The key's default webhook URL as of the tick, as a CreateJob with that key would take it; the
    # template's own URL wins. (Nothing is delivered here: the URL only has to be kept.)
    srv = make_server()
    key = srv.call(keys.create_key(srv.app.db, "team-a", "client", "http://127.0.0.1:9/hooks"))
    srv.call(srv.app.auth.refresh())
    with jobpulse.Client(srv.address, api_key=key) as client:
        plain = client.create_schedule("0 * * * *", REPORT)
        own = client.create_schedule("0 * * * *", {**REPORT, "webhook_url": "http://127.0.0.1:9/own"})
        triggered = client.trigger_schedule(plain.name).job
        assert _tick(srv, _us(plain.next_run_time)) == 2
        ticked = client.get_job(client.get_schedule(plain.name).last_job_id)
        kept = client.get_job(client.get_schedule(own.name).last_job_id)
    assert triggered.webhook_url == ticked.webhook_url == "http://127.0.0.1:9/hooks"
    assert kept.webhook_url == "http://127.0.0.1:9/own"


# --- the ticks -----------------------------------------------------------------------------------


def test_a_tick_makes_one_job_owned_by_the_owner_and_claimable(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("*/5 * * * *", REPORT)
    tick = _us(made.next_run_time)
    assert _tick(server, tick - 1) == 0
    assert _tick(server, tick) == 1
    after = client.get_schedule(made.name)
    assert _us(after.last_run_time) == tick and _us(after.next_run_time) == tick + 5 * MINUTE
    job = client.get_job(after.last_job_id)
    assert (job.kind, job.owner, job.chunks_summary.total, job.state) == (
        "report",
        "anonymous",
        2,
        job_pb2.JOB_STATE_PENDING,
    )
    assert _made(server, made) == [f"{made.name}/{rfc3339(tick)}"]
    claims = client.claim_chunks("w1", kinds=["report"], max_chunks=2)
    assert {c.chunk.job_id for c in claims} == {job.id}


def test_a_tick_served_twice_makes_one_job(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("0 * * * *", REPORT)
    tick = _us(made.next_run_time)
    service = server.app.schedules
    stale = server.call(service.get_schedule(ANONYMOUS, _id(made)))

    # Two passes at once on one server, then the same tick again from what a pass cut short (after its
    # job, before it moved the schedule on) had read: the tick's request_id finds the first job.
    async def twice() -> list[int]:
        return list(await asyncio.gather(service.tick(tick), service.tick(tick)))

    assert sorted(server.call(twice())) in ([0, 1], [1, 1])
    assert server.call(service.serve(stale, tick)) == 1
    assert _tick(server, tick) == 0
    assert _made(server, made) == [f"{made.name}/{rfc3339(tick)}"]
    after = client.get_schedule(made.name)
    assert _us(after.next_run_time) == tick + 60 * MINUTE
    # A restart keeps it: the next pass serves the next tick only.
    server.restart()
    with jobpulse.Client(server.address) as again:
        assert _tick(server, tick + 60 * MINUTE) == 1
        assert len(_made(server, made)) == 2
        assert again.get_schedule(made.name).last_job_id != after.last_job_id


def test_missed_ticks_run_once(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("*/5 * * * *", REPORT)
    first = _us(made.next_run_time)
    # The server was down for three hours: one job, for the latest tick missed.
    now = first + 3 * 60 * MINUTE + 30_000_000
    assert _tick(server, now) == 1
    latest = first + 3 * 60 * MINUTE
    assert _made(server, made) == [f"{made.name}/{rfc3339(latest)}"]
    after = client.get_schedule(made.name)
    assert _us(after.last_run_time) == latest and _us(after.next_run_time) == latest + 5 * MINUTE


def test_missed_ticks_are_skipped(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("*/5 * * * *", REPORT, misfire_policy="skip")
    first = _us(made.next_run_time)
    assert _tick(server, first + 3 * 60 * MINUTE + 30_000_000) == 0
    after = client.get_schedule(made.name)
    assert _us(after.next_run_time) == first + 3 * 60 * MINUTE + 5 * MINUTE
    assert not after.last_job_id and _made(server, made) == []
    # One tick late by more than the grace (60 s): skipped too; within it: run.
    late = _us(after.next_run_time)
    assert _tick(server, late + 61_000_000) == 0
    on_time = late + 5 * MINUTE
    assert _tick(server, on_time + 59_000_000) == 1
    assert _made(server, made) == [f"{made.name}/{rfc3339(on_time)}"]


def test_overlap_skip_makes_no_job_while_the_last_one_runs(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("*/5 * * * *", REPORT, overlap_policy="skip")
    tick = _us(made.next_run_time)
    assert _tick(server, tick) == 1
    first = client.get_schedule(made.name).last_job_id
    # Still pending: the next tick makes none, and moves on all the same.
    assert _tick(server, tick + 5 * MINUTE) == 0
    after = client.get_schedule(made.name)
    assert after.last_job_id == first and _us(after.next_run_time) == tick + 10 * MINUTE
    # Once it has ended, the next tick makes one.
    client.cancel_job(first)
    assert _tick(server, tick + 10 * MINUTE) == 1
    assert client.get_schedule(made.name).last_job_id != first
    # With ALLOW (the default), a tick makes a job whatever the last one does.
    client.update_schedule(made.name, overlap_policy="allow")
    assert _tick(server, tick + 15 * MINUTE) == 1
    assert len(_made(server, made)) == 3


def test_overlap_skip_on_one_pass_and_a_job_on_another_keeps_the_newest_job(
    server: Any, client: jobpulse.Client
) -> None:
    # Two replicas serve one tick: the first sees the last job running and skips (moving the schedule
    # on), the second read it after it ended and makes a job, then loses the move. That job is the
    # schedule's last all the same, so the next tick's overlap check looks at it.
    made = client.create_schedule("*/5 * * * *", REPORT, overlap_policy="skip")
    tick = _us(made.next_run_time)
    assert _tick(server, tick) == 1
    first = client.get_schedule(made.name).last_job_id
    service = server.app.schedules
    stale = server.call(service.get_schedule(ANONYMOUS, _id(made)))
    second = tick + 5 * MINUTE
    assert server.call(service.serve(stale, second)) == 0  # the first pass: skipped
    client.cancel_job(first)
    assert server.call(service.serve(stale, second)) == 1  # the second: a job, the move lost
    after = client.get_schedule(made.name)
    assert after.last_job_id != first
    assert _made(server, made)[0] == f"{made.name}/{rfc3339(second)}"
    assert _us(after.last_run_time) == second and _us(after.next_run_time) == tick + 10 * MINUTE
    # It is still pending: the next tick makes none.
    assert _tick(server, tick + 10 * MINUTE) == 0


def test_a_unique_key_held_skips_the_tick(server: Any, client: jobpulse.Client) -> None:
    made = client.create_schedule("*/5 * * * *", {**REPORT, "unique_key": "daily"})
    tick = _us(made.next_run_time)
    assert _tick(server, tick) == 1
    first = client.get_schedule(made.name).last_job_id
    # The first job still holds the key: the next tick makes none (ALREADY_EXISTS), and moves on.
    assert _tick(server, tick + 5 * MINUTE) == 0
    after = client.get_schedule(made.name)
    assert after.last_job_id == first and _us(after.next_run_time) == tick + 10 * MINUTE
    assert _tick(server, tick + 10 * MINUTE + 1) == 0  # no loop: the next one is later


def test_a_paused_schedule_makes_nothing(server: Any, client: jobpulse.Client) -> None:
    held = client.create_schedule("* * * * *", REPORT, paused=True)
    assert held.paused and not held.HasField("next_run_time")
    running = client.create_schedule("* * * * *", REPORT)
    tick = _us(running.next_run_time)
    client.update_schedule(running.name, paused=True)
    assert _tick(server, tick + 10 * 86_400_000_000) == 0
    assert _made(server, held) == [] and _made(server, running) == []
    # Trigger still makes one.
    assert client.trigger_schedule(held.name).job.kind == "report"


def test_the_background_ticker_makes_the_job_of_a_tick_just_passed(
    server: Any, client: jobpulse.Client
) -> None:
    made = client.create_schedule("* * * * *", REPORT)
    now = time.time_ns() // 1000
    minute = now - now % MINUTE  # a tick at most a minute ago: within the grace

    async def due_now() -> bool:
        return bool(
            await server.app.db.write(
                lambda tx: tx.advance_schedule(_id(made), _us(made.next_run_time), minute, None, None, now)
            )
        )

    assert server.call(due_now())
    server.loop.call_soon_threadsafe(server.app.schedules.wake)
    # A waiting claim gets its chunks as soon as the ticker has made the job.
    claims = client.claim_chunks("w1", kinds=["report"], max_chunks=2, wait=15)
    assert claims, "no job within 15 s"
    made_jobs = eventually(lambda: _made(server, made), what="the tick's job")
    assert made_jobs[-1].startswith(f"{made.name}/")
    assert eventually(lambda: client.get_schedule(made.name).last_job_id) == claims[0].chunk.job_id


# --- two servers, one database ---------------------------------------------------------------------


def test_two_servers_make_one_job_per_tick(make_server: Callable[..., Any], database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several servers share a database only on PostgreSQL")
    a, b = make_server(), make_server()
    with jobpulse.Client(a.address) as client:
        made = client.create_schedule("*/5 * * * *", REPORT)
        first = _us(made.next_run_time)
        for n in range(5):
            tick = first + n * 5 * MINUTE
            passes = [
                asyncio.run_coroutine_threadsafe(srv.app.schedules.tick(tick), srv.loop) for srv in (a, b)
            ]
            for p in passes:
                p.result(30)
        assert _made(a, made) == [
            f"{made.name}/{rfc3339(first + n * 5 * MINUTE)}" for n in reversed(range(5))
        ]
        after = client.get_schedule(made.name)
        assert _us(after.next_run_time) == first + 25 * MINUTE
        assert _us(after.last_run_time) == first + 20 * MINUTE


# --- the JSON face and the CLI ----------------------------------------------------------------------


def test_schedules_over_http(server: Any) -> None:
    base = f"{server.app.http_url}/v1"
    empty = httpx.get(base + "/schedules")
    assert (empty.status_code, empty.json().get("schedules", [])) == (200, [])
    body = {"cron": "0 6 * * *", "timeZone": "America/New_York", "job": {"kind": "report", "totalItems": 3}}
    made = httpx.post(base + "/schedules", json=body)
    assert made.status_code == 200, made.text
    name = made.json()["schedule"]["name"]
    assert made.json()["schedule"]["job"]["totalItems"] == "3"
    listed = httpx.get(base + "/schedules").json()
    assert [s["name"] for s in listed["schedules"]] == [name]
    assert httpx.get(f"{base}/{name}").json()["schedule"]["cron"] == "0 6 * * *"
    paused = httpx.patch(f"{base}/{name}", params={"updateMask": "paused"}, json={"paused": True})
    assert paused.json()["schedule"]["paused"] is True and "nextRunTime" not in paused.json()["schedule"]
    triggered = httpx.post(f"{base}/{name}:trigger", json={})
    assert triggered.json()["schedule"]["lastJobId"] == triggered.json()["job"]["id"]
    bad = httpx.post(base + "/schedules", json={**body, "cron": "* * * * * *"})
    assert bad.status_code == 400 and "schedule.cron" in bad.text
    assert httpx.delete(f"{base}/{name}").status_code == 200
    missing = httpx.get(f"{base}/{name}")
    assert missing.status_code == 404 and "SCHEDULE_NOT_FOUND" in missing.text


def test_the_cli_manages_schedules(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--target", server.address]
    assert cli.main([*target, "schedules"]) == 0
    assert capsys.readouterr().out.startswith("no schedules")
    create = ["schedules", "create", "--cron", "0 3 * * *", "--time-zone", "Europe/Berlin"]
    assert cli.main([*target, *create, "--kind", "report", "--items", "4", "--name", "nightly"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("created schedule ") and "(0 3 * * *, Europe/Berlin): first run at 20" in said
    sid = said.split()[2]
    assert cli.main([*target, "schedules", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "CRON", "TIME", "ZONE", "KIND", "NEXT", "RUN", "LAST", "JOB"]
    assert lines[1].split()[:8] == [sid, "nightly", "0", "3", "*", "*", "*", "Europe/Berlin"]
    assert cli.main([*target, "schedules", "get", sid]) == 0
    shown = capsys.readouterr().out
    assert "cron        0 3 * * * (Europe/Berlin)" in shown and "kind report, 4 items" in shown
    assert cli.main([*target, "schedules", "trigger", sid]) == 0
    job_id = capsys.readouterr().out.split()[-1]
    assert cli.main([*target, "schedules", "pause", sid]) == 0
    assert (
        capsys.readouterr().out
        == f"schedule {sid} paused: it makes no jobs until it is resumed (0 3 * * *, paused)\n"
    )
    assert cli.main([*target, "schedules", "resume", sid]) == 0
    assert "resumed (0 3 * * *, next run 20" in capsys.readouterr().out
    assert cli.main([*target, "schedules", "update", sid, "--items", "8", "--cron", "*/15 * * * *"]) == 0
    assert "updated (*/15 * * * *" in capsys.readouterr().out
    assert cli.main([*target, "--json", "schedules", "get", sid]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["job"]["totalItems"], doc["job"]["kind"], doc["lastJobId"]) == ("8", "report", job_id)
    assert cli.main([*target, *create, "--kind", "x", "--items", "1", "--time-zone", "Nowhere/Else"]) == 1
    assert "schedule.time_zone" in capsys.readouterr().err
    assert cli.main([*target, "schedules", "delete", sid]) == 0
    assert "deleted schedule" in capsys.readouterr().out
    assert cli.main([*target, "schedules", "get", sid]) != 0
    assert "SCHEDULE_NOT_FOUND" in capsys.readouterr().err


# --- the async SDK ----------------------------------------------------------------------------------


async def test_the_async_client_manages_schedules(server: Any) -> None:
    async with jobpulse.AsyncClient(server.address, timeout=20.0) as aclient:
        made = await aclient.create_schedule(
            "30 2 * * *",
            job_service_pb2.CreateJobRequest(kind="backup", total_items=1),
            time_zone="Europe/Berlin",
            overlap_policy="OVERLAP_POLICY_SKIP",
        )
        assert made.overlap_policy == schedule_service_pb2.OVERLAP_POLICY_SKIP
        assert await aclient.get_schedule(made.name) == made
        assert [s.name async for s in aclient.list_schedules()] == [made.name]
        paused = await aclient.update_schedule(_id(made), paused=True, display_name="backups")
        assert paused.paused and paused.display_name == "backups"
        triggered = await aclient.trigger_schedule(made.name)
        assert triggered.job.kind == "backup" and triggered.schedule.last_job_id == triggered.job.id
        with pytest.raises(ValueError, match="unknown misfire policy"):
            await aclient.create_schedule("* * * * *", REPORT, misfire_policy="sometimes")
        with pytest.raises(ValueError, match="kind and total_items"):
            await aclient.create_schedule("* * * * *", {"kind": "x"})
        with pytest.raises(errors.InvalidArgument) as bad:
            await aclient.create_schedule("* * * * *", {**REPORT, "priority": 11})
        assert [f for f, _ in bad.value.field_violations] == ["schedule.job.priority"]
        await aclient.delete_schedule(made.name)
        with pytest.raises(errors.NotFound):
            await aclient.get_schedule(made.name)


# --- the dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_lists_schedules_with_their_last_jobs(server: Any, client: jobpulse.Client) -> None:
    with httpx.Client(base_url=str(server.app.http_url), timeout=20) as page:
        empty = page.get("/schedules")
        assert empty.status_code == 200 and 'data-testid="no-schedules"' in empty.text
        assert '<a href="/schedules" aria-current="page">Schedules</a>' in empty.text
        assert '<a href="/schedules"' in page.get("/").text, "the nav links to it from every page"
        nightly = client.create_schedule(
            "0 3 * * *", {"kind": "report", "total_items": 1}, display_name="Nightly", time_zone="Asia/Tokyo"
        )
        held = client.create_schedule("*/5 * * * *", {"kind": "poll", "total_items": 1}, paused=True)
        tick = _us(nightly.next_run_time)
        jobs = [client.trigger_schedule(nightly.name).job.id for _ in range(5)]
        assert _tick(server, tick) == 1
        jobs.append(client.get_schedule(nightly.name).last_job_id)
        text = page.get("/schedules").text
        rows = re.findall(r'data-testid="schedule-row" data-schedule="([^"]+)"', text)
        assert rows == [_id(nightly), _id(held)]
        first, second = text.split('data-testid="schedule-row"')[1:]
        assert "Nightly" in first and "<code>0 3 * * *</code>" in first and "Asia/Tokyo" in first
        # Its last five jobs, newest first, as links to their pages.
        shown = re.findall(r'<a href="/jobs/([^"]+)" data-testid="schedule-job">', first)
        assert shown == list(reversed(jobs))[:5]
        assert 'data-testid="paused"' in second and "none yet" in second and "UTC" in second
