"""End-to-end: dependencies between jobs and the finalize step, on both databases (PostgreSQL's
completions of pipeline jobs take the transaction path: its batch declines them), through the SDK: what
a held chunk waits for, what frees it, what a failure cancels, and what Job.blocked and result_uri say."""

from __future__ import annotations

import threading
import time

import pytest
from support.e2e import BackgroundThread, assert_summary_matches

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2

DONE = job_pb2.JOB_STATE_COMPLETED


def _claim(client: jobpulse.Client, kind: str, n: int = 10) -> list[worker_service_pb2.ChunkClaim]:
    return list(client.claim_chunks("w1", kinds=[kind], max_chunks=n))


def _finish(client: jobpulse.Client, claims: list[worker_service_pb2.ChunkClaim]) -> None:
    for c in claims:
        client.complete_chunk(c.chunk.id, c.lease_token)


def test_a_job_after_another_waits_for_it_to_complete(client: jobpulse.Client) -> None:
    first = client.create_job("pl-a", 2, chunk_size=1)
    second = client.create_job("pl-b", 2, chunk_size=1, after=[first.id])

    assert second.blocked and list(second.after) == [first.id]
    assert second.after_mode == job_pb2.DEPENDENCY_MODE_ALL
    assert _claim(client, "pl-b") == []
    one, two = _claim(client, "pl-a")
    _finish(client, [one])
    assert _claim(client, "pl-b") == [] and client.get_job(second.id).blocked
    _finish(client, [two])  # the last chunk of the first job frees every chunk of the second

    assert not client.get_job(second.id).blocked
    assert sorted(c.chunk.index for c in _claim(client, "pl-b")) == [0, 1]
    assert_summary_matches(client, second.id)


def test_a_job_after_several_waits_for_all_of_them(client: jobpulse.Client) -> None:
    a = client.create_job("pl-m1", 1)
    b = client.create_job("pl-m2", 1)
    last = client.create_job("pl-m3", 1, after=[a.id, b.id])
    _finish(client, _claim(client, "pl-m1"))
    assert _claim(client, "pl-m3") == []
    _finish(client, _claim(client, "pl-m2"))
    assert [c.job_id for c in _claim(client, "pl-m3")] == [last.id]


def test_per_chunk_frees_chunk_i_when_its_dependency_completes_chunk_i(client: jobpulse.Client) -> None:
    stage1 = client.create_job("pl-s1", 3, chunk_size=1)
    stage2 = client.create_job("pl-s2", 3, chunk_size=1, after=[stage1.id], after_mode="per_chunk")
    claims = {c.chunk.index: c for c in _claim(client, "pl-s1")}

    _finish(client, [claims[1]])
    got = _claim(client, "pl-s2")
    assert [c.chunk.index for c in got] == [1]
    assert not client.get_job(stage2.id).blocked  # a chunk runs
    _finish(client, [claims[0], claims[2]])
    assert sorted(c.chunk.index for c in _claim(client, "pl-s2")) == [0, 2]


def test_the_finalize_chunk_runs_after_every_other_and_gives_the_result(client: jobpulse.Client) -> None:
    job = client.create_job("pl-scene", 3, chunk_size=1, finalize_kind="pl-compose")
    full = client.get_job(job.id)
    assert full.chunks_summary.total == 4 and full.finalize_kind == "pl-compose"
    last = full.chunks[3]
    assert last.finalize and last.item_count == 0 and not last.HasField("next_attempt_time")
    assert not any(c.finalize for c in full.chunks[:3])

    scenes = _claim(client, "pl-scene")
    assert len(scenes) == 3
    assert _claim(client, "pl-compose") == []
    _finish(client, scenes[:2])
    assert _claim(client, "pl-compose") == []
    _finish(client, scenes[2:])
    [compose] = _claim(client, "pl-compose")
    assert compose.chunk.finalize and compose.job_kind == "pl-compose" and compose.job_id == job.id
    assert client.get_job(job.id).state != DONE
    result = {"name": "final.mp4", "uri": "s3://out/final.mp4", "role": job_pb2.ARTIFACT_ROLE_RESULT}
    client.complete_chunk(compose.chunk.id, compose.lease_token, [result])

    ended = client.get_job(job.id)
    assert ended.state == DONE and ended.result_uri == "s3://out/final.mp4"
    assert [a.role for a in ended.artifacts] == [job_pb2.ARTIFACT_ROLE_RESULT]


