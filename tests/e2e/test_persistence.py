"""End-to-end: everything survives a server restart on the same database, and work carries on."""

from __future__ import annotations

from typing import Any

import pytest
from support.e2e import assert_summary_matches, claim_one
from support.polling import eventually

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2


def _comparable(job: job_pb2.Job) -> job_pb2.Job:
    """The job without the parts that depend on the time of the read (the ETA)."""
    copy = job_pb2.Job()
    copy.CopyFrom(job)
    copy.progress.ClearField("eta")
    return copy


def test_state_survives_a_restart_and_work_continues(server: Any, connect: Any) -> None:
    client = connect(server)
    busy = client.create_job(
        "encode", 30, chunk_size=10, labels={"team": "video"}, metadata={"codec": "av1"}, request_id="busy-1"
    )
    claims = {c.chunk.index: c for c in client.claim_chunks("w1", kinds=["encode"], max_chunks=2)}
    client.complete_chunk(
        claims[0].chunk.id,
        claims[0].lease_token,
        artifacts=[{"name": "part0.mp4", "uri": "s3://out/part0.mp4", "size_bytes": 1234}],
        external_task_id="ext-0",
    )
    client.report_chunk_progress(claims[1].chunk.id, claims[1].lease_token, items_done=4, stage="pass 1")
    stopped = client.create_job("scan", 4, chunk_size=1)
    client.cancel_job(stopped.id, reason="not needed")
    done = client.create_job("index", 1)
    only = claim_one(client, "index")
    client.complete_chunk(only.chunk.id, only.lease_token)
    before = {j: client.get_job(j) for j in (busy.id, stopped.id, done.id)}
    listed_before = client.list_jobs_page()

    server.restart()
    after_client = connect(server)

    after = {j: after_client.get_job(j) for j in before}
    for job_id, job in before.items():
        assert _comparable(after[job_id]) == _comparable(job), f"job {job_id} changed across the restart"
    assert after[busy.id].state == job_pb2.JOB_STATE_PROCESSING
    assert after[busy.id].progress.items_done == 14
    assert after[busy.id].stage == "pass 1"
    assert [(a.name, a.uri, a.size_bytes) for a in after[busy.id].artifacts] == [
        ("part0.mp4", "s3://out/part0.mp4", 1234)
    ]
    assert after[busy.id].chunks[0].external_task_id == "ext-0"
    assert after[stopped.id].state == job_pb2.JOB_STATE_CANCELLED
    assert after[stopped.id].cancel_reason == "not needed"
    assert after[done.id].state == job_pb2.JOB_STATE_COMPLETED
    listed_after = after_client.list_jobs_page()
    assert [j.id for j in listed_after.jobs] == [j.id for j in listed_before.jobs]
    assert listed_after.total_size == 3
    for job_id in before:
        assert_summary_matches(after_client, job_id)

    # The request_id and the fingerprint of its request survive the restart: the same request is
    # answered with the first job, another one is refused.
    again = after_client.create_job(
        "encode", 30, chunk_size=10, labels={"team": "video"}, metadata={"codec": "av1"}, request_id="busy-1"
    )
    assert again.id == busy.id
    with pytest.raises(errors.InvalidArgument):
        after_client.create_job("encode", 30, chunk_size=10, request_id="busy-1")
    assert after_client.list_jobs_page().total_size == 3

    # The lease taken before the restart is still good, and the rest of the work can be claimed.
    heartbeat = after_client.report_chunk_progress(claims[1].chunk.id, claims[1].lease_token, items_done=8)
    assert heartbeat.cancel_requested is False
    after_client.complete_chunk(claims[1].chunk.id, claims[1].lease_token)
    last = claim_one(after_client, "encode")
    assert last.chunk.index == 2
    result = after_client.complete_chunk(last.chunk.id, last.lease_token)
    assert result.job_state == job_pb2.JOB_STATE_COMPLETED
    final = after_client.get_job(busy.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.revision > before[busy.id].revision
    assert final.progress.percent == 100
    assert_summary_matches(after_client, busy.id)


def test_a_client_opened_before_the_restart_keeps_working(server: Any, connect: Any) -> None:
    client = connect(server)
    job = client.create_job("k", 2, chunk_size=1)
    revision = client.get_job(job.id).revision

    server.restart()

    # The SDK retries reads on UNAVAILABLE while the channel reconnects; allow a few rounds of that.
    fetched = eventually(lambda: _get_or_none(client, job.id), timeout=15)
    assert fetched.revision == revision
    assert fetched.state == job_pb2.JOB_STATE_PENDING


def _get_or_none(client: jobpulse.Client, job_id: str) -> job_pb2.Job | None:
    try:
        return client.get_job(job_id, timeout=2)
    except jobpulse.errors.Unavailable:
        return None


def test_expired_leases_are_rescued_after_a_restart(make_server: Any, connect: Any) -> None:
    srv = make_server(sweep_interval=0.05, retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job("k", 2, chunk_size=1)
    claim_one(client, "k", lease_duration=0.3)

    srv.restart()
    after = connect(srv)

    rescued = eventually(
        lambda: (j := after.get_job(job.id)).chunks[0].state == job_pb2.CHUNK_STATE_PENDING and j, timeout=10
    )
    assert rescued.chunks[0].attempt == 1
    assert rescued.chunks[0].error.reason == "LEASE_EXPIRED"

    def finish() -> bool:
        for c in after.claim_chunks("w2", kinds=["k"], max_chunks=2):
            after.complete_chunk(c.chunk.id, c.lease_token)
        return after.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED

    eventually(finish)
