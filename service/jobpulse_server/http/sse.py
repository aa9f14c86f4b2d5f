"""Server-Sent Events framing and one SSE response at the ASGI level.

The watch streams' text is built once per message (``watch_form``, a wire form of WatchService) and
shared by every stream that sends it; a stream holds no queue of its own: it writes one event at a
time, and the watch loop behind it folds whatever changed while a write waited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jobpulse_server.services.watch import EventType, FeedMessage, WatchMessage
from jobpulse_server.wire.watch import json_line

_NAMES = {EventType.SNAPSHOT: "snapshot", EventType.CHANGE: "change", EventType.HEARTBEAT: "heartbeat"}
# Sent first: how long an EventSource waits before it reconnects (ms) after a stream ends early.
RETRY = b"retry: 2000\n\n"
END = b"event: end\ndata: {}\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    # Proxies (nginx) would otherwise buffer the stream.
    (b"x-accel-buffering", b"no"),
]


class SseEvent:
    """One event's bytes, and what the stream must know of it."""

    __slots__ = ("data", "revision", "terminal")

    def __init__(self, data: bytes, revision: int, terminal: bool) -> None:
        self.data = data
        self.revision = revision
        self.terminal = terminal


def frame(event: str, event_id: str | None, data: str) -> bytes:
    """One SSE event. ``data`` is one line (JSON); ``event_id`` None leaves the client's last id as it
    was (parts of a message split over several events carry no id: a resume restarts the part)."""
    head = f"event: {event}\n" if event_id is None else f"event: {event}\nid: {event_id}\n"
    return f"{head}data: {data}\n\n".encode()


def watch_form(grpc_wire: Callable[[WatchMessage], Any]) -> Callable[[WatchMessage], SseEvent]:
    """The SSE wire form of watch messages, from their gRPC form (a WatchJobResponse)."""

    def encode(msg: WatchMessage) -> SseEvent:
        if msg.type == EventType.HEARTBEAT:
            return SseEvent(b": heartbeat %d\n\n" % msg.revision, msg.revision, False)
        data = frame(_NAMES[msg.type], None if msg.more else str(msg.revision), json_line(grpc_wire(msg)))
        terminal = msg.job is not None and msg.job.state.terminal and not msg.more
        return SseEvent(data, msg.revision, terminal)

    return encode


def feed_event(msg: FeedMessage, response: Any) -> bytes:
    """A WatchJobs message (``response``: its WatchJobsResponse) as an SSE event; the id is the cursor."""
    return frame(_NAMES[msg.type], msg.cursor, json_line(response))


class EventStream:
    """One SSE response: the status line and headers go out with the first event (until then an
    error can still be a JSON response), and a client that goes away cancels the task serving it."""

    __slots__ = ("_disconnect", "_gone", "_send", "_task", "started")

    def __init__(self, receive: Any, send: Any) -> None:
        self._send = send
        self.started = False
        self._gone = False
        self._task = asyncio.current_task()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        self._disconnect = asyncio.ensure_future(watch_disconnect())
        self._disconnect.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and self._task is not None:
            self._gone = True
            self._task.cancel()

    @property
    def gone(self) -> bool:
        """The client went away (the serving task was cancelled for that)."""
        return self._gone

    async def _start(self) -> None:
        self.started = True
        await self._send({"type": "http.response.start", "status": 200, "headers": HEADERS})

    async def write(self, data: bytes) -> None:
        if not self.started:
            await self._start()
            data = RETRY + data  # one write with the first event, not one of its own
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"") -> None:
        """Ends the response (with ``data`` as its last bytes)."""
        self.close()
        if not self.started:
            await self._start()
            data = RETRY + data
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    def close(self) -> None:
        """Stops watching for the client going away (the response ends, or never started)."""
        self._disconnect.remove_done_callback(self._on_disconnect)
        self._disconnect.cancel()