def test_a_failed_chunk_cancels_the_finalize_chunk_and_a_retry_holds_it_again(
    client: jobpulse.Client,
) -> None:
    job = client.create_job("pl-f", 2, chunk_size=1, finalize_kind="pl-fz", max_attempts=1)
    ok, bad = _claim(client, "pl-f")
    _finish(client, [ok])
    client.fail_chunk(bad.chunk.id, bad.lease_token, "BROKEN", "input unreadable", retryable=False)

    failed = client.get_job(job.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.error.reason == "BROKEN"
    assert failed.chunks[2].state == job_pb2.CHUNK_STATE_CANCELLED

    client.retry_chunk(job.id, bad.chunk.id)
    again = client.get_job(job.id)
    assert (
        again.chunks[2].state == job_pb2.CHUNK_STATE_PENDING and again.state == job_pb2.JOB_STATE_PROCESSING
    )
    assert _claim(client, "pl-fz") == []
    _finish(client, _claim(client, "pl-f"))
    [fin] = _claim(client, "pl-fz")
    _finish(client, [fin])
    assert client.get_job(job.id).state == DONE
    assert_summary_matches(client, job.id)


def test_a_failed_dependency_cancels_the_chain_after_it(client: jobpulse.Client) -> None:
    first = client.create_job("pl-x1", 1, max_attempts=1)
    second = client.create_job("pl-x2", 2, chunk_size=1, after=[first.id])
    third = client.create_job("pl-x3", 1, after=[second.id], finalize_kind="pl-x4")
    [c] = _claim(client, "pl-x1")
    client.fail_chunk(c.chunk.id, c.lease_token, "BROKEN", "", retryable=False)

    for job, cause in ((second, first), (third, second)):
        got = client.get_job(job.id)
        assert got.state == job_pb2.JOB_STATE_CANCELLED, job.id
        assert got.error.reason == "DEPENDENCY_FAILED" and cause.id in got.cancel_reason
        assert not got.blocked
        assert_summary_matches(client, job.id)
    assert _claim(client, "pl-x2") == [] and _claim(client, "pl-x4") == []
    with pytest.raises(jobpulse.errors.FailedPrecondition) as refused:
        client.retry_job(second.id)
    assert refused.value.reason == "JOB_NOT_RETRYABLE"


def test_deleting_a_dependency_before_it_completes_cancels_its_dependants(client: jobpulse.Client) -> None:
    first = client.create_job("pl-d1", 1)
    second = client.create_job("pl-d2", 1, after=[first.id])
    client.delete_job(first.id, force=True)
    got = client.get_job(second.id)
    assert got.state == job_pb2.JOB_STATE_CANCELLED and got.error.reason == "DEPENDENCY_FAILED"


def test_bad_dependencies_are_refused_with_the_reason(client: jobpulse.Client) -> None:
    failed = client.create_job("pl-r1", 1, max_attempts=1)
    [c] = _claim(client, "pl-r1")
    client.fail_chunk(c.chunk.id, c.lease_token, "BROKEN", "", retryable=False)
    with pytest.raises(jobpulse.errors.FailedPrecondition) as after_failed:
        client.create_job("pl-r2", 1, after=[failed.id])
    assert after_failed.value.reason == "DEPENDENCY_FAILED"
    with pytest.raises(jobpulse.errors.InvalidArgument, match="was not found"):
        client.create_job("pl-r2", 1, after=["no-such-job"])
    two = client.create_job("pl-r3", 2, chunk_size=1)
    with pytest.raises(jobpulse.errors.InvalidArgument, match="as many chunks"):
        client.create_job("pl-r2", 3, chunk_size=1, after=[two.id], after_mode="per_chunk")
    with pytest.raises(jobpulse.errors.InvalidArgument, match="exactly one job"):
        client.create_job("pl-r2", 2, chunk_size=1, after=[two.id, failed.id], after_mode="per_chunk")
    with pytest.raises(jobpulse.errors.InvalidArgument, match="at most 20"):
        client.create_job("pl-r2", 1, after=[two.id] * 21)


def test_complete_and_claim_frees_and_takes_the_next_stage(client: jobpulse.Client) -> None:
    """A worker of both stages completes stage 1's chunk and gets stage 2's freed chunk in the same
    call (on PostgreSQL the completion of a pipeline job declines the batch and runs as a transaction)."""
    stage1 = client.create_job("pl-c1", 1)
    stage2 = client.create_job("pl-c2", 1, after=[stage1.id], after_mode="per_chunk")
    [c] = client.claim_chunks("w1", kinds=["pl-c1", "pl-c2"])
    ask = worker_service_pb2.ClaimChunksRequest(worker_id="w1", kinds=["pl-c1", "pl-c2"], max_chunks=1)
    answer = client.complete_chunk(c.chunk.id, c.lease_token, claim_next=ask)
    assert [n.job_id for n in answer.claims] == [stage2.id]


def test_a_finalize_chunk_obeys_its_own_kinds_pause_and_cap(client: jobpulse.Client) -> None:
    job = client.create_job("pl-k", 1, finalize_kind="pl-kf")
    client.update_kind("pl-kf", paused=True)
    _finish(client, _claim(client, "pl-k"))
    assert _claim(client, "pl-kf") == []
    client.update_kind("pl-kf", paused=False, max_running_chunks=1)
    [fin] = _claim(client, "pl-kf")
    assert fin.chunk.finalize and fin.job_id == job.id
    other = client.create_job("pl-k", 1, finalize_kind="pl-kf")
    _finish(client, _claim(client, "pl-k"))
    assert _claim(client, "pl-kf") == []  # the kind's one running chunk is the first job's
    _finish(client, [fin])
    assert [c.job_id for c in _claim(client, "pl-kf")] == [other.id]


def test_a_claimer_waiting_for_the_next_stage_gets_the_freed_chunk(client: jobpulse.Client) -> None:
    """A claimer that waits (ClaimChunks ``wait``) is woken by the completion that frees a chunk, as by
    new work: on PostgreSQL that completion is group-committed with the release in SQL."""
    stage1 = client.create_job("pl-w1", 3, chunk_size=1)
    stage2 = client.create_job("pl-w2", 3, chunk_size=1, after=[stage1.id], after_mode="per_chunk")
    first, *_ = _claim(client, "pl-w1")
    got: list[worker_service_pb2.ChunkClaim] = []
    started = time.monotonic()
    waiting = BackgroundThread(lambda: got.extend(client.claim_chunks("w2", kinds=["pl-w2"], wait=30)))
    _finish(client, [first])
    waiting.join(30)
    assert [(c.job_id, c.chunk.index) for c in got] == [(stage2.id, first.chunk.index)]
    assert time.monotonic() - started < 20


def test_the_sdk_workers_run_a_pipeline_to_its_result(client: jobpulse.Client) -> None:
    """Two SDK Workers, one per stage kind, and one of the finalize kind: the finalize handler sees
    ``task.chunk.finalize`` and marks the result, which the job's result_uri then gives."""
    stage1 = client.create_job("pl-sdk1", 6, chunk_size=1)
    stage2 = client.create_job(
        "pl-sdk2", 6, chunk_size=1, after=[stage1.id], after_mode="per_chunk", finalize_kind="pl-sdkf"
    )
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def handle(task: jobpulse.Task) -> None:
        with lock:
            seen.append((task.job_id, task.chunk.finalize))
        if task.chunk.finalize:
            task.add_artifact("final", f"s3://out/{task.job_id}.mp4", role="result")

    stop = threading.Event()
    workers = [
        jobpulse.Worker(client, kinds=[kind], concurrency=2, poll_wait=0.2)
        for kind in ("pl-sdk1", "pl-sdk2", "pl-sdkf")
    ]
    pools = [BackgroundThread(lambda w=w: w.run(handle, stop_event=stop)) for w in workers]
    try:
        final = client.wait(stage2.id, timeout=60)
    finally:
        stop.set()
    for pool in pools:
        pool.join(30)

    assert final.state == DONE and final.result_uri == f"s3://out/{stage2.id}.mp4"
    assert seen.count((stage2.id, True)) == 1 and seen[-1] == (stage2.id, True)
    assert client.get_job(stage1.id).state == DONE
