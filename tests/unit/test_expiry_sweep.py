"""The expiry sweep (services/retention.py) and expire_time (domain/retention.py) on the in-memory store:
which jobs go, in bounded batches, and that jobs kept on purpose are not looked at again each sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from support.clock import FakeClock
from support.fake_store import FakeStore, new_job

from jobpulse_server.domain.model import ChunkState, Job, JobState
from jobpulse_server.domain.retention import Retention
from jobpulse_server.platform.config import Config
from jobpulse_server.services.retention import RetentionService

S = 1_000_000
T0 = 1_700_000_000 * S


class CountingStore(FakeStore):
    """Counts the candidate rows the sweep reads, to see what it looks at."""

    def __init__(self) -> None:
        super().__init__()
        self.looked = 0

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[Any]:
        async with super().read() as tx:
            outer = self
            plain = tx.expiry_candidates

            async def counted(*args: Any) -> Any:
                found = await plain(*args)
                outer.looked += len(found)
                return found

            tx.expiry_candidates = counted  # type: ignore[method-assign]
            yield tx


def _finished(store: FakeStore, job_id: str, state: JobState, end: int, ttl: int | None = None) -> Job:
    job, chunks = new_job(job_id, total_items=2, chunk_size=1, now=end - S)
    job.ttl = ttl
    target = {JobState.COMPLETED: ChunkState.COMPLETED, JobState.FAILED: ChunkState.FAILED}.get(
        state, ChunkState.CANCELLED
    )
    for chunk in chunks:
        if target == ChunkState.COMPLETED:
            job.move_chunk(chunk, ChunkState.PROCESSING, end)
        job.move_chunk(chunk, target, end)
    assert job.state == state and job.end_time == end
    return store.add_job(job, chunks)


def _service(store: CountingStore, clock: FakeClock, **config: Any) -> tuple[RetentionService, CountingStore]:
    values: dict[str, Any] = {
        "retention_completed": 10.0,
        "retention_failed": 100.0,
        "retention_cancelled": 0.0,
        "tombstone_retention": 0.0,
        "webhook_delivery_retention": 0.0,
    }
    values.update(config)
    return RetentionService(store, Config(**values), clock), store


def test_expire_time_is_end_time_plus_the_effective_ttl() -> None:
    retention = Retention(completed=10 * S, failed=100 * S, cancelled=0)
    store = FakeStore()
    done = _finished(store, "a", JobState.COMPLETED, T0)
    failed = _finished(store, "b", JobState.FAILED, T0)
    cancelled = _finished(store, "c", JobState.CANCELLED, T0)
    own = _finished(store, "d", JobState.CANCELLED, T0, ttl=5 * S)
    kept = _finished(store, "e", JobState.COMPLETED, T0, ttl=0)
    running, _ = new_job("f")
    assert retention.expire_time(done) == T0 + 10 * S
    assert retention.expire_time(failed) == T0 + 100 * S
    assert retention.expire_time(cancelled) is None  # the default keeps cancelled jobs
    assert retention.expire_time(own) == T0 + 5 * S
    assert retention.expire_time(kept) is None
    assert retention.expire_time(running) is None


async def test_sweep_deletes_what_expired_and_nothing_else() -> None:
    store = CountingStore()
    clock = FakeClock(T0 + 50 * S)
    _finished(store, "old-done", JobState.COMPLETED, T0)  # expired: 10 s default
    _finished(store, "new-done", JobState.COMPLETED, T0 + 45 * S)  # 5 s to go
    _finished(store, "old-failed", JobState.FAILED, T0)  # 100 s default: not yet
    _finished(store, "cancelled", JobState.CANCELLED, T0)  # kept by default
    _finished(store, "own-short", JobState.FAILED, T0 + 30 * S, ttl=5 * S)  # expired by its own ttl
    _finished(store, "own-kept", JobState.COMPLETED, T0, ttl=0)
    running, chunks = new_job("running", now=T0)
    store.add_job(running, chunks)
    service, _ = _service(store, clock)

    counts = await service.sweep()

    assert counts.jobs == 2
    assert sorted(store.job_ids) == ["cancelled", "new-done", "old-failed", "own-kept", "running"]
    assert {t.id for t in store.tombstones} == {"old-done", "own-short"}
    assert not store.chunks_of("old-done")
    clock.now = T0 + 200 * S
    await service.sweep()
    assert sorted(store.job_ids) == ["cancelled", "own-kept", "running"]


async def test_sweeps_are_bounded_and_do_not_look_at_kept_jobs_again() -> None:
    store = CountingStore()
    clock = FakeClock(T0 + 1000 * S)
    for i in range(10):
        _finished(store, f"kept-{i:02}", JobState.COMPLETED, T0 + i, ttl=0)
    for i in range(7):
        _finished(store, f"gone-{i:02}", JobState.COMPLETED, T0 + 100 + i)
    service, txs = _service(store, clock, retention_batch=2, retention_max_per_sweep=4)

    sweeps = []
    while any(j.startswith("gone") for j in store.job_ids):
        txs.looked = 0
        await service.sweep()
        sweeps.append(txs.looked)
        assert len(sweeps) < 20, "the sweep makes no progress"
    assert all(n <= 4 for n in sweeps), sweeps
    assert sorted(store.job_ids) == [f"kept-{i:02}" for i in range(10)]
    # Once past them, a sweep no longer reads the jobs kept for ever.
    txs.looked = 0
    await service.sweep()
    assert txs.looked == 0
