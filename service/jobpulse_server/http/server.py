"""uvicorn on the gRPC server's event loop: started and drained with it, no process or loop of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from jobpulse_server.http.protocol import GuardedProtocol

# uvicorn's own lifecycle lines ("Started server process", "Waiting for connections to close") would
# interleave with jobpulse's; its warnings and errors still show.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class _OnOurLoop(uvicorn.Server):
    """uvicorn without its signal handlers: SIGTERM belongs to the jobpulse server, which drains both."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves an ASGI app on ``host:port`` (0: any free port) of the running event loop."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        tls_cert: str = "",
        tls_key: str = "",
        header_timeout: float = 10.0,
        stall_timeout: float = 60.0,
        drain_seconds: float = 5.0,
    ) -> None:
        protocol = type(
            "JobpulseHttpProtocol",
            (GuardedProtocol,),
            {"header_timeout": header_timeout, "stall_timeout": stall_timeout},
        )
        self.config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, round(drain_seconds)),
            ssl_certfile=tls_cert or None,
            ssl_keyfile=tls_key or None,
        )
        self.host = host
        self.port = port
        self._server = _OnOurLoop(self.config)
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Binds and starts serving; returns the port. OSError if the port cannot be had."""
        self._socket = socket.create_server((self.host.strip("[]"), self.port), family=_family(self.host))
        self._socket.setblocking(False)
        self.port = self._socket.getsockname()[1]
        config = self.config
        if not config.loaded:
            config.load()
        server = self._server
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        # The loop that refreshes the Date header every second and watches should_exit.
        self._ticks = asyncio.create_task(server.main_loop(), name="jobpulse-http")
        return self.port

    @property
    def open_connections(self) -> int:
        return len(self._server.server_state.connections)

    async def stop(self) -> None:
        """Stops taking connections, lets responses under way end (open event streams end when the
        change hub closes) for up to the drain time, then cancels what is left.

        uvicorn's own shutdown does the same but sleeps a fixed 0.1 s before looking, and waits out a
        tick of its main loop first: 0.15-0.2 s on every stop, the most of a test's teardown."""
        server = self._server
        server.should_exit = True
        if self._ticks is not None:
            self._ticks.cancel()  # it only refreshes the Date header and watches should_exit
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        for listening in server.servers:
            listening.close()
        if self._socket is not None:
            self._socket.close()
        state = server.server_state
        for connection in list(state.connections):
            connection.shutdown()  # an idle one closes now, a busy one after its response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        # uvicorn tells nothing when a connection ends: its shutdown polls these sets too.
        while (state.connections or state.tasks) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for task in list(state.tasks):
            task.cancel()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
