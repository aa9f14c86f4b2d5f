"""uvicorn's httptools protocol with the limits a public port needs.

uvicorn alone waits for ever on a connection that never sends a request (or sends its headers one
byte a minute), takes any number of headers, and keeps writing into a connection nobody reads. Here:
- a request's line and headers must arrive within ``header_timeout`` seconds of the connection or of
  the request's first byte, else the connection is closed (slow or never-finished requests);
- at most ``MAX_HEADERS`` headers and ``MAX_HEADER_BYTES`` of them (431), and a target of at most
  ``MAX_TARGET_BYTES`` (414);
- a connection whose writes stay blocked (the peer reads nothing) for ``stall_timeout`` seconds is
  aborted: what it held is freed, and a client that comes back resumes from its Last-Event-ID;
- TCP_USER_TIMEOUT on the socket, so the kernel drops a peer that vanished without a close
  (unacknowledged data for that long) instead of retransmitting for a quarter of an hour.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024
MAX_TARGET_BYTES = 8 * 1024
_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with timeouts for requests that never finish and writes that never drain."""

    header_timeout = 10.0
    stall_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # A response goes out as two writes (head, then body): with Nagle on, the body waited
                # for the client's delayed ACK of the head, 40 ms per page on Linux (bench-http).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if hasattr(socket, "TCP_USER_TIMEOUT"):
                    sock.setsockopt(
                        socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.stall_timeout * 1000)
                    )
            except OSError:
                pass
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _arm_request_timer(self) -> None:
        if self._request_timer is None:
            self._request_timer = self.loop.call_later(self.header_timeout, self._request_too_slow)

    def _cancel_timers(self) -> None:
        for timer in (self._request_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._stall_timer = None

    def _request_too_slow(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_request_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self._refuse(414, "the request target is longer than 8 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if len(self.headers) >= MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "more than 100 headers, or more than 32 KiB of them")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        super().on_headers_complete()

    def _refuse(self, status: int, message: str) -> None:
        error = {
            "code": status,
            "status": "INVALID_ARGUMENT",
            "reason": "REQUEST_TOO_LARGE",
            "message": message,
        }
        body = json.dumps({"error": error}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
        # Stops the parser: uvicorn answers a parser error with a 400 of its own, on a transport
        # that is already closing, so nothing more is written.
        raise ValueError(message)

    # Flow control
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().resume_writing()

    def _stalled(self) -> None:
        self._stall_timer = None
        self.transport.abort()
