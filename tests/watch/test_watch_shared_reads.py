"""Watchers share reads, but never one that started before the change that woke them.

A watcher spends its wake-up when it clears its event; if it then joined a read
whose database snapshot predates the change, it would show stale state and wait
for a change that already happened (a stream stuck until its deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import jobpulse
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.services.watch import WatchService, _Delta

KIND = "watch-shared"


def counted_service(app: Any) -> tuple[WatchService, list[int]]:
    """A WatchService on the app's database and hub whose database reads are counted (in ``[0]``)."""
    svc = WatchService(app.store, app.hub, app.config)
    real_read = svc._read_now
    reads = [0]

    async def counted_read(who: Any, job_id: str, after: int) -> _Delta:
        reads[0] += 1
        return await real_read(who, job_id, after)

    svc._read_now = counted_read  # type: ignore[method-assign]
    return svc, reads


def test_a_read_started_before_a_change_is_not_shared_with_watchers_it_woke(
    make_server: Callable[..., Any],
) -> None:
    srv = make_server()
    app = srv.app
    with jobpulse.Client(srv.address, timeout=30) as client:
        job = client.create_job(KIND, 2, chunk_size=1)

    async def scenario() -> tuple[int, int, int]:
        svc = WatchService(app.store, app.hub, app.config)
        real_read = svc._read_now
        snapshot_taken = asyncio.Event()
        release = asyncio.Event()
        calls = 0

        async def gated_read(who: Any, job_id: str, after: int) -> _Delta:
            nonlocal calls
            calls += 1
            delta = await real_read(who, job_id, after)
            if calls == 1:
                # The first read has its snapshot; hold it until the change is committed.
                snapshot_taken.set()
                await release.wait()
            return delta

        svc._read_now = gated_read  # type: ignore[method-assign]
        with app.hub.subscribe(job.id) as changed:
            first = asyncio.ensure_future(svc._read(ANONYMOUS, job.id, job.revision))
            await asyncio.wait_for(snapshot_taken.wait(), 30)
            await app.jobs.update_job(ANONYMOUS, job.id, priority=7, labels=None, display_name=None)
            assert changed.is_set(), "the commit must wake the job's watchers"
            changed.clear()
            second = asyncio.ensure_future(svc._read(ANONYMOUS, job.id, job.revision))
            await asyncio.sleep(0)  # let the second read start (or join the first)
            release.set()
            stale, fresh = await asyncio.wait_for(asyncio.gather(first, second), 30)
        return stale.job.revision, fresh.job.revision, calls

    stale_revision, fresh_revision, reads = srv.call(scenario())
    assert stale_revision == job.revision
    assert fresh_revision > job.revision, "the woken watcher was handed a read from before its change"
    assert reads == 2


def test_watchers_woken_by_the_same_change_share_one_read(make_server: Callable[..., Any]) -> None:
    srv = make_server()
    app = srv.app
    with jobpulse.Client(srv.address, timeout=30) as client:
        job = client.create_job(KIND, 2, chunk_size=1)

    async def scenario() -> tuple[list[int], int]:
        svc, reads = counted_service(app)
        with app.hub.subscribe(job.id):
            await app.jobs.update_job(ANONYMOUS, job.id, priority=3, labels=None, display_name=None)
            deltas = await asyncio.gather(*(svc._read(ANONYMOUS, job.id, job.revision) for _ in range(50)))
        return [d.job.revision for d in deltas], reads[0]

    revisions, reads = srv.call(scenario())
    assert len(set(revisions)) == 1 and revisions[0] > job.revision
    assert reads == 1


def test_watchers_arriving_later_reuse_a_finished_read_until_the_job_changes(
    make_server: Callable[..., Any],
) -> None:
    """Streams opened one after another on an unchanged job cost one read between them, not one each."""
    srv = make_server()
    app = srv.app
    with jobpulse.Client(srv.address, timeout=30) as client:
        job = client.create_job(KIND, 2, chunk_size=1)

    async def scenario() -> tuple[int, int, int, bool]:
        svc, reads = counted_service(app)
        with app.hub.subscribe(job.id):
            for _ in range(20):  # one at a time, each read finished before the next starts
                assert (await svc._read(ANONYMOUS, job.id, 0)).job.revision == job.revision
            before_change = reads[0]
            # Jobs start at priority 5 (the contract's default): 9 is a change.
            await app.jobs.update_job(ANONYMOUS, job.id, priority=9, labels=None, display_name=None)
            fresh = await svc._read(ANONYMOUS, job.id, 0)
            assert fresh.job.revision > job.revision
            after_change = reads[0]
        svc._forget_unwatched(job.id)
        return before_change, after_change, len(svc._reads), app.hub.watched(job.id)

    before_change, after_change, cached_jobs, still_watched = srv.call(scenario())
    assert before_change == 1
    assert after_change == 2, "a change must start a new read"
    assert not still_watched and cached_jobs == 0, "reads of a job nobody watches must not be kept"


def test_watchers_waiting_on_a_reader_that_goes_away_read_for_themselves(
    make_server: Callable[..., Any],
) -> None:
    """The watcher doing the shared read is cancelled (its client left) mid-read: the watchers waiting on
    it are not cancelled with it and get the job all the same."""
    srv = make_server()
    app = srv.app
    with jobpulse.Client(srv.address, timeout=30) as client:
        job = client.create_job(KIND, 2, chunk_size=1)

    async def scenario() -> tuple[bool, list[int], int]:
        svc = WatchService(app.store, app.hub, app.config)
        real_read = svc._read_now
        entered = asyncio.Event()
        never = asyncio.Event()
        calls = 0

        async def stuck_first_read(who: Any, job_id: str, after: int) -> _Delta:
            nonlocal calls
            calls += 1
            if calls == 1:
                entered.set()
                await never.wait()  # the first reader never finishes on its own
            return await real_read(who, job_id, after)

        svc._read_now = stuck_first_read  # type: ignore[method-assign]
        with app.hub.subscribe(job.id):
            reader = asyncio.ensure_future(svc._read(ANONYMOUS, job.id, 0))
            await asyncio.wait_for(entered.wait(), 30)
            waiting = [asyncio.ensure_future(svc._read(ANONYMOUS, job.id, 0)) for _ in range(3)]
            await asyncio.sleep(0)  # let them join the read under way
            reader.cancel()
            deltas = await asyncio.wait_for(asyncio.gather(*waiting), 30)
        return reader.cancelled(), [d.job.revision for d in deltas], calls

    cancelled, revisions, calls = srv.call(scenario())
    assert cancelled
    assert revisions == [job.revision] * 3
    assert calls == 2, "one of the waiters reads again; the others share that read"
