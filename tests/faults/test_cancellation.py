"""A client deadline or cancel stops the server-side work.

* A ClaimChunks long-poll (wait=30s) abandoned by its client (deadline or cancel) must not claim the
  job created afterwards: its chunk stays PENDING for a bounded observation window and goes to the
  next real claimer, never to the abandoned worker id.
* A cancelled WatchJob / WatchJobs stream frees its server-side subscription (App.hub.open_streams
  returns to its previous value).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from support.faults import Stubs
from support.polling import eventually

from jobpulse.v1 import job_pb2
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

OBSERVE_SECONDS = 1.0


def _open_streams(srv: Any) -> int:
    async def read() -> int:  # read on the server's loop: the hub is not thread-safe
        return int(srv.app.hub.open_streams)

    return int(srv.call(read()))


def _abandon_claim(stubs: Stubs, how: str) -> None:
    request = W.ClaimChunksRequest(worker_id="ghost", wait=duration_pb2.Duration(seconds=30))
    if how == "deadline":
        with pytest.raises(grpc.RpcError) as info:
            stubs.workers.ClaimChunks(request, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        return
    future = stubs.workers.ClaimChunks.future(request, timeout=30)
    # The long-poll is in flight (it would answer only after 30 s); cancel it mid-wait.
    with pytest.raises(grpc.FutureTimeoutError):
        future.result(timeout=0.5)
    assert future.cancel()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_an_abandoned_claim_long_poll_claims_nothing_later(make_server: Callable[..., Any], how: str) -> None:
    srv = make_server(rate_limit_worker=0, rate_limit_client=0, sweep_interval=0.2)
    stubs = Stubs(srv.address)
    try:
        _abandon_claim(stubs, how)
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=1, kind="k"), timeout=10).job
        deadline = time.monotonic() + OBSERVE_SECONDS
        while time.monotonic() < deadline:  # a bounded observation: the chunk must stay PENDING all along
            (chunk,) = stubs.chunks(job.id)
            assert chunk.state == job_pb2.CHUNK_STATE_PENDING, f"ghost claim by {chunk.worker_id!r}"
            time.sleep(0.05)
        claims = stubs.workers.ClaimChunks(W.ClaimChunksRequest(worker_id="real"), timeout=10).claims
        assert [(c.job_id, c.chunk.worker_id) for c in claims] == [(job.id, "real")]
        stubs.assert_summary_matches_chunks(job.id)
    finally:
        stubs.close()


def test_a_claim_long_poll_still_gets_work_that_appears(make_server: Callable[..., Any]) -> None:
    """The control case: the same long-poll, not abandoned, does get the job created meanwhile."""
    srv = make_server(rate_limit_worker=0, rate_limit_client=0)
    stubs = Stubs(srv.address)
    try:
        request = W.ClaimChunksRequest(worker_id="patient", wait=duration_pb2.Duration(seconds=30))
        future = stubs.workers.ClaimChunks.future(request, timeout=30)
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=1), timeout=10).job
        claims = future.result(timeout=20).claims
        assert [(c.job_id, c.chunk.worker_id) for c in claims] == [(job.id, "patient")]
    finally:
        stubs.close()


@pytest.mark.parametrize("method", ["WatchJob", "WatchJobs"])
def test_a_cancelled_watch_frees_its_subscription(make_server: Callable[..., Any], method: str) -> None:
    srv = make_server(heartbeat_interval=0.2)
    stubs = Stubs(srv.address)
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
        before = _open_streams(srv)
        if method == "WatchJob":
            stream = stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job.id), timeout=30)
        else:
            stream = stubs.jobs.WatchJobs(J.WatchJobsRequest(), timeout=30)
        first = next(stream)  # the stream is open server-side once its first message arrived
        assert first.type in (J.WATCH_EVENT_TYPE_SNAPSHOT, J.WATCH_EVENT_TYPE_HEARTBEAT)
        eventually(lambda: _open_streams(srv), 5, "the subscription", expect=before + 1)
        stream.cancel()
        eventually(lambda: _open_streams(srv), 5, "the subscription to be freed", expect=before)
        # And the server still watches fine afterwards.
        again = stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job.id), timeout=30)
        assert next(again).type == J.WATCH_EVENT_TYPE_SNAPSHOT
        again.cancel()
        eventually(lambda: _open_streams(srv), 5, "the second subscription to be freed", expect=before)
    finally:
        stubs.close()
