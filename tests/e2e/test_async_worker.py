"""End-to-end: ``jobpulse.AsyncWorker`` against a real server on both databases: concurrent handlers, progress
and artifacts, cancel, retries, leases kept alive by heartbeats, graceful stop and cancellation of ``run``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from support.e2e import assert_summary_matches, popen_interruptible
from support.readme_blocks import find_block

import jobpulse
from jobpulse.v1 import job_pb2

T = TypeVar("T")


@pytest.fixture
async def aclient(server: Any, client: jobpulse.Client) -> AsyncIterator[jobpulse.AsyncClient]:
    # ``client`` (sync) is requested too so the teardown summary check covers what this test did.
    async with jobpulse.AsyncClient(server.address, timeout=20.0) as c:
        yield c


async def until(fn: Callable[[], Awaitable[T | None]], timeout: float = 20.0, what: str = "condition") -> T:
    """Awaits ``fn`` until it returns something truthy, polling with a deadline (async ``eventually``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"timed out after {timeout:g}s waiting for {what} (last: {value!r})"
        )
        await asyncio.sleep(0.02)


def start(worker: jobpulse.AsyncWorker, handler: Any) -> tuple[asyncio.Event, asyncio.Task[int]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(worker.run(handler, stop_event=stop))


async def test_async_worker_runs_a_job_to_completion_with_two_handlers_at_once(
    aclient: jobpulse.AsyncClient,
) -> None:
    job = await aclient.create_job("frames", 100, chunk_size=10, metadata={"scale": 2})
    seen: list[tuple[int, int, int]] = []
    running: set[int] = set()
    two_at_once = asyncio.Event()

    async def handle(task: jobpulse.AsyncTask) -> None:
        assert task.job_id == job.id
        assert task.job_metadata == {"scale": 2}
        running.add(task.chunk.index)
        if len(running) == 2:
            two_at_once.set()
        # The first handler returns only once a second one runs beside it: one at a time would time out.
        await asyncio.wait_for(two_at_once.wait(), 15)
        for n, _item in enumerate(task.items, 1):
            task.progress(n, stage="scaling")
            await asyncio.sleep(0)
        task.set_external_task_id(f"ext-{task.chunk.index}")
        task.add_artifact(f"part-{task.chunk.index}.bin", f"s3://out/{task.chunk.index}", size_bytes=10)
        seen.append((task.chunk.index, task.items.start, len(task.items)))
        running.discard(task.chunk.index)

    worker = jobpulse.AsyncWorker(aclient, kinds=["frames"], worker_id="aio-w", concurrency=2, poll_wait=0.2)
    stop, running_worker = start(worker, handle)
    try:
        final = await aclient.wait(job.id, timeout=30)
    finally:
        stop.set()
    processed = await asyncio.wait_for(running_worker, 15)

    assert two_at_once.is_set()
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.progress.percent == 100
    assert processed == 10
    assert sorted(seen) == [(i, i * 10, 10) for i in range(10)]
    full = await aclient.get_job(job.id)
    assert full.chunks_summary.completed == 10
    assert {c.worker_id for c in full.chunks} == {"aio-w"}
    assert [c.external_task_id for c in full.chunks] == [f"ext-{i}" for i in range(10)]
    assert sorted(a.chunk_index for a in full.artifacts) == list(range(10))
    assert {a.uri for a in full.artifacts} == {f"s3://out/{i}" for i in range(10)}


async def test_async_worker_progress_is_visible_while_the_handler_runs(aclient: jobpulse.AsyncClient) -> None:
    job = await aclient.create_job("frames", 10, chunk_size=10)
    release = asyncio.Event()

    async def handle(task: jobpulse.AsyncTask) -> None:
        task.progress(4, stage="scaling", message="4 of 10 frames")
        task.set_external_task_id("gpu-77")
        await asyncio.wait_for(release.wait(), 20)

    stop, running_worker = start(jobpulse.AsyncWorker(aclient, kinds=["frames"], poll_wait=0.2), handle)
    try:

        async def reported() -> job_pb2.Job | None:
            j = await aclient.get_job(job.id)
            return j if j.stage == "scaling" else None

        seen = await until(reported, what="the progress report")
        release.set()
        final = await aclient.wait(job.id, timeout=30, view="full")
    finally:
        release.set()
        stop.set()
    await asyncio.wait_for(running_worker, 15)

    assert seen.state == job_pb2.JOB_STATE_PROCESSING
    assert (seen.message, seen.progress.items_done) == ("4 of 10 frames", 4)
    assert seen.chunks[0].external_task_id == "gpu-77"
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.stage == "scaling"


async def test_async_worker_cancel_reaches_the_running_handler(aclient: jobpulse.AsyncClient) -> None:
    job = await aclient.create_job("long", 1)
    started = asyncio.Event()
    told: list[bool] = []

    async def handle(task: jobpulse.AsyncTask) -> None:
        started.set()
        await asyncio.wait_for(task.cancel_event.wait(), 20)
        told.append(task.cancelled)

    worker = jobpulse.AsyncWorker(aclient, kinds=["long"], lease_duration=1.5, poll_wait=0.2)
    stop, running_worker = start(worker, handle)
    try:
        await asyncio.wait_for(started.wait(), 10)
        assert (await aclient.cancel_job(job.id, reason="user")).state == job_pb2.JOB_STATE_CANCELLING
        final = await aclient.wait(job.id, timeout=20)
    finally:
        stop.set()
    await asyncio.wait_for(running_worker, 15)

    assert told == [True]
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert (await aclient.get_job(job.id)).chunks[0].state == job_pb2.CHUNK_STATE_CANCELLED


async def test_async_worker_retries_a_handler_exception_then_fails_for_good(
    make_server: Any, connect: Any
) -> None:
    srv = make_server(retry_backoff=0.01)
    connect(srv)  # the teardown summary check
    attempts: list[int] = []

    async def handle(task: jobpulse.AsyncTask) -> None:
        attempts.append(task.chunk.attempt)
        raise RuntimeError(f"glitch on attempt {task.chunk.attempt}")

    async with jobpulse.AsyncClient(srv.address, timeout=20.0) as aclient:
        job = await aclient.create_job("flaky", 1, max_attempts=2)
        stop, running_worker = start(jobpulse.AsyncWorker(aclient, kinds=["flaky"], poll_wait=0.2), handle)
        try:
            final = await aclient.wait(job.id, timeout=30, view="full")
        finally:
            stop.set()
        await asyncio.wait_for(running_worker, 15)

    assert attempts == [1, 2]
    assert final.state == job_pb2.JOB_STATE_FAILED
    chunk = final.chunks[0]
    assert (chunk.state, chunk.attempt) == (job_pb2.CHUNK_STATE_FAILED, 2)
    assert (chunk.error.reason, chunk.error.message) == ("RuntimeError", "glitch on attempt 2")


async def test_async_worker_heartbeats_keep_the_lease_past_its_duration(
    make_server: Any, connect: Any
) -> None:
    # The sweeper looks every 50 ms: without heartbeats the 0.6 s lease would expire and, with a single
    # attempt allowed, fail the job.
    srv = make_server(sweep_interval=0.05)
    connect(srv)
    lease = 0.6

    async def handle(task: jobpulse.AsyncTask) -> None:
        await asyncio.sleep(3 * lease)  # the work itself: three lease durations

    async with jobpulse.AsyncClient(srv.address, timeout=20.0) as aclient:
        job = await aclient.create_job("slow", 1, max_attempts=1)
        worker = jobpulse.AsyncWorker(aclient, kinds=["slow"], lease_duration=lease, poll_wait=0.2)
        stop, running_worker = start(worker, handle)
        try:
            final = await aclient.wait(job.id, timeout=30, view="full")
        finally:
            stop.set()
        assert await asyncio.wait_for(running_worker, 15) == 1

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert (final.chunks[0].state, final.chunks[0].attempt) == (job_pb2.CHUNK_STATE_COMPLETED, 1)


async def test_async_worker_graceful_stop_finishes_the_chunk_in_hand(
    aclient: jobpulse.AsyncClient, client: jobpulse.Client
) -> None:
    job = await aclient.create_job("batch", 2, chunk_size=1)
    started = asyncio.Event()
    release = asyncio.Event()

    async def handle(task: jobpulse.AsyncTask) -> None:
        started.set()
        await asyncio.wait_for(release.wait(), 20)

    stop, running_worker = start(jobpulse.AsyncWorker(aclient, kinds=["batch"], poll_wait=0.2), handle)
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    release.set()
    assert await asyncio.wait_for(running_worker, 15) == 1

    chunks = {c.index: c.state for c in (await aclient.get_job(job.id)).chunks}
    assert chunks == {0: job_pb2.CHUNK_STATE_COMPLETED, 1: job_pb2.CHUNK_STATE_PENDING}
    assert_summary_matches(client, job.id)


async def test_cancelling_run_hands_the_chunk_back_at_once(make_server: Any, connect: Any) -> None:
    srv = make_server(retry_backoff=0.01)
    connect(srv)
    started = asyncio.Event()

    async def handle(task: jobpulse.AsyncTask) -> None:
        started.set()
        await asyncio.Event().wait()  # never returns: only cancellation ends it

    async with jobpulse.AsyncClient(srv.address, timeout=20.0) as aclient:
        job = await aclient.create_job("batch", 1)
        # A lease far longer than the test: the chunk comes back because it was handed back, not expired.
        worker = jobpulse.AsyncWorker(aclient, kinds=["batch"], lease_duration=600, poll_wait=0.2)
        _, running_worker = start(worker, handle)
        await asyncio.wait_for(started.wait(), 10)
        running_worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running_worker

        chunk = (await aclient.get_job(job.id)).chunks[0]
        assert (chunk.state, chunk.attempt) == (job_pb2.CHUNK_STATE_PENDING, 1)
        assert chunk.error.reason == "WorkerStopped"
        again = await until(lambda: aclient.claim_chunks("w2", kinds=["batch"]), what="the chunk back")
        assert (again[0].chunk.id, again[0].chunk.attempt) == (chunk.id, 2)
        await aclient.complete_chunk(again[0].chunk.id, again[0].lease_token)


def docs_async_worker() -> str:
    """The AsyncWorker block of docs/sdk.md, as written."""
    code = find_block("docs/sdk.md", "## AsyncWorker", "python", "import asyncio\n").text
    assert "jobpulse.AsyncWorker(" in code, "the AsyncWorker example no longer makes an AsyncWorker"
    return code


def test_the_docs_async_worker_runs_as_written(server: Any, client: jobpulse.Client) -> None:
    code = docs_async_worker()
    assert "127.0.0.1:50051" in code
    job = client.create_job("thumbnails", 40, chunk_size=10)
    # The only change: the page's address becomes this test's server.
    worker = popen_interruptible(
        [sys.executable, "-c", code.replace("127.0.0.1:50051", server.address)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        final = client.wait(job.id, timeout=30, view="full")
    finally:
        # Ctrl-C, as a user stops it: asyncio.run cancels main(), the worker hands back what it holds.
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=15)

    assert final.state == job_pb2.JOB_STATE_COMPLETED, stderr
    assert final.progress.items_done == 40
    assert final.stage == "resizing"
    assert sorted(a.uri for a in final.artifacts) == [f"s3://bucket/{job.id}/{i}.zip" for i in range(4)]
    assert (worker.returncode, stderr) == (0, "")
