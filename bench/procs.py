"""The servers a benchmark measures, each in a process of its own.

jobpulse runs as users run it, ``python -m jobpulse_server``, through the test suite's own
``support.servers.ServerProcess`` (``Jobpulse`` below gives it the bench's settings). Every baseline
(the bare grpc.aio server, the watch fan-out, the bare SSE server, the floor under gRPC) is a ``Child``:
a spawned process that serves, sends its port back over a pipe and then answers commands; if the
parent goes away the pipe reads EOF and the child stops too. Both have ``address`` and ``proc.pid``,
which is all a scenario asks of a server (``cpu_seconds``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing as mp
import os
import resource
import tempfile
import traceback
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, Self

from support.servers import ServerProcess, free_port

from jobpulse_server.platform import gc_tuning
from jobpulse_server.platform.config import Config
from jobpulse_server.store.database import SqlStore

_START_TIMEOUT = 60.0
# Where the PostgreSQL scenarios create (and drop) a database per row.
PG_ADMIN = os.environ.get("JOBPULSE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")

# What a child's ``serve(*args)`` returns once it listens: its port, the handler of the parent's
# commands (a tuple in, a tuple out) and the coroutine function that stops it.
Serving = tuple[int, Callable[[tuple[Any, ...]], Any], Callable[[], Awaitable[None]]]


class Served(Protocol):
    """A server under test as a scenario sees it: where it listens and its process."""

    @property
    def address(self) -> str: ...

    @property
    def proc(self) -> Any: ...  # subprocess.Popen or multiprocessing.Process: both have .pid


class Jobpulse(ServerProcess):
    """A jobpulse server as the benchmarks run it (not started yet): logging at INFO as ``jobpulse serve``
    does, to /dev/null; expiry off (bench data is synthetic and often dated in the past); the HTTP side
    on a free port (``http_port``), or off with ``http=False``. ``pythonpath`` goes first on the server's
    PYTHONPATH, to serve another checkout's code (bench.compare)."""

    def __init__(
        self, database_url: str, *, http: bool = True, pythonpath: str | None = None, **settings: Any
    ):
        self.http_port = free_port() if http else -1
        defaults = {"log_level": "INFO", "drain_seconds": 0, "retention_completed": 0}
        defaults |= {"retention_failed": 0, "retention_cancelled": 0}
        defaults["http_port"] = self.http_port
        super().__init__(database_url, Path(os.devnull), **{**defaults, **settings})
        if pythonpath:
            inherited = self.env.get("PYTHONPATH")
            self.env["PYTHONPATH"] = f"{pythonpath}:{inherited}" if inherited else pythonpath

    def start(self, timeout: float = _START_TIMEOUT) -> Self:
        """Starts the server, once (stopped again if it does not come up); ``with Jobpulse(...) as
        server`` starts it too (if ``start`` has not), and stops it when the block ends."""
        if self.proc is not None:
            return self
        try:
            super().start(timeout)  # returns once gRPC health says SERVING
            if self.http_port >= 0:  # the HTTP side starts before that; make sure of it anyway
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=10) as r:
                    if r.status != 200:
                        raise RuntimeError(f"/healthz answered {r.status}")
        except BaseException:
            self.close()
            raise
        return self

    __enter__ = start

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def raise_nofile() -> None:
    """The open-files limit up to the hard one: thousands of sockets here and in the servers, which
    inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def tune_gc() -> None:
    """The collector settings jobpulse's server applies to itself: a client process holding streams gets
    them too, so its pauses do not land in the latency of whichever server is being measured."""
    gc_tuning.tune(Config.gc_threshold)


async def migrate(database_url: str) -> None:
    """Runs the server's migrations on a database (before bulk-loading into it)."""
    store = SqlStore(database_url)
    await store.start()
    await store.close()


def _child_main(conn: Connection, serve: Callable[..., Awaitable[Serving]], args: tuple[Any, ...]) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_child(conn, serve, args))
    finally:
        conn.close()


async def _child(conn: Connection, serve: Callable[..., Awaitable[Serving]], args: tuple[Any, ...]) -> None:
    loop = asyncio.get_running_loop()
    port, handle, stop = await serve(*args)
    conn.send(("port", port))
    while True:
        try:
            msg = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            break
        if msg[0] == "stop":
            break
        try:
            reply = handle(msg)
            conn.send(await reply if inspect.isawaitable(reply) else reply)
        except Exception:
            conn.send(("error", traceback.format_exc()))
    await stop()


class Child:
    """A baseline server (or a client holding streams) in a spawned process: ``serve(*args)`` (a
    module-level coroutine function, as spawn needs) starts it in the child and returns ``Serving``; its
    command handler may be a coroutine function, and what it raises comes back as ``("error", text)``.
    ``with Child(...) as child`` waits until it serves (if ``start`` has not), and stops it afterwards."""

    def __init__(self, serve: Callable[..., Awaitable[Serving]], *args: Any, name: str = "baseline") -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child_main, args=(child, serve, args), name=f"bench-{name}", daemon=True
        )
        self.proc.start()
        child.close()
        self.name = name
        self.port, self.started = 0, False

    def start(self) -> Self:
        if self.started:
            return self
        if not self.conn.poll(_START_TIMEOUT):
            self.close()
            raise RuntimeError(f"{self.name} server did not start within {_START_TIMEOUT:.0f}s")
        try:
            tag, self.port = self.conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"{self.name} server exited during start-up (see its stderr)") from exc
        assert tag == "port"
        self.started = True
        return self

    __enter__ = start

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, *msg: Any) -> Any:
        """Sends a command, returns the child's answer."""
        self.conn.send(msg)
        return self.conn.recv()

    def close(self) -> None:
        """Asks the process to stop over its pipe; terminates it if it has not within 15 s."""
        if self.proc.is_alive():
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
            self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


@asynccontextmanager
async def database(kind: str, tag: str) -> AsyncIterator[str]:
    """A database of its own for one row, removed afterwards: a fresh PostgreSQL database ("postgresql")
    or a SQLite file in a temporary directory ("sqlite"); yields its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"jobpulse-{tag}-") as tmp:
            yield f"sqlite:///{tmp}/{tag}.db"
        return

    async def admin(statement: str) -> None:
        async with connect(PG_ADMIN) as conn:
            await conn.execute(statement)

    name = f"bench_{tag}_{os.getpid()}"
    await admin(f'DROP DATABASE IF EXISTS "{name}"')
    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rpartition('/')[0]}/{name}"  # on PG_ADMIN's server
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[Any]:
    """An asyncpg connection to ``dsn``, closed when the block ends."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


def status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/<pid>/status: VmRSS (resident now), VmHWM (its peak so far), RssAnon
    (the heap, not file pages)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(server: Served | None) -> float | None:
    """User + system CPU time of a server's process and all its threads, from /proc (None elsewhere)."""
    if server is None or server.proc is None:
        return None
    return pid_cpu_seconds(server.proc.pid)


def pid_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name, field 3 (state) is index 0: utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
