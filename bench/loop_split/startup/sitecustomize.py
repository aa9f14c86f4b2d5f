"""Loaded at start-up by a server that ``python -m bench.loop_split`` runs (this folder first on its
PYTHONPATH): counts the event loop thread's CPU time per asyncio callback and per layer of a call, and
writes the totals as JSON to ``JOBPULSE_LOOP_SPLIT_OUT`` when the process exits; SIGUSR1 starts the
counts afresh. Nothing of it is in the server's own code: the layers are wrapped here, from outside.

Thread CPU time (``time.thread_time``) is read around each piece: the figures are the loop thread's own
work, not waiting. Reading it costs about a microsecond, a few times per call, which the figures include.
"""

from __future__ import annotations

import asyncio.events
import atexit
import contextvars
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

_OUT = os.environ.get("JOBPULSE_LOOP_SPLIT_OUT", "")
_clock = time.thread_time

layers: dict[str, float] = {}
calls: dict[str, int] = {}
callbacks: dict[str, list[float]] = {}
_method: contextvars.ContextVar[str] = contextvars.ContextVar("loop_split_method", default="(no call)")


def _reset(*_: Any) -> None:
    layers.clear()
    calls.clear()
    callbacks.clear()


def _add(name: str, seconds: float) -> None:
    layers[name] = layers.get(name, 0.0) + seconds


def _callback_name(handle: asyncio.events.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:  # a task's step: named by its coroutine
        coro = get_coro()
        return "task " + str(getattr(coro, "__qualname__", None) or type(coro).__name__)
    return str(getattr(callback, "__qualname__", None) or type(callback).__name__)


_run = asyncio.events.Handle._run


def _timed_run(self: asyncio.events.Handle) -> None:
    started = _clock()
    _run(self)
    spent = _clock() - started
    entry = callbacks.setdefault(_callback_name(self), [0.0, 0])
    entry[0] += spent
    entry[1] += 1


asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]


def _install() -> None:
    from jobpulse_server.api import interceptors
    from jobpulse_server.platform.logs import Observer
    from jobpulse_server.store.database import SqlStore

    unary = interceptors.CallGuard._unary

    def timed_unary(self: Any, behaviour: Callable[..., Awaitable[Any]], name: str, roles: Any) -> Any:
        async def timed_behaviour(request: Any, context: Any) -> Any:
            started = _clock()
            try:
                return await behaviour(request, context)
            finally:
                _add(f"{name}: servicer and service", _clock() - started)

        guarded = unary(self, timed_behaviour, name, roles)

        async def timed_guard(request: Any, context: Any) -> Any:
            _method.set(name)
            started = _clock()
            try:
                return await guarded(request, context)
            finally:
                _add(f"{name}: guard, all of it", _clock() - started)
                calls[name] = calls.get(name, 0) + 1

        return timed_guard

    interceptors.CallGuard._unary = timed_unary  # type: ignore[method-assign]

    record = Observer.record

    def timed_record(self: Any, method: str, *args: Any) -> None:
        started = _clock()
        record(self, method, *args)
        _add(f"{method}: access log and RPC metrics", _clock() - started)

    Observer.record = timed_record  # type: ignore[method-assign]

    write = SqlStore.write

    async def timed_write(self: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        started = _clock()
        try:
            return await write(self, body, *args, **kwargs)
        finally:
            _add(f"{_method.get()}: store.write", _clock() - started)

    SqlStore.write = timed_write  # type: ignore[method-assign]


def _dump() -> None:
    if _OUT:
        with open(_OUT, "w") as f:
            json.dump({"layers": layers, "calls": calls, "callbacks": callbacks}, f)


if _OUT:
    _install()
    atexit.register(_dump)
    signal.signal(signal.SIGUSR1, _reset)
