"""On SQLite on the loop a read runs to its end within the caller's own step.

Watchers woken by one change share one read; if the read suspended anywhere (it used
to, once, while closing its connection), every other watcher would find it unfinished
and wait for it: a future and a second wake-up per stream per change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobpulse_server.store.database import SqlStore


def _run_without_the_loop(coro: Any) -> tuple[bool, Any]:
    """Steps ``coro`` once by hand: (True, its result) if it ran to its end, (False, None) if it
    suspended (it is then closed)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    coro.close()
    return False, None


async def test_a_read_on_sqlite_on_the_loop_never_suspends(tmp_path: Path) -> None:
    db = SqlStore(f"sqlite:///{tmp_path / 'r.db'}", sqlite_on_loop=True)
    await db.start()
    try:

        async def read() -> int:
            async with db.read() as tx:
                return int(await tx.conn.fetchval("select 41 + 1"))

        await read()  # the pool's first connection is opened here, outside the measured read
        assert _run_without_the_loop(read()) == (True, 42)
        assert _run_without_the_loop(read()) == (True, 42)  # the connection went back to the free list intact
    finally:
        await db.close()
