"""SQLite driven on the event loop's own thread, behind aiosqlite's interface.

aiosqlite runs every call (execute, fetch, commit, cursor close...) on a worker
thread and wakes the event loop when it is done: two thread hand-offs per call.
A GetJob is about ten such calls, and on the 2-core VMs this project is
measured on a hand-off pair costs 0.15-0.25 ms (``make bench-sqlite``), ten times
what SQLite needs for the statement itself. Running the statements on the loop
thread removes the hand-offs; see the README ("SQLite on the event loop") for the
figures and the trade-off.

What makes that safe: writers are serialised by the server's own asyncio lock and
take the file lock with ``BEGIN IMMEDIATE``, which waits at most 20 ms inside SQLite
(a lock held by another process is retried asynchronously, see ``Database``); WAL
readers never wait for a lock; and ``synchronous=NORMAL`` makes a commit a write
to the WAL without an fsync. Statements are short: the largest reads are bounded
by page sizes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting caller, as aiosqlite does
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the calling thread, with no worker thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunNow()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        # aiosqlite starts its worker thread here; there is none to start.
        return self._connect().__await__()


def connect(path: str, **kwargs: Any) -> InlineConnection:
    """Opens ``path`` (awaitable, like ``aiosqlite.connect``)."""

    def connector() -> sqlite3.Connection:
        # The connection may be closed by the pool from another thread at shutdown.
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None, **kwargs)

    return InlineConnection(connector)
