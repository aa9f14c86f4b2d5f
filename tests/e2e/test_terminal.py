"""``jobpulse watch`` in a real terminal: the installed console script runs on a pseudo-terminal of a fixed
size while a job is worked to completion, and everything it writes is played into a terminal-screen
emulator (pyte) to see the screen a user would see (issue 16).

On a terminal the progress bar is redrawn in place: many frames, one line on the final screen, never
wider than the window (a frame that wrapped would leave its first half behind as an extra line), then the
final state. ``NO_COLOR`` turns the colors off; output that is not a terminal is plain lines without
escape sequences or carriage returns. A lost connection shows in place of the bar until it is back.

What is tested here is the rendering, which does not depend on the database: SQLite only.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pyte
import pytest
from support.polling import eventually
from wcwidth import wcswidth

import jobpulse
from jobpulse.v1 import job_pb2

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

JOBPULSE = str(Path(sys.executable).parent / "jobpulse")
KIND = "terminal"
CHUNKS = 4
CHUNK_SIZE = 10
SGR = re.compile(rb"\x1b\[[0-9;]*m")
REDRAW = b"\r\x1b[2K"


def _env(target: str, **extra: str | None) -> dict[str, str]:
    env = {**os.environ, "JOBPULSE_TARGET": target, "TERM": "xterm-256color", "LC_ALL": "C.UTF-8"}
    for name in ("NO_COLOR", "COLUMNS", "LINES", "JOBPULSE_API_KEY"):
        env.pop(name, None)
    for name, value in extra.items():
        if value is not None:
            env[name] = value
    return env


class Terminal:
    """A process on a pseudo-terminal of ``columns`` x ``rows``; collects all it writes there."""

    def __init__(self, argv: list[str], env: dict[str, str], columns: int, rows: int = 30, **popen: Any):
        self.columns, self.rows = columns, rows
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        streams: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": slave, **popen}
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True, **streams)
        os.close(slave)
        self._master = master
        self._data = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every end of the terminal's other side is closed
                break
            if not chunk:
                break
            with self._lock:
                self._data += chunk
        os.close(self._master)

    @property
    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def wait_for(self, needle: bytes, what: str) -> None:
        eventually(lambda: needle in self.data, timeout=20, what=what)

    def finish(self, timeout: float = 30) -> tuple[int, bytes]:
        """Waits for the process to exit and for its last output; returns (exit code, all output)."""
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        assert not self._reader.is_alive(), "the terminal still had a writer after the process exited"
        return code, self.data

    def screen(self, data: bytes) -> pyte.Screen:
        screen = pyte.Screen(self.columns, self.rows)
        pyte.ByteStream(screen).feed(data)
        return screen


def _lines(screen: pyte.Screen) -> list[str]:
    """The screen's non-blank lines, top to bottom."""
    return [line.rstrip() for line in screen.display if line.strip()]


def _frames(data: bytes) -> list[str]:
    """Each redraw of the live line, as text without its color sequences."""
    frames = []
    for part in data.split(REDRAW)[1:]:
        frame = SGR.sub(b"", part).split(b"\r")[0].split(b"\n")[0]
        frames.append(frame.decode("utf-8"))
    return frames


class Work:
    """Works a job of CHUNKS chunks step by step, each step seen on the terminal before the next."""

    def __init__(self, client: jobpulse.Client, stage: str = "resizing") -> None:
        self.client = client
        self.stage = stage
        self.job = client.create_job(KIND, CHUNKS * CHUNK_SIZE, chunk_size=CHUNK_SIZE)
        self.claims: list[Any] = []

    def start(self, term: Terminal) -> None:
        term.wait_for(f"| 0/{CHUNKS * CHUNK_SIZE} items".encode(), "the first frame")
        self.claims = self.client.claim_chunks("terminal-test", [KIND], max_chunks=CHUNKS)
        assert len(self.claims) == CHUNKS
        first = self.claims[0]
        self.client.report_chunk_progress(first.chunk.id, first.lease_token, items_done=5, stage=self.stage)
        term.wait_for(f"| 5/{CHUNKS * CHUNK_SIZE} items".encode(), "the frame after some progress")

    def complete(self, term: Terminal | None) -> None:
        for n, claim in enumerate(self.claims, start=1):
            self.client.complete_chunk(claim.chunk.id, claim.lease_token)
            if term is not None and n < CHUNKS:
                term.wait_for(f"| {n * CHUNK_SIZE}/{CHUNKS * CHUNK_SIZE} items".encode(), f"{n} chunks done")


def _check_live_screen(term: Terminal, data: bytes, job: job_pb2.Job, bar_cells: int) -> str:
    """The bar was redrawn in place, never wider than the window, and ends as the final state."""
    frames = _frames(data)
    assert len(frames) >= 4, frames  # the snapshot, progress, each chunk done
    for frame in frames:
        assert 0 < wcswidth(frame) < term.columns, f"a frame of {wcswidth(frame)} cells: {frame!r}"
    bar, final = _lines(term.screen(data))  # no pile of old frames, no half of a wrapped one
    assert bar.startswith("█" * bar_cells + " 100.0%"), bar
    assert bar == frames[-1].rstrip()
    assert final == f"job {job.id} COMPLETED"
    return bar


