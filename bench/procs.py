"""Servers under test, each in a process of its own.

jobpulse runs as users run it, ``python -m jobpulse_server`` (the test suite's
``support.servers.ServerProcess``), logging at INFO as ``jobpulse serve`` does, to /dev/null. The bare
grpc.aio server runs in a child process driven over a pipe: it starts on 127.0.0.1 port 0, sends the
port back, then obeys ``("set", key, payload)`` (the response to return for that job id) and
``("stop",)``; if the parent goes away the pipe reads EOF and the child stops too.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from support.servers import ServerProcess as CommandServer

ServerKind = Literal["jobpulse", "bare"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


def _child_main(conn: Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_child_serve(conn))
    finally:
        conn.close()


async def _child_serve(conn: Connection) -> None:
    from bench.bare import start_bare_server

    loop = asyncio.get_running_loop()
    server, port, servicer = await start_bare_server()
    conn.send(("port", port))
    await _obey(loop, conn, servicer)
    await server.stop(0.0)


async def _obey(loop: asyncio.AbstractEventLoop, conn: Connection, servicer: Any) -> None:
    while True:
        try:
            msg = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] == "set" and servicer is not None:
            servicer.set_response(msg[1], msg[2])
            conn.send(("ok",))
        else:
            conn.send(("error", f"unknown command {msg[0]!r}"))


def metric_values(http_port: int, names: set[str]) -> dict[str, float] | None:
    """The unlabelled samples ``names`` from a jobpulse server's /metrics (its HTTP side on
    ``http_port``); None if /metrics cannot be read or lacks one of them."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value)
    return found if len(found) == len(names) else None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and all its threads, from /proc (None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name, field 3 (state) is index 0: utime is 14, stime 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """One server under test in a process of its own."""

    def __init__(
        self,
        kind: ServerKind,
        database_url: str = "",
        http_port: int = 0,
        *,
        pythonpath: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``pythonpath`` (jobpulse only): put first on the server's PYTHONPATH, to serve the code of
        another checkout (bench.compare) or load a ``sitecustomize`` (bench.loop_split); ``env``
        (jobpulse only): variables added to the server's environment."""
        self.kind = kind
        self.port = 0
        self.http_port = http_port
        self._command: CommandServer | None = None
        if kind == "jobpulse":
            # Bench data is synthetic and often dated in the past: expiry (measured by bench.retention
            # on a server of its own) must not delete it mid-run. The HTTP side is on, as users run it,
            # on any free port unless one is given (two bench servers at once would both want 8080).
            self._command = CommandServer(
                database_url,
                Path(os.devnull),
                log_level="INFO",
                http_port=http_port,
                drain_seconds=0,
                retention_completed=0,
                retention_failed=0,
                retention_cancelled=0,
            )
            if pythonpath:
                inherited = self._command.env.get("PYTHONPATH")
                self._command.env["PYTHONPATH"] = f"{pythonpath}:{inherited}" if inherited else pythonpath
            self._command.env.update(env or {})
            return
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn,), name=f"bench-{kind}", daemon=True)
        self._proc.start()
        child_conn.close()

    def wait_ready(self) -> int:
        """Blocks until the server answers (jobpulse: its health check says SERVING)."""
        if self._command is not None:
            self._command.start(timeout=_START_TIMEOUT)
            self.port = self._command.port
            return self.port
        if not self._conn.poll(_START_TIMEOUT):
            self.kill()
            raise RuntimeError(f"{self.kind} server did not start within {_START_TIMEOUT:.0f}s")
        try:
            tag, port = self._conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"{self.kind} server exited during start-up (see its stderr)") from exc
        assert tag == "port"
        self.port = int(port)
        return self.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._command is not None:
            assert self._command.proc is not None
            return self._command.proc.pid
        assert self._proc.pid is not None
        return self._proc.pid

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)

    def exit_code(self) -> int | None:
        """None while the server runs; else how it ended (negative: the signal that ended it)."""
        if self._command is not None:
            return None if self._command.proc is None else self._command.proc.poll()
        return self._proc.exitcode

    def set_response(self, key: str, payload: bytes) -> None:
        """Bare server only: GetJob(job_id=key) will answer with this serialized GetJobResponse."""
        assert self._command is None, "the bare server only"
        self._conn.send(("set", key, payload))
        reply = self._conn.recv()
        if reply[0] != "ok":
            raise RuntimeError(f"bare server refused {key!r}: {reply}")

    def stop(self) -> None:
        if self._command is not None:
            self._command.close()
            return
        if not self._proc.is_alive():
            return
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        self._proc.join(_STOP_TIMEOUT)
        if self._proc.is_alive():
            self.kill()

    def kill(self) -> None:
        if self._command is not None:
            if self._command.proc is not None and self._command.proc.poll() is None:
                self._command.proc.kill()
                self._command.proc.wait(10)
            return
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
