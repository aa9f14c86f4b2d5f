"""The asyncio side of what the two halves of the SDK do differently.

``client.py`` and ``worker.py`` beside this file are the source of both halves: ``scripts/unasync.py``
writes the blocking half (``jobpulse/_sync/``) from them by rewriting words (``await``, ``AsyncClient``,
``grpc.aio`` ...). What rewriting words cannot express, waiting on an event, reading a stream with an
idle limit, running loops side by side, is done here for asyncio and in ``jobpulse/_sync/_shim.py`` with
threads; the two modules offer the same names with the same shapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import grpc.aio

from jobpulse._watch import StreamIdle

#: The event type of a task's ``cancel_event`` and of ``run``'s ``stop_event``.
Event = asyncio.Event
#: A lock held across calls to the server (never across a handler).
Lock = asyncio.Lock
#: What interrupts a coroutine that is being cancelled (a task cancelled, Ctrl-C under ``asyncio.run``).
Cancelled = asyncio.CancelledError
#: Waits a number of seconds without blocking the event loop.
sleep = asyncio.sleep


async def wait_for_event(event: asyncio.Event, timeout: float) -> bool:
    """Waits up to ``timeout`` seconds for ``event``; True if it is set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), max(0.0, timeout))
    except asyncio.TimeoutError:
        return event.is_set()
    return True


def event_setter(event: asyncio.Event) -> Callable[[], None]:
    """Returns a function that sets ``event`` from any thread.

    An asyncio event is not thread-safe, and a handler may report progress from a thread it started: from
    another thread the event is set by the event loop that was running when the setter was made.
    """
    loop = asyncio.get_running_loop()

    def set_event() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    return set_event


def current_name() -> str:
    """The name of the task running this code (for naming the tasks it starts)."""
    task = asyncio.current_task()
    return task.get_name() if task is not None else "main"


class StreamReader:
    """Reads a server stream's messages one at a time, raising :class:`StreamIdle` when none arrives
    within ``idle_timeout`` seconds of asking (``None`` or 0: no limit).

    Args:
        call: The stream call, as a ``grpc.aio`` stub returns it.
        idle_timeout: The longest wait for one message, in seconds.
    """

    def __init__(self, call: Any, idle_timeout: float | None) -> None:
        self._call = call
        self._idle_timeout = idle_timeout or None

    async def read(self) -> Any:
        """Returns the next message, or None once the server ended the stream."""
        try:
            message = await asyncio.wait_for(self._call.read(), self._idle_timeout)
        except asyncio.TimeoutError:
            raise StreamIdle from None
        return None if message is grpc.aio.EOF else message

    def close(self) -> None:
        """Cancels the call (nothing happens if it has ended)."""
        self._call.cancel()


class Background:
    """Runs ``target`` beside the caller, as a task on the running event loop.

    Args:
        target: The coroutine function to run.
        name: The task's name.
    """

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        """Starts running ``target``."""
        self._task = asyncio.create_task(self._target(), name=self._name)

    async def join(self) -> None:
        """Waits until ``target`` returned; raises what it raised."""
        if self._task is not None:
            await self._task

    async def cancel(self) -> None:
        """Cancels ``target`` and waits until it has stopped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def run_concurrently(
    bodies: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]], stop: asyncio.Event
) -> None:
    """Runs each ``(name, body)`` as a task and returns once all have returned.

    Cancelled, or when a body raises, it cancels the others and waits for them before raising: no body
    outlives the call. ``stop`` is the caller's; the bodies watch it themselves.
    """
    tasks = [asyncio.create_task(body(), name=name) for name, body in bodies]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
