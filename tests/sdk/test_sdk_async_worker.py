"""jobpulse.AsyncWorker against a scripted in-process grpc.aio WorkerService (grpc_testing has no aio
support): the cases of test_sdk_worker.py, plus concurrency, graceful stop and cancellation of ``run``."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.protobuf.struct_pb2 import Struct
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2, worker_service_pb2_grpc

RESULT_TIMEOUT = 5.0


class ScriptedWorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    """Each call waits until the test answers it (``answer`` / ``fail``), like the sync tests' FakeServer."""

    def __init__(self) -> None:
        self.calls: collections.defaultdict[str, asyncio.Queue[tuple[Any, asyncio.Future[Any]]]] = (
            collections.defaultdict(asyncio.Queue)
        )

    async def _serve(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.calls[name].put((request, outcome))
        answer = await outcome
        if isinstance(answer, status_pb2.Status):
            await context.abort_with_status(rpc_status.to_status(answer))
        return answer

    async def ClaimChunks(self, request, context):
        return await self._serve("ClaimChunks", request, context)

    async def ReportChunkProgress(self, request, context):
        return await self._serve("ReportChunkProgress", request, context)

    async def CompleteChunk(self, request, context):
        return await self._serve("CompleteChunk", request, context)

    async def FailChunk(self, request, context):
        return await self._serve("FailChunk", request, context)

    async def take(self, name: str) -> tuple[Any, asyncio.Future[Any]]:
        return await asyncio.wait_for(self.calls[name].get(), RESULT_TIMEOUT)

    async def answer(self, name: str, response: Any) -> Any:
        """Takes the next call of ``name``, answers it with ``response`` and returns its request."""
        request, outcome = await self.take(name)
        outcome.set_result(response)
        return request

    async def fail(self, name: str, code: grpc.StatusCode, message: str, reason: str = "") -> Any:
        """Takes the next call of ``name``, fails it with a rich status and returns its request."""
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="jobpulse"))
        request, outcome = await self.take(name)
        outcome.set_result(status_pb2.Status(code=code.value[0], message=message, details=[info]))
        return request


@pytest.fixture
async def served() -> AsyncIterator[tuple[ScriptedWorkerService, jobpulse.AsyncClient]]:
    service = ScriptedWorkerService()
    server = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with jobpulse.AsyncClient(f"127.0.0.1:{port}", api_key="s3cret", timeout=5.0) as client:
        yield service, client
    await server.stop(None)


def _claim(chunk_id: str = "c1", lease_token: str = "lease-1") -> worker_service_pb2.ChunkClaim:
    metadata = Struct()
    metadata.update({"bucket": "media", "sizes": [64]})
    return worker_service_pb2.ChunkClaim(
        job_id="j1",
        job_kind="thumbnails",
        job_metadata=metadata,
        chunk=job_pb2.Chunk(id=chunk_id, job_id="j1", index=2, item_start=100, item_count=4),
        lease_token=lease_token,
    )


def _worker(client: jobpulse.AsyncClient, **kwargs: Any) -> jobpulse.AsyncWorker:
    return jobpulse.AsyncWorker(client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0, **kwargs)


