"""A job's trace across processes: CreateJob keeps the creating request's context, every claim,
completion and failure of a chunk is a server span linked to it, and the SDK's workers make a span per
handler (a child of the call that claimed the chunk, linked to the job's creation). One SDK tracer
provider with an in-memory exporter serves both the server and the SDK here (tests/support/job_tracing.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from support.fake_store import FakeStore
from support.job_tracing import Spans, context_of, global_provider, stored_job, traced_server

import jobpulse
from jobpulse.v1 import job_pb2
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import ClaimRequest, Completion, Failure
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.services import job_trace
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.workers import WorkerService

CLIENT_SPAN = "make thumbnails"


@pytest.fixture
def spans() -> Spans:
    return Spans()


def _linked_to(span: ReadableSpan, creation: trace.SpanContext) -> bool:
    return [(link.context.trace_id, link.context.span_id) for link in span.links] == [
        (creation.trace_id, creation.span_id)
    ]


def _create_in_span(spans: Spans, client: jobpulse.Client, **kwargs: Any) -> tuple[job_pb2.Job, Any]:
    with spans.tracer.start_as_current_span(CLIENT_SPAN) as root:
        job = client.create_job("thumbnails", 3, chunk_size=1, **kwargs)
    return job, root.get_span_context()


def _fails_chunk_1(task: jobpulse.Task) -> None:
    if task.chunk.index == 1:
        raise jobpulse.PermanentError("corrupt image")


def test_chunk_spans_link_to_the_creation_and_the_worker_spans_are_children_of_their_claims(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, spans: Spans
) -> None:
    srv = traced_server(make_server, spans)
    with global_provider(spans.provider), jobpulse.Client(srv.address) as client:
        job, root = _create_in_span(spans, client)
        # The SDK carried the client span's context: the server's CreateJob span is its child, and the
        # job keeps that span's context.
        stored = stored_job(srv, job.id)
        assert stored.trace_parent is not None
        creation = context_of(stored.trace_parent)
        assert creation.trace_id == root.trace_id
        create_rpc = spans.by_id(creation.span_id)
        assert create_rpc.name == "jobpulse.v1.JobService/CreateJob"
        assert create_rpc.parent is not None and create_rpc.parent.span_id == root.span_id
        assert create_rpc.attributes is not None and create_rpc.attributes["jobpulse.job_id"] == job.id

        with jobpulse.Worker(client, kinds=["thumbnails"], worker_id="w1", lease_duration=10) as worker:
            assert worker.run(_fails_chunk_1, max_chunks=3) == 3

    # The server: one claim per chunk, completions of chunks 0 and 2, the failure of chunk 1; each a
    # child of its RPC's span, linked to the creation, with the chunk's attributes.
    moves = {
        name: sorted(spans.named(name), key=lambda s: s.attributes["jobpulse.chunk_index"])  # type: ignore[index]
        for name in ("jobpulse.chunk.claim", "jobpulse.chunk.complete", "jobpulse.chunk.fail")
    }
    assert [s.attributes["jobpulse.chunk_index"] for s in moves["jobpulse.chunk.claim"]] == [0, 1, 2]  # type: ignore[index]
    assert [s.attributes["jobpulse.chunk_index"] for s in moves["jobpulse.chunk.complete"]] == [0, 2]  # type: ignore[index]
    assert [s.attributes["jobpulse.chunk_index"] for s in moves["jobpulse.chunk.fail"]] == [1]  # type: ignore[index]
    for name, found in moves.items():
        for span in found:
            assert span.attributes is not None
            assert span.attributes["jobpulse.job_id"] == job.id
            assert span.attributes["jobpulse.attempt"] == 1
            assert _linked_to(span, creation), name
            rpc = spans.parent_of(span)
            assert rpc.kind == trace.SpanKind.SERVER and rpc.name.startswith("jobpulse.v1.WorkerService/")
            # The worker's call carried its span: the server's RPC span is a child of it (a claim or
            # completion call's CLIENT span; FailChunk is sent inside the failed handler's span).
            caller = spans.parent_of(rpc)
            if name == "jobpulse.chunk.fail":
                assert caller.name == "jobpulse.chunk.process"
                assert caller.attributes is not None and caller.attributes["jobpulse.chunk_index"] == 1
            else:
                assert caller.kind == trace.SpanKind.CLIENT and caller.name == rpc.name
    assert moves["jobpulse.chunk.fail"][0].attributes["jobpulse.will_retry"] is False  # type: ignore[index]

    # The worker: a span per handler, a child of the CLIENT span of the call that claimed its chunk (the
    # same call whose server span holds the chunk's claim span), linked to the creation.
    processed = sorted(
        spans.named("jobpulse.chunk.process"), key=lambda s: s.attributes["jobpulse.chunk_index"]
    )  # type: ignore[index]
    assert [s.attributes["jobpulse.chunk_index"] for s in processed] == [0, 1, 2]  # type: ignore[index]
    for span, claim in zip(processed, moves["jobpulse.chunk.claim"], strict=True):
        assert _linked_to(span, creation)
        claimed_by = spans.parent_of(span)
        assert claimed_by.kind == trace.SpanKind.CLIENT
        assert spans.parent_of(spans.parent_of(claim)).context == claimed_by.context
    # The handler's exception is on its span.
    ok, failed, ok_too = processed
    assert failed.status.status_code == trace.StatusCode.ERROR
    events = [e for e in failed.events if e.name == "exception"]
    assert len(events) == 1 and events[0].attributes is not None
    assert events[0].attributes["exception.message"] == "corrupt image"
    assert ok.status.status_code != trace.StatusCode.ERROR and not ok.events
    assert ok_too.status.status_code != trace.StatusCode.ERROR


def test_async_worker_batches_are_traced_the_same_way(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, spans: Spans
) -> None:
    srv = traced_server(make_server, spans)
    with global_provider(spans.provider):
        with jobpulse.Client(srv.address) as client:
            job, _ = _create_in_span(spans, client)
        creation = context_of(stored_job(srv, job.id).trace_parent or "")

        async def handle(task: jobpulse.AsyncTask) -> None:
            if task.chunk.index == 1:
                raise ValueError("try again")

        async def run() -> int:
            async with jobpulse.AsyncClient(srv.address) as aclient:
                worker = jobpulse.AsyncWorker(aclient, kinds=["thumbnails"], lease_duration=10, batch_size=2)
                return await worker.run(handle, max_chunks=3)

        assert asyncio.run(run()) == 3

    completed = spans.named("jobpulse.chunk.complete")
    assert sorted(s.attributes["jobpulse.chunk_index"] for s in completed) == [0, 2]  # type: ignore[index]
    failed = spans.named("jobpulse.chunk.fail")
    assert len(failed) == 1 and failed[0].attributes["jobpulse.will_retry"] is True  # type: ignore[index]
    for span in [*completed, *failed, *spans.named("jobpulse.chunk.claim")]:
        assert _linked_to(span, creation)
    processed = spans.named("jobpulse.chunk.process")
    assert len(processed) == 3
    for span in processed:
        assert _linked_to(span, creation)
        assert spans.parent_of(span).kind == trace.SpanKind.CLIENT
    [raised] = [s for s in processed if s.status.status_code == trace.StatusCode.ERROR]
    assert raised.attributes["jobpulse.chunk_index"] == 1  # type: ignore[index]
    assert [e.attributes["exception.type"] for e in raised.events] == ["ValueError"]  # type: ignore[index]


def test_a_server_that_does_not_trace_keeps_no_context_and_nothing_breaks(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, spans: Spans
) -> None:
    srv = make_server()

    def never(*args: Any) -> None:
        raise AssertionError("span work done by a server that does not trace")

    # Off, the services skip the span work entirely (one flag), not just record nothing.
    monkeypatch.setattr(job_trace, "record", never)
    monkeypatch.setattr(job_trace, "current_trace_parent", never)
    with global_provider(spans.provider), jobpulse.Client(srv.address) as client:
        job, _ = _create_in_span(spans, client)
        assert stored_job(srv, job.id).trace_parent is None
        claims = client.claim_chunks("w0", kinds=["thumbnails"], max_chunks=1, lease_duration=10)
        assert [c.job_traceparent for c in claims] == [""]
        client.fail_chunk(claims[0].chunk.id, claims[0].lease_token, "boom", "again", retryable=True)
        with jobpulse.Worker(client, kinds=["thumbnails"], lease_duration=10) as worker:
            assert worker.run(_fails_chunk_1, max_chunks=2) == 2
    names = {s.name for s in spans.all()}
    assert not names & {"jobpulse.chunk.claim", "jobpulse.chunk.complete", "jobpulse.chunk.fail"}
    # The worker still traces its own work, with nothing to link to.
    processed = spans.named("jobpulse.chunk.process")
    assert len(processed) == 2 and all(not s.links for s in processed)


async def test_the_services_on_the_fake_store_keep_the_context_and_link_every_move(spans: Spans) -> None:
    """The services alone, on the in-memory store the conformance suite holds to the real ones."""
    hub = ChangeHub()
    store = FakeStore(on_commit=hub.publish)
    config = Config(retry_backoff=0.01, retry_backoff_max=0.01)
    outbox = Outbox(lambda job, now: {"id": job.id}, 0)
    tracer = spans.provider.get_tracer("jobpulse-server")
    jobs = JobService(store, outbox, config, tracer=tracer)
    workers = WorkerService(store, hub, outbox, config, tracer=tracer)
    ask = NewJob(kind="k", total_items=2, chunk_size=1, max_attempts=3, priority=5)
    try:
        with spans.tracer.start_as_current_span("CreateJob") as call:
            page = await jobs.create_job(ANONYMOUS, ask)
        stored = store.job(page.job.id)
        creation = context_of(stored.trace_parent or "")
        made_in = call.get_span_context()
        assert (creation.trace_id, creation.span_id) == (made_in.trace_id, made_in.span_id)
        with spans.tracer.start_as_current_span("ClaimChunks") as claiming:
            first, second = await workers.claim(ClaimRequest("w1", ["k"], 2, 10_000_000, 0))
        await workers.fail(Failure(first.chunk.id, first.lease_token, "E", "bad", retryable=True))
        await workers.complete(Completion(second.chunk.id, second.lease_token, [], ""))
        # A save keeps the creation's context (only CreateJob writes it).
        assert store.job(page.job.id).trace_parent == stored.trace_parent
    finally:
        hub.close()
    moves = [s for s in spans.all() if s.name.startswith("jobpulse.chunk.")]
    assert sorted((s.name, s.attributes["jobpulse.chunk_index"]) for s in moves) == [  # type: ignore[index]
        ("jobpulse.chunk.claim", 0),
        ("jobpulse.chunk.claim", 1),
        ("jobpulse.chunk.complete", 1),
        ("jobpulse.chunk.fail", 0),
    ]
    assert all(_linked_to(s, creation) for s in moves)
    claims = [s for s in moves if s.name == "jobpulse.chunk.claim"]
    assert all(
        s.parent is not None and s.parent.span_id == claiming.get_span_context().span_id for s in claims
    )
