"""A small Server-Sent Events reader over httpx, for tests of the HTTP side (parses what a browser's
EventSource would: event, id, data, and comment lines)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    """One SSE event (``comment`` set for a comment line, e.g. a heartbeat)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    """What one request read: the response's status and headers, and its events."""

    status: int
    headers: httpx.Headers
    events: list[Event] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False  # the server closed the response

    @property
    def last_id(self) -> str | None:
        ids = [e.id for e in self.events if e.id is not None]
        return ids[-1] if ids else None


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from the lines of an event stream (the ``retry:`` field is read and dropped)."""
    current = Event()
    data: list[str] = []
    seen = False
    for line in lines:
        if line == "":
            if seen:
                current.data = "\n".join(data)
                yield current
            current, data, seen = Event(), [], False
            continue
        if line.startswith(":"):
            yield Event(event="", comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            current.event, seen = value, True
        elif name == "id":
            current.id, seen = value, True
        elif name == "data":
            data.append(value)
            seen = True


def read(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    until: Callable[[Event, list[Event]], bool] | None = None,
    timeout: float = 20.0,
) -> Stream:
    """GETs ``url`` and reads events until the server closes the stream or ``until(event, events)``
    is true (then the connection is dropped, as a browser tab closing would)."""
    with httpx.Client(timeout=httpx.Timeout(timeout)) as client:
        with client.stream("GET", url, headers=headers or {}) as response:
            out = Stream(response.status_code, response.headers)
            if response.status_code != 200 or not response.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                out.body = response.read()
                out.ended = True
                return out
            for event in parse(response.iter_lines()):
                out.events.append(event)
                if until is not None and until(event, out.events):
                    return out
            out.ended = True
            return out
