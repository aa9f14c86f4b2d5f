"""The export use case (services/export.py) on the in-memory FakeStore: batches, owner scoping, one short
read per batch, and no read after the consumer stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support.fake_store import FakeRead, FakeStore, new_job

from jobpulse_server.domain.filters import ORDERS, JobFilter
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.platform.config import Config
from jobpulse_server.services.export import EXPORT_BATCH, export_jobs
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.outbox import Outbox

START = 1_700_000_000_000_000
DEADLINE = 5.0


class CountingStore(FakeStore):
    """Counts the read transactions opened, and how many are open right now."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.open_reads = 0

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[FakeRead]:
        self.reads += 1
        self.open_reads += 1
        try:
            async with super().read(consistent=consistent) as tx:
                yield tx
        finally:
            self.open_reads -= 1


@pytest.fixture
def store() -> CountingStore:
    s = CountingStore()
    for i in range(11):
        job, chunks = new_job(
            f"J{i:02d}",
            now=START + i,
            priority=i % 4,
            owner="alice" if i % 3 else "bob",
            labels={"even": str(i % 2 == 0).lower()},
        )
        s.add_job(job, chunks)
    return s


@pytest.fixture
def jobs(store: CountingStore) -> JobService:
    return JobService(store, Outbox(lambda job, now: {}, 0), Config())


async def _batches(
    jobs: JobService, who: Principal, f: JobFilter, order_by: str, size: int
) -> list[list[str]]:
    return [[p.job.id for p in pages] async for pages in export_jobs(jobs, who, f, order_by, size)]


async def test_batches_hold_every_job_in_order_and_match_list_jobs(
    jobs: JobService, store: CountingStore
) -> None:
    for order_by in ORDERS:
        listed, _, _, _ = await jobs.list_jobs(
            ANONYMOUS, JobFilter(), order_by=order_by, page_size=100, page_token="", full=False
        )
        before = store.reads
        batches = await _batches(jobs, ANONYMOUS, JobFilter(), order_by, 4)
        assert [len(b) for b in batches] == [4, 4, 3]
        assert [i for b in batches for i in b] == [p.job.id for p in listed], order_by
        assert store.reads - before == 3  # one read per batch, none more


async def test_each_batch_is_read_in_a_transaction_of_its_own(jobs: JobService, store: CountingStore) -> None:
    seen = 0
    async for pages in export_jobs(jobs, ANONYMOUS, JobFilter(), "create_time", 2):
        # While the caller holds a batch (a gRPC send in progress), no read is open.
        assert store.open_reads == 0
        seen += len(pages)
    assert seen == 11


async def test_filters_and_owner_scoping(jobs: JobService) -> None:
    alice = Principal("alice", sees_all=False, role="client")
    mine = await _batches(jobs, alice, JobFilter(), "create_time", 3)
    assert [i for b in mine for i in b] == [f"J{i:02d}" for i in range(11) if i % 3]
    evens = await _batches(jobs, alice, JobFilter(labels={"even": "true"}, min_priority=2), "create_time", 3)
    assert [i for b in evens for i in b] == ["J02", "J10"]
    assert await _batches(jobs, alice, JobFilter(kind="nothing"), "create_time", 3) == []


async def test_a_consumer_that_stops_stops_the_reads(jobs: JobService, store: CountingStore) -> None:
    stream = export_jobs(jobs, ANONYMOUS, JobFilter(), "create_time", 2)
    first = await anext(stream)
    assert len(first) == 2 and store.reads == 1
    await stream.aclose()
    assert store.reads == 1
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert store.reads == 1


async def test_a_cancelled_consumer_task_stops_the_reads(jobs: JobService, store: CountingStore) -> None:
    # As a gRPC stream handler is: a task that sends a batch, then asks for the next.
    sent = asyncio.Event()
    never = asyncio.Event()

    async def handler() -> None:
        async for _ in export_jobs(jobs, ANONYMOUS, JobFilter(), "create_time", 2):
            sent.set()
            await never.wait()  # the send that the client's cancel interrupts

    task = asyncio.create_task(handler())
    await asyncio.wait_for(sent.wait(), DEADLINE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)
    assert store.reads == 1


def test_the_batch_is_500() -> None:
    assert EXPORT_BATCH == 500  # the contract's "at most 500"; tests elsewhere patch it smaller


async def test_the_default_batch_is_read_at_call_time(
    jobs: JobService, store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobpulse_server.services import export

    monkeypatch.setattr(export, "EXPORT_BATCH", 5)
    sizes: list[Any] = [len(b) async for b in export_jobs(jobs, ANONYMOUS, JobFilter(), "create_time")]
    assert sizes == [5, 5, 1]
