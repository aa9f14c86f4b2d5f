"""The server fixtures for the SDK's tests run in a venv that holds the SDK alone, at the oldest or the
newest versions it allows (``make check-sdk-pins``): no jobpulse_server, no SQLAlchemy, no server.

Loaded with ``-p sdk_pins_plugin`` in place of tests/conftest.py (``--confcutdir`` keeps that one out),
it gives ``server``, ``make_server`` and ``database_url`` as the tests use them, but each server is
``jobpulse-server serve`` in a process of its own, run by the interpreter named in
``JOBPULSE_SERVER_PYTHON`` (the dev venv's), on a fresh SQLite file. Only the SDK under test is imported
here.

Importing the server takes a process seconds, where the in-process server of tests/conftest.py restarts in
a tenth of one; the SDK's reconnect tests wait 10 s for a client to come back after a restart. So one
process is kept ready with the server's modules imported (``_LAUNCHER``): a server start hands it its
settings and it runs ``jobpulse-server serve`` at once, as ``python -m jobpulse_server`` would, while the
next one imports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
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
# Imports the server, then waits for one line on stdin: the JOBPULSE_* settings as JSON; then serves.
_LAUNCHER = """
import json, os, sys
import jobpulse_server.app.wiring, jobpulse_server.cli
line = sys.stdin.readline()
if not line:
    sys.exit(0)
os.environ.update(json.loads(line))
sys.exit(jobpulse_server.cli.main(["serve"]))
"""
_LOGS = Path(tempfile.mkdtemp(prefix="jobpulse-sdk-pins-"))
_ready: list[tuple[subprocess.Popen[bytes], Path]] = []


def _spawn() -> tuple[subprocess.Popen[bytes], Path]:
    log = _LOGS / f"server-{len(list(_LOGS.iterdir()))}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SERVER_PYTHON, "-c", _LAUNCHER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def _take() -> tuple[subprocess.Popen[bytes], Path]:
    """The process kept ready (or a new one), another one made ready in its place."""
    taken = _ready.pop() if _ready else _spawn()
    _ready.append(_spawn())
    return taken


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExternalServer:
    """A jobpulse server process with the attributes the SDK's tests read of the in-process one:
    ``address``, ``port``, ``app`` (None once stopped), ``config.port``, ``stop()`` and ``start()``
    (again on the same port and database)."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = SimpleNamespace(port=self.port)
        self.settings = {
            "JOBPULSE_HOST": "127.0.0.1",
            "JOBPULSE_PORT": str(self.port),
            "JOBPULSE_HTTP_PORT": "0",
            "JOBPULSE_DATABASE_URL": database_url,
            "JOBPULSE_DRAIN_SECONDS": "0",
            "JOBPULSE_LOG_LEVEL": "WARNING",
            **{f"JOBPULSE_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def app(self) -> ExternalServer | None:
        return self if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> ExternalServer:
        assert self.config.port == self.port, "an external server restarts on its own port only"
        self.proc, log = _take()
        self.logs.append(log)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.settings).encode() + b"\n")
        self.proc.stdin.close()
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
        return self.logs[-1].read_text(errors="replace")[-3000:] if self.logs else ""


@pytest.fixture(scope="session", autouse=True)
def _server_python() -> Iterator[None]:
    if not SERVER_PYTHON:
        pytest.exit("JOBPULSE_SERVER_PYTHON must name the Python that runs the server", returncode=2)
    yield
    for proc, _ in _ready:
        assert proc.stdin is not None
        proc.stdin.close()  # no settings: it exits
        proc.wait(30)
    _ready.clear()
    shutil.rmtree(_LOGS, ignore_errors=True)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobpulse.db'}"


@pytest.fixture
def make_server(database_url: str) -> Iterator[Callable[..., ExternalServer]]:
    started: list[ExternalServer] = []

    def make(**settings: Any) -> ExternalServer:
        srv = ExternalServer(database_url, **settings)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., ExternalServer]) -> ExternalServer:
    return make_server()
