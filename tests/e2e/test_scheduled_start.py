"""End-to-end: a job created to start later (CreateJobRequest.schedule_time): blocked and unclaimed until
its time, claimed then by a claimer that was waiting, on both databases and across a restart."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support.e2e import assert_summary_matches

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2

# Long enough that the test's own calls before the time are done well before it, on a loaded machine.
LEAD = 2.0


def _in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def _claim_waiting(client: jobpulse.Client, kind: str, n: int) -> tuple[list[Any], float]:
    """Claims with a wait far longer than the test: returns the claims and when they came (wall clock)."""
    claims = client.claim_chunks("w1", kinds=[kind], max_chunks=n, wait=60)
    return claims, time.time()


def test_a_scheduled_job_is_blocked_and_unclaimed_until_its_time(client: jobpulse.Client) -> None:
    at = _in(LEAD)
    job = client.create_job("later", 3, chunk_size=1, schedule_time=at)

    assert (job.state, job.blocked) == (job_pb2.JOB_STATE_PENDING, True)
    assert job.schedule_time.ToDatetime(tzinfo=timezone.utc) == at
    assert {c.next_attempt_time.ToMicroseconds() for c in job.chunks} == {job.schedule_time.ToMicroseconds()}
    assert client.claim_chunks("w1", kinds=["later"], max_chunks=3) == []
    # Read again (the server keeps encodings of each revision) and listed: still blocked.
    assert client.get_job(job.id, view="basic").blocked
    assert client.get_job(job.id, view="basic").blocked
    assert [(j.id, j.blocked) for j in client.list_jobs(kind="later")] == [(job.id, True)]

    claims, came = _claim_waiting(client, "later", 3)

    # Woken at the time, not at the end of the claim's 60 s wait.
    assert at.timestamp() <= came < at.timestamp() + 30
    assert sorted(c.chunk.index for c in claims) == [0, 1, 2]
    after = client.get_job(job.id)
    assert (after.state, after.blocked) == (job_pb2.JOB_STATE_PROCESSING, False)
    assert after.schedule_time == job.schedule_time
    for c in claims:
        client.complete_chunk(c.chunk.id, c.lease_token)
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED
    assert_summary_matches(client, job.id)


def test_jobs_that_start_at_once_go_first_while_a_scheduled_one_waits(client: jobpulse.Client) -> None:
    later = client.create_job("mixed", 1, schedule_time=_in(3600), priority=10)
    now = client.create_job("mixed", 1, priority=1)
    past = client.create_job("mixed", 1, schedule_time=_in(-60), priority=1)

    assert (past.blocked, now.blocked, later.blocked) == (False, False, True)
    claimed = [c.job_id for c in client.claim_chunks("w1", kinds=["mixed"], max_chunks=3)]
    assert claimed == [now.id, past.id]


def test_a_scheduled_job_can_be_cancelled_before_it_starts(client: jobpulse.Client) -> None:
    job = client.create_job("later", 4, chunk_size=1, schedule_time=_in(3600))

    cancelled = client.cancel_job(job.id, reason="not needed")

    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert not client.get_job(job.id).blocked
    assert_summary_matches(client, job.id)


def test_a_request_id_holds_the_schedule_time_it_was_sent_with(client: jobpulse.Client) -> None:
    at = _in(3600)
    first = client.create_job("later", 1, request_id="r-1", schedule_time=at)

    assert client.create_job("later", 1, request_id="r-1", schedule_time=at).id == first.id
    with pytest.raises(errors.InvalidArgument) as info:
        client.create_job("later", 1, request_id="r-1", schedule_time=at + timedelta(seconds=1))
    assert "request_id" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "why"),
    [(-1, "is not a valid timestamp"), (int(time.time()) + 3651 * 86400, "at most 3650 days ahead")],
    ids=["before-1970", "past-3650-days"],  # ids of their own: the second value moves with the clock
)
def test_a_schedule_time_out_of_range_names_the_field(
    client: jobpulse.Client, seconds: int, why: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        client.create_job("later", 1, schedule_time=Timestamp(seconds=seconds))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(field, why in text) for field, text in info.value.field_violations] == [("schedule_time", True)]


def test_a_restarted_server_wakes_its_waiting_claimers_at_the_time(make_server: Any, connect: Any) -> None:
    srv = make_server()
    client = connect(srv)
    at = _in(LEAD + 1)
    job = client.create_job("later", 2, chunk_size=1, schedule_time=at)

    # A server that did not make the job learns its time from the database on its first claim.
    srv.restart()
    claims, came = _claim_waiting(client, "later", 2)

    assert at.timestamp() <= came < at.timestamp() + 30
    assert sorted(c.chunk.index for c in claims) == [0, 1]
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_PROCESSING


def test_the_cli_creates_a_scheduled_job_and_shows_when_it_starts(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    assert (
        cli.main(
            [*target, "--json", "create", "--kind", "cli-later", "--items", "2", "--schedule-time", "+3600"]
        )
        == 0
    )
    made = json.loads(capsys.readouterr().out)
    starts = datetime.fromisoformat(made["scheduleTime"].replace("Z", "+00:00"))
    assert made["blocked"] is True and 3500 < (starts - datetime.now(timezone.utc)).total_seconds() <= 3600

    assert cli.main([*target, "get", made["id"], "--basic"]) == 0
    [starts_line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("starts")]
    assert starts_line.endswith("(waiting for it)")
    assert cli.main([*target, "list", "--kind", "cli-later"]) == 0
    assert "PENDING (scheduled)" in capsys.readouterr().out

    at = "2020-01-01T00:00:00Z"  # in the past: at once
    assert (
        cli.main([*target, "--json", "create", "--kind", "cli-later", "--items", "1", "--schedule-time", at])
        == 0
    )
    past = json.loads(capsys.readouterr().out)
    assert (past["scheduleTime"], past.get("blocked", False)) == (at, False)
    assert [c.job_id for c in client.claim_chunks("w1", kinds=["cli-later"], max_chunks=3)] == [past["id"]]
