"""The README's "Five-minute tour" and the examples of the docs pages that go with it (the CLI's errors in
docs/cli.md, buf curl and google-api-core in docs/grpcurl.md), run as written against a real server, so
the pages cannot drift.

Each block is found by its file, heading and fence (``support.readme_blocks``): an edit that moves a block
to another page, renames the heading, changes the fence or rewrites a block's first line fails here
instead of skipping the block, and ``tests/docs/test_doc_blocks.py`` fails for a block no test runs.

The CLI blocks run in one ``bash`` each, on a pseudo-terminal of 200 columns with a UTF-8 locale (the
README shows a terminal: the live progress bar is drawn only on one), with this venv's ``bin`` first on
PATH (``jobpulse``, ``python3``) and ``JOBPULSE_TARGET`` naming the test's server on port 0: the README's
lines need no ``--target`` (they mean ``make run`` at the default ``127.0.0.1:50051``), so nothing in
them is replaced but the one change below. Every ``$`` line runs in order; ``$ID`` carries the job id
from the ``ID=$(jobpulse create ... --json | python3 ...)`` line to the next ones, as for a reader.

Checked for each line: every command in it exits 0 (an ERR trap reports each failing command, so both
commands of ``a; b`` are checked), the error examples exit 1 (the exit-code table of docs/cli.md); nothing
prints a traceback; the output the README shows under a command is printed (``assert_shows``: ``...``
stands for anything, example job ids for the actual id; the demo's figures depend on timing, so there
each number stands for any number, and the demo's own 500 items in 10 chunks are checked on the job
itself); the error lines match exactly. Where a comment states a result (the listing and ``get`` show
the job; the job ends COMPLETED, so ``watch`` exits 0; ``export`` writes the finished jobs; ``delete``
deletes it), that is checked too.

The one change: ``jobpulse worker --kind thumbnails &`` runs with ``--item-delay 0.001`` added. As the
README says, the sample worker sleeps 0.05 s per item, so its 2,500 items take about 2 minutes; the
added flag is the worker's own documented option for that sleep, so the test waits about 3 s instead
and everything else (claims, progress, completion, the watch) runs as written. The test asserts the
README line is exactly that command before changing it, so an edit of the line fails the test rather
than running unchanged for 2 minutes or silently not at all. The README's ``kill %1`` stops the worker
(SIGTERM: a graceful stop, which must exit 0); an EXIT trap stops a background job still running (after
a failure), and the whole session is killed should the shell outlive its deadline.

The ``buf curl`` lines (docs/grpcurl.md) run the same way, with ``node_modules/.bin`` first on PATH and
the page's address replaced by the server's (buf reads no variable for it); they skip, saying why, without
``make buf``.

The SDK block runs in a Python process of its own with the README's address replaced by the server's
(as tests/e2e/test_async_worker.py does), as one script, start to finish: it creates and lists the job,
starts its own ``Worker`` in a thread, watches the job to its end, waits, and stops the worker; it must
exit 0 with nothing on stderr, print what each ``print`` line's comment says (the job's state and every
watch event's type by name), and its handler's stage and artifacts must be on the job. The google-api-core
block (docs/grpcurl.md) runs in this process with ``job`` bound to a job of its own, as the page says
(``job`` as in the tour's SDK example), and a sample worker.

Both databases, like every server-backed test (``JOBPULSE_TEST_DATABASES=sqlite`` runs SQLite only; buf
curl, which reads no database, SQLite only): about 35 s per database here, the CLI tour 15 s of it, the
SDK block 13 s (most of it the two workers' graceful stops, each waiting out its 5 s long-poll claim).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2
from support.readme_blocks import assert_shows, console_commands, find_block

import jobpulse
from jobpulse.v1 import job_pb2

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: jobpulse, python3
EXAMPLE_ADDRESS = "127.0.0.1:50051"

CLI = "### CLI"
SDK = "### SDK"
ERRORS = "## Errors"
BUF_CURL = "## buf curl"
LONGRUNNING = "## google-api-core (google.longrunning)"

WORKER_LINE = "jobpulse worker --kind thumbnails &"
FAST_WORKER_LINE = "jobpulse worker --kind thumbnails --item-delay 0.001 &"

MARK = "@@readme-tour@@"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --- running a console block in a terminal -------------------------------------------------------------


@dataclass
class Ran:
    """One ``$`` line as run: the lines the terminal showed while it ran (each redraw of a live line
    counted as a line), and the exit status of each command of the line that failed."""

    line: str
    printed: list[str] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.printed)


@dataclass
class Session:
    ran: list[Ran]
    background_exits: list[int]
    after: list[str]  # what was printed after the last line (the background jobs stopping)
    transcript: str


def _screen_lines(raw: bytes) -> list[str]:
    """The terminal's output as lines: a carriage return starts a new line too (a live line redrawn), and
    escape sequences (clearing the line) are dropped."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines: list[str] = []
    for line in text.split("\n"):
        lines += [p for p in (_ANSI.sub("", piece).rstrip() for piece in line.split("\r")) if p]
    return lines


