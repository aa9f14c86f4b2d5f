"""The ends of a raw WatchJob stream: heartbeats on an idle stream, UNAVAILABLE (never OK) when the
server stops or gets SIGTERM while the job is not finished."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.servers import ServerProcess
from support.watch import CHANGE, HEARTBEAT, SNAPSHOT

from jobpulse import errors
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

KIND = "watch-lifecycle"


class RawStream:
    """A raw WatchJob stream read by a thread, so the test can wait for its messages and its end."""

    def __init__(self, address: str, job_id: str, timeout: float = 30.0) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.call = stub.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=timeout)
        self.events: list[Any] = []
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def next_event(self, index: int, timeout: float = 10.0) -> Any:
        """The ``index``-th message, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) <= index:
                remaining = deadline - time.monotonic()
                assert not self.ended.is_set(), f"stream ended ({self.error!r}) before message {index}"
                assert remaining > 0, f"no message {index} within {timeout:g}s"
                self._cond.wait(remaining)
            return self.events[index]

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def raw_streams() -> Iterator[list[RawStream]]:
    opened: list[RawStream] = []
    yield opened
    for stream in opened:
        stream.close()


def _open_job(address: str) -> tuple[str, Any]:
    """A job with one chunk claimed (so it is PROCESSING and stays unfinished), and the claim."""
    with grpc.insecure_channel(address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        job = jobs.CreateJob(job_service_pb2.CreateJobRequest(kind=KIND, total_items=4, chunk_size=2)).job
        claims = workers.ClaimChunks(
            worker_service_pb2.ClaimChunksRequest(worker_id="w", kinds=[KIND], max_chunks=1), timeout=10
        ).claims
        assert len(claims) == 1
        return job.id, claims[0]


def _assert_ended_unavailable(stream: RawStream) -> None:
    assert stream.ended.wait(15), "the stream did not end when the server stopped"
    assert stream.error is not None, "the stream ended with OK although the job is not finished"
    assert stream.error.code() == grpc.StatusCode.UNAVAILABLE, stream.error
    assert errors.from_rpc_error(stream.error).reason == "SHUTTING_DOWN", stream.error
    assert all(e.job.state == job_pb2.JOB_STATE_PROCESSING for e in stream.events if e.HasField("job"))


def test_stop_ends_an_open_stream_with_unavailable(
    make_server: Callable[..., Any], raw_streams: list[RawStream]
) -> None:
    srv = make_server(drain_seconds=0.2)
    job_id, _ = _open_job(srv.address)
    stream = RawStream(srv.address, job_id)
    raw_streams.append(stream)
    assert stream.next_event(0).type == SNAPSHOT

    started = time.monotonic()
    srv.stop(drain_seconds=srv.config.drain_seconds)
    _assert_ended_unavailable(stream)
    # The stream was given its drain time before it was ended.
    assert time.monotonic() - started >= 0.2


def test_sigterm_ends_an_open_stream_with_unavailable_and_exits_0(
    database_url: str, tmp_path: Path, raw_streams: list[RawStream]
) -> None:
    server = ServerProcess(database_url, tmp_path, drain_seconds=0.2)
    server.start()
    try:
        job_id, _ = _open_job(server.address)
        stream = RawStream(server.address, job_id)
        raw_streams.append(stream)
        assert stream.next_event(0).type == SNAPSHOT
        assert server.terminate() == 0, server.log()
        _assert_ended_unavailable(stream)
    finally:
        server.close()


def test_idle_stream_gets_heartbeats_with_the_current_revision(
    make_server: Callable[..., Any], raw_streams: list[RawStream]
) -> None:
    srv = make_server(heartbeat_interval=0.2)
    job_id, claim = _open_job(srv.address)
    stream = RawStream(srv.address, job_id)
    raw_streams.append(stream)
    snapshot = stream.next_event(0)
    assert snapshot.type == SNAPSHOT

    beat = stream.next_event(1, timeout=5)
    assert beat.type == HEARTBEAT
    assert beat.revision == snapshot.revision
    assert not beat.HasField("job") and not beat.chunks

    # After a change, heartbeats carry the new revision.
    with grpc.insecure_channel(srv.address) as channel:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        workers.ReportChunkProgress(
            worker_service_pb2.ReportChunkProgressRequest(
                chunk_id=claim.chunk.id, lease_token=claim.lease_token, items_done=1
            ),
            timeout=10,
        )
    index = 2
    while stream.next_event(index).type == HEARTBEAT:  # a heartbeat may have been under way
        index += 1
    change = stream.events[index]
    assert change.type == CHANGE and change.revision > snapshot.revision
    beat = stream.next_event(index + 1, timeout=5)
    assert beat.type == HEARTBEAT
    assert beat.revision == change.revision
