"""The failure policy and timeouts of a job: max_failed_chunks fails it at once (pending chunks
cancelled, running ones told to stop, no claim of it after), attempt_timeout ends an attempt however
its worker heartbeats, timeout fails a job not ended by its deadline_time; each with the reason
watchers, the attempts and the job's error give, on either worker path."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from support.polling import eventually
from support.receiver import Receiver

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2

OUTCOME = job_pb2.AttemptOutcome


def _claim(client: jobpulse.Client, kind: str, worker: str, lease: float = 60.0) -> Any:
    [claim] = client.claim_chunks(worker, kinds=[kind], max_chunks=1, lease_duration=lease, wait=10)
    return claim


def _states(job: job_pb2.Job) -> list[int]:
    return [c.state for c in job.chunks]


def test_the_nth_chunk_failed_for_good_fails_the_job_at_once(client: jobpulse.Client) -> None:
    job = client.create_job("fail-fast", 6, chunk_size=1, max_attempts=1, max_failed_chunks=2)
    assert job.max_failed_chunks == 2
    a, b, c = (_claim(client, "fail-fast", f"w-{i}") for i in range(3))
    client.fail_chunk(a.chunk.id, a.lease_token, "BAD_INPUT", "frame 3 is corrupt", retryable=False)
    one = client.get_job(job.id, view="basic")
    # One failure of two: the job runs on, its error not shown yet.
    assert one.state == job_pb2.JOB_STATE_PROCESSING and not one.HasField("error")

    client.fail_chunk(b.chunk.id, b.lease_token, "BAD_INPUT", "frame 9 is corrupt", retryable=False)
    failed = client.get_job(job.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.HasField("end_time")
    assert failed.error.reason == "TOO_MANY_FAILED_CHUNKS"
    assert "2 chunks failed for good" in failed.error.message and "frame 3 is corrupt" in failed.error.message
    assert failed.error.chunk_index == a.chunk.index
    s = failed.chunks_summary
    # The three never claimed are cancelled; the one still running is told to stop.
    assert (s.pending, s.processing, s.failed, s.cancelled) == (0, 1, 2, 3)
    assert not client.claim_chunks("w-late", kinds=["fail-fast"], max_chunks=5)
    beat = client.report_chunk_progress(c.chunk.id, c.lease_token, items_done=0)
    assert beat.cancel_requested

    # The running chunk's end cancels it; the job stays FAILED.
    client.complete_chunk(c.chunk.id, c.lease_token)
    after = client.get_job(job.id)
    assert after.state == job_pb2.JOB_STATE_FAILED and after.error.reason == "TOO_MANY_FAILED_CHUNKS"
    assert after.chunks[c.chunk.index].state == job_pb2.CHUNK_STATE_CANCELLED
    assert after.chunks_summary.cancelled == 4 and after.chunks_summary.processing == 0

    # RetryJob runs it again, every chunk that did not complete.
    again = client.retry_job(job.id)
    assert again.state == job_pb2.JOB_STATE_PENDING or again.state == job_pb2.JOB_STATE_PROCESSING
    assert not again.HasField("error") and again.chunks_summary.pending == 6


def test_a_failed_chunk_of_a_job_failed_at_once_cannot_be_retried_alone(client: jobpulse.Client) -> None:
    job = client.create_job("fail-fast-one", 3, chunk_size=1, max_attempts=1, max_failed_chunks=1)
    a = _claim(client, "fail-fast-one", "w")
    client.fail_chunk(a.chunk.id, a.lease_token, "BAD_INPUT", retryable=False)
    with pytest.raises(errors.FailedPrecondition) as caught:
        client.retry_chunk(job.id, a.chunk.id)
    assert "TOO_MANY_FAILED_CHUNKS" in str(caught.value) and "RetryJob" in str(caught.value)


def test_racing_workers_claim_nothing_of_a_job_once_it_failed_fast(server: Any) -> None:
    """Eight workers claim and fail every chunk they get: once the fifth chunk has failed for good,
    no chunk of the job is claimed again; at most the seven others held then end, cancelled."""
    kind = "fail-fast-race"
    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job(kind, 400, chunk_size=1, max_attempts=1, max_failed_chunks=5)
    done = threading.Event()
    errors_seen: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with jobpulse.Client(server.address, timeout=20) as c:
                empty = 0
                while empty < 3 and not done.is_set():
                    got = c.claim_chunks(f"racer-{n}", kinds=[kind], max_chunks=1)
                    if not got:
                        empty += 1
                        continue
                    empty = 0
                    c.fail_chunk(got[0].chunk.id, got[0].lease_token, "BROKEN", retryable=False)
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    assert not errors_seen, errors_seen
    with jobpulse.Client(server.address, timeout=20) as client:
        ended = client.get_job(job.id)
        assert ended.state == job_pb2.JOB_STATE_FAILED and ended.error.reason == "TOO_MANY_FAILED_CHUNKS"
        claimed = [ch for ch in ended.chunks if ch.attempt > 0]
        # The fifth failure fails it (each failure locks the job: a sixth, later, is a cancel); each of
        # the seven other workers held at most one chunk then, which ended cancelled.
        assert ended.chunks_summary.failed == 5
        assert 5 <= len(claimed) <= 5 + 7, len(claimed)
        assert all(ch.state in (job_pb2.CHUNK_STATE_FAILED, job_pb2.CHUNK_STATE_CANCELLED) for ch in claimed)
        # No chunk was claimed after the job had failed.
        end = ended.end_time.ToMicroseconds()
        assert all(ch.start_time.ToMicroseconds() <= end for ch in claimed)
        assert ended.chunks_summary.pending == 0 and ended.chunks_summary.processing == 0


def test_an_attempt_past_its_timeout_ends_however_its_worker_heartbeats(make_server: Any) -> None:
    srv = make_server(sweep_interval=0.05)
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job("attempt-timeout", 1, max_attempts=2, attempt_timeout=1.0)
        assert job.attempt_timeout.seconds == 1
        claim = _claim(client, "attempt-timeout", "w-slow", lease=30.0)
        started = claim.chunk.start_time.ToMicroseconds()
        # The lease never runs past the attempt's start plus its timeout, however long it was asked for.
        assert claim.lease_expire_time.ToMicroseconds() <= started + 1_000_000

        def heartbeat() -> bool:
            try:
                beat = client.report_chunk_progress(claim.chunk.id, claim.lease_token, lease_duration=30.0)
            except errors.LeaseLost:
                return True
            assert beat.lease_expire_time.ToMicroseconds() <= started + 1_000_000
            return False

        eventually(heartbeat, timeout=10, what="the heartbeat refused past the attempt_timeout", interval=0.1)
        retried = eventually(
            lambda: (
                (a := list(client.list_chunk_attempts(job.id, claim.chunk.id)))
                and a[0].outcome == OUTCOME.ATTEMPT_OUTCOME_TIMED_OUT
                and a
            ),
            timeout=10,
            what="the attempt ended TIMED_OUT",
        )
        assert retried[0].error.reason == "ATTEMPT_TIMEOUT" and "attempt_timeout" in retried[0].error.message
        chunk = client.get_job(job.id).chunks[0]
        assert chunk.state == job_pb2.CHUNK_STATE_PENDING and chunk.attempt == 1
        # Its next attempt has a timeout of its own.
        second = _claim(client, "attempt-timeout", "w-next", lease=30.0)
        assert second.chunk.attempt == 2
        assert (
            second.lease_expire_time.ToMicroseconds() <= second.chunk.start_time.ToMicroseconds() + 1_000_000
        )


def test_a_job_not_ended_by_its_deadline_fails(make_server: Any) -> None:
    srv = make_server(sweep_interval=0.05)
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job("deadline", 4, chunk_size=1, job_timeout=1.0)
        assert job.deadline_time.ToMicroseconds() == job.create_time.ToMicroseconds() + 1_000_000
        running = _claim(client, "deadline", "w")
        *_, last = client.watch_job(job.id, timeout=20)
        # The watch's terminal message says why.
        assert last.job.state == job_pb2.JOB_STATE_FAILED
        assert last.job.error.reason == "JOB_DEADLINE_EXCEEDED"
        failed = client.get_job(job.id)
        assert failed.end_time.ToMicroseconds() >= failed.deadline_time.ToMicroseconds()
        s = failed.chunks_summary
        assert (s.pending, s.processing, s.cancelled) == (0, 1, 3)
        assert client.report_chunk_progress(running.chunk.id, running.lease_token).cancel_requested
        client.fail_chunk(running.chunk.id, running.lease_token, "STOPPED", retryable=True)
        assert client.get_job(job.id).chunks_summary.cancelled == 4

        # RetryJob gives the job its timeout again, from now.
        again = client.retry_job(job.id)
        assert again.deadline_time.ToMicroseconds() > failed.deadline_time.ToMicroseconds()
        assert again.state == job_pb2.JOB_STATE_PROCESSING or again.state == job_pb2.JOB_STATE_PENDING


def test_the_failed_webhook_says_which_limit_failed_the_job(make_server: Any) -> None:
    receiver = Receiver()
    try:
        srv = make_server(webhook_secret="whsec_" + "Zm9vYmFyYmF6cXV4" * 2)
        with jobpulse.Client(srv.address, timeout=20) as client:
            job = client.create_job(
                "fail-fast-hook",
                3,
                chunk_size=1,
                max_attempts=1,
                max_failed_chunks=1,
                webhook_url=receiver.url,
            )
            a = _claim(client, "fail-fast-hook", "w")
            client.fail_chunk(a.chunk.id, a.lease_token, "BAD_INPUT", "unreadable", retryable=False)
            [post] = receiver.wait_for(1)
        body = json.loads(post["body"])
        assert body["type"] == "job.failed" and body["job"]["id"] == job.id
        assert body["job"]["error"]["reason"] == "TOO_MANY_FAILED_CHUNKS"
    finally:
        receiver.close()


def test_a_scheduled_job_s_deadline_counts_from_its_schedule_time(client: jobpulse.Client) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    job = client.create_job("deadline-later", 1, schedule_time=later, job_timeout=60)
    assert job.deadline_time.ToMicroseconds() == job.schedule_time.ToMicroseconds() + 60_000_000


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_failed_chunks", -1, "between 0"),
        ("attempt_timeout", 0.5, "at least 1 second"),
        ("timeout", -3, "positive duration"),
        ("timeout", 400 * 86400 * 10, "at most 3650 days"),
    ],
)
def test_a_bad_limit_is_refused_naming_its_field(job_stub: Any, field: str, value: float, words: str) -> None:
    request = job_service_pb2.CreateJobRequest(kind="limits", total_items=1)
    if field == "max_failed_chunks":
        request.max_failed_chunks = int(value)
    else:
        d = getattr(request, field)
        d.seconds = int(value)
        d.nanos = round((value - int(value)) * 1e9)
    with pytest.raises(grpc.RpcError) as caught:
        job_stub.CreateJob(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and words in caught.value.details()


def test_the_cli_creates_a_job_with_its_limits_and_shows_them(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    create = [*target, "--json", "create", "--kind", "cli-limits", "--items", "4", "--chunk-size", "1"]
    limits = ["--max-failed-chunks", "2", "--attempt-timeout", "90", "--timeout", "3600"]
    assert cli.main([*create, *limits]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["maxFailedChunks"], made["attemptTimeout"]) == (2, "90s")
    assert cli.main([*target, "get", made["id"], "--basic"]) == 0
    shown = dict(
        (line[:17].strip(), line[17:].strip())
        for line in capsys.readouterr().out.splitlines()
        if line[:1] != " "
    )
    assert shown["fails fast"] == "after 2 chunks failed for good"
    assert shown["attempt timeout"] == "90 s"
    assert shown["deadline"]
    with pytest.raises(SystemExit) as refused:
        cli.main([*create, "--attempt-timeout", "0.5"])
    assert refused.value.code == 2
    assert "--attempt-timeout: must be 0 (no limit) or between 1" in capsys.readouterr().err
