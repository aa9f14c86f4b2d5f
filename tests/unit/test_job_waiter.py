"""JobWaiter (WaitOperation's use case) on the in-memory FakeStore: woken by the hub, not by polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from support.fake_store import FakeStore, new_job

from jobpulse_server.domain.errors import JobNotFound, ShuttingDown
from jobpulse_server.domain.model import JobState
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.domain.work import ClaimRequest, Completion
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.waiting import JobWaiter
from jobpulse_server.services.workers import WorkerService

DEADLINE = 5.0  # seconds a test waits for something that must happen before it fails
LEASE = 60_000_000
LONG_WAIT = 3600.0  # a wait that only a change can end within a test


@dataclass
class Rig:
    store: FakeStore
    hub: ChangeHub
    workers: WorkerService
    waiter: JobWaiter


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    hub = ChangeHub()
    store = FakeStore(on_commit=hub.publish)
    config = Config()
    outbox = Outbox(lambda job, now: {"id": job.id}, 0)
    jobs = JobService(store, outbox, config)
    workers = WorkerService(store, hub, outbox, config, metrics=Metrics())
    store.add_job(*new_job("A", total_items=2, chunk_size=1, owner="alice"))
    yield Rig(store, hub, workers, JobWaiter(jobs, hub))
    hub.close()


async def _subscribed(rig: Rig, job_id: str) -> None:
    """Lets a wait just created start: it subscribes to the hub first thing, before reading the job."""
    await asyncio.sleep(0)
    assert rig.hub.watched(job_id)


async def test_a_running_job_is_returned_as_it_stands_when_the_time_is_up(rig: Rig) -> None:
    page = await asyncio.wait_for(rig.waiter.wait(ANONYMOUS, "A", 0.05), DEADLINE)
    assert page.job.state == JobState.PENDING
    assert not rig.hub.watched("A")  # the subscription ends with the wait
    page = await asyncio.wait_for(rig.waiter.wait(ANONYMOUS, "A", 0), DEADLINE)
    assert page.job.state == JobState.PENDING


async def test_a_wait_ends_when_the_job_does(rig: Rig) -> None:
    waiting = asyncio.create_task(rig.waiter.wait(ANONYMOUS, "A", LONG_WAIT))
    await _subscribed(rig, "A")
    claims = await rig.workers.claim(ClaimRequest("w", [], 2, LEASE, 0))
    await rig.workers.complete(Completion(claims[0].chunk.id, claims[0].lease_token, [], ""))
    await asyncio.sleep(0)
    assert not waiting.done()  # a change that does not end the job: it reads and waits again
    await rig.workers.complete(Completion(claims[1].chunk.id, claims[1].lease_token, [], ""))

    page = await asyncio.wait_for(waiting, DEADLINE)
    assert page.job.state == JobState.COMPLETED
    # A job already done answers at once.
    done = await asyncio.wait_for(rig.waiter.wait(ANONYMOUS, "A", LONG_WAIT), DEADLINE)
    assert done.job.state == JobState.COMPLETED


async def test_another_owners_job_and_an_unknown_one_are_not_found(rig: Rig) -> None:
    with pytest.raises(JobNotFound):
        await rig.waiter.wait(Principal("bob", sees_all=False, role="client"), "A", LONG_WAIT)
    with pytest.raises(JobNotFound):
        await rig.waiter.wait(ANONYMOUS, "nope", LONG_WAIT)
    page = await rig.waiter.wait(Principal("alice", sees_all=False, role="client"), "A", 0)
    assert page.job.owner == "alice"


async def test_a_wait_ends_when_the_server_shuts_down(rig: Rig) -> None:
    waiting = asyncio.create_task(rig.waiter.wait(ANONYMOUS, "A", LONG_WAIT))
    await _subscribed(rig, "A")
    rig.hub.close()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(waiting, DEADLINE)
