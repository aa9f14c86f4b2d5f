"""A jobpulse server as a process of its own (``python -m jobpulse_server``), for tests that kill,
restart or signal it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Blocks until the server at ``address`` answers its health check with SERVING; fails at once if
    ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server process exited with {proc.returncode} during start-up")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server at {address} not serving after {timeout:g}s")
            time.sleep(0.02)


class ServerProcess:
    """``python -m jobpulse_server`` in a child process on a port of its own, configured through
    JOBPULSE_* variables (``settings``: ``drain_seconds=0`` -> ``JOBPULSE_DRAIN_SECONDS=0``), and
    restartable on the same port and database. Its output goes to ``log``: a file, or a directory
    to write ``server-<port>.log`` in."""

    def __init__(self, database_url: str, log: Path, **settings: Any) -> None:
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
        self.log_path = log / f"server-{self.port}.log" if log.is_dir() else log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobpulse_server"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_serving(self.address, timeout, self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{self.log()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Ends the process if it still runs: SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        """The end of the server's output."""
        return self.log_path.read_text(errors="replace")[-3000:]
