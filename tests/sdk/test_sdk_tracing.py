"""The SDK's tracing against the scripted fake server: every call carries the caller's context, nothing
when there is none; the Worker's handler span is a child of its claim call's span (which the claim call
carries) and links to the job's creation."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from opentelemetry import baggage, context, trace
from support.job_tracing import Spans, global_provider

import jobpulse
from jobpulse._tracing import with_trace_context
from jobpulse.v1 import job_pb2, job_service_pb2, worker_service_pb2

RESULT_TIMEOUT = 5.0
CREATION = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Spans:
    return Spans()


def _in_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run in a copy of the current context (the fake runs calls on a pool's threads)."""
    ctx = contextvars.copy_context()
    return lambda *args, **kwargs: ctx.run(fn, *args, **kwargs)


def _traceparent(metadata: Any) -> str | None:
    """The trace and span ids of the call's traceparent (its flags left out)."""
    sent = dict(metadata).get("traceparent")
    return sent.rsplit("-", 1)[0] if sent else None


def test_without_a_span_the_metadata_is_left_as_it_is() -> None:
    sent = (("authorization", "Bearer k"),)
    assert with_trace_context(sent) is sent
    assert with_trace_context(None) is None


def test_unary_and_streaming_calls_carry_the_callers_context(fake, client, spans: Spans) -> None:
    with spans.tracer.start_as_current_span("caller") as span:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            pending = fake.run(_in_context(client.get_job), "j1")
            stream = fake.run(_in_context(lambda: list(client.export_jobs())))
        finally:
            context.detach(token)
    metadata, _, rpc = fake.take_unary("JobService.GetJob")
    rpc.terminate(job_service_pb2.GetJobResponse(job=job_pb2.Job(id="j1")), (), grpc.StatusCode.OK, "")
    pending.result(RESULT_TIMEOUT)
    expected = f"00-{span.get_span_context().trace_id:032x}-{span.get_span_context().span_id:016x}"
    assert _traceparent(metadata) == expected
    assert dict(metadata)["baggage"] == "tenant=acme"
    assert dict(metadata)["authorization"] == "Bearer s3cret"
    metadata, _, rpc = fake.take_stream("JobService.ExportJobs")
    rpc.terminate((), grpc.StatusCode.OK, "")
    stream.result(RESULT_TIMEOUT)
    assert _traceparent(metadata) == expected

    # Outside the span: nothing but the key.
    pending = fake.run(client.get_job, "j1")
    metadata, _, rpc = fake.take_unary("JobService.GetJob")
    rpc.terminate(job_service_pb2.GetJobResponse(job=job_pb2.Job(id="j1")), (), grpc.StatusCode.OK, "")
    pending.result(RESULT_TIMEOUT)
    assert not {"traceparent", "tracestate", "baggage"} & set(dict(metadata))


def _claim(index: int) -> worker_service_pb2.ChunkClaim:
    return worker_service_pb2.ChunkClaim(
        job_id="j1",
        job_kind="thumbnails",
        chunk=job_pb2.Chunk(id=f"j1-{index}", job_id="j1", index=index, item_count=1, attempt=1),
        lease_token=f"lease-{index}",
        job_traceparent=CREATION,
    )


def test_the_workers_handler_span_is_a_child_of_its_claim_and_links_to_the_creation(
    fake, client, spans: Spans
) -> None:
    def handler(task: jobpulse.Task) -> None:
        raise RuntimeError("no disk")

    with global_provider(spans.provider):
        worker = jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0)
        pending = fake.run(worker.run, handler, max_chunks=1)
        metadata, _, rpc = fake.take_unary("WorkerService.ClaimChunks")
        rpc.terminate(worker_service_pb2.ClaimChunksResponse(claims=[_claim(4)]), (), grpc.StatusCode.OK, "")
        fail_metadata, request, rpc = fake.take_unary("WorkerService.FailChunk")
        rpc.terminate(worker_service_pb2.FailChunkResponse(), (), grpc.StatusCode.OK, "")
        assert pending.result(RESULT_TIMEOUT) == 1
    assert request.error.reason == "RuntimeError"

    [claim_call] = spans.named("jobpulse.v1.WorkerService/ClaimChunks")
    [process] = spans.named("jobpulse.chunk.process")
    assert claim_call.kind == trace.SpanKind.CLIENT
    assert claim_call.attributes is not None and claim_call.attributes["rpc.method"] == "ClaimChunks"
    # The claim call carried its span, and the failure was sent from inside the handler's span.
    assert _traceparent(metadata) == (
        f"00-{claim_call.context.trace_id:032x}-{claim_call.context.span_id:016x}"  # type: ignore[union-attr]
    )
    assert _traceparent(fail_metadata) == (
        f"00-{process.context.trace_id:032x}-{process.context.span_id:016x}"  # type: ignore[union-attr]
    )
    assert process.parent is not None and process.parent.span_id == claim_call.context.span_id  # type: ignore[union-attr]
    assert process.attributes is not None
    assert (process.attributes["jobpulse.chunk_index"], process.attributes["jobpulse.attempt"]) == (4, 1)
    assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in process.links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]
    assert process.status.status_code == trace.StatusCode.ERROR
    assert [e.attributes["exception.message"] for e in process.events] == ["no disk"]  # type: ignore[index]


def test_without_a_tracer_provider_the_worker_records_nothing_and_sends_no_context(fake, client) -> None:
    worker = jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", progress_interval=0.0)
    pending = fake.run(worker.run, lambda task: None, max_chunks=1)
    metadata, _, rpc = fake.take_unary("WorkerService.ClaimChunks")
    rpc.terminate(worker_service_pb2.ClaimChunksResponse(claims=[_claim(0)]), (), grpc.StatusCode.OK, "")
    done_metadata, _, rpc = fake.take_unary("WorkerService.CompleteChunk")
    rpc.terminate(worker_service_pb2.CompleteChunkResponse(), (), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT) == 1
    assert "traceparent" not in dict(metadata) and "traceparent" not in dict(done_metadata)
