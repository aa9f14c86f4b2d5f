"""End-to-end: a job's own controls on the claim, on both databases: PauseJob / ResumeJob and
max_running_chunks (CreateJob, UpdateJob), through the RPCs, the SDK's Worker, the CLI."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from support.e2e import BackgroundThread, assert_summary_matches

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2


def _claimed(client: jobpulse.Client, kind: str, n: int = 10) -> list[tuple[str, int]]:
    return [(c.job_id, c.chunk.index) for c in client.claim_chunks("w1", kinds=[kind], max_chunks=n)]


# --- PauseJob / ResumeJob --------------------------------------------------------------------------


def test_a_paused_job_is_passed_over_and_its_running_chunks_finish(client: jobpulse.Client) -> None:
    held = client.create_job("pause", 4, chunk_size=1, priority=9)
    other = client.create_job("pause", 2, chunk_size=1, priority=1)
    [running] = client.claim_chunks("w1", kinds=["pause"])
    assert running.job_id == held.id

    paused = client.pause_job(held.id)

    assert (paused.paused, paused.state) == (True, job_pb2.JOB_STATE_PROCESSING)
    assert _claimed(client, "pause") == [(other.id, 0), (other.id, 1)]
    # The chunk it held before the pause finishes as usual.
    client.complete_chunk(running.chunk.id, running.lease_token)
    assert client.get_job(held.id).chunks_summary.completed == 1
    assert _claimed(client, "pause") == []

    resumed = client.resume_job(held.id)

    assert not resumed.paused and resumed.revision > paused.revision
    assert _claimed(client, "pause") == [(held.id, 1), (held.id, 2), (held.id, 3)]
    assert_summary_matches(client, held.id)


def test_resume_wakes_a_claimer_that_waits(client: jobpulse.Client) -> None:
    job = client.create_job("pause-wait", 1)
    client.pause_job(job.id)
    got: list[Any] = []
    started = time.monotonic()
    waiting = BackgroundThread(lambda: got.extend(client.claim_chunks("w1", kinds=["pause-wait"], wait=60)))
    # The claim waits (nothing is claimable), then the resume's commit wakes it.
    assert client.claim_chunks("w2", kinds=["pause-wait"]) == []
    client.resume_job(job.id)
    waiting.join(30)
    assert [c.job_id for c in got] == [job.id] and time.monotonic() - started < 30


def test_pause_and_resume_say_what_they_cannot_do(client: jobpulse.Client) -> None:
    job = client.create_job("pause-errors", 1)
    assert client.pause_job(job.id).paused
    assert client.pause_job(job.id).paused  # again: OK, no change
    assert not client.resume_job(job.id).paused
    assert not client.resume_job(job.id).paused
    [claim] = client.claim_chunks("w1", kinds=["pause-errors"])
    client.complete_chunk(claim.chunk.id, claim.lease_token)
    for call in (client.pause_job, client.resume_job):
        with pytest.raises(errors.FailedPrecondition) as info:
            call(job.id)
        assert info.value.reason == "JOB_ALREADY_TERMINAL"
    with pytest.raises(errors.NotFound):
        client.pause_job("0000000000000000000000000X")


def test_a_paused_job_can_be_cancelled(client: jobpulse.Client) -> None:
    job = client.create_job("pause-cancel", 3, chunk_size=1)
    client.pause_job(job.id)
    assert client.cancel_job(job.id).state == job_pb2.JOB_STATE_CANCELLED
    assert_summary_matches(client, job.id)


# --- max_running_chunks ------------------------------------------------------------------------------


def test_no_more_of_a_jobs_chunks_run_than_its_max(client: jobpulse.Client) -> None:
    capped = client.create_job("cap", 10, chunk_size=1, priority=9, max_running_chunks=3)
    other = client.create_job("cap", 2, chunk_size=1, priority=1)
    assert capped.max_running_chunks == 3

    first = client.claim_chunks("w1", kinds=["cap"], max_chunks=10)

    assert [(c.job_id, c.chunk.index) for c in first] == [
        (capped.id, 0),
        (capped.id, 1),
        (capped.id, 2),
        (other.id, 0),
        (other.id, 1),
    ]
    assert _claimed(client, "cap") == []
    client.complete_chunk(first[0].chunk.id, first[0].lease_token)
    assert _claimed(client, "cap") == [(capped.id, 3)]
    # A failure with a retry frees its place too (the chunk waits out its backoff).
    client.fail_chunk(first[1].chunk.id, first[1].lease_token, reason="X", retryable=True)
    assert _claimed(client, "cap") == [(capped.id, 4)]
    assert_summary_matches(client, capped.id)


def test_raising_or_lifting_the_max_lets_more_run(client: jobpulse.Client) -> None:
    job = client.create_job("cap-update", 6, chunk_size=1, max_running_chunks=1)
    assert len(_claimed(client, "cap-update")) == 1

    assert client.update_job(job.id, max_running_chunks=3).max_running_chunks == 3
    assert len(_claimed(client, "cap-update")) == 2
    # Lowering it below what runs stops nothing: claims wait until fewer run.
    assert client.update_job(job.id, max_running_chunks=1).max_running_chunks == 1
    assert _claimed(client, "cap-update") == []
    assert client.get_job(job.id).chunks_summary.processing == 3
    assert client.update_job(job.id, max_running_chunks=0).max_running_chunks == 0
    assert len(_claimed(client, "cap-update")) == 3


def test_a_worker_pool_never_runs_more_than_the_max(client: jobpulse.Client) -> None:
    # Six handlers at once on the worker side, a max of two on the job: the completions' claim_next
    # (the batched path on PostgreSQL) must hold it as the plain claims do.
    job = client.create_job("cap-pool", 24, chunk_size=1, max_running_chunks=2)
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    seen: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
            seen.append(client.get_job(job.id, view="basic").chunks_summary.processing)
        time.sleep(0.01)  # the work; the others must be held back meanwhile
        with lock:
            running["now"] -= 1

    worker = jobpulse.Worker(client, kinds=["cap-pool"], concurrency=6, poll_wait=0.2)
    done = threading.Event()
    pool = BackgroundThread(lambda: worker.run(handle, stop_event=done))
    try:
        final = client.wait(job.id, timeout=60)
    finally:
        done.set()
    pool.join(30)

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert running["most"] <= 2 and max(seen) <= 2, (running, seen)
    assert_summary_matches(client, job.id)


@pytest.mark.parametrize("value", [-1, 1_000_001])
def test_a_max_out_of_range_names_the_field(client: jobpulse.Client, value: int) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        client.create_job("cap", 1, max_running_chunks=value)
    assert [f for f, _ in info.value.field_violations] == ["max_running_chunks"]
    job = client.create_job("cap", 1)
    with pytest.raises(errors.InvalidArgument) as info:
        client.update_job(job.id, max_running_chunks=value)
    assert [f for f, _ in info.value.field_violations] == ["max_running_chunks"]


# --- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_pauses_resumes_and_caps_a_job(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    argv = [*target, "--json", "create", "--kind", "cli-cap", "--items", "5", "--chunk-size", "1"]
    assert cli.main([*argv, "--max-running-chunks", "2"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]

    assert cli.main([*target, "pause", job_id]) == 0
    assert "paused" in capsys.readouterr().out
    assert cli.main([*target, "list", "--kind", "cli-cap"]) == 0
    assert "PENDING (paused)" in capsys.readouterr().out
    assert _claimed(client, "cli-cap") == []
    assert cli.main([*target, "resume", job_id]) == 0
    assert "resumed" in capsys.readouterr().out
    assert len(_claimed(client, "cli-cap")) == 2

    assert cli.main([*target, "update", job_id, "--max-running-chunks", "3"]) == 0
    capsys.readouterr()
    assert cli.main([*target, "get", job_id, "--basic"]) == 0
    assert [
        line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("max running")
    ] == ["3"]
    assert len(_claimed(client, "cli-cap")) == 1
    assert cli.main([*target, "update", job_id]) == 2
    assert "nothing to change" in capsys.readouterr().err
