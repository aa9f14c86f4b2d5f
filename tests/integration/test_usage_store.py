"""store/usage.py on a real database: a flush is one statement however many calls and keys it carries,
totals add up across flushes, and (PostgreSQL) the shared bucket's lease statement grants, refuses and
refills as the in-memory fake does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services.usage import UsageLedger
from jobpulse_server.store.engine import Database
from jobpulse_server.store.usage import FLUSH_ROWS, SqlUsage


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


def _count_writes(db: Database) -> list[str]:
    """Every INSERT/UPDATE the engine sends from now on."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_a_flush_is_one_statement_however_many_calls_it_counts(db: Database) -> None:
    usage = SqlUsage(db)
    ledger = UsageLedger(usage)
    writes = _count_writes(db)
    for _ in range(2000):
        ledger.admitted("alice", "client")
    for _ in range(30):
        ledger.rejected("alice", "client")
    for n in range(20):
        for _ in range(50):
            ledger.admitted(f"worker-{n:02d}", "worker")
    await ledger.flush()
    assert len(writes) == 1, writes
    for _ in range(5):
        ledger.admitted("alice", "client")
    ledger.rejected("bob", "client")
    await ledger.flush()
    await ledger.flush()  # nothing new: no statement
    assert len(writes) == 2
    stored = await usage.usage()
    assert stored["alice"] == KeyUsage("client", 2005, 30)
    assert stored["bob"] == KeyUsage("client", 0, 1)
    assert stored["worker-07"] == KeyUsage("worker", 50, 0)
    assert len(stored) == 22


async def test_more_keys_than_one_statement_holds_are_written_in_a_few(db: Database) -> None:
    usage = SqlUsage(db)
    writes = _count_writes(db)
    counts = {f"k{n:04d}": KeyUsage("client", n, 1) for n in range(FLUSH_ROWS * 2 + 1)}
    await usage.add_usage(counts, 0)
    assert len(writes) == 3
    assert await usage.usage() == counts


async def test_the_shared_bucket_grants_blocks_refuses_and_refills(db: Database) -> None:
    usage = SqlUsage(db)
    if db.dialect != "postgresql":
        with pytest.raises(NotImplementedError):
            await usage.lease_tokens("k", 1, 5.0, 10.0)
        return
    # A slow refill (1 token in 1000 s), so the statement's own duration adds nothing measurable.
    rate, burst = 0.001, 10.0
    first = await usage.lease_tokens("k", 4, rate, burst)
    assert first.granted == 4 and first.left == pytest.approx(6, abs=0.01)
    assert (await usage.lease_tokens("k", 4, rate, burst)).granted == 4
    refused = await usage.lease_tokens("k", 4, rate, burst)  # 2 left: all or none
    assert refused.granted == 0 and refused.left == pytest.approx(2, abs=0.01)
    assert refused.wait == pytest.approx((4 - refused.left) / rate, rel=0.01)
    assert (await usage.lease_tokens("k", 2, rate, burst)).granted == 2
    assert (await usage.lease_tokens("other", 10, rate, burst)).granted == 10  # a bucket per key
    # Refill: a fast rate refills the empty bucket within moments, capped at the burst.
    fast = 1e7  # ten tokens a microsecond
    refilled = await usage.lease_tokens("k", 1, fast, burst)
    assert refilled.granted == 1 and refilled.left <= burst - 1
