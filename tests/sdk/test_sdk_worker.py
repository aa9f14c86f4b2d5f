"""jobpulse.Worker against a scripted fake server: completion, failure, cancellation, lost leases."""

from __future__ import annotations

import threading

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

import jobpulse
from jobpulse.v1 import job_pb2, worker_service_pb2

RESULT_TIMEOUT = 5.0


def _claim(item_start: int = 100, item_count: int = 4) -> worker_service_pb2.ChunkClaim:
    metadata = Struct()
    metadata.update({"bucket": "media", "sizes": [64]})
    return worker_service_pb2.ChunkClaim(
        job_id="j1",
        job_kind="thumbnails",
        job_metadata=metadata,
        chunk=job_pb2.Chunk(id="c1", job_id="j1", index=2, item_start=item_start, item_count=item_count),
        lease_token="lease-1",
    )


def _start(fake, client, handler, **worker_kwargs):
    worker = jobpulse.Worker(
        client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0, **worker_kwargs
    )
    pending = fake.run(worker.run, handler, max_chunks=1)
    request = fake.answer(
        "WorkerService.ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()])
    )
    assert (request.worker_id, list(request.kinds)) == ("w1", ["thumbnails"])
    return pending


def test_handler_return_completes_the_chunk_with_its_artifacts(fake, client):
    seen = {}

    def handler(task: jobpulse.Task) -> None:
        seen.update(items=list(task.items), kind=task.job_kind, metadata=task.job_metadata)
        task.add_artifact("thumbs.zip", "s3://media/thumbs.zip", "application/zip", 2048)

    pending = _start(fake, client, handler)
    request = fake.answer("WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert pending.result(RESULT_TIMEOUT) == 1
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
def test_handler_exception_fails_the_chunk(fake, client, error, reason, retryable, caplog):
    def handler(task: jobpulse.Task) -> None:
        raise error

    pending = _start(fake, client, handler)
    request = fake.answer(
        "WorkerService.FailChunk", worker_service_pb2.FailChunkResponse(will_retry=retryable)
    )
    assert pending.result(RESULT_TIMEOUT) == 1
    assert (request.error.reason, request.error.message, request.retryable) == (reason, str(error), retryable)
    # Logged with its traceback, the handler's own frame in it: where the handler went wrong.
    [record] = [r for r in caplog.records if r.name == "jobpulse.worker" and "failed" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "in handler" in caplog.text and "Traceback (most recent call last)" in caplog.text


def test_cancel_from_heartbeat_stops_the_handler_then_completes(fake, client):
    stopped = threading.Event()

    def handler(task: jobpulse.Task) -> None:
        task.progress(2, stage="resizing")
        if task.cancel_event.wait(RESULT_TIMEOUT):
            stopped.set()

    pending = _start(fake, client, handler)
    beat = fake.answer(
        "WorkerService.ReportChunkProgress",
        worker_service_pb2.ReportChunkProgressResponse(cancel_requested=True),
    )
    assert (beat.items_done, beat.stage, beat.lease_token) == (2, "resizing", "lease-1")
    fake.answer("WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert pending.result(RESULT_TIMEOUT) == 1
    assert stopped.is_set()


def test_lost_lease_drops_the_chunk_without_completing_it(fake, client):
    observed = {}

    def handler(task: jobpulse.Task) -> None:
        task.progress(1)
        observed["cancelled"] = task.cancel_event.wait(RESULT_TIMEOUT)

    pending = _start(fake, client, handler)
    fake.fail(
        "WorkerService.ReportChunkProgress",
        grpc.StatusCode.ABORTED,
        "lease token is stale",
        reason="LEASE_LOST",
    )
    # A CompleteChunk would block the worker waiting for an answer that never comes; run() returning proves
    # none was sent.
    assert pending.result(RESULT_TIMEOUT) == 1
    assert observed == {"cancelled": True}


def test_unavailable_claims_are_retried(fake, client):
    def handler(task: jobpulse.Task) -> None:
        return None

    worker = jobpulse.Worker(client, worker_id="w1")
    pending = fake.run(worker.run, handler, max_chunks=1)
    fake.fail("WorkerService.ClaimChunks", grpc.StatusCode.UNAVAILABLE, "connection refused")
    fake.answer("WorkerService.ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()]))
    fake.answer("WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert pending.result(RESULT_TIMEOUT) == 1


def test_a_claim_error_retrying_cannot_fix_stops_the_worker(fake, client):
    worker = jobpulse.Worker(client, worker_id="w1")
    pending = fake.run(worker.run, lambda task: None, max_chunks=1)
    fake.fail(
        "WorkerService.ClaimChunks", grpc.StatusCode.UNAUTHENTICATED, "bad key", reason="UNAUTHENTICATED"
    )
    with pytest.raises(jobpulse.errors.Unauthenticated):
        pending.result(RESULT_TIMEOUT)


def test_a_busy_worker_gets_its_next_chunk_with_the_completion(fake, client):
    """Complete-and-claim: after the first claim, each completion asks for the next chunk in the same
    call, so a busy worker makes one call per chunk; the last one (budget spent) asks for nothing."""
    worker = jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0)
    handled: list[str] = []
    pending = fake.run(worker.run, lambda task: handled.append(task.chunk_id), max_chunks=2)
    fake.answer("WorkerService.ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()]))
    second = _claim()
    second.chunk.id, second.lease_token = "c2", "lease-2"
    first_done = fake.answer(
        "WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse(claims=[second])
    )
    assert first_done.HasField("claim_next")
    assert (first_done.claim_next.worker_id, list(first_done.claim_next.kinds)) == ("w1", ["thumbnails"])
    assert first_done.claim_next.max_chunks == 1
    last_done = fake.answer("WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert (last_done.chunk_id, last_done.lease_token) == ("c2", "lease-2")
    assert not last_done.HasField("claim_next")
    assert pending.result(RESULT_TIMEOUT) == 2
    assert handled == ["c1", "c2"]


def test_stop_event_finishes_the_chunk_in_hand_and_claims_no_more(fake, client):
    """A stop set while a handler runs: the chunk is completed, and that completion asks for no next chunk
    (it used to, and the stopping worker then processed one more)."""
    stop = threading.Event()
    started = threading.Event()

    def handler(task: jobpulse.Task) -> None:
        started.set()
        assert stop.wait(RESULT_TIMEOUT)

    worker = jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0)
    pending = fake.run(worker.run, handler, stop_event=stop)
    fake.answer("WorkerService.ClaimChunks", worker_service_pb2.ClaimChunksResponse(claims=[_claim()]))
    assert started.wait(RESULT_TIMEOUT)
    stop.set()
    done = fake.answer("WorkerService.CompleteChunk", worker_service_pb2.CompleteChunkResponse())
    assert pending.result(RESULT_TIMEOUT) == 1
    assert not done.HasField("claim_next"), "a stopping worker asked for more work"


def test_complete_chunks_sends_every_item_in_one_call(fake, client):
    """Client.complete_chunks takes (chunk_id, lease_token[, artifacts]) tuples and returns the results."""
    pending = fake.run(
        client.complete_chunks,
        [("c1", "t1"), ("c2", "t2", [{"name": "out", "uri": "s3://b/out"}])],
        claim_next=worker_service_pb2.ClaimChunksRequest(worker_id="w1"),
    )
    answer = worker_service_pb2.CompleteChunksResponse(
        results=[
            worker_service_pb2.ChunkCompletionResult(chunk_id="c1", ok=True),
            worker_service_pb2.ChunkCompletionResult(chunk_id="c2", ok=False, reason="LEASE_LOST"),
        ]
    )
    request = fake.answer("WorkerService.CompleteChunks", answer)
    assert [(c.chunk_id, c.lease_token) for c in request.completions] == [("c1", "t1"), ("c2", "t2")]
    assert [a.uri for a in request.completions[1].artifacts] == ["s3://b/out"]
    assert request.claim_next.worker_id == "w1"
    assert [(r.ok, r.reason) for r in pending.result(RESULT_TIMEOUT).results] == [
        (True, ""),
        (False, "LEASE_LOST"),
    ]


def _claim_of(chunk_id: str, index: int) -> worker_service_pb2.ChunkClaim:
    claim = _claim(item_start=index, item_count=1)
    claim.chunk.id, claim.chunk.index, claim.lease_token = chunk_id, index, f"lease-{chunk_id}"
    return claim


def test_batches_claim_and_complete_several_chunks_per_call_within_the_budget(fake, client):
    """batch_size=3 with a budget of 5: one claim of 3; a handler that raises fails its chunk at once; the
    others are completed in one call, each with its own token, claiming the 2 left of the budget; an item
    the server refuses takes nothing from the rest; the last batch asks for no more."""
    handled: list[str] = []

    def handler(task: jobpulse.Task) -> None:
        handled.append(task.chunk_id)
        if task.chunk_id == "c2":
            raise ValueError("bad pixel")

    worker = jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", batch_size=3)
    pending = fake.run(worker.run, handler, max_chunks=5)
    claim = fake.answer(
        "WorkerService.ClaimChunks",
        worker_service_pb2.ClaimChunksResponse(claims=[_claim_of(f"c{n}", n) for n in (1, 2, 3)]),
    )
    assert claim.max_chunks == 3
    failed = fake.answer("WorkerService.FailChunk", worker_service_pb2.FailChunkResponse(will_retry=True))
    assert (failed.chunk_id, failed.lease_token, failed.error.reason) == ("c2", "lease-c2", "ValueError")

    first = fake.answer(
        "WorkerService.CompleteChunks",
        worker_service_pb2.CompleteChunksResponse(
            results=[
                worker_service_pb2.ChunkCompletionResult(chunk_id="c1", ok=True),
                worker_service_pb2.ChunkCompletionResult(chunk_id="c3", ok=False, reason="LEASE_LOST"),
            ],
            claims=[_claim_of("c4", 4), _claim_of("c5", 5)],
        ),
    )
    sent = [(c.chunk_id, c.lease_token) for c in first.completions]
    assert sent == [("c1", "lease-c1"), ("c3", "lease-c3")]
    assert (first.claim_next.worker_id, list(first.claim_next.kinds)) == ("w1", ["thumbnails"])
    assert first.claim_next.max_chunks == 2, "claimed beyond what was left of max_chunks"

    last = fake.answer(
        "WorkerService.CompleteChunks",
        worker_service_pb2.CompleteChunksResponse(
            results=[
                worker_service_pb2.ChunkCompletionResult(chunk_id="c4", ok=True),
                worker_service_pb2.ChunkCompletionResult(chunk_id="c5", ok=True),
            ]
        ),
    )
    assert [c.chunk_id for c in last.completions] == ["c4", "c5"]
    assert not last.HasField("claim_next"), "the budget was spent, yet the worker asked for more"
    assert pending.result(RESULT_TIMEOUT) == 5
    assert handled == ["c1", "c2", "c3", "c4", "c5"]


@pytest.mark.parametrize("batch_size", [0, 101])
def test_batch_size_outside_what_the_server_takes_is_refused(client, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        jobpulse.Worker(client, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        jobpulse.AsyncWorker("127.0.0.1:1", batch_size=batch_size)
