"""On SQLite on the loop, writes whose blocks end in one turn of the loop share one COMMIT
(store/drivers/sqlite.py, ``_Group``). Each write still stands or falls on its own, nothing is
acknowledged (its block ended, its ``then`` run) before the commit, and what committed is published
even when its caller was cancelled while it waited for the commit. On a real file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jobpulse_server.store.drivers import Conflict
from jobpulse_server.store.drivers.sqlite import SqliteConn, SqliteDriver


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[SqliteDriver]:
    path = tmp_path / "g.db"
    made = sqlite3.connect(path)
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    made.close()
    d = SqliteDriver(str(path))
    await d.start()
    yield d
    await d.close()


def committed(d: SqliteDriver) -> list[int]:
    """What another connection sees: only what was committed."""
    other = sqlite3.connect(d.path)
    try:
        return [n for (n,) in other.execute("SELECT n FROM t ORDER BY n")]
    finally:
        other.close()


async def insert(
    d: SqliteDriver, n: int, then: Callable[[], object] | None = None, *, fail: bool = False
) -> None:
    async with d.write(then=then) as conn:
        await conn.execute("INSERT INTO t (n) VALUES (:n)", {"n": n})
        if fail:
            raise LookupError(f"write {n} refused")


def trace(d: SqliteDriver) -> list[str]:
    statements: list[str] = []
    assert d._writer is not None
    d._writer.set_trace_callback(statements.append)
    return statements


async def test_writes_ending_in_one_turn_share_one_commit_and_are_acknowledged_after_it(
    driver: SqliteDriver,
) -> None:
    statements = trace(driver)
    seen: dict[int, list[int]] = {}
    await asyncio.gather(
        *(insert(driver, n, lambda n=n: seen.setdefault(n, committed(driver))) for n in (1, 2, 3))
    )
    assert committed(driver) == [1, 2, 3]
    # Each write's ``then`` ran after the one commit: every write was visible to another connection.
    assert seen == {1: [1, 2, 3], 2: [1, 2, 3], 3: [1, 2, 3]}
    assert statements.count("COMMIT") == 1, statements
    assert statements.count("BEGIN IMMEDIATE") == 1, statements
    assert statements.count("SAVEPOINT member") == 2, statements

    # A write alone in its turn commits on its own, at the end of that turn.
    statements.clear()
    await insert(driver, 4)
    assert committed(driver) == [1, 2, 3, 4]
    assert statements.count("COMMIT") == 1, statements


async def test_a_write_that_raises_is_rolled_back_alone(driver: SqliteDriver) -> None:
    thens: list[int] = []
    results = await asyncio.gather(
        insert(driver, 1, lambda: thens.append(1)),
        insert(driver, 2, lambda: thens.append(2), fail=True),
        insert(driver, 3, lambda: thens.append(3)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LookupError)
    assert committed(driver) == [1, 3]
    assert thens == [1, 3]


async def test_a_refused_write_is_answered_after_the_commit_of_the_writes_before_it(
    driver: SqliteDriver,
) -> None:
    """What refused it may be what an earlier write of its group did (CreateJob: the request id taken a
    moment ago), and its caller then reads, on another connection, to find that: it must be committed."""

    async def refused() -> list[int]:
        try:
            await insert(driver, 1)  # the same key as the first write's
        except Conflict:
            return committed(driver)
        raise AssertionError("the second insert of 1 went through")

    results = await asyncio.gather(insert(driver, 1), refused())
    assert results[1] == [1]


async def test_the_first_write_of_a_turn_that_raises_leaves_no_transaction_behind(
    driver: SqliteDriver,
) -> None:
    results = await asyncio.gather(insert(driver, 1, fail=True), insert(driver, 2), return_exceptions=True)
    assert isinstance(results[0], LookupError) and results[1] is None
    assert committed(driver) == [2]


async def test_a_write_cancelled_while_its_commit_is_pending_is_committed_and_published(
    driver: SqliteDriver,
) -> None:
    thens: list[int] = []
    first = asyncio.ensure_future(insert(driver, 1, lambda: thens.append(1)))
    second = asyncio.ensure_future(insert(driver, 2, lambda: thens.append(2)))
    # One step: both blocks run to their end in this turn (SQLite on the loop never suspends) and
    # wait for the commit, which comes at the end of the turn, after this coroutine's next step.
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    assert committed(driver) == []
    second.cancel()
    await asyncio.wait([first, second])
    assert first.result() is None
    assert second.cancelled()
    # Its caller will never hear of it, but the write is committed, and so it is published.
    assert committed(driver) == [1, 2]
    assert thens == [1, 2]


async def test_an_error_that_ends_the_transaction_fails_every_write_of_its_group(
    driver: SqliteDriver,
) -> None:
    """SQLite rolls the whole transaction back on some errors (a full disk, an I/O error): then no write
    of the group is committed, and each is told so."""
    thens: list[str] = []

    async def ended_under_it(conn: SqliteConn) -> None:
        await conn.execute("INSERT INTO t (n) VALUES (2)")
        await conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")

    async def second() -> None:
        async with driver.write(then=lambda: thens.append("second")) as conn:
            await ended_under_it(conn)

    results = await asyncio.gather(
        insert(driver, 1, lambda: thens.append("first")), second(), return_exceptions=True
    )
    for r in results:
        assert isinstance(r, sqlite3.OperationalError) and "disk is full" in str(r), results
    assert committed(driver) == []
    assert thens == []
    await insert(driver, 3)  # the next write starts afresh
    assert committed(driver) == [3]


async def test_a_bulk_write_commits_the_open_group_before_its_own_transaction(driver: SqliteDriver) -> None:
    order: list[str] = []

    async def bulk() -> None:
        async with driver.write(bulk=True, then=lambda: order.append("bulk committed")) as conn:
            order.append(f"bulk sees {committed(driver)}")
            await conn.execute("INSERT INTO t (n) VALUES (2)")

    await asyncio.gather(insert(driver, 1, lambda: order.append("1 committed")), bulk())
    assert order == ["1 committed", "bulk sees [1]", "bulk committed"]
    assert committed(driver) == [1, 2]


async def test_writes_on_the_dedicated_thread_commit_each_on_their_own(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    made = sqlite3.connect(path)
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    made.close()
    d = SqliteDriver(str(path), on_loop=False)
    await d.start()
    try:
        thens: list[int] = []
        await asyncio.gather(*(insert(d, n, lambda n=n: thens.append(n)) for n in (1, 2)))
        assert committed(d) == [1, 2]
        assert sorted(thens) == [1, 2]
    finally:
        await d.close()
