"""Usage counts on a real database: a flush is one write transaction however many calls and keys it carries,
totals add up across flushes, and (PostgreSQL) the shared bucket's lease statement grants, refuses and
refills as the in-memory fake does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.counting import count_writes

from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services.usage import UsageLedger
from jobpulse_server.store.database import SqlStore


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[SqlStore]:
    database = SqlStore(database_url)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


async def test_a_flush_is_one_transaction_however_many_calls_and_keys_it_counts(
    db: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = UsageLedger(db)
    writes = count_writes(db, monkeypatch)
    for _ in range(2000):
        ledger.admitted("alice", "client")
    for _ in range(30):
        ledger.rejected("alice", "client")
    for n in range(400):
        for _ in range(5):
            ledger.admitted(f"worker-{n:03d}", "worker")
    await ledger.flush()
    assert len(writes) == 1, writes
    for _ in range(5):
        ledger.admitted("alice", "client")
    ledger.rejected("bob", "client")
    await ledger.flush()
    await ledger.flush()  # nothing new: no transaction
    assert len(writes) == 2
    stored = await db.usage()
    assert stored["alice"] == KeyUsage("client", 2005, 30)
    assert stored["bob"] == KeyUsage("client", 0, 1)
    assert stored["worker-007"] == KeyUsage("worker", 5, 0)
    assert len(stored) == 402


async def test_the_shared_bucket_grants_blocks_refuses_and_refills(db: SqlStore) -> None:
    if db.batch is None:
        pytest.skip("SQLite is served by one process: its in-memory limiter is exact (no shared bucket)")
    fast = db.batch
    # A slow refill (1 token in 1000 s), so the statement's own duration adds nothing measurable.
    rate, burst = 0.001, 10.0
    first = await fast.lease_tokens("k", 4, rate, burst)
    assert first.granted == 4 and first.left == pytest.approx(6, abs=0.01)
    assert (await fast.lease_tokens("k", 4, rate, burst)).granted == 4
    refused = await fast.lease_tokens("k", 4, rate, burst)  # 2 left: all or none
    assert refused.granted == 0 and refused.left == pytest.approx(2, abs=0.01)
    assert refused.wait == pytest.approx((4 - refused.left) / rate, rel=0.01)
    assert (await fast.lease_tokens("k", 2, rate, burst)).granted == 2
    assert (await fast.lease_tokens("other", 10, rate, burst)).granted == 10  # a bucket per key
    # Refill: a fast rate refills the empty bucket within moments, capped at the burst.
    quick = 1e7  # ten tokens a microsecond
    refilled = await fast.lease_tokens("k", 1, quick, burst)
    assert refilled.granted == 1 and refilled.left <= burst - 1
