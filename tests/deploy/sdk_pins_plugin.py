"""The server fixtures for the SDK's tests run in a venv that holds the SDK alone, at the oldest or the
newest versions it allows (``make check-sdk-pins``): no jobpulse_server, no SQLAlchemy, no server.

Loaded with ``-p sdk_pins_plugin`` in place of tests/conftest.py (``--confcutdir`` keeps that one out),
it gives ``server``, ``make_server`` and ``database_url`` as the tests use them, but each server is
``python -m jobpulse_server`` run by the interpreter named in ``JOBPULSE_SERVER_PYTHON`` (the dev venv's),
a process of its own on a fresh SQLite file. Only the SDK under test is imported here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

SERVER_PYTHON = os.environ.get("JOBPULSE_SERVER_PYTHON", "")
START_TIMEOUT = 30.0
# grpc.health.v1.Health/Check, by hand (the health package is the server's): an empty request, and
# the answer's field 1 (status) = 1 (SERVING).
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExternalServer:
    """A jobpulse server process with the attributes the SDK's tests read of the in-process one:
    ``address``, ``port``, ``app`` (None once stopped), ``config.port``, ``stop()`` and ``start()``
    (again on the same port and database)."""

    def __init__(self, database_url: str, log: Path, **settings: Any) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = SimpleNamespace(port=self.port)
        self.env = {
            **os.environ,
            "JOBPULSE_HOST": "127.0.0.1",
            "JOBPULSE_PORT": str(self.port),
            "JOBPULSE_HTTP_PORT": "0",
            "JOBPULSE_DATABASE_URL": database_url,
            "JOBPULSE_DRAIN_SECONDS": "0",
            "JOBPULSE_LOG_LEVEL": "WARNING",
            **{f"JOBPULSE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def app(self) -> ExternalServer | None:
        return self if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> ExternalServer:
        assert self.config.port == self.port, "an external server restarts on its own port only"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [SERVER_PYTHON, "-m", "jobpulse_server"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with grpc.insecure_channel(self.address) as channel:
            check = channel.unary_unary(HEALTH_CHECK)
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self._log()}")
                try:
                    if check(b"", timeout=1, wait_for_ready=True) == SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the server is not serving after {START_TIMEOUT:g}s:\n{self._log()}"
                    )
                time.sleep(0.02)

    def stop(self, drain_seconds: float = 0.0) -> None:
        """SIGTERM, and wait for the exit (the server drains for JOBPULSE_DRAIN_SECONDS, 0 here)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="session", autouse=True)
def _server_python() -> None:
    if not SERVER_PYTHON:
        pytest.exit("JOBPULSE_SERVER_PYTHON must name the Python that runs the server", returncode=2)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobpulse.db'}"


@pytest.fixture
def make_server(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ExternalServer]]:
    started: list[ExternalServer] = []

    def make(**settings: Any) -> ExternalServer:
        srv = ExternalServer(database_url, tmp_path / f"server-{len(started)}.log", **settings)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., ExternalServer]) -> ExternalServer:
    return make_server()
