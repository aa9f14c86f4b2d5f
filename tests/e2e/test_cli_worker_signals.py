"""``jobpulse worker`` stops on SIGTERM, however many arrive and whenever they do: a graceful stop (the
chunks in hand finished, "worker stopped" said), never a hang and never a traceback. It hung once: its
handler set a threading.Event, and a second SIGTERM landing while the first handler held the event's
lock deadlocked the process.

Ctrl-C (a real SIGINT) does the same, exit 0; a second one abandons the chunks in hand, exit 130. Neither
logs an ERROR: the first one used to return from ``Worker.run`` with the chunk still being worked (on
Python 3.11 a KeyboardInterrupt inside ``Thread.join`` marks the thread stopped), and the worker's
thread then failed on the closed channel ("Channel closed"). And the worker refuses to start without
``--kind``: its handler does fake work, and it would take every job of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from support.e2e import popen_interruptible
from support.polling import eventually

import jobpulse
from jobpulse.v1 import job_pb2

JOBPULSE = str(Path(sys.executable).with_name("jobpulse"))


def test_a_burst_of_sigterms_stops_the_worker_gracefully(server: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["JOBPULSE_TARGET"] = server.address
    for _round in range(2):
        worker = subprocess.Popen(
            [JOBPULSE, "worker", "--kind", "nothing-to-claim"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert worker.stderr is not None
        started = worker.stderr.readline()  # the handler is in place once the banner is printed
        assert "Ctrl-C to stop" in started, started
        deadline = time.monotonic() + 2.0
        while worker.poll() is None and time.monotonic() < deadline:
            worker.send_signal(signal.SIGTERM)
        try:
            rest = worker.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            worker.kill()
            raise AssertionError("the worker hung after a burst of SIGTERMs") from None
        # The stop itself was graceful: said, with nothing printed beside it. A SIGTERM of the burst that
        # lands after it, while Python tears down (its handlers back to the default), ends the process
        # with the signal's own status: the usual meaning of a second kill, with the work already done.
        assert "worker stopped after 0 chunks" in rest and "Traceback" not in rest, rest
        assert worker.returncode in (0, -signal.SIGTERM), rest


def _env(server: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["JOBPULSE_TARGET"] = server.address
    return env


def _interruptible_worker(server: Any, *args: str) -> subprocess.Popen[str]:
    """``jobpulse worker`` as a terminal runs it: SIGINT raises KeyboardInterrupt (a child of a shell
    running in the background inherits SIGINT ignored, and Python then leaves it ignored)."""
    return popen_interruptible(
        [JOBPULSE, "worker", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(server)
    )


class _Stderr:
    """The worker's stderr, read by a thread, so the test can wait for a line and still see them all."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def all(self) -> str:
        self._thread.join(30)
        return "".join(self.lines)


def _working(client: jobpulse.Client, job_id: str) -> job_pb2.Chunk:
    [chunk] = client.get_job(job_id, view="full").chunks
    assert chunk.state == job_pb2.CHUNK_STATE_PROCESSING and chunk.items_done > 0, chunk
    return chunk


def _assert_clean(stderr: str) -> None:
    assert " ERROR " not in stderr and "Traceback" not in stderr and "Channel closed" not in stderr, stderr


def test_ctrl_c_finishes_the_chunk_in_hand_and_exits_0(server: Any) -> None:
    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job("ctrl-c-once", 60, chunk_size=60)
        worker = _interruptible_worker(server, "--kind", "ctrl-c-once", "--item-delay", "0.05")
        try:
            stderr = _Stderr(worker)
            eventually(lambda: _working(client, job.id), timeout=30, what="the chunk being worked")
            worker.send_signal(signal.SIGINT)
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        text = stderr.all()
        assert worker.returncode == 0, text
        _assert_clean(text)
        assert "worker stopped after 1 chunks" in text, text
        [chunk] = client.get_job(job.id, view="full").chunks
        assert (chunk.state, chunk.items_done) == (job_pb2.CHUNK_STATE_COMPLETED, 60), chunk


def test_a_second_ctrl_c_abandons_the_chunk_in_hand_and_exits_130(server: Any) -> None:
    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job("ctrl-c-twice", 600, chunk_size=600)  # 30 s of work: never finished here
        worker = _interruptible_worker(server, "--kind", "ctrl-c-twice", "--item-delay", "0.05")
        try:
            stderr = _Stderr(worker)
            eventually(lambda: _working(client, job.id), timeout=30, what="the chunk being worked")
            worker.send_signal(signal.SIGINT)
            eventually(lambda: stderr.has("stopping: finishing the chunks in hand"), timeout=10)
            worker.send_signal(signal.SIGINT)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        text = stderr.all()
        assert worker.returncode == 130, text
        _assert_clean(text)
        assert text.rstrip().endswith("interrupted: the chunks in hand are left to their leases"), text
        chunk = _working(client, job.id)  # left to its lease, which another worker takes once it runs out
        assert chunk.items_done < 600


def test_the_worker_refuses_to_start_without_a_kind(server: Any) -> None:
    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job("someone-elses", 10, chunk_size=10)
        done = subprocess.run(
            [JOBPULSE, "worker"], capture_output=True, text=True, env=_env(server), timeout=30
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("error: jobpulse worker needs --kind KIND: "), line
        assert client.get_job(job.id).chunks_summary.pending == 1  # nothing claimed