def _terminal_env(server: Any, bin_dirs: tuple[Path, ...] = ()) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOBPULSE_") and k not in ("COLUMNS", "LINES", "LC_ALL", "LANG")
    }
    env.update(
        PATH=os.pathsep.join([*map(str, bin_dirs), str(BIN), env.get("PATH", "")]),
        JOBPULSE_TARGET=server.address,
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        TERM="xterm",
    )
    return env


def _control_terminal() -> None:
    """In the shell's process, before bash runs: a new session, the terminal (its stdout) controlling it."""
    os.setsid()
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def _session_members(session: int) -> list[int]:
    """The processes of a session (the shell's and every job it started), read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == session:
                    members.append(int(entry))
    return members


def run_in_terminal(
    lines: list[str], server: Any, cwd: Path, timeout: float = 90.0, bin_dirs: tuple[Path, ...] = ()
) -> Session:
    """Runs ``lines`` one after another in one bash on a pseudo-terminal and tells what each did;
    ``bin_dirs`` go first on PATH."""
    script = [
        # Job control, as in a terminal: each `&` line a process group of its own, and the terminal's
        # foreground the group of the line that runs (the shell holds the terminal as its controlling one).
        "set -m",
        "set -o pipefail",
        f"trap 'echo \"{MARK} exit $?\"' ERR",
        # Every process a line started with `&` ($! after it), stopped at the end if still running (as a
        # reader would, with kill %1 or by closing the terminal) and waited for: bash keeps the exit status
        # of one that has already ended.
        "_background=",
        "_note_background() {",
        '  if [ -n "$!" ] && [[ " $_background " != *" $! "* ]]; then _background="$_background $!"; fi',
        "}",
        "_stop_background() {",
        "  trap - ERR",
        "  for pid in $_background; do",
        f'    kill -TERM "$pid" 2>/dev/null; wait "$pid"; echo "{MARK} background exit $?"',
        "  done",
        "}",
        "trap _stop_background EXIT",
    ]
    for n, line in enumerate(lines):
        script += [f'echo "{MARK} line {n}"', line, "_note_background"]
    script.append(f'echo "{MARK} end"')

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    shell = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=_terminal_env(server, bin_dirs),
        cwd=cwd,
        # A session of its own with the terminal as its controlling terminal: the shell and every process
        # group it starts (its background jobs too) are in it.
        preexec_fn=_control_terminal,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    done = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"the README's lines did not finish in {timeout:g}s; so far:\n"
                    + "\n".join(_screen_lines(bytes(output)))
                )
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                break
            if not data:
                break
            output += data
        shell.wait(timeout=10)
        done = True  # the shell has exited, and nothing it started holds the terminal any more
    finally:
        os.close(master)
        if not done:
            # The shell and whatever it started (its process group, a background worker too), killed
            # before the shell is reaped, so that the group's id is still this one's.
            for pid in _session_members(shell.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shell.wait()

    screen = _screen_lines(bytes(output))
    transcript = "\n".join(screen)
    ran: list[Ran] = []
    after: list[str] = []
    background: list[int] = []
    current: list[str] | None = None
    for text in screen:
        if text.startswith(f"{MARK} line "):
            ran.append(Ran(lines[int(text.split()[-1])]))
            current = ran[-1].printed
        elif text == f"{MARK} end":
            current = after
        elif text.startswith(f"{MARK} exit "):
            assert ran, transcript
            ran[-1].failures.append(int(text.split()[-1]))
        elif text.startswith(f"{MARK} background exit "):
            background.append(int(text.split()[-1]))
        elif current is not None:
            current.append(text)
        else:
            raise AssertionError(f"printed before the first line: {text!r}\n{transcript}")
    assert [r.line for r in ran] == lines and current is after, f"the lines did not all run:\n{transcript}"
    assert "Traceback (most recent call last)" not in transcript, transcript
    return Session(ran, background, after, transcript)


# --- the CLI ---------------------------------------------------------------------------------------------


def test_the_readme_cli_tour_runs_as_written(server: Any, tmp_path: Path) -> None:
    block = find_block("README.md", CLI, "console", "$ jobpulse demo")
    commands = console_commands(block)
    lines = [c.line for c in commands]
    assert sum(WORKER_LINE in line for line in lines) == 1, (
        f"{block.where()} should start the sample worker with `{WORKER_LINE}` once (the test speeds it up)"
    )
    lines = [line.replace(WORKER_LINE, FAST_WORKER_LINE) for line in lines]

    session = run_in_terminal(lines, server, tmp_path)

    for command, ran in zip(commands, session.ran, strict=True):
        assert ran.failures == [], f"`{ran.line}` failed with exit {ran.failures}:\n{ran.text()}"
        if command.shown:  # where the README shows output; elsewhere it only names the command
            assert_shows(command.shown, ran.printed, vary_numbers=True)
    # The worker, stopped by `kill %1` (SIGTERM): a graceful stop, exit 0, before the end of the session.
    assert session.background_exits == [0], session.transcript

    def ran(start: str) -> Ran:
        [found] = [r for r in session.ran if r.line.startswith(start)]
        return found

    # export --format csv --state completed --output jobs.csv: the two finished jobs of the tour.
    with open(tmp_path / "jobs.csv", newline="", encoding="utf-8") as f:
        exported = {row["kind"]: row for row in csv.DictReader(f)}
    assert sorted(exported) == ["demo", "thumbnails"], exported
    assert {row["state"] for row in exported.values()} == {"COMPLETED"}
    demo = exported["demo"]
    assert (demo["items_total"], demo["chunks_total"], demo["chunks_completed"]) == ("500", "10", "10")
    thumbnails = exported["thumbnails"]
    assert (thumbnails["display_name"], thumbnails["items_total"]) == ("Resize March photos", "2500")
    assert json.loads(thumbnails["labels"]) == {"team": "media"}
    job_id = thumbnails["id"]

    assert ran("ID=$(jobpulse create").printed == []  # the id went into $ID
    assert job_id in ran("jobpulse list --state pending").text()
    assert job_id in ran("jobpulse get $ID").text()
    cancel_retry = ran("jobpulse cancel $ID").text()
    assert re.search(r"CANCELLED(.|\n)*PENDING", cancel_retry), cancel_retry
    assert ran("jobpulse watch $ID").failures == []  # exit 0: COMPLETED
    # The worker, a background job of this terminal, wrote nothing over the watch's live line.
    watched = ran("jobpulse watch $ID").text()
    assert "jobpulse.worker" not in watched and "Ctrl-C to stop" not in watched, watched
    with jobpulse.Client(server.address, timeout=20) as client:
        with pytest.raises(jobpulse.errors.NotFound):  # jobpulse delete $ID
            client.get_job(job_id)
        assert [j.kind for j in client.list_jobs()] == ["demo"]


def test_the_cli_errors_print_as_shown(server: Any, tmp_path: Path) -> None:
    block = find_block("docs/cli.md", ERRORS, "console", "$ jobpulse create --kind k")
    commands = console_commands(block)
    session = run_in_terminal([c.line for c in commands], server, tmp_path)
    for command, ran in zip(commands, session.ran, strict=True):
        assert command.shown, f"{block.where()} shows no error for `{command.line}`"
        assert_shows(command.shown, ran.printed)  # exactly: no `...` in this block
        assert ran.failures == [1], f"`{ran.line}` should exit 1 (an error), exited {ran.failures or [0]}"
    assert session.background_exits == []


BUF_BIN = ROOT / "node_modules" / ".bin"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # reflection reads no database
def test_the_buf_curl_lines_run_as_written(server: Any, tmp_path: Path) -> None:
    """As pasted, with the project's buf first on PATH and the page's address made the server's (buf
    reads no variable for it). tests/clients/test_grpcurl.py runs them too, forcing reflection v1."""
    if not (BUF_BIN / "buf").exists():
        pytest.skip("no node_modules/.bin/buf: `make buf` (npm install) installs it")
    block = find_block("docs/grpcurl.md", BUF_CURL, "console", "$ buf curl ")
    lines = [c.line for c in console_commands(block)]
    assert all(f"http://{EXAMPLE_ADDRESS}" in line for line in lines), lines
    pasted = [line.replace(EXAMPLE_ADDRESS, server.address) for line in lines]
    session = run_in_terminal(pasted, server, tmp_path, bin_dirs=(BUF_BIN,))
    listed, missing = session.ran
    assert listed.failures == [], listed.text()
    assert {"jobpulse.v1.JobService/GetJob", "grpc.health.v1.Health/Check"} <= set(listed.printed)
    # "buf curl prints error details by type name with the message base64 in `value`".
    assert missing.failures, "buf curl should exit non-zero on an error status"
    status = json.loads(missing.text())
    assert status["code"] == "not_found", status
    [detail] = status["details"]
    assert detail["type"] == "google.rpc.ErrorInfo"
    value = detail["value"] + "=" * (-len(detail["value"]) % 4)  # padding, where buf leaves it out
    info = error_details_pb2.ErrorInfo.FromString(base64.b64decode(value))
    assert (info.domain, info.reason) == ("jobpulse", "JOB_NOT_FOUND")


# --- the SDK ---------------------------------------------------------------------------------------------


def _sample_worker(server: Any, kind: str) -> subprocess.Popen[str]:
    """``jobpulse worker`` working ``kind`` quickly (1 ms per item), in a process of its own."""
    return subprocess.Popen(
        [str(BIN / "jobpulse"), "worker", "--kind", kind, "--item-delay", "0.001"],
        env=_terminal_env(server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)  # a graceful stop
    _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def test_the_readme_sdk_block_runs_as_written(server: Any) -> None:
    code = find_block("README.md", SDK, "python", "import threading\n\nimport jobpulse\n").text
    assert code.count(EXAMPLE_ADDRESS) == 2, "the SDK block should address the server in Client and Worker"
    script = subprocess.run(
        [sys.executable, "-c", code.replace(EXAMPLE_ADDRESS, server.address)],
        capture_output=True,
        text=True,
        timeout=120,  # start to finish on its own: its worker works the job it watches, then stops
    )
    assert (script.returncode, script.stderr) == (0, ""), script.stderr
    out = script.stdout.splitlines()

    # Each print's comment shows what it prints: exactly, or for the watch a line of that shape.
    shown = dict(re.findall(r"(print\(.*?)\s+# (.+)", code))
    [state, listing, event, final] = shown.values()
    assert out[0] == state == "PENDING 5", out
    assert out[1] == listing == "March photos 0.0", out
    assert out[-1] == final == "COMPLETED 2500", out
    name = r"(SNAPSHOT|CHANGE|HEARTBEAT) \d+ [A-Z_]+ [\d.]+"
    assert re.fullmatch(name, event), event
    watched = out[2:-1]
    assert watched and all(re.fullmatch(name, line) for line in watched), out
    # By name, not number: the first message is the snapshot of the job (pending, or processing when the
    # worker's thread claimed before the watch began), the watch ends on the message that brings the job
    # to COMPLETED.
    assert re.fullmatch(r"SNAPSHOT \d+ (PENDING|PROCESSING) [\d.]+", watched[0]), watched
    assert re.fullmatch(r"CHANGE \d+ COMPLETED 100.0", watched[-1]), watched

    # The README's own Worker did the work: its handler's stage and artifacts, one per chunk.
    with jobpulse.Client(server.address, timeout=20) as client:
        [job] = client.list_jobs()
        done = client.get_job(job.id, view="full")
    assert (done.kind, done.display_name, done.labels["team"]) == ("thumbnails", "March photos", "media")
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert (done.progress.items_done, done.stage) == (2500, "resizing")
    uris = sorted(a.uri for a in done.artifacts)
    assert uris == [f"s3://bucket/{job.id}/{i}.zip" for i in range(5)]


# --- google-api-core -------------------------------------------------------------------------------------


def test_the_google_api_core_block_runs_as_written(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The block polls ``job``, the job the SDK block above created; here a job of the sample worker's."""
    code = find_block("docs/grpcurl.md", LONGRUNNING, "python", "import grpc\n").text
    assert code.count(EXAMPLE_ADDRESS) == 1
    pytest.importorskip("google.api_core", reason="google-api-core[grpc] comes with the server's dev extra")
    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job("thumbnails", 30, chunk_size=10)
        worker = _sample_worker(server, "thumbnails")
        try:
            exec(
                compile(code.replace(EXAMPLE_ADDRESS, server.address), "docs/grpcurl.md", "exec"),
                {"job": job},
            )
        finally:
            _stop(worker)
        done = client.get_job(job.id)
    uris = [a.uri for a in done.artifacts]
    assert uris == [f"s3://jobpulse-demo/{job.id}/{i}" for i in range(3)]
    assert capsys.readouterr().out == f"{uris} {job_pb2.JOB_STATE_COMPLETED}\n"
