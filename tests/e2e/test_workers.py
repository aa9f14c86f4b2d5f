"""End-to-end: the WorkerService (claims, fenced leases, expiry, failures, progress, artifacts) and the
SDK's Worker helper and ``wait``."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support.e2e import BackgroundThread, assert_summary_matches, chunks_by_index, claim_one, run_all
from support.polling import eventually

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2


def _seconds(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


# --- ClaimChunks -------------------------------------------------------------------------------------


def test_claims_go_by_priority_then_oldest_job_then_index(client: jobpulse.Client) -> None:
    low = client.create_job("k", 2, chunk_size=1, priority=2)
    high_old = client.create_job("k", 2, chunk_size=1, priority=8)
    high_new = client.create_job("k", 2, chunk_size=1, priority=8)
    default = client.create_job("k", 1)

    order = []
    while claims := client.claim_chunks("w1", kinds=["k"]):
        order.append((claims[0].job_id, claims[0].chunk.index))

    assert order == [
        (high_old.id, 0),
        (high_old.id, 1),
        (high_new.id, 0),
        (high_new.id, 1),
        (default.id, 0),
        (low.id, 0),
        (low.id, 1),
    ]


def test_a_batch_claim_follows_the_same_order(client: jobpulse.Client) -> None:
    low = client.create_job("k", 2, chunk_size=1, priority=1)
    high = client.create_job("k", 2, chunk_size=1, priority=9)

    claims = client.claim_chunks("w1", kinds=["k"], max_chunks=4)

    assert [(c.job_id, c.chunk.index) for c in claims] == [
        (high.id, 0),
        (high.id, 1),
        (low.id, 0),
        (low.id, 1),
    ]


def test_claims_only_the_kinds_asked_for(client: jobpulse.Client) -> None:
    started = time.monotonic()
    assert client.claim_chunks("w1") == [], "no work at all is an empty list"
    assert time.monotonic() - started < 2
    thumbs = client.create_job("thumbnails", 2, chunk_size=1, priority=1)
    audio = client.create_job("transcribe", 2, chunk_size=1, priority=10)

    got = client.claim_chunks("w1", kinds=["thumbnails"], max_chunks=10)
    assert {c.job_id for c in got} == {thumbs.id}
    assert {c.job_kind for c in got} == {"thumbnails"}
    assert len(got) == 2
    assert client.claim_chunks("w1", kinds=["thumbnails"]) == []
    assert client.claim_chunks("w1", kinds=["nothing-like-this"]) == []

    anything = client.claim_chunks("w1", max_chunks=10)
    assert {c.job_id for c in anything} == {audio.id}


def test_max_chunks_batches_and_each_claim_is_leased(client: jobpulse.Client) -> None:
    job = client.create_job("k", 5, chunk_size=1)
    before = time.time()

    first = client.claim_chunks("worker-a", kinds=["k"], max_chunks=3, lease_duration=30)
    second = client.claim_chunks("worker-b", kinds=["k"], max_chunks=3, lease_duration=30)
    third = client.claim_chunks("worker-c", kinds=["k"], max_chunks=3)

    assert [c.chunk.index for c in first] == [0, 1, 2]
    assert [c.chunk.index for c in second] == [3, 4]
    assert third == []
    tokens = [c.lease_token for c in first + second]
    assert all(tokens) and len(set(tokens)) == 5
    for claim in first + second:
        assert claim.chunk.state == job_pb2.CHUNK_STATE_PROCESSING
        assert claim.chunk.attempt == 1
        assert before + 20 < _seconds(claim.lease_expire_time) < time.time() + 31
    chunks = chunks_by_index(client, job.id)
    assert [chunks[i].worker_id for i in range(5)] == ["worker-a"] * 3 + ["worker-b"] * 2
    stored = client.get_job(job.id)
    assert stored.state == job_pb2.JOB_STATE_PROCESSING
    assert stored.chunks_summary.processing == 5
    assert stored.HasField("start_time")
    assert_summary_matches(client, job.id)


def test_invalid_worker_calls_name_the_field(client: jobpulse.Client) -> None:
    job = client.create_job("k", 10, chunk_size=10)
    for kwargs, field in (
        ({"worker_id": ""}, "worker_id"),
        ({"max_chunks": 101}, "max_chunks"),
        ({"max_chunks": -1}, "max_chunks"),
        ({"lease_duration": 0}, "lease_duration"),
        ({"wait": 61}, "wait"),
    ):
        args = {"worker_id": "w1", **kwargs}
        with pytest.raises(errors.InvalidArgument) as info:
            client.claim_chunks(args.pop("worker_id"), kinds=["k"], **args)
        assert field in {f for f, _ in info.value.field_violations}, kwargs
    assert client.get_job(job.id).chunks_summary.pending == 1, "a rejected claim took a chunk"

    claim = claim_one(client, "k")
    with pytest.raises(errors.InvalidArgument) as info:
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=-1)
    assert "items_done" in {f for f, _ in info.value.field_violations}
    with pytest.raises(errors.InvalidArgument) as info:
        client.complete_chunk(claim.chunk.id, "")
    assert "lease_token" in {f for f, _ in info.value.field_violations}
    assert client.get_job(job.id).chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING


def test_long_poll_waits_then_returns_as_soon_as_work_appears(client: jobpulse.Client) -> None:
    started = time.monotonic()
    assert client.claim_chunks("w1", kinds=["k"], wait=0.3) == []
    assert time.monotonic() - started >= 0.25, "a claim with wait returned before its wait elapsed"

    asking = threading.Event()

    def claim() -> tuple[list[Any], float]:
        asking.set()
        got = client.claim_chunks("w1", kinds=["k"], wait=10)
        return got, time.monotonic()

    waiter = BackgroundThread(claim)
    assert asking.wait(5)
    time.sleep(0.3)  # let the claim reach the server and block there; the assertions hold either way
    job = client.create_job("k", 1)
    created = time.monotonic()

    claims, returned = waiter.join(timeout=15)

    assert [c.job_id for c in claims] == [job.id]
    assert returned - created < 5, "the long poll was not woken by the new job"


# --- fencing -----------------------------------------------------------------------------------------


def _assert_lease_lost(call: Any) -> None:
    with pytest.raises(errors.LeaseLost) as info:
        call()
    assert info.value.reason == "LEASE_LOST"
    assert info.value.code == grpc.StatusCode.ABORTED
    assert isinstance(info.value, errors.Aborted)


def test_wrong_lease_token_is_lease_lost_and_changes_nothing(client: jobpulse.Client) -> None:
    job = client.create_job("k", 20, chunk_size=10)
    claim = claim_one(client, "k")
    before = client.get_job(job.id)
    chunk_id = claim.chunk.id

    _assert_lease_lost(
        lambda: client.report_chunk_progress(chunk_id, "not-my-token", items_done=5, stage="x")
    )
    _assert_lease_lost(lambda: client.complete_chunk(chunk_id, "not-my-token"))
    _assert_lease_lost(lambda: client.fail_chunk(chunk_id, "not-my-token", "E", "", retryable=False))

    after = client.get_job(job.id)
    assert after.revision == before.revision
    assert after.stage == ""
    assert after.chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING
    assert after.chunks[0].items_done == 0
    assert after.progress.items_done == 0
    assert client.complete_chunk(chunk_id, claim.lease_token).job_state == job_pb2.JOB_STATE_PROCESSING


def test_stale_lease_token_is_lease_lost_and_changes_nothing(make_server: Any, connect: Any) -> None:
    srv = make_server(retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job("k", 10, chunk_size=10)
    old = claim_one(client, "k")
    client.fail_chunk(old.chunk.id, old.lease_token, "FLAKY", "try again", retryable=True)
    new = eventually(lambda: client.claim_chunks("w2", kinds=["k"]))[0]
    assert new.chunk.id == old.chunk.id
    assert new.lease_token != old.lease_token
    assert new.chunk.attempt == 2
    before = client.get_job(job.id)

    _assert_lease_lost(lambda: client.report_chunk_progress(old.chunk.id, old.lease_token, items_done=9))
    _assert_lease_lost(lambda: client.complete_chunk(old.chunk.id, old.lease_token))
    _assert_lease_lost(lambda: client.fail_chunk(old.chunk.id, old.lease_token, "E", "", retryable=False))

    after = client.get_job(job.id)
    assert after.revision == before.revision
    assert after.chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING
    assert after.chunks[0].worker_id == "w2"
    assert after.chunks[0].items_done == 0

    client.complete_chunk(new.chunk.id, new.lease_token)
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED
    _assert_lease_lost(lambda: client.complete_chunk(new.chunk.id, new.lease_token))
    assert client.get_job(job.id).chunks[0].state == job_pb2.CHUNK_STATE_COMPLETED


# --- lease expiry --------------------------------------------------------------------------------------


def test_expired_lease_goes_back_to_pending_then_fails_when_attempts_run_out(
    make_server: Any, connect: Any
) -> None:
    srv = make_server(sweep_interval=0.05, retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job("k", 10, chunk_size=10, max_attempts=2)

    first = claim_one(client, "k", lease_duration=0.5)
    client.report_chunk_progress(first.chunk.id, first.lease_token, items_done=5)
    assert client.get_job(job.id).progress.items_done == 5
    rescued = eventually(
        lambda: (c := chunks_by_index(client, job.id)[0]).state == job_pb2.CHUNK_STATE_PENDING and c
    )
    assert rescued.attempt == 1
    assert rescued.error.reason == "LEASE_EXPIRED"
    assert rescued.items_done == 0
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_PROCESSING
    assert client.get_job(job.id).progress.items_done == 0, "items of an abandoned attempt still counted"
    _assert_lease_lost(lambda: client.complete_chunk(first.chunk.id, first.lease_token))
    assert_summary_matches(client, job.id)

    second = eventually(lambda: client.claim_chunks("w2", kinds=["k"], lease_duration=0.2))[0]
    assert second.chunk.attempt == 2
    failed = eventually(
        lambda: (c := chunks_by_index(client, job.id)[0]).state == job_pb2.CHUNK_STATE_FAILED and c
    )
    assert failed.attempt == 2
    stored = client.get_job(job.id)
    assert stored.state == job_pb2.JOB_STATE_FAILED
    assert stored.error.chunk_index == 0
    assert stored.HasField("end_time")
    _assert_lease_lost(lambda: client.report_chunk_progress(second.chunk.id, second.lease_token))
    _assert_lease_lost(lambda: client.complete_chunk(second.chunk.id, second.lease_token))
    assert client.claim_chunks("w3", kinds=["k"]) == []
    assert_summary_matches(client, job.id)


def test_running_chunks_are_force_cancelled_after_the_cancel_deadline(make_server: Any, connect: Any) -> None:
    srv = make_server(sweep_interval=0.05, cancel_deadline=0.2)
    client = connect(srv)
    job = client.create_job("k", 2, chunk_size=1)
    claim = claim_one(client, "k", lease_duration=60)
    assert client.cancel_job(job.id).state == job_pb2.JOB_STATE_CANCELLING

    final = eventually(lambda: (j := client.get_job(job.id)).state == job_pb2.JOB_STATE_CANCELLED and j)

    assert final.chunks[0].state == job_pb2.CHUNK_STATE_CANCELLED
    assert final.chunks[0].error.reason == "CANCEL_DEADLINE"
    _assert_lease_lost(lambda: client.complete_chunk(claim.chunk.id, claim.lease_token))
    assert_summary_matches(client, job.id)


def test_heartbeats_keep_a_lease_alive(make_server: Any, connect: Any) -> None:
    srv = make_server(sweep_interval=0.05)
    client = connect(srv)
    job = client.create_job("k", 10, chunk_size=10)
    claim = claim_one(client, "k", lease_duration=0.5)

    deadline = time.monotonic() + 1.2  # more than two lease durations
    n = 0
    while time.monotonic() < deadline:
        n = min(n + 1, 10)
        response = client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=n)
        assert response.lease_expire_time.ToNanoseconds() / 1e9 > time.time()
        time.sleep(0.05)

    assert client.complete_chunk(claim.chunk.id, claim.lease_token).job_state == job_pb2.JOB_STATE_COMPLETED
    assert chunks_by_index(client, job.id)[0].attempt == 1


# --- FailChunk ---------------------------------------------------------------------------------------


def test_retryable_failure_is_retried_after_the_backoff(make_server: Any, connect: Any) -> None:
    srv = make_server(retry_backoff=1.0)  # the first retry waits 0.5 to 1 s
    client = connect(srv)
    job = client.create_job("k", 10, chunk_size=10)
    claim = claim_one(client, "k")

    outcome = client.fail_chunk(claim.chunk.id, claim.lease_token, "TIMEOUT", "provider timed out")
    failed_at = time.time()
    too_early = client.claim_chunks("w1", kinds=["k"])

    assert outcome.will_retry is True
    assert outcome.HasField("next_attempt_time")
    next_at = _seconds(outcome.next_attempt_time)
    assert failed_at - 1 < next_at < failed_at + 1.5
    assert too_early == [], "claimable again before its backoff"
    chunk = chunks_by_index(client, job.id)[0]
    assert chunk.state == job_pb2.CHUNK_STATE_PENDING
    assert chunk.attempt == 1
    assert (chunk.error.reason, chunk.error.message) == ("TIMEOUT", "provider timed out")
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_PROCESSING

    again = client.claim_chunks("w1", kinds=["k"], wait=10)
    assert len(again) == 1
    assert again[0].chunk.id == claim.chunk.id
    assert again[0].chunk.attempt == 2
    assert time.time() >= next_at - 0.05
    assert client.complete_chunk(again[0].chunk.id, again[0].lease_token).job_state == (
        job_pb2.JOB_STATE_COMPLETED
    )


def test_retryable_failure_on_the_last_attempt_fails_for_good(client: jobpulse.Client) -> None:
    job = client.create_job("k", 1, max_attempts=1)
    claim = claim_one(client, "k")

    outcome = client.fail_chunk(claim.chunk.id, claim.lease_token, "TIMEOUT", "again", retryable=True)

    assert outcome.will_retry is False
    assert not outcome.HasField("next_attempt_time")
    stored = client.get_job(job.id)
    assert stored.chunks[0].state == job_pb2.CHUNK_STATE_FAILED
    assert stored.state == job_pb2.JOB_STATE_FAILED


def test_permanent_failure_fails_the_job_once_the_others_are_terminal(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    claims = {c.chunk.index: c for c in client.claim_chunks("w1", kinds=["k"], max_chunks=3)}

    client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
    outcome = client.fail_chunk(
        claims[1].chunk.id, claims[1].lease_token, "BAD_INPUT", "item 1 is corrupt", retryable=False
    )

    assert outcome.will_retry is False
    assert not outcome.HasField("next_attempt_time")
    chunk = chunks_by_index(client, job.id)[1]
    assert chunk.state == job_pb2.CHUNK_STATE_FAILED
    assert chunk.error.reason == "BAD_INPUT"
    running = client.get_job(job.id)
    assert running.state == job_pb2.JOB_STATE_PROCESSING, "a job fails only once every chunk is terminal"
    assert client.claim_chunks("w1", kinds=["k"]) == [], "a chunk failed for good is not retried"

    last = client.complete_chunk(claims[2].chunk.id, claims[2].lease_token)

    assert last.job_state == job_pb2.JOB_STATE_FAILED
    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.error.chunk_index == 1
    assert final.error.reason == "BAD_INPUT"
    assert final.error.message == "item 1 is corrupt"
    assert final.HasField("end_time")
    assert [c.state for c in final.chunks] == [
        job_pb2.CHUNK_STATE_COMPLETED,
        job_pb2.CHUNK_STATE_FAILED,
        job_pb2.CHUNK_STATE_COMPLETED,
    ]
    assert_summary_matches(client, job.id)


# --- ReportChunkProgress and CompleteChunk -------------------------------------------------------------


def test_progress_reports_feed_the_job(client: jobpulse.Client) -> None:
    job = client.create_job("k", 200, chunk_size=100)
    claim = claim_one(client, "k", lease_duration=5)
    claimed_expiry = _seconds(claim.lease_expire_time)

    response = client.report_chunk_progress(
        claim.chunk.id,
        claim.lease_token,
        items_done=50,
        stage="encoding",
        message="50 of 100 frames",
        external_task_id="gpu-job-123",
        lease_duration=30,
    )

    assert response.cancel_requested is False
    assert _seconds(response.lease_expire_time) > claimed_expiry + 20
    stored = client.get_job(job.id)
    assert stored.progress.items_done == 50
    assert stored.progress.items_total == 200
    assert stored.progress.percent == pytest.approx(25.0)
    assert stored.stage == "encoding"
    assert stored.message == "50 of 100 frames"
    assert stored.chunks[0].items_done == 50
    assert stored.chunks[0].external_task_id == "gpu-job-123"

    client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=30)
    kept = client.get_job(job.id)
    assert kept.progress.items_done == 50, "items_done never goes back"
    assert (kept.stage, kept.message) == ("encoding", "50 of 100 frames"), "empty stage/message keep the old"

    with pytest.raises(errors.InvalidArgument) as info:
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=101)
    assert "items_done" in {field for field, _ in info.value.field_violations}

    client.complete_chunk(claim.chunk.id, claim.lease_token)
    half = client.get_job(job.id)
    assert half.progress.items_done == 100
    assert half.progress.percent == pytest.approx(50.0)
    assert half.chunks[0].items_done == 100
    assert half.chunks[0].external_task_id == "gpu-job-123"


def test_artifacts_and_external_task_id_from_complete(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    claims = {c.chunk.index: c for c in client.claim_chunks("w1", kinds=["k"], max_chunks=2)}

    client.complete_chunk(
        claims[1].chunk.id,
        claims[1].lease_token,
        artifacts=[
            {
                "name": "thumbs.zip",
                "uri": "s3://out/1/thumbs.zip",
                "media_type": "application/zip",
                "size_bytes": 42,
            },
            job_pb2.Artifact(name="log.txt", uri="s3://out/1/log.txt"),
        ],
        external_task_id="ext-1",
    )
    result = client.complete_chunk(
        claims[0].chunk.id, claims[0].lease_token, artifacts=[{"name": "a.bin", "uri": "gs://b/a.bin"}]
    )
    assert result.job_state == job_pb2.JOB_STATE_COMPLETED

    stored = client.get_job(job.id)
    chunk1 = stored.chunks[1]
    assert chunk1.external_task_id == "ext-1"
    assert [(a.name, a.uri, a.media_type, a.size_bytes, a.chunk_index) for a in chunk1.artifacts] == [
        ("thumbs.zip", "s3://out/1/thumbs.zip", "application/zip", 42, 1),
        ("log.txt", "s3://out/1/log.txt", "", 0, 1),
    ]
    assert [(a.name, a.chunk_index) for a in stored.chunks[0].artifacts] == [("a.bin", 0)]
    assert sorted((a.name, a.uri, a.chunk_index) for a in stored.artifacts) == [
        ("a.bin", "gs://b/a.bin", 0),
        ("log.txt", "s3://out/1/log.txt", 1),
        ("thumbs.zip", "s3://out/1/thumbs.zip", 1),
    ]
    listed = chunks_by_index(client, job.id)
    assert [a.name for a in listed[1].artifacts] == ["thumbs.zip", "log.txt"]
    assert stored.state == job_pb2.JOB_STATE_COMPLETED
    assert stored.progress.percent == 100
    assert stored.HasField("end_time")


def test_invalid_artifact_is_rejected_and_the_chunk_stays_leased(client: jobpulse.Client) -> None:
    job = client.create_job("k", 1)
    claim = claim_one(client, "k")
    with pytest.raises(errors.InvalidArgument) as info:
        client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=[{"name": "no-uri"}])
    assert "artifacts[0].uri" in {field for field, _ in info.value.field_violations}
    assert client.get_job(job.id).chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING
    client.complete_chunk(claim.chunk.id, claim.lease_token)
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED


# --- the SDK Worker and wait ---------------------------------------------------------------------------


def _run_worker(worker: jobpulse.Worker, handler: Any) -> tuple[threading.Event, BackgroundThread]:
    stop = threading.Event()
    return stop, BackgroundThread(lambda: worker.run(handler, stop_event=stop), name="sdk-worker")


def test_worker_runs_a_job_to_completion(client: jobpulse.Client) -> None:
    job = client.create_job("frames", 100, chunk_size=10, metadata={"scale": 2})
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def handle(task: jobpulse.Task) -> None:
        assert task.job_id == job.id
        assert task.job_metadata == {"scale": 2}
        for n, _item in enumerate(task.items, 1):
            task.progress(n, stage="scaling")
        task.set_external_task_id(f"ext-{task.chunk.index}")
        task.add_artifact(f"part-{task.chunk.index}.bin", f"s3://out/{task.chunk.index}", size_bytes=10)
        with lock:
            seen.append((task.chunk.index, task.items.start, len(task.items)))

    worker = jobpulse.Worker(client, kinds=["frames"], worker_id="sdk-w", concurrency=2, poll_wait=0.2)
    stop, thread = _run_worker(worker, handle)
    try:
        final = client.wait(job.id, timeout=30)
    finally:
        stop.set()
    processed = thread.join(timeout=15)

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.progress.percent == 100
    assert not final.progress.HasField("eta"), "a finished job has no ETA"
    assert processed == 10
    assert sorted(seen) == [(i, i * 10, 10) for i in range(10)]
    full = client.get_job(job.id)
    assert full.chunks_summary.completed == 10
    assert {c.worker_id for c in full.chunks} == {"sdk-w"}
    assert [c.external_task_id for c in full.chunks] == [f"ext-{i}" for i in range(10)]
    assert sorted(a.chunk_index for a in full.artifacts) == list(range(10))
    assert_summary_matches(client, job.id)


def test_worker_heartbeats_carry_progress_stage_and_message(client: jobpulse.Client) -> None:
    job = client.create_job("frames", 10, chunk_size=10)

    def handle(task: jobpulse.Task) -> None:
        task.progress(4, stage="scaling", message="4 of 10 frames")
        task.set_external_task_id("gpu-77")
        eventually(lambda: client.get_job(job.id, view="basic").stage == "scaling")

    stop, thread = _run_worker(jobpulse.Worker(client, kinds=["frames"], poll_wait=0.2), handle)
    try:
        seen = eventually(lambda: (j := client.get_job(job.id)).stage == "scaling" and j)
        final = client.wait(job.id, timeout=30, view="full")
    finally:
        stop.set()
    thread.join(timeout=15)

    assert seen.message == "4 of 10 frames"
    assert seen.progress.items_done >= 4
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.stage == "scaling"
    assert final.chunks[0].external_task_id == "gpu-77"


def test_worker_permanent_error_fails_the_chunk_for_good(client: jobpulse.Client) -> None:
    job = client.create_job("frames", 5, chunk_size=1, max_attempts=3)
    calls: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        calls.append(task.chunk.index)
        if task.chunk.index == 3:
            raise jobpulse.PermanentError("frame 3 is unreadable")

    worker = jobpulse.Worker(client, kinds=["frames"], poll_wait=0.2)
    stop, thread = _run_worker(worker, handle)
    try:
        final = client.wait(job.id, timeout=30, view="full")
    finally:
        stop.set()
    thread.join(timeout=15)

    assert final.state == job_pb2.JOB_STATE_FAILED
    assert calls.count(3) == 1, "a PermanentError must not be retried"
    bad = final.chunks[3]
    assert bad.state == job_pb2.CHUNK_STATE_FAILED
    assert bad.attempt == 1
    assert bad.error.reason == "PermanentError"
    assert bad.error.message == "frame 3 is unreadable"
    assert final.error.chunk_index == 3
    assert [c.state for i, c in enumerate(final.chunks) if i != 3] == [job_pb2.CHUNK_STATE_COMPLETED] * 4


def test_worker_retries_ordinary_exceptions(make_server: Any, connect: Any) -> None:
    srv = make_server(retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job("flaky", 1, max_attempts=3)
    attempts: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        attempts.append(task.chunk.attempt)
        if task.chunk.attempt < 2:
            raise RuntimeError("transient glitch")

    stop, thread = _run_worker(jobpulse.Worker(client, kinds=["flaky"], poll_wait=0.2), handle)
    try:
        final = client.wait(job.id, timeout=30, view="full")
    finally:
        stop.set()
    thread.join(timeout=15)

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert attempts == [1, 2]
    assert final.chunks[0].attempt == 2


def test_worker_stops_when_its_job_is_cancelled(client: jobpulse.Client) -> None:
    job = client.create_job("long", 1)
    started = threading.Event()

    def handle(task: jobpulse.Task) -> None:
        started.set()
        assert task.cancel_event.wait(20), "the worker was never told about the cancel"

    worker = jobpulse.Worker(client, kinds=["long"], lease_duration=1.5, poll_wait=0.2)
    stop, thread = _run_worker(worker, handle)
    try:
        assert started.wait(10)
        assert client.cancel_job(job.id, reason="user").state == job_pb2.JOB_STATE_CANCELLING
        final = client.wait(job.id, timeout=20)
    finally:
        stop.set()
    thread.join(timeout=15)

    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert client.get_job(job.id).chunks[0].state == job_pb2.CHUNK_STATE_CANCELLED


def test_wait_returns_the_final_job(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    run_all(client, "k")

    final = client.wait(job.id, timeout=10)
    assert final.id == job.id
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert len(final.chunks) == 0
    full = client.wait(job.id, timeout=10, view="full")
    assert len(full.chunks) == 3


def test_wait_times_out_on_an_unfinished_job(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    started = time.monotonic()

    with pytest.raises(jobpulse.WaitTimeout) as info:
        client.wait(job.id, timeout=0.5)

    assert 0.4 < time.monotonic() - started < 5
    assert isinstance(info.value, errors.DeadlineExceeded)
    assert info.value.job_id == job.id
    assert info.value.last_job is not None
    assert info.value.last_job.state == job_pb2.JOB_STATE_PENDING
