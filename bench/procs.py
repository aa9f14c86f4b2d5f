"""Servers under test, each in a process of its own, driven over a pipe.

A child process starts its server on 127.0.0.1 port 0, sends the port back, then obeys commands
from the pipe: ``("set", key, payload)`` (bare server only: the response to return for that job
id) and ``("stop",)``. If the parent goes away the pipe reads EOF and the child stops too.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from typing import Any, Literal

ServerKind = Literal["jobpulse", "bare"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


def _child_main(kind: ServerKind, database_url: str, conn: Connection) -> None:
    listener = None
    if kind == "jobpulse":
        # Logging as `jobpulse serve` sets it up (at the default level an access-log line per call,
        # formatted and written on a thread of its own), written to /dev/null: what the log costs
        # is part of every figure, as it is for users.
        from jobpulse_server.app import configure_logging
        from jobpulse_server.config import Config

        listener = configure_logging(Config.from_env(), open(os.devnull, "w"))
    else:
        logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_child_serve(kind, database_url, conn))
    finally:
        conn.close()
        if listener is not None:
            listener.stop()


async def _child_serve(kind: ServerKind, database_url: str, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    if kind == "jobpulse":
        from jobpulse_server.app import create_server
        from jobpulse_server.config import Config

        app = await create_server(Config.from_env(host="127.0.0.1", port=0, database_url=database_url))
        conn.send(("port", app.port))
        await _obey(loop, conn, None)
        await app.stop(0.0)
    else:
        from bench.bare import start_bare_server

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
    """One server under test in a child process."""

    def __init__(self, kind: ServerKind, database_url: str = "") -> None:
        self.kind = kind
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main, args=(kind, database_url, child_conn), name=f"bench-{kind}", daemon=True
        )
        self._proc.start()
        child_conn.close()
        self.port = 0

    def wait_ready(self) -> int:
        """Blocks until the child reports its port."""
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
        assert self._proc.pid is not None
        return self._proc.pid

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)

    def set_response(self, key: str, payload: bytes) -> None:
        """Bare server only: GetJob(job_id=key) will answer with this serialized GetJobResponse."""
        self._conn.send(("set", key, payload))
        reply = self._conn.recv()
        if reply[0] != "ok":
            raise RuntimeError(f"bare server refused {key!r}: {reply}")

    def stop(self) -> None:
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
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