async def _start(service: ScriptedWorkerService, worker: jobpulse.AsyncWorker, handler: Any, **run: Any):
    pending = asyncio.create_task(worker.run(handler, **{"max_chunks": 1, **run}))
    request = await service.answer("ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()]))
    assert (request.worker_id, list(request.kinds)) == ("w1", ["thumbnails"])
    return pending


async def test_handler_return_completes_the_chunk_with_its_artifacts(served):
    service, client = served
    seen = {}

    async def handler(task: jobpulse.AsyncTask) -> None:
        seen.update(items=list(task.items), kind=task.job_kind, metadata=task.job_metadata)
        task.add_artifact("thumbs.zip", "s3://media/thumbs.zip", "application/zip", 2048)

    pending = await _start(service, _worker(client), handler)
    request = await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert seen == {
        "items": [100, 101, 102, 103],
        "kind": "thumbnails",
        "metadata": {"bucket": "media", "sizes": [64]},
    }
    assert (request.chunk_id, request.lease_token) == ("c1", "lease-1")
    assert [(a.name, a.uri, a.size_bytes, a.chunk_index) for a in request.artifacts] == [
        ("thumbs.zip", "s3://media/thumbs.zip", 2048, 2)
    ]


@pytest.mark.parametrize(
    ("error", "reason", "retryable"),
    [
        (ValueError("bad pixel"), "ValueError", True),
        (jobpulse.PermanentError("corrupt input"), "PermanentError", False),
    ],
)
async def test_handler_exception_fails_the_chunk(served, error, reason, retryable, caplog):
    service, client = served

    async def handler(task: jobpulse.AsyncTask) -> None:
        raise error

    pending = await _start(service, _worker(client), handler)
    request = await service.answer("FailChunk", worker_service_pb2.FailChunkResponse(will_retry=retryable))
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert (request.error.reason, request.error.message, request.retryable) == (reason, str(error), retryable)
    # Logged with its traceback, the handler's own frame in it: where the handler went wrong.
    [record] = [r for r in caplog.records if r.name == "jobpulse.worker" and "failed" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "in handler" in caplog.text and "Traceback (most recent call last)" in caplog.text


async def test_cancel_from_heartbeat_stops_the_handler_then_completes(served):
    service, client = served
    stopped = asyncio.Event()

    async def handler(task: jobpulse.AsyncTask) -> None:
        task.progress(2, stage="resizing")
        await asyncio.wait_for(task.cancel_event.wait(), RESULT_TIMEOUT)
        assert task.cancelled
        stopped.set()

    pending = await _start(service, _worker(client), handler)
    beat = await service.answer(
        "ReportChunkProgress", worker_service_pb2.ReportChunkProgressResponse(cancel_requested=True)
    )
    assert (beat.items_done, beat.stage, beat.lease_token) == (2, "resizing", "lease-1")
    await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert stopped.is_set()


async def test_lost_lease_drops_the_chunk_without_completing_it(served):
    service, client = served
    observed = {}

    async def handler(task: jobpulse.AsyncTask) -> None:
        task.progress(1)
        await asyncio.wait_for(task.cancel_event.wait(), RESULT_TIMEOUT)
        observed["cancelled"] = task.cancelled

    pending = await _start(service, _worker(client), handler)
    await service.fail("ReportChunkProgress", grpc.StatusCode.ABORTED, "lease token is stale", "LEASE_LOST")
    # A CompleteChunk would block the worker waiting for an answer that never comes; run() returning proves
    # none was sent.
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert observed == {"cancelled": True}
    assert service.calls["CompleteChunk"].empty()


async def test_progress_from_a_thread_reaches_the_heartbeat(served):
    """An async handler that offloads blocking work to a thread may report progress from there."""
    service, client = served

    async def handler(task: jobpulse.AsyncTask) -> None:
        await asyncio.to_thread(task.progress, 3, "decoding", "3 of 4")

    pending = await _start(service, _worker(client), handler)
    beat = await service.answer("ReportChunkProgress", worker_service_pb2.ReportChunkProgressResponse())
    await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert (beat.items_done, beat.stage, beat.message) == (3, "decoding", "3 of 4")


async def test_unavailable_claims_are_retried(served):
    service, client = served

    async def handler(task: jobpulse.AsyncTask) -> None:
        return None

    pending = asyncio.create_task(jobpulse.AsyncWorker(client, worker_id="w1").run(handler, max_chunks=1))
    await service.fail("ClaimChunks", grpc.StatusCode.UNAVAILABLE, "connection refused")
    await service.answer("ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()]))
    await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1


async def test_a_claim_error_retrying_cannot_fix_stops_the_worker(served):
    service, client = served

    async def handler(task: jobpulse.AsyncTask) -> None:
        return None

    pending = asyncio.create_task(jobpulse.AsyncWorker(client, worker_id="w1").run(handler, max_chunks=1))
    await service.fail("ClaimChunks", grpc.StatusCode.UNAUTHENTICATED, "bad key", "UNAUTHENTICATED")
    with pytest.raises(jobpulse.errors.Unauthenticated):
        await asyncio.wait_for(pending, RESULT_TIMEOUT)


async def test_a_busy_worker_gets_its_next_chunk_with_the_completion(served):
    """Complete-and-claim: after the first claim, each completion asks for the next chunk in the same
    call; the last one (budget spent) asks for nothing."""
    service, client = served
    handled: list[str] = []

    async def handler(task: jobpulse.AsyncTask) -> None:
        handled.append(task.chunk_id)

    pending = await _start(service, _worker(client), handler, max_chunks=2)
    first_done = await service.answer(
        "CompleteChunk", worker_service_pb2.CompleteChunkResponse(claims=[_claim("c2", "lease-2")])
    )
    assert first_done.HasField("claim_next")
    assert (first_done.claim_next.worker_id, list(first_done.claim_next.kinds)) == ("w1", ["thumbnails"])
    assert first_done.claim_next.max_chunks == 1
    last_done = await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert (last_done.chunk_id, last_done.lease_token) == ("c2", "lease-2")
    assert not last_done.HasField("claim_next")
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 2
    assert handled == ["c1", "c2"]


async def test_concurrency_runs_that_many_handlers_at_once(served):
    service, client = served
    running: set[str] = set()
    both = asyncio.Event()

    async def handler(task: jobpulse.AsyncTask) -> None:
        running.add(task.chunk_id)
        if len(running) == 2:
            both.set()
        # Each handler returns only once the other one runs too: one at a time would time out here.
        await asyncio.wait_for(both.wait(), RESULT_TIMEOUT)

    worker = _worker(client, concurrency=2)
    pending = asyncio.create_task(worker.run(handler, max_chunks=2))
    for n in (1, 2):
        await service.answer(
            "ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim(f"c{n}", f"lease-{n}")])
        )
    done = {(await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())).chunk_id}
    done.add((await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())).chunk_id)
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 2
    assert done == running == {"c1", "c2"}


async def test_stop_event_finishes_the_chunk_in_hand_and_claims_no_more(served):
    service, client = served
    stop = asyncio.Event()
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(task: jobpulse.AsyncTask) -> None:
        started.set()
        await asyncio.wait_for(release.wait(), RESULT_TIMEOUT)

    pending = await _start(service, _worker(client), handler, max_chunks=None, stop_event=stop)
    await asyncio.wait_for(started.wait(), RESULT_TIMEOUT)
    stop.set()
    release.set()
    done = await service.answer("CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert await asyncio.wait_for(pending, RESULT_TIMEOUT) == 1
    assert not done.HasField("claim_next"), "a stopping worker asked for more work"
    assert service.calls["ClaimChunks"].empty()


async def test_cancelling_run_hands_the_chunk_back(served):
    service, client = served
    started = asyncio.Event()
    handler_cancelled = asyncio.Event()

    async def handler(task: jobpulse.AsyncTask) -> None:
        started.set()
        try:
            await asyncio.sleep(RESULT_TIMEOUT * 10)
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise

    pending = await _start(service, _worker(client), handler)
    await asyncio.wait_for(started.wait(), RESULT_TIMEOUT)
    pending.cancel()
    released = await service.answer("FailChunk", worker_service_pb2.FailChunkResponse(will_retry=True))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pending, RESULT_TIMEOUT)
    assert handler_cancelled.is_set()
    assert (released.chunk_id, released.lease_token, released.retryable) == ("c1", "lease-1", True)
    assert released.error.reason == "WorkerStopped"
    assert service.calls["CompleteChunk"].empty()
