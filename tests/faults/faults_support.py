"""Helpers for the fault tests: polling with deadlines, raw stubs, rich-status reasons, a server process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def eventually(
    fn: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    expect: Any = None,
) -> T:
    """Polls ``fn`` until it returns something truthy (or equal to ``expect``); fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if (last == expect) if expect is not None else last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


class Stubs:
    """Raw stubs over one channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, timeout: float = 2.0) -> int | None:
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return None

    def chunks(self, job_id: str) -> list[job_pb2.Chunk]:
        found: list[job_pb2.Chunk] = []
        token = ""
        while True:
            page = self.jobs.ListJobChunks(
                job_service_pb2.ListJobChunksRequest(job_id=job_id, page_size=1000, page_token=token),
                timeout=10,
            )
            found.extend(page.chunks)
            token = page.next_page_token
            if not token:
                return found

    def assert_summary_matches_chunks(self, job_id: str) -> job_pb2.Job:
        job = self.jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id, view=1), timeout=10).job
        counts = {name: 0 for name in ("pending", "processing", "completed", "failed", "cancelled")}
        for chunk in self.chunks(job_id):
            counts[job_pb2.ChunkState.Name(chunk.state).removeprefix("CHUNK_STATE_").lower()] += 1
        s = job.chunks_summary
        summary = {
            "pending": s.pending,
            "processing": s.processing,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
        }
        assert summary == counts, f"chunks_summary {summary} != recount {counts}"
        assert sum(counts.values()) == s.total
        return job

    def close(self) -> None:
        self.channel.close()


def reason_of(exc: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' if none)."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``python -m jobpulse_server`` in a subprocess, configured through JOBPULSE_* variables."""

    def __init__(self, database_url: str, log: Path, **settings: object) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "JOBPULSE_HOST": "127.0.0.1",
            "JOBPULSE_PORT": str(self.port),
            "JOBPULSE_DATABASE_URL": database_url,
            "JOBPULSE_LOG_LEVEL": "WARNING",
            **{f"JOBPULSE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobpulse_server"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        stubs = Stubs(self.address)
        try:
            eventually(
                lambda: self._check_alive() and stubs.health_status(0.5) == SERVING,
                timeout,
                f"the server on {self.address} to serve (log: {self.log})",
            )
        finally:
            stubs.close()
        return self

    def _check_alive(self) -> bool:
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"the server exited with {code}: {self.log.read_text()[-2000:]}"
        return True

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