def test_the_bar_redraws_in_place_and_ends_with_the_final_state(client: jobpulse.Client, server: Any) -> None:
    work = Work(client)
    term = Terminal([JOBPULSE, "watch", work.job.id], _env(server.address), columns=120)
    work.start(term)
    work.complete(term)
    code, data = term.finish()
    assert code == 0, data.decode(errors="replace")
    bar = _check_live_screen(term, data, work.job, bar_cells=24)
    # Wide enough for all of it (116 cells), uncut.
    assert bar.endswith("| 40/40 items | chunks 4/4 done, 0 running, 0 pending | COMPLETED | stage: resizing")


def test_a_narrow_terminal_gets_a_cut_line_that_never_wraps(client: jobpulse.Client, server: Any) -> None:
    work = Work(client)
    term = Terminal([JOBPULSE, "watch", work.job.id], _env(server.address), columns=40)
    work.start(term)
    work.complete(term)
    code, data = term.finish()
    assert code == 0, data.decode(errors="replace")
    bar = _check_live_screen(term, data, work.job, bar_cells=9)  # a shorter bar leaves room for numbers
    assert bar.endswith("…") and wcswidth(bar) == 39, bar


def test_a_workers_stage_is_measured_in_cells_and_cannot_drive_the_terminal(
    client: jobpulse.Client, server: Any
) -> None:
    # Wide characters take two cells each: cut by characters, the line would be too wide and wrap. A
    # newline or an escape sequence in a stage would break the line or command the terminal.
    work = Work(client, stage="サムネイル生成中\n\x1b[2J" * 3)
    term = Terminal([JOBPULSE, "watch", work.job.id], _env(server.address), columns=120)
    work.start(term)
    work.complete(term)
    code, data = term.finish()
    assert code == 0, data.decode(errors="replace")
    assert b"\x1b[2J" not in data
    bar = _check_live_screen(term, data, work.job, bar_cells=24)
    assert "| stage: サムネイル" in bar and bar.endswith("…")


@pytest.mark.parametrize(
    ("no_color", "colored"),
    [(None, True), ("", True), ("1", False)],
    ids=["unset", "empty", "set"],
)
def test_colors_on_a_terminal_unless_no_color_is_set(
    client: jobpulse.Client, server: Any, no_color: str | None, colored: bool
) -> None:
    work = Work(client)
    term = Terminal([JOBPULSE, "watch", work.job.id], _env(server.address, NO_COLOR=no_color), columns=100)
    work.start(term)
    work.complete(None)
    code, data = term.finish()
    assert code == 0, data.decode(errors="replace")
    assert bool(SGR.search(data)) is colored
    assert data.count(REDRAW) >= 2  # still a live display without colors
    screen = term.screen(data)
    row = next(y for y, line in enumerate(screen.display) if line.startswith("█"))
    assert (screen.buffer[row][0].fg == "green") is colored  # a completed job's bar is green
    assert _lines(screen)[-1] == f"job {work.job.id} COMPLETED"


def test_output_that_is_no_terminal_is_plain_lines(client: jobpulse.Client, server: Any) -> None:
    # `jobpulse watch ID | tee log` in a terminal: stdout is a pipe, stderr still the terminal.
    work = Work(client)
    term = Terminal(
        [JOBPULSE, "watch", work.job.id], _env(server.address), columns=100, stdout=subprocess.PIPE
    )
    assert term.proc.stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(term.proc.stdout or ()), daemon=True)
    reader.start()
    eventually(lambda: lines, what="the snapshot line")
    work.claims = client.claim_chunks("terminal-test", [KIND], max_chunks=CHUNKS)
    work.complete(None)
    code, on_terminal = term.finish()
    reader.join(10)
    out = b"".join(lines)
    assert code == 0, out
    assert b"\x1b" not in out and b"\r" not in out, out
    text = out.decode("utf-8").splitlines()
    assert text[-1] == f"job {work.job.id} COMPLETED"
    assert len(text) >= 3 and all(line.startswith("rev ") for line in text[:-1]), text
    assert "state=COMPLETED 100.0%" in text[-2]
    assert on_terminal == b""  # nothing on stderr


def test_a_lost_connection_shows_in_place_of_the_bar_until_it_is_back(
    make_server: Callable[..., Any],
) -> None:
    srv = make_server(heartbeat_interval=0.3)
    port, address = srv.port, srv.address
    fast = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
    channel = grpc.insecure_channel(address, options=fast)
    driver = jobpulse.Client(address, channel=channel, timeout=20)
    try:
        work = Work(driver)
        term = Terminal([JOBPULSE, "watch", work.job.id], _env(address), columns=100)
        work.start(term)
        srv.stop()
        term.wait_for(f"reconnecting to {address} (attempt 1, UNAVAILABLE".encode(), "the notice")
        term.wait_for(b"(attempt 2, UNAVAILABLE", "the second attempt")
        srv.config.port = port
        srv.start()
        grpc.channel_ready_future(channel).result(timeout=20)
        work.complete(term)
        code, data = term.finish()
    finally:
        channel.close()
    assert code == 0, data.decode(errors="replace")
    notices = [f for f in _frames(data) if f.startswith("reconnecting")]
    assert len(notices) >= 2 and all(wcswidth(f) < 100 for f in notices), notices
    # Said briefly enough to fit: the attempt, the status and the first clause of the error.
    brief = rf"reconnecting to {re.escape(address)} \(attempt \d+, UNAVAILABLE[A-Z_ ]*: [^;…]+\)"
    assert all(re.fullmatch(brief, f) for f in notices), notices
    # The bar took the line back: nothing of the notice is left on the screen.
    _check_live_screen(term, data, work.job, bar_cells=24)
