"""Usage counting and the rate limiters on an in-memory UsageStore with a clock the test moves: calls are
counted in memory and written one batch per flush, a failed flush loses nothing, and two replicas sharing
one bucket stay within the documented tolerance (services/ratelimit.py) while asking the store far less
often than once per call."""

from __future__ import annotations

import asyncio

import pytest
from support.clock import FakeSeconds as FakeClock
from support.fake_usage import FakeUsageStore

from jobpulse_server.domain.errors import RateLimited
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services.ratelimit import DEGRADED_SECONDS, RateLimiter, SharedRateLimiter
from jobpulse_server.services.usage import UsageLedger


async def _attempt(limiter: RateLimiter | SharedRateLimiter, key: str = "k", role: str = "client") -> bool:
    """One call's admission: True admitted, False RATE_LIMITED; then lets background leases finish."""
    try:
        pending = limiter.admit(key, role)
        if pending is not None:
            await pending
        admitted = True
    except RateLimited as exc:
        assert exc.retry_after > 0 and exc.reason == "RATE_LIMITED"
        admitted = False
    for _ in range(3):
        await asyncio.sleep(0)
    return admitted


async def test_a_flush_writes_one_batch_however_many_calls_it_counts() -> None:
    store = FakeUsageStore()
    ledger = UsageLedger(store)
    for _ in range(1000):
        ledger.admitted("alice", "client")
    for _ in range(7):
        ledger.rejected("alice", "client")
    for _ in range(500):
        ledger.admitted("w1", "worker")
    await ledger.flush()
    assert store.add_calls == [{"alice": KeyUsage("client", 1000, 7), "w1": KeyUsage("worker", 500, 0)}]
    await ledger.flush()  # nothing counted since: nothing written
    assert len(store.add_calls) == 1
    ledger.admitted("alice", "client")
    await ledger.flush()
    assert store.add_calls[-1] == {"alice": KeyUsage("client", 1, 0)}
    assert store.totals == {"alice": KeyUsage("client", 1001, 7), "w1": KeyUsage("worker", 500, 0)}


async def test_a_failed_flush_keeps_its_counts_for_the_next_one() -> None:
    store = FakeUsageStore()
    ledger = UsageLedger(store)
    for _ in range(3):
        ledger.admitted("alice", "client")
    await ledger.flush()
    for _ in range(5):
        ledger.admitted("alice", "client")
    store.fail = True
    with pytest.raises(ConnectionRefusedError):
        await ledger.flush()
    ledger.rejected("alice", "client")  # counted while the database is away
    ledger.admitted("bob", "client")
    assert ledger.failed_flushes == 1
    assert ledger.pending == {"alice": KeyUsage("client", 5, 1), "bob": KeyUsage("client", 1, 0)}
    store.fail = False
    await ledger.flush()
    assert store.totals == {"alice": KeyUsage("client", 8, 1), "bob": KeyUsage("client", 1, 0)}
    assert ledger.pending == {}


async def test_the_report_is_the_stored_totals_plus_what_is_not_flushed_yet() -> None:
    store = FakeUsageStore(totals={"alice": KeyUsage("client", 10, 2), "old": KeyUsage("worker", 4, 0)})
    ledger = UsageLedger(store)
    ledger.admitted("alice", "client")
    ledger.rejected("new", "admin")
    assert await ledger.report() == {
        "alice": KeyUsage("client", 11, 2),
        "old": KeyUsage("worker", 4, 0),
        "new": KeyUsage("admin", 0, 1),
    }
    await ledger.flush()
    assert await ledger.report() == {
        "alice": KeyUsage("client", 11, 2),
        "old": KeyUsage("worker", 4, 0),
        "new": KeyUsage("admin", 0, 1),
    }


async def test_the_flusher_survives_failures_and_writes_once_the_store_is_back() -> None:
    store = FakeUsageStore(fail=True)
    ledger = UsageLedger(store)
    stop = asyncio.Event()
    runner = asyncio.create_task(ledger.run(stop, 0.01))
    ledger.admitted("alice", "client")
    for _ in range(3):
        assert await asyncio.wait_for(store.add_attempts.get(), 10) is False
    assert not runner.done() and ledger.failed_flushes >= 3
    store.fail = False
    while not await asyncio.wait_for(store.add_attempts.get(), 10):
        pass  # a flush that started before the store came back
    stop.set()
    await runner
    assert store.totals == {"alice": KeyUsage("client", 1, 0)}


