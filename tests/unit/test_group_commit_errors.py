"""The group-commit flusher (store/batch/) when its statement fails, on a stand-in for the store that
records every statement and fails the one that writes completions and claims together: every caller of
that flush gets the error, and nothing is written after it for them (a claim answered with an error
must not be made by a later statement: its chunks would stay leased to a worker that never heard of
them). The statements' SQL itself is tested on PostgreSQL (tests/integration/test_fast_paths.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from jobpulse_server.domain.changes import Changes
from jobpulse_server.store.batch.flushes import GroupCommit
from jobpulse_server.store.batch.queue import QueuedClaim, QueuedCompletion
from jobpulse_server.store.caps import Caps
from jobpulse_server.store.holds import Holds
from jobpulse_server.store.owners import Owners
from jobpulse_server.store.waiting import NEVER, Waiting


class Refused(Exception):
    pass


class _OneOwner(Owners):
    def stale(self) -> bool:
        return False


class _NoneHeld(Holds):
    def stale(self) -> bool:
        return False


class _NoneCapped(Caps):
    def stale(self) -> bool:
        return False


class FailingStore:
    """``flushes._Runs``: every statement is recorded; the combined one raises."""

    replica_id = "test-replica"

    def __init__(self) -> None:
        self.statements: list[str] = []
        # No chunk waits out a retry backoff: the flusher's claims promote nothing first (that statement
        # is tested on PostgreSQL, tests/integration/test_waiting_chunks.py).
        self.waiting = Waiting()
        self.waiting.due = NEVER
        # One owner, known: the flusher looks nothing up before its claims (store/owners.py).
        self.owners = _OneOwner()
        self.owners.settle("anyone", several=False)
        # No PER_CHUNK dependant holds chunks, known: nothing looked up before its completions either.
        self.holds = _NoneHeld()
        self.holds.settle(False)
        # No kind capped, known: nor before its claims.
        self.caps = _NoneCapped()
        self.caps.settle([])

    async def statement(self, sql: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        raise AssertionError("the flusher runs statement_rows only")

    async def statement_rows(self, sql: str, params: Mapping[str, Any], lane: int = 0) -> list[Sequence[Any]]:
        self.statements.append(sql)
        raise Refused("the database went away")

    def publish(self, changes: Changes) -> None:
        raise AssertionError("nothing committed, nothing to publish")


async def test_a_failed_flush_answers_its_completions_and_claims_with_the_error_and_writes_no_more() -> None:
    store = FailingStore()
    group = GroupCommit(store)
    completion = QueuedCompletion("job-1:0", "job-1", "token", "", [], now=1)
    next_claim = QueuedClaim("worker-a", ("kind",), 1, 60_000_000, now=1)
    plain_claim = QueuedClaim("worker-b", ("kind",), 2, 60_000_000, now=1)

    async def claim() -> Any:
        return await group.claim(plain_claim)

    both = asyncio.ensure_future(group.complete_and_claim(completion, next_claim))
    alone = asyncio.ensure_future(claim())
    results = await asyncio.gather(both, alone, return_exceptions=True)
    await group.close()

    assert [type(r) for r in results] == [Refused, Refused]
    assert len(store.statements) == 1, "one statement for the completion and both claims, and no other"
    assert "unnest" in store.statements[0] and "k1 AS (UPDATE chunks" in store.statements[0]
    assert next_claim.got.done() and plain_claim.got.done()


@pytest.mark.parametrize("flushes", [1, 3])
async def test_the_flusher_serves_the_next_callers_after_a_failed_flush(flushes: int) -> None:
    """A failed flush stops nothing: each later flush is tried on its own (and fails here too)."""
    store = FailingStore()
    group = GroupCommit(store)
    for n in range(flushes):
        with pytest.raises(Refused):
            await group.complete_and_claim(
                QueuedCompletion(f"job-1:{n}", "job-1", "token", "", [], now=1),
                QueuedClaim("worker-a", ("kind",), 1, 60_000_000, now=1),
            )
    await group.close()
    assert len(store.statements) == flushes


async def test_a_failed_flush_leaves_no_error_unread() -> None:
    """asyncio logs an error that a future held and nobody read ("Future exception was never retrieved")
    when the future is collected. A failed flush gives a completion's caller and its next claim the same
    error; the caller raises the completion's and reads or cancels the claim's."""
    messages: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: messages.append(str(context.get("message"))))
    try:
        group = GroupCommit(FailingStore())

        async def one() -> str:
            try:
                await group.complete_and_claim(
                    QueuedCompletion("job-1:0", "job-1", "token", "", [], now=1),
                    QueuedClaim("worker-a", ("kind",), 1, 60_000_000, now=1),
                )
            except Refused:
                return "refused"
            return "answered"

        async def many() -> str:
            try:
                await group.complete_many(
                    [QueuedCompletion(f"job-2:{n}", "job-2", "token", "", [], now=1) for n in range(2)],
                    QueuedClaim("worker-b", ("kind",), 2, 60_000_000, now=1),
                )
            except Refused:
                return "refused"
            return "answered"

        assert await asyncio.gather(one(), many()) == ["refused", "refused"]
        await group.close()
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert [m for m in messages if "never retrieved" in m] == []


class BrokenOnce:
    """``Waiting`` whose first look raises, as a bug in the flusher's own code would."""

    def __init__(self) -> None:
        self.calls = 0

    def is_due(self, now: int) -> bool:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug in the flusher")
        return False


class AnsweringStore(FailingStore):
    """Answers every statement with no rows changed (a claim finds nothing ready)."""

    async def statement_rows(self, sql: str, params: Mapping[str, Any], lane: int = 0) -> list[Sequence[Any]]:
        self.statements.append(sql)
        return [(0, None, None, None, None, None)]


async def test_a_fault_of_the_flusher_itself_is_its_callers_error_and_the_next_flush_runs() -> None:
    """A fault outside a flush's statement (here the look for due retries raises) must reach the callers
    the flush took, not leave their calls waiting for an answer that never comes; the flusher then serves
    the next callers."""
    store = AnsweringStore()
    store.waiting = BrokenOnce()  # type: ignore[assignment]
    group = GroupCommit(store)
    with pytest.raises(RuntimeError, match="a bug in the flusher"):
        await asyncio.wait_for(group.claim(QueuedClaim("worker-a", ("kind",), 1, 60_000_000, now=1)), 10)
    got = await asyncio.wait_for(group.claim(QueuedClaim("worker-a", ("kind",), 1, 60_000_000, now=1)), 10)
    assert got == []  # the claim statement ran and found nothing ready
    assert len(store.statements) == 1
    await group.close()
