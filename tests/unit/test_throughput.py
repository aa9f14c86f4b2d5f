"""Chunk throughput per minute (services/throughput.py over the store) on a real database, SQLite and
PostgreSQL: counts add up per minute and kind, across flushes and across replicas; a failed flush
keeps its counts; the report fills quiet minutes with zeros and includes what is not flushed yet; old
minutes are pruned; and WorkerService counts the chunks it completed, once, after they committed. Time
is a clock the tests move; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from support.clock import FakeClock
from support.counting import count_writes

from jobpulse_server.domain.errors import LeaseLost
from jobpulse_server.domain.model import ChunkState
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import ClaimRequest, Completion
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.throughput import (
    HOUR_US,
    KEEP_US,
    MINUTE_US,
    KindTotal,
    MinutePoint,
    Throughput,
    minute_of,
)
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store import Tx
from jobpulse_server.store.database import SqlStore

M0 = 28_333_333 * MINUTE_US  # the start of a minute in 2023
LEASE = 3_600_000_000


class Flaky:
    """A ThroughputStore whose ``add_throughput`` fails (as a database that went away) while ``fail``."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.fail = False

    async def add_throughput(self, counts: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        if self.fail:
            raise ConnectionRefusedError("database away")
        await self.store.add_throughput(counts)

    async def throughput_since(self, since_minute_us: int) -> list[tuple[int, str, int, int]]:
        return await self.store.throughput_since(since_minute_us)

    async def prune_throughput(self, before_minute_us: int) -> int:
        return await self.store.prune_throughput(before_minute_us)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[SqlStore]:
    database = SqlStore(database_url)
    await database.start()
    try:
        yield database
    finally:
        await database.close()


async def test_counts_add_up_per_minute_and_kind_one_transaction_a_flush(
    db: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = db
    clock = FakeClock(M0 + 5_000_000)
    tp = Throughput(store, clock)
    writes = count_writes(db, monkeypatch)
    for _ in range(100):
        tp.count("resize", 1, 5)
    tp.count("ocr", 3, 30)
    clock.advance(60)  # the next minute
    tp.count("resize", 2, 7)
    tp.count("resize", 0, 0)  # nothing: no row
    assert tp.pending == {
        (M0, "resize"): (100, 500),
        (M0, "ocr"): (3, 30),
        (M0 + MINUTE_US, "resize"): (2, 7),
    }
    await tp.flush()
    assert len(writes) == 1, writes
    assert tp.pending == {}
    await tp.flush()  # nothing counted since: no transaction
    assert len(writes) == 1
    tp.count("resize", 1, 1)  # into the stored row of the current minute
    await tp.flush()
    assert len(writes) == 2
    assert await store.throughput_since(M0) == [
        (M0, "ocr", 3, 30),
        (M0, "resize", 100, 500),
        (M0 + MINUTE_US, "resize", 3, 8),
    ]
    assert await store.throughput_since(M0 + MINUTE_US) == [(M0 + MINUTE_US, "resize", 3, 8)]
    assert tp.flushes == 2 and tp.failed_flushes == 0


async def test_two_replicas_flushing_into_the_same_minute_add_up(database_url: str) -> None:
    clock = FakeClock(M0 + 5_000_000)
    replicas = [SqlStore(database_url), SqlStore(database_url)]
    for d in replicas:
        await d.start()
    try:
        a, b = (Throughput(d, clock) for d in replicas)
        a.count("resize", 2, 10)
        b.count("resize", 3, 15)
        b.count("ocr", 1, 1)
        await asyncio.gather(a.flush(), b.flush())
        a.count("resize", 1, 5)
        await a.flush()
        assert await replicas[0].throughput_since(M0) == [(M0, "ocr", 1, 1), (M0, "resize", 6, 30)]
        b.count("resize", 4, 4)  # not flushed: b's report has it, a's does not yet
        assert (await b.recent(1)).points[-1] == MinutePoint(M0, 11, 35)
        assert (await a.recent(1)).points[-1] == MinutePoint(M0, 7, 31)
    finally:
        for d in replicas:
            await d.close()


async def test_a_failed_flush_keeps_its_counts_for_the_next_one(db: SqlStore) -> None:
    flaky = Flaky(db)
    clock = FakeClock(M0 + 5_000_000)
    tp = Throughput(flaky, clock)
    tp.count("resize", 2, 20)
    await tp.flush()
    tp.count("resize", 5, 50)
    flaky.fail = True
    with pytest.raises(ConnectionRefusedError):
        await tp.flush()
    tp.count("resize", 1, 10)  # counted while the database is away: joins the kept batch
    clock.advance(60)
    tp.count("ocr", 1, 1)
    assert tp.failed_flushes == 1
    assert tp.pending == {(M0, "resize"): (6, 60), (M0 + MINUTE_US, "ocr"): (1, 1)}
    # The report still has them while they wait.
    report = await tp.recent(1)
    assert report.points[-2:] == [MinutePoint(M0, 8, 80), MinutePoint(M0 + MINUTE_US, 1, 1)]
    flaky.fail = False
    await tp.flush()
    assert tp.pending == {}
    assert await flaky.throughput_since(M0) == [(M0, "resize", 8, 80), (M0 + MINUTE_US, "ocr", 1, 1)]
    assert await tp.recent(1) == report  # stored now, and counted once


async def test_recent_fills_quiet_minutes_with_zeros_and_includes_unflushed_counts(db: SqlStore) -> None:
    store = db
    clock = FakeClock(M0 + 5_000_000)
    tp = Throughput(store, clock)
    other = Throughput(store, clock)  # another replica, flushed
    await store.add_throughput({(M0 - 2 * HOUR_US, "resize"): (50, 50)})  # before the window of one hour
    tp.count("resize", 2, 20)
    other.count("ocr", 1, 3)
    await tp.flush()
    await other.flush()
    clock.advance(3 * 60)  # minute M0 + 3
    tp.count("resize", 1, 10)  # not flushed
    tp.count("ocr", 4, 4)  # not flushed
    now_minute = M0 + 3 * MINUTE_US
    await store.add_throughput(
        {(now_minute + MINUTE_US, "resize"): (9, 9)}
    )  # a replica whose clock runs ahead

    report = await tp.recent(1)

    assert len(report.points) == 60
    assert [p.minute for p in report.points] == [now_minute - k * MINUTE_US for k in range(59, -1, -1)]
    assert report.points[-4:] == [
        MinutePoint(M0, 3, 23),
        MinutePoint(M0 + MINUTE_US, 0, 0),
        MinutePoint(M0 + 2 * MINUTE_US, 0, 0),
        MinutePoint(now_minute, 5, 14),
    ]
    assert all(p.chunks == p.items == 0 for p in report.points[:-4])
    assert report.by_kind == {"ocr": KindTotal(5, 7), "resize": KindTotal(3, 30)}
    assert list(report.by_kind) == ["ocr", "resize"]

    day = await tp.recent(24)
    assert len(day.points) == 24 * 60 and day.points[-1] == MinutePoint(now_minute, 5, 14)
    assert day.by_kind == {"ocr": KindTotal(5, 7), "resize": KindTotal(53, 80)}
    for hours in (0, -1, KEEP_US // HOUR_US + 1):
        with pytest.raises(ValueError):
            await tp.recent(hours)


async def test_old_minutes_are_pruned_now_and_then(db: SqlStore) -> None:
    store = db
    clock = FakeClock(M0 + 5_000_000)
    tp = Throughput(store, clock)
    now = minute_of(clock())
    old, kept = now - KEEP_US - MINUTE_US, now - KEEP_US
    await store.add_throughput({(old, "resize"): (1, 1), (kept, "resize"): (2, 2), (now, "resize"): (3, 3)})

    await tp.tick()  # the first pass prunes
    assert [r[0] for r in await store.throughput_since(0)] == [kept, now]

    await store.add_throughput({(old, "ocr"): (1, 1)})
    clock.advance(30 * 60)
    await tp.tick()  # within the hour: no prune
    assert [r[0] for r in await store.throughput_since(0)] == [old, kept, now]
    clock.advance(30 * 60)
    await tp.tick()
    assert [r[0] for r in await store.throughput_since(0)] == [now]  # kept is more than a week old by now
    assert await store.prune_throughput(now + MINUTE_US) == 1


async def test_the_loop_flushes_once_more_when_stopped(db: SqlStore) -> None:
    store = db
    tp = Throughput(store, FakeClock(M0 + 5_000_000))
    tp.count("resize", 1, 4)
    stop = asyncio.Event()
    stop.set()
    await tp.run(stop, every=3600)
    assert await store.throughput_since(M0) == [(M0, "resize", 1, 4)]


async def test_worker_service_counts_the_chunks_it_completed_once_they_committed(
    db: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(M0 + 5_000_000)
    store = db
    hub = ChangeHub()
    try:
        config = Config()
        outbox = Outbox(lambda job, now: {"id": job.id}, 0)
        jobs = JobService(store, outbox, config, clock)
        tp = Throughput(store, clock)
        workers = WorkerService(store, hub, outbox, config, clock, throughput=tp)
        new = NewJob(kind="resize", total_items=22, chunk_size=5, max_attempts=3, priority=5)
        job_id = (await jobs.create_job(ANONYMOUS, new)).job.id
        other = NewJob(kind="ocr", total_items=4, chunk_size=4, max_attempts=3, priority=1)
        other_id = (await jobs.create_job(ANONYMOUS, other)).job.id
        claims = {c.chunk.id: c for c in await workers.claim(ClaimRequest("w", [], 10, LEASE, 0))}
        assert len(claims) == 6  # chunks of 5, 5, 5, 5 and 2 items, and the other job's

        # One chunk on its own (PostgreSQL: one statement), one with a next claim asked for
        # (PostgreSQL: complete and claim in one round trip), then two in one call.
        fast: list[str] = []
        for name in ("complete", "complete_and_claim") if store.batch is not None else ():

            def spy(real: Callable[..., Awaitable[Any]], name: str = name) -> Callable[..., Awaitable[Any]]:
                async def call(*args: Any, **kw: Any) -> Any:
                    done = await real(*args, **kw)
                    if done is not None:
                        fast.append(name)
                    return done

                return call

            monkeypatch.setattr(store.batch, name, spy(getattr(store.batch, name)))
        await workers.complete(Completion(f"{job_id}-0", claims[f"{job_id}-0"].lease_token, [], ""))
        ask = ClaimRequest("w", [], 1, LEASE)
        await workers.complete(
            Completion(f"{job_id}-1", claims[f"{job_id}-1"].lease_token, [], ""), claim_next=ask
        )
        assert tp.pending == {(M0, "resize"): (2, 10)}
        assert fast == (["complete", "complete_and_claim"] if db.kind == "postgresql" else [])

        # A run of the transaction that rolls back (as a deadlock does) and runs again counts once.
        real_write = store.write
        attempts = 0

        class RolledBack(Exception):
            pass

        async def write_twice(body: Callable[[Tx], Awaitable[Any]], **kw: Any) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts == 1:

                async def then_roll_back(tx: Tx) -> Any:
                    await body(tx)
                    raise RolledBack

                with pytest.raises(RolledBack):
                    await real_write(then_roll_back)
            return await real_write(body)

        monkeypatch.setattr(store, "write", write_twice)
        results, _ = await workers.complete_many(
            [
                Completion(f"{job_id}-2", claims[f"{job_id}-2"].lease_token, []),
                Completion(f"{job_id}-3", claims[f"{job_id}-3"].lease_token, []),
                Completion(f"{job_id}-0", "stale", []),  # refused: not counted
            ]
        )
        monkeypatch.setattr(store, "write", real_write)
        assert attempts == 1 and [r.error is None for r in results] == [True, True, False]
        assert tp.pending == {(M0, "resize"): (4, 20)}

        # A stale lease and a chunk of a job being cancelled (it ends CANCELLED) are not counted.
        clock.advance(60)
        with pytest.raises(LeaseLost):
            await workers.complete(Completion(f"{job_id}-4", "stale", [], ""))
        await jobs.cancel_job(ANONYMOUS, other_id, "enough")
        await workers.complete(Completion(f"{other_id}-0", claims[f"{other_id}-0"].lease_token, [], ""))
        async with store.read() as tx:
            assert [c.state for c in await tx.list_chunks(other_id)] == [ChunkState.CANCELLED]
        assert tp.pending == {(M0, "resize"): (4, 20)}

        await workers.complete(
            Completion(f"{job_id}-4", claims[f"{job_id}-4"].lease_token, [], "")
        )  # 2 items
        assert tp.pending == {(M0, "resize"): (4, 20), (M0 + MINUTE_US, "resize"): (1, 2)}
        await tp.flush()
        report = await tp.recent(1)
        assert report.points[-2:] == [MinutePoint(M0, 4, 20), MinutePoint(M0 + MINUTE_US, 1, 2)]
        assert report.by_kind == {"resize": KindTotal(5, 22)}
    finally:
        hub.close()
