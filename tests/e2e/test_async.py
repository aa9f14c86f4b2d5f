"""End-to-end through ``jobpulse.AsyncClient``: the same server, driven from asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.e2e import assert_summary_matches

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2


@pytest.fixture
async def aclient(server: Any, client: jobpulse.Client) -> AsyncIterator[jobpulse.AsyncClient]:
    # ``client`` (sync) is requested too so the teardown summary check covers what this test did.
    async with jobpulse.AsyncClient(server.address, timeout=20.0) as c:
        yield c


async def test_async_create_get_list_and_batch(aclient: jobpulse.AsyncClient) -> None:
    a = await aclient.create_job("k", 2500, chunk_size=500, display_name="Async A", labels={"via": "aio"})
    b = await aclient.create_job("k", 10, display_name="Async B")

    assert [c.item_start for c in a.chunks] == [0, 500, 1000, 1500, 2000]
    full = await aclient.get_job(a.id)
    assert len(full.chunks) == 5
    basic = await aclient.get_job(a.id, view="basic")
    assert len(basic.chunks) == 0 and basic.chunks_summary.total == 5

    page = await aclient.list_jobs_page(page_size=1)
    assert [j.id for j in page.jobs] == [b.id]
    assert page.total_size == 2
    every = [j.id async for j in aclient.list_jobs(page_size=1)]
    assert every == [b.id, a.id]
    labelled = await aclient.list_jobs_page(labels={"via": "aio"})
    assert [j.id for j in labelled.jobs] == [a.id]

    chunks = [c.index async for c in aclient.list_job_chunks(a.id, page_size=2)]
    assert chunks == [0, 1, 2, 3, 4]
    assert [j.id for j in await aclient.batch_get_jobs([b.id, a.id])] == [b.id, a.id]


async def test_async_errors_are_typed(aclient: jobpulse.AsyncClient) -> None:
    with pytest.raises(errors.NotFound) as not_found:
        await aclient.get_job("01NOSUCHJOB0000000000000000")
    assert not_found.value.reason == "JOB_NOT_FOUND"

    with pytest.raises(errors.InvalidArgument) as invalid:
        await aclient.create_job("k", 0)
    assert "total_items" in {field for field, _ in invalid.value.field_violations}

    with pytest.raises(errors.InvalidArgument) as bad_token:
        await aclient.list_jobs_page(page_token="nope")
    assert bad_token.value.reason == "INVALID_PAGE_TOKEN"

    job = await aclient.create_job("k", 1)
    claim = (await aclient.claim_chunks("w1", kinds=["k"]))[0]
    with pytest.raises(errors.LeaseLost) as lost:
        await aclient.complete_chunk(claim.chunk.id, "stale")
    assert lost.value.reason == "LEASE_LOST"
    await aclient.complete_chunk(claim.chunk.id, claim.lease_token)
    with pytest.raises(errors.FailedPrecondition) as terminal:
        await aclient.cancel_job(job.id)
    assert terminal.value.reason == "JOB_ALREADY_TERMINAL"


async def _async_worker(aclient: jobpulse.AsyncClient, kind: str, n: int, go: asyncio.Event) -> None:
    await asyncio.wait_for(go.wait(), 10)
    for _ in range(n):
        claims = await aclient.claim_chunks("aio-worker", kinds=[kind], wait=5)
        assert len(claims) == 1
        claim = claims[0]
        progress = await aclient.report_chunk_progress(
            claim.chunk.id, claim.lease_token, items_done=claim.chunk.item_count // 2, stage="halfway"
        )
        assert progress.cancel_requested is False
        await aclient.complete_chunk(
            claim.chunk.id,
            claim.lease_token,
            artifacts=[{"name": f"out-{claim.chunk.index}", "uri": f"s3://out/{claim.chunk.index}"}],
        )


async def test_async_watch_follows_an_async_worker_to_completion(
    aclient: jobpulse.AsyncClient, client: jobpulse.Client
) -> None:
    job = await aclient.create_job("aio", 40, chunk_size=10)
    go = asyncio.Event()
    worker = asyncio.create_task(_async_worker(aclient, "aio", 4, go))

    events = []
    async for event in aclient.watch_job(job.id, timeout=30):
        events.append(event)
        go.set()
    await asyncio.wait_for(worker, 10)

    assert events[0].type == job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT
    assert events[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions)
    final = await aclient.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert sorted(a.chunk_index for a in final.artifacts) == [0, 1, 2, 3]
    assert final.stage == "halfway"
    assert_summary_matches(client, job.id)


async def test_async_wait_and_its_timeout(aclient: jobpulse.AsyncClient) -> None:
    job = await aclient.create_job("k", 2, chunk_size=1)
    started = time.monotonic()
    with pytest.raises(jobpulse.WaitTimeout) as info:
        await aclient.wait(job.id, timeout=0.5)
    assert time.monotonic() - started < 5
    assert info.value.last_job is not None
    assert info.value.last_job.state == job_pb2.JOB_STATE_PENDING

    waiter = asyncio.create_task(aclient.wait(job.id, timeout=20))
    for claim in await aclient.claim_chunks("w1", kinds=["k"], max_chunks=2):
        await aclient.complete_chunk(claim.chunk.id, claim.lease_token)
    final = await asyncio.wait_for(waiter, 20)
    assert final.state == job_pb2.JOB_STATE_COMPLETED


async def test_async_long_poll_is_woken_by_a_new_job(aclient: jobpulse.AsyncClient) -> None:
    claimer = asyncio.create_task(aclient.claim_chunks("w1", kinds=["late"], wait=10))
    await asyncio.sleep(0.3)  # let the claim block on the server; the assertions hold either way
    assert not claimer.done()
    job = await aclient.create_job("late", 1)
    created = time.monotonic()
    claims = await asyncio.wait_for(claimer, 15)
    assert [c.job_id for c in claims] == [job.id]
    assert time.monotonic() - created < 5


async def test_async_steering_calls(aclient: jobpulse.AsyncClient) -> None:
    job = await aclient.create_job("k", 3, chunk_size=1, priority=2)
    updated = await aclient.update_job(job.id, priority=8, display_name="renamed")
    assert (updated.priority, updated.display_name) == (8, "renamed")
    assert updated.revision > job.revision

    cancelled = await aclient.cancel_job(job.id, reason="async stop")
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    retried = await aclient.retry_job(job.id)
    assert retried.state == job_pb2.JOB_STATE_PENDING

    with pytest.raises(errors.FailedPrecondition) as info:
        await aclient.delete_job(job.id)
    assert info.value.reason == "JOB_NOT_TERMINAL"
    await aclient.delete_job(job.id, force=True)
    with pytest.raises(errors.NotFound):
        await aclient.get_job(job.id)

    stats = await aclient.get_job_stats()
    assert stats.stats.total_jobs == 0