def test_the_local_limiter_admits_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    store = FakeUsageStore(clock=clock)
    ledger = UsageLedger(store)
    limiter = RateLimiter({"client": 5.0}, ledger, clock)
    admitted = 0
    for _ in range(100):  # 10 seconds, 10 attempts a second
        try:
            assert limiter.admit("k", "client") is None
            admitted += 1
        except RateLimited:
            pass
        clock.advance(0.1)
    assert 10 + 5 * 9 <= admitted <= 10 + 5 * 10
    assert ledger.pending["k"].calls == admitted and ledger.pending["k"].rejected == 100 - admitted


async def _two_replicas(rate: float, seconds: float, step: float) -> tuple[int, int, FakeUsageStore, int]:
    """Two replicas on one shared store, each attempting a call every ``step`` seconds for ``seconds``:
    (admitted, attempts, store, block)."""
    clock = FakeClock()
    store = FakeUsageStore(clock=clock)
    replicas = [
        SharedRateLimiter({"client": rate}, UsageLedger(store), store, lease_seconds=0.1, clock=clock)
        for _ in range(2)
    ]
    admitted = attempts = 0
    for _ in range(round(seconds / step)):
        for limiter in replicas:
            admitted += await _attempt(limiter)
            attempts += 1
        clock.advance(step)
    counted = sum(limiter.ledger.pending["k"].calls for limiter in replicas)
    assert counted == admitted
    return admitted, attempts, store, replicas[0].block_for(rate)


async def test_two_replicas_sharing_a_bucket_admit_one_budget_within_the_tolerance() -> None:
    rate, burst, seconds = 5.0, 10.0, 10.0
    admitted, attempts, store, block = await _two_replicas(rate, seconds, step=0.01)
    assert block == 1
    budget = burst + rate * seconds  # what one server alone admits
    assert budget - 2 * block - 1 <= admitted <= budget + 2 * block
    # A refused lease says when the bucket refills: the calls refused until then never reach the store.
    # Over the limit, each block costs a statement per competing replica and one more.
    assert attempts == 2000
    assert store.lease_calls <= 3 * admitted / block + 10 < attempts / 10


async def test_at_higher_rates_the_replicas_lease_blocks_not_single_tokens() -> None:
    rate, burst, seconds = 50.0, 100.0, 4.0
    admitted, attempts, store, block = await _two_replicas(rate, seconds, step=0.002)
    assert block == 5
    budget = burst + rate * seconds
    assert budget - 2 * block - 1 <= admitted <= budget + 2 * block
    assert store.lease_calls <= 3 * admitted / block + 10 < attempts / 10


async def test_while_the_database_fails_each_replica_limits_alone_then_shares_again() -> None:
    clock = FakeClock()
    store = FakeUsageStore(clock=clock, fail=True)
    limiter = SharedRateLimiter({"client": 5.0}, UsageLedger(store), store, clock=clock)
    outcomes = [await _attempt(limiter) for _ in range(15)]
    assert outcomes == [True] * 10 + [False] * 5  # its own full burst, then refused: never all admitted
    store.fail = False
    clock.advance(DEGRADED_SECONDS + 0.01)
    assert await _attempt(limiter)
    assert "k" in store.buckets  # tokens come from the shared bucket again
    assert limiter.ledger.pending["k"] == KeyUsage("client", 11, 5)


async def test_unlimited_roles_never_ask_the_store() -> None:
    store = FakeUsageStore()
    limiter = SharedRateLimiter({"client": 5.0, "admin": 0.0}, UsageLedger(store), store)
    for _ in range(100):
        assert limiter.admit("root", "admin") is None
    assert store.lease_calls == 0 and limiter.ledger.pending["root"].calls == 100


async def test_under_its_limit_a_key_waits_for_the_store_on_its_first_call_only() -> None:
    clock = FakeClock()
    store = FakeUsageStore(clock=clock)
    limiter = SharedRateLimiter({"client": 50.0}, UsageLedger(store), store, lease_seconds=0.1, clock=clock)
    waited = 0
    for _ in range(160):  # 40 calls a second for 4 seconds, under the 50/s limit
        pending = limiter.admit("k", "client")
        if pending is not None:
            waited += 1
            await pending
        for _ in range(3):
            await asyncio.sleep(0)  # the background lease of the next block runs
        clock.advance(0.025)
    assert waited == 1
    assert limiter.ledger.pending["k"] == KeyUsage("client", 160, 0)
    assert store.lease_calls <= 160 / 3 + 1  # a block of 5, taken again once 3 are spent
