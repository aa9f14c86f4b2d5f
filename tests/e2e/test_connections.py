"""Connection ageing: the server closes connections after max_connection_age (plus a grace for calls
under way) so clients spread over replicas; a raw stream sees its connection end, the SDK's watch goes on
from where it was. Both databases: the watch reads the job from them on every resume."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

import jobpulse
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

AGEING = {"max_connection_age": 1.0, "max_connection_age_grace": 0.5, "heartbeat_interval": 0.2}


def test_an_aged_connection_ends_a_raw_stream_with_unavailable(make_server: Any) -> None:
    srv = make_server(**AGEING)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("ageing-raw", 2, chunk_size=1)
    with grpc.insecure_channel(srv.address) as channel:
        stream = job_service_pb2_grpc.JobServiceStub(channel).WatchJob(
            job_service_pb2.WatchJobRequest(job_id=job.id), timeout=30
        )
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            for _ in stream:  # heartbeats every 0.2 s until the connection is closed under it
                pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 20, "the connection was not closed after its age and grace"


def test_the_sdk_watch_goes_on_across_connection_ageing(make_server: Any) -> None:
    srv = make_server(**AGEING)
    client = jobpulse.Client(srv.address)
    job = client.create_job("ageing-sdk", 500)
    claim = client.claim_chunks("w", kinds=["ageing-sdk"], max_chunks=1, lease_duration=60)[0]
    seen: list[job_pb2.Job] = []
    changed = threading.Condition()

    def watch() -> None:
        for event in client.watch_job(job.id, timeout=60):
            if event.HasField("job"):
                with changed:
                    seen.append(event.job)
                    changed.notify_all()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    # Progress for longer than three connection ages: each report waits until the watcher saw it.
    done, deadline = 0, time.monotonic() + 4.0
    while time.monotonic() < deadline:
        done = min(done + 1, 400)
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=done)
        with changed:
            shown = changed.wait_for(lambda d=done: bool(seen) and seen[-1].progress.items_done >= d, 20)  # type: ignore[misc]
            assert shown, f"the watcher never saw items_done {done}"
    client.complete_chunk(claim.chunk.id, claim.lease_token)
    thread.join(30)
    assert not thread.is_alive(), "the watch did not end after the job completed"
    assert seen[-1].state == job_pb2.JOB_STATE_COMPLETED
    revisions = [j.revision for j in seen]
    assert revisions == sorted(revisions), "a resumed watch never goes back"
    client.close()


def test_the_sdk_pings_within_what_the_server_allows() -> None:
    """A client pinging more often than the server allows is sent away (GOAWAY too_many_pings) and its
    streams end: the SDK's interval must stay above the server's floor of 10 s."""
    from jobpulse._channel import CHANNEL_OPTIONS
    from jobpulse_server.app.wiring import keepalive_options
    from jobpulse_server.platform.config import Config

    sdk = dict(CHANNEL_OPTIONS)
    server = dict(keepalive_options(Config()))
    assert int(sdk["grpc.keepalive_time_ms"]) >= server["grpc.http2.min_ping_interval_without_data_ms"]
    assert int(sdk["grpc.keepalive_time_ms"]) <= 60_000, (
        "pings rarer than a minute miss common proxy idle cuts"
    )
