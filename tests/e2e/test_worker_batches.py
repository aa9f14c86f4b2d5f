"""End-to-end: ``Worker`` and ``AsyncWorker`` with ``batch_size`` against a real server on both databases.

A batch is claimed in one call and completed in one CompleteChunks call that claims the next batch; every
item is fenced by its own lease, so one whose lease was lost is refused alone; the stop event and the
``max_chunks`` budget hold as they do one chunk at a time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support.e2e import BackgroundThread, chunks_by_index, summary_dict
from support.polling import eventually

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2

KIND = "frames"


def _calls(srv: Any, method: str) -> int:
    """Successful calls of ``method`` the server has answered so far (its Prometheus counter)."""
    value = srv.app.metrics.registry.get_sample_value("jobpulse_rpcs_total", {"method": method, "code": "OK"})
    return int(value or 0)


def _all_completed(total: int) -> dict[str, int]:
    return {"total": total, "pending": 0, "processing": 0, "completed": total, "failed": 0, "cancelled": 0}


def _lost_lease_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "jobpulse.worker" and "lease lost" in r.getMessage()
    ]


@pytest.fixture
async def aclient(server: Any, client: jobpulse.Client) -> AsyncIterator[jobpulse.AsyncClient]:
    # ``client`` (sync) is requested too so the teardown summary check covers what this test did.
    async with jobpulse.AsyncClient(server.address, timeout=20.0) as c:
        yield c


class _HeartbeatsLost(jobpulse.Client):
    """A client whose heartbeats of some chunks never reach the server (they are answered here, as if the
    network dropped them), so those chunks' leases run out while the worker still holds them."""

    def __init__(self, target: str, silenced: set[str]) -> None:
        super().__init__(target, timeout=20.0)
        self.silenced = silenced

    def report_chunk_progress(  # type: ignore[override]
        self, chunk_id: str, lease_token: str, *args: Any, **kwargs: Any
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        if chunk_id in self.silenced:
            return worker_service_pb2.ReportChunkProgressResponse()
        return super().report_chunk_progress(chunk_id, lease_token, *args, **kwargs)


class _AsyncHeartbeatsLost(jobpulse.AsyncClient):
    """:class:`_HeartbeatsLost` for the asyncio worker."""

    def __init__(self, target: str, silenced: set[str]) -> None:
        super().__init__(target, timeout=20.0)
        self.silenced = silenced

    async def report_chunk_progress(  # type: ignore[override]
        self, chunk_id: str, lease_token: str, *args: Any, **kwargs: Any
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        if chunk_id in self.silenced:
            return worker_service_pb2.ReportChunkProgressResponse()
        return await super().report_chunk_progress(chunk_id, lease_token, *args, **kwargs)


def _steal(client: jobpulse.Client, chunk_id: str) -> worker_service_pb2.ChunkClaim:
    """Waits for ``chunk_id``'s lease to run out and the sweeper to put it back, then claims it as another
    worker ("thief"): from then on the first worker's token is stale."""
    claims = eventually(
        lambda: client.claim_chunks("thief", kinds=[KIND], max_chunks=1),
        timeout=20,
        what="the chunk whose heartbeats were lost to come back",
    )
    assert claims[0].chunk.id == chunk_id, "another chunk came back: its lease was not kept"
    return claims[0]


# --- the thread worker ---------------------------------------------------------------------------------


def test_a_batched_worker_drains_a_job_with_one_completion_call_per_batch(
    server: Any, client: jobpulse.Client
) -> None:
    job = client.create_job(KIND, 95, chunk_size=1)
    seen: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def handle(task: jobpulse.Task) -> None:
        with lock:
            seen[task.chunk.index] += 1
        task.add_artifact(f"{task.chunk.index}.png", f"s3://out/{task.chunk.index}.png")

    worker = jobpulse.Worker(server.address, kinds=[KIND], concurrency=2, poll_wait=0.2, batch_size=10)
    stop = threading.Event()
    running = BackgroundThread(lambda: worker.run(handle, stop_event=stop), name="batched-worker")
    try:
        final = client.wait(job.id, timeout=40, view="full")
    finally:
        stop.set()
        processed = running.join(20)
        worker.close()

    assert processed == 95
    assert seen == {index: 1 for index in range(95)}, "a chunk was handled twice, or never"
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert summary_dict(final.chunks_summary) == _all_completed(95)
    assert (final.progress.items_done, final.progress.percent) == (95, 100)
    assert {(c.state, c.attempt) for c in final.chunks} == {(job_pb2.CHUNK_STATE_COMPLETED, 1)}
    assert sorted(a.chunk_index for a in final.artifacts) == list(range(95))
    # 95 chunks in batches of 10: ten completions (a few more at most, should the two threads split the
    # tail), where one chunk at a time makes 95.
    assert 10 <= _calls(server, "CompleteChunks") <= 12
    assert _calls(server, "CompleteChunk") == 0


def test_a_refused_item_is_dropped_alone_and_the_rest_of_its_batch_completes(
    make_server: Any, connect: Callable[[Any], jobpulse.Client], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(sweep_interval=0.05, retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job(KIND, 5, chunk_size=1)
    victim = chunks_by_index(client, job.id)[0].id
    second_started = threading.Event()
    stolen = threading.Event()
    handled: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        handled.append(task.chunk.index)
        if task.chunk.index == 1:
            # Chunk 0 is done and waits for the batch's completion while its lease runs out and another
            # worker takes it; chunks 2..4 wait their turn, their leases kept.
            second_started.set()
            assert stolen.wait(20)

    caplog.set_level(logging.WARNING, logger="jobpulse.worker")
    worker_client = _HeartbeatsLost(srv.address, silenced={victim})
    worker = jobpulse.Worker(
        worker_client, kinds=[KIND], worker_id="batcher", lease_duration=1.5, batch_size=5
    )
    stop = threading.Event()
    running = BackgroundThread(lambda: worker.run(handle, stop_event=stop), name="batched-worker")
    try:
        assert second_started.wait(20), "the worker never got to the batch's second chunk"
        theirs = _steal(client, victim)
        stolen.set()
        # The batch's completion: chunks 1..4 commit, chunk 0 is refused (LEASE_LOST) and changes nothing.
        eventually(
            lambda: {i: c.state for i, c in chunks_by_index(client, job.id).items() if i > 0},
            expect={i: job_pb2.CHUNK_STATE_COMPLETED for i in range(1, 5)},
            what="the rest of the batch completed",
        )
        chunk = chunks_by_index(client, job.id)[0]
        assert (chunk.state, chunk.worker_id, chunk.attempt) == (job_pb2.CHUNK_STATE_PROCESSING, "thief", 2)
        client.complete_chunk(theirs.chunk.id, theirs.lease_token)
        final = client.wait(job.id, timeout=20, view="full")
    finally:
        stolen.set()
        stop.set()
        processed = running.join(20)
        worker_client.close()

    assert processed == 5
    assert handled == [0, 1, 2, 3, 4]
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert summary_dict(final.chunks_summary) == _all_completed(5)
    owners = {c.index: (c.worker_id, c.attempt) for c in final.chunks}
    assert owners == {0: ("thief", 2), **{i: ("batcher", 1) for i in range(1, 5)}}
    assert _calls(srv, "CompleteChunks") == 1
    # Refused by the batch's completion (the worker's heartbeats of it never said so).
    lost = _lost_lease_warnings(caplog)
    assert len(lost) == 1 and victim in lost[0] and "before it could be finished" in lost[0], lost


def test_a_chunk_whose_lease_is_lost_while_it_waits_its_turn_is_skipped(
    make_server: Any, connect: Callable[[Any], jobpulse.Client], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(sweep_interval=0.05, retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job(KIND, 4, chunk_size=1)
    victim = chunks_by_index(client, job.id)[2].id
    first_started = threading.Event()
    go_on = threading.Event()
    handled: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        handled.append(task.chunk.index)
        if task.chunk.index == 0:
            first_started.set()
            assert go_on.wait(20)

    caplog.set_level(logging.WARNING, logger="jobpulse.worker")
    worker_client = _HeartbeatsLost(srv.address, silenced={victim})
    worker = jobpulse.Worker(
        worker_client, kinds=[KIND], worker_id="batcher", lease_duration=1.5, batch_size=4
    )
    stop = threading.Event()
    running = BackgroundThread(lambda: worker.run(handle, stop_event=stop), name="batched-worker")
    try:
        assert first_started.wait(20), "the worker never started its batch"
        theirs = _steal(client, victim)
        # Heartbeats of chunk 2 reach the server again: the next one the worker sends is LEASE_LOST.
        worker_client.silenced.clear()
        eventually(
            lambda: [m for m in _lost_lease_warnings(caplog) if victim in m],
            what="the worker to learn chunk 2's lease was lost",
        )
        go_on.set()
        eventually(
            lambda: {i: c.state for i, c in chunks_by_index(client, job.id).items() if i != 2},
            expect={i: job_pb2.CHUNK_STATE_COMPLETED for i in (0, 1, 3)},
            what="the rest of the batch completed",
        )
        client.complete_chunk(theirs.chunk.id, theirs.lease_token)
        final = client.wait(job.id, timeout=20, view="full")
    finally:
        go_on.set()
        stop.set()
        processed = running.join(20)
        worker_client.close()

    # Chunk 2 is another worker's now: its handler never ran here, and it was not in the completion.
    assert (processed, handled) == (3, [0, 1, 3])
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    owners = {c.index: (c.worker_id, c.attempt) for c in final.chunks}
    assert owners == {2: ("thief", 2), **{i: ("batcher", 1) for i in (0, 1, 3)}}
    assert _calls(srv, "CompleteChunks") == 1


def test_a_batched_worker_stops_after_its_batch_when_asked(server: Any, client: jobpulse.Client) -> None:
    job = client.create_job(KIND, 30, chunk_size=1)
    stop = threading.Event()
    handled: list[int] = []

    def handle(task: jobpulse.Task) -> None:
        handled.append(task.chunk.index)
        if len(handled) == 3:
            stop.set()

    worker = jobpulse.Worker(server.address, kinds=[KIND], poll_wait=0.2, batch_size=10)
    try:
        processed = worker.run(handle, stop_event=stop)
    finally:
        worker.close()

    # The batch in hand is finished; its completion claims no next batch.
    assert processed == 10
    assert handled == list(range(10))
    summary = summary_dict(client.get_job(job.id, view="basic").chunks_summary)
    assert (summary["completed"], summary["pending"], summary["processing"]) == (10, 20, 0)
    assert (_calls(server, "ClaimChunks"), _calls(server, "CompleteChunks")) == (1, 1)


def test_batches_never_claim_beyond_max_chunks(server: Any, client: jobpulse.Client) -> None:
    job = client.create_job(KIND, 30, chunk_size=1)
    worker = jobpulse.Worker(server.address, kinds=[KIND], poll_wait=0.2, batch_size=10)
    try:
        processed = worker.run(lambda task: None, max_chunks=25)
    finally:
        worker.close()

    assert processed == 25
    summary = summary_dict(client.get_job(job.id, view="basic").chunks_summary)
    assert (summary["completed"], summary["pending"], summary["processing"]) == (25, 5, 0)
    # Batches of 10, 10 and 5: the second completion asked for the 5 left of the budget, the last for none.
    assert (_calls(server, "ClaimChunks"), _calls(server, "CompleteChunks")) == (1, 3)


def test_a_failing_chunk_fails_alone_and_its_batch_completes(make_server: Any, connect: Any) -> None:
    srv = make_server()
    client = connect(srv)
    job = client.create_job(KIND, 6, chunk_size=1, max_attempts=1)

    def handle(task: jobpulse.Task) -> None:
        if task.chunk.index == 2:
            raise jobpulse.PermanentError("corrupt frame")

    worker = jobpulse.Worker(srv.address, kinds=[KIND], poll_wait=0.2, batch_size=6)
    try:
        assert worker.run(handle, max_chunks=6) == 6
    finally:
        worker.close()

    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_FAILED
    states = {c.index: c.state for c in final.chunks}
    assert states == {
        i: job_pb2.CHUNK_STATE_FAILED if i == 2 else job_pb2.CHUNK_STATE_COMPLETED for i in range(6)
    }
    assert (final.chunks[2].error.reason, final.chunks[2].error.message) == (
        "PermanentError",
        "corrupt frame",
    )
    assert (_calls(srv, "FailChunk"), _calls(srv, "CompleteChunks"), _calls(srv, "CompleteChunk")) == (
        1,
        1,
        0,
    )


# --- the asyncio worker --------------------------------------------------------------------------------


async def test_a_batched_async_worker_drains_a_job_with_one_completion_call_per_batch(
    server: Any, aclient: jobpulse.AsyncClient
) -> None:
    job = await aclient.create_job(KIND, 95, chunk_size=1)
    seen: collections.Counter[int] = collections.Counter()

    async def handle(task: jobpulse.AsyncTask) -> None:
        seen[task.chunk.index] += 1
        await asyncio.sleep(0)

    worker = jobpulse.AsyncWorker(aclient, kinds=[KIND], concurrency=2, poll_wait=0.2, batch_size=10)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(handle, stop_event=stop))
    try:
        final = await aclient.wait(job.id, timeout=40, view="full")
    finally:
        stop.set()
    processed = await asyncio.wait_for(running, 20)

    assert processed == 95
    assert seen == {index: 1 for index in range(95)}, "a chunk was handled twice, or never"
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert summary_dict(final.chunks_summary) == _all_completed(95)
    assert {(c.state, c.attempt) for c in final.chunks} == {(job_pb2.CHUNK_STATE_COMPLETED, 1)}
    assert 10 <= _calls(server, "CompleteChunks") <= 12
    assert _calls(server, "CompleteChunk") == 0


async def test_a_refused_item_is_dropped_alone_by_the_async_worker(
    make_server: Any, connect: Callable[[Any], jobpulse.Client], caplog: pytest.LogCaptureFixture
) -> None:
    srv = make_server(sweep_interval=0.05, retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job(KIND, 5, chunk_size=1)
    victim = chunks_by_index(client, job.id)[0].id
    second_started = asyncio.Event()
    stolen = asyncio.Event()
    handled: list[int] = []

    async def handle(task: jobpulse.AsyncTask) -> None:
        handled.append(task.chunk.index)
        if task.chunk.index == 1:
            second_started.set()
            await asyncio.wait_for(stolen.wait(), 20)

    caplog.set_level(logging.WARNING, logger="jobpulse.worker")
    async with _AsyncHeartbeatsLost(srv.address, silenced={victim}) as worker_client:
        worker = jobpulse.AsyncWorker(
            worker_client, kinds=[KIND], worker_id="batcher", lease_duration=1.5, batch_size=5
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(handle, stop_event=stop))
        try:
            await asyncio.wait_for(second_started.wait(), 20)
            # The sync client blocks: off the loop, so the worker's heartbeats go on meanwhile.
            theirs = await asyncio.to_thread(_steal, client, victim)
            stolen.set()
            await asyncio.to_thread(
                eventually,
                lambda: {i: c.state for i, c in chunks_by_index(client, job.id).items() if i > 0},
                expect={i: job_pb2.CHUNK_STATE_COMPLETED for i in range(1, 5)},
                what="the rest of the batch completed",
            )
            await asyncio.to_thread(client.complete_chunk, theirs.chunk.id, theirs.lease_token)
        finally:
            stolen.set()
            stop.set()
        processed = await asyncio.wait_for(running, 20)

    assert processed == 5
    assert handled == [0, 1, 2, 3, 4]
    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    owners = {c.index: (c.worker_id, c.attempt) for c in final.chunks}
    assert owners == {0: ("thief", 2), **{i: ("batcher", 1) for i in range(1, 5)}}
    assert _calls(srv, "CompleteChunks") == 1
    # Refused by the batch's completion (the worker's heartbeats of it never said so).
    lost = _lost_lease_warnings(caplog)
    assert len(lost) == 1 and victim in lost[0] and "before it could be finished" in lost[0], lost


async def test_a_batched_async_worker_stops_after_its_batch_when_asked(
    server: Any, aclient: jobpulse.AsyncClient
) -> None:
    job = await aclient.create_job(KIND, 30, chunk_size=1)
    stop = asyncio.Event()
    handled: list[int] = []

    async def handle(task: jobpulse.AsyncTask) -> None:
        handled.append(task.chunk.index)
        if len(handled) == 3:
            stop.set()

    worker = jobpulse.AsyncWorker(aclient, kinds=[KIND], poll_wait=0.2, batch_size=10)
    assert await asyncio.wait_for(worker.run(handle, stop_event=stop), 20) == 10

    assert handled == list(range(10))
    summary = summary_dict((await aclient.get_job(job.id, view="basic")).chunks_summary)
    assert (summary["completed"], summary["pending"], summary["processing"]) == (10, 20, 0)
    assert (_calls(server, "ClaimChunks"), _calls(server, "CompleteChunks")) == (1, 1)


async def test_batches_of_the_async_worker_never_claim_beyond_max_chunks(
    server: Any, aclient: jobpulse.AsyncClient
) -> None:
    job = await aclient.create_job(KIND, 30, chunk_size=1)

    async def handle(task: jobpulse.AsyncTask) -> None:
        return None

    worker = jobpulse.AsyncWorker(aclient, kinds=[KIND], poll_wait=0.2, batch_size=10)
    assert await asyncio.wait_for(worker.run(handle, max_chunks=25), 20) == 25

    summary = summary_dict((await aclient.get_job(job.id, view="basic")).chunks_summary)
    assert (summary["completed"], summary["pending"], summary["processing"]) == (25, 5, 0)
    assert (_calls(server, "ClaimChunks"), _calls(server, "CompleteChunks")) == (1, 3)


async def test_cancelling_a_batched_run_completes_the_done_and_hands_back_the_rest(
    make_server: Any, connect: Callable[[Any], jobpulse.Client]
) -> None:
    srv = make_server(retry_backoff=0.01)
    client = connect(srv)
    job = client.create_job(KIND, 4, chunk_size=1)
    third_started = asyncio.Event()

    async def handle(task: jobpulse.AsyncTask) -> None:
        if task.chunk.index == 2:
            third_started.set()
            await asyncio.Event().wait()  # never returns: only cancellation ends it

    async with jobpulse.AsyncClient(srv.address, timeout=20.0) as aclient:
        # A lease far longer than the test: the chunks come back because they were handed back.
        worker = jobpulse.AsyncWorker(aclient, kinds=[KIND], lease_duration=600, batch_size=4)
        running = asyncio.create_task(worker.run(handle))
        await asyncio.wait_for(third_started.wait(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    chunks = chunks_by_index(client, job.id)
    assert {i: c.state for i, c in chunks.items()} == {
        0: job_pb2.CHUNK_STATE_COMPLETED,
        1: job_pb2.CHUNK_STATE_COMPLETED,
        2: job_pb2.CHUNK_STATE_PENDING,
        3: job_pb2.CHUNK_STATE_PENDING,
    }
    assert {chunks[i].error.reason for i in (2, 3)} == {"WorkerStopped"}
