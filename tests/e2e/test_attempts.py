"""Attempt history (ListChunkAttempts): one entry per claim of a chunk, who held it, when and how it
ended (completed, failed with its error and details, lease expired, cancelled), written with the move
it records on either worker path, the running one listed as RUNNING, a page at a time; and refused for a
chunk or job the caller cannot name."""

from __future__ import annotations

import json
from typing import Any

import pytest

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2

OUTCOME = job_pb2.AttemptOutcome


def _attempts(client: jobpulse.Client, job_id: str, chunk_id: str = "", page_size: int = 0) -> list[Any]:
    return list(client.list_chunk_attempts(job_id, chunk_id, page_size))


def _claim(client: jobpulse.Client, kind: str, worker: str) -> Any:
    [claim] = client.claim_chunks(worker, kinds=[kind], max_chunks=1, wait=10)
    return claim


def test_each_claim_is_an_attempt_with_how_it_ended(client: jobpulse.Client) -> None:
    job = client.create_job("attempts", 2, chunk_size=1, max_attempts=3)
    first = _claim(client, "attempts", "w-a")
    client.fail_chunk(
        first.chunk.id, first.lease_token, "DECODE", "bad frame", retryable=True, details="tb 1"
    )
    # Attempt 2 of the same chunk runs (after the retry's backoff), by another worker.
    again = _claim(client, "attempts", "w-b")
    if again.chunk.index != first.chunk.index:  # chunk 1 came first: finish it, then take chunk 0 again
        client.complete_chunk(again.chunk.id, again.lease_token)
        again = _claim(client, "attempts", "w-b")
    assert again.chunk.index == first.chunk.index and again.chunk.attempt == 2
    running = _attempts(client, job.id, first.chunk.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in running] == [
        (1, OUTCOME.ATTEMPT_OUTCOME_FAILED, "w-a"),
        (2, OUTCOME.ATTEMPT_OUTCOME_RUNNING, "w-b"),
    ]
    failed, now = running
    assert (failed.error.reason, failed.error.message, failed.error.details) == (
        "DECODE",
        "bad frame",
        "tb 1",
    )
    assert (
        failed.HasField("end_time") and failed.end_time.ToMicroseconds() >= failed.start_time.ToMicroseconds()
    )
    assert not now.HasField("end_time") and not now.HasField("error")
    assert (now.job_id, now.chunk_id, now.chunk_index) == (job.id, first.chunk.id, first.chunk.index)

    client.complete_chunk(again.chunk.id, again.lease_token)
    rest = [c for c in client.claim_chunks("w-c", kinds=["attempts"], max_chunks=1)]
    for c in rest:
        client.complete_chunk(c.chunk.id, c.lease_token)
    every = _attempts(client, job.id)
    by_chunk = [(a.chunk_index, a.attempt, a.outcome) for a in every]
    assert by_chunk == sorted(by_chunk), "by chunk index, then attempt"
    assert (first.chunk.index, 2, OUTCOME.ATTEMPT_OUTCOME_COMPLETED) in by_chunk
    assert (first.chunk.index, 1, OUTCOME.ATTEMPT_OUTCOME_FAILED) in by_chunk
    assert len(every) == 3 and client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED
    completed = [a for a in every if a.outcome == OUTCOME.ATTEMPT_OUTCOME_COMPLETED]
    assert all(a.items_done == 1 and not a.HasField("error") for a in completed)


def test_attempts_come_a_page_at_a_time(client: jobpulse.Client) -> None:
    job = client.create_job("attempt-pages", 5, chunk_size=1)
    for claim in client.claim_chunks("w", kinds=["attempt-pages"], max_chunks=3):
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    client.claim_chunks("w", kinds=["attempt-pages"], max_chunks=1)  # one running
    paged = _attempts(client, job.id, page_size=2)
    assert [(a.chunk_index, a.outcome) for a in paged] == [
        (0, OUTCOME.ATTEMPT_OUTCOME_COMPLETED),
        (1, OUTCOME.ATTEMPT_OUTCOME_COMPLETED),
        (2, OUTCOME.ATTEMPT_OUTCOME_COMPLETED),
        (3, OUTCOME.ATTEMPT_OUTCOME_RUNNING),
    ]


def test_a_lease_that_ran_out_and_a_cancel_end_attempts(make_server: Any) -> None:
    srv = make_server(sweep_interval=0.05, cancel_deadline=0.2)
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job("attempt-ends", 1, max_attempts=3)
        [lost] = client.claim_chunks("w-gone", kinds=["attempt-ends"], lease_duration=0.1)
        again = _claim(client, "attempt-ends", "w-next")  # after the sweep took the lease back
        assert again.chunk.attempt == 2
        client.cancel_job(job.id)
        assert client.wait(job.id, timeout=20).state == job_pb2.JOB_STATE_CANCELLED
        ended = _attempts(client, job.id)
    assert [(a.attempt, a.outcome, a.worker_id) for a in ended] == [
        (1, OUTCOME.ATTEMPT_OUTCOME_LEASE_EXPIRED, "w-gone"),
        (2, OUTCOME.ATTEMPT_OUTCOME_CANCELLED, "w-next"),
    ]
    assert ended[0].error.reason == "LEASE_EXPIRED" and ended[1].error.reason == "CANCEL_DEADLINE"
    assert lost.chunk.attempt == 1


def test_a_chunk_or_job_the_caller_cannot_name_is_not_found(client: jobpulse.Client) -> None:
    job = client.create_job("attempt-refusals", 2, chunk_size=1)
    with pytest.raises(errors.NotFound) as info:
        _attempts(client, job.id, f"{job.id}-7")
    assert info.value.reason == "CHUNK_NOT_FOUND"
    with pytest.raises(errors.NotFound):
        _attempts(client, job.id, "another-job-0")
    with pytest.raises(errors.NotFound) as info:
        _attempts(client, "no-such-job")
    assert info.value.reason == "JOB_NOT_FOUND"
    assert _attempts(client, job.id) == [], "no claim yet: no attempt"


def test_the_cli_lists_attempts_and_prints_details_when_asked(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobpulse import cli

    job = client.create_job("attempt-cli", 1, max_attempts=2)
    claim = _claim(client, "attempt-cli", "w-cli")
    client.fail_chunk(claim.chunk.id, claim.lease_token, "DECODE", "bad frame", details="Traceback: line 7")
    again = _claim(client, "attempt-cli", "w-cli-2")
    target = ["--target", server.address]
    assert cli.main([*target, "attempts", job.id]) == 0
    out = capsys.readouterr().out
    header, first, second, hint = out.splitlines()
    assert header.split() == ["CHUNK", "ATTEMPT", "OUTCOME", "WORKER", "STARTED", "TOOK", "ITEMS", "ERROR"]
    assert first.split()[:4] == ["0", "1", "failed", "w-cli"] and first.endswith("DECODE: bad frame")
    assert second.split()[:4] == ["0", "2", "running", "w-cli-2"]
    assert "--details" in hint
    assert cli.main([*target, "attempts", job.id, "0", "--details"]) == 0
    assert "chunk 0, attempt 1 (DECODE):\nTraceback: line 7" in capsys.readouterr().out
    assert cli.main([*target, "--json", "attempts", job.id, again.chunk.id]) == 0
    listed = json.loads(capsys.readouterr().out)["attempts"]
    assert [a["outcome"] for a in listed] == ["ATTEMPT_OUTCOME_FAILED", "ATTEMPT_OUTCOME_RUNNING"]
    assert cli.main([*target, "attempts", job.id, "9"]) != 0
    assert "not found" in capsys.readouterr().err
