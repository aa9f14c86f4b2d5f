"""Server spans with an in-memory exporter: one SERVER span per RPC (unary and streaming) by the RPC
conventions, the caller's traceparent honoured, the store's transactions as child spans, the HTTP side
(a page, an SSE stream) traced by the HTTP conventions, trace ids in the logs; and with tracing off,
nothing of it installed."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from google.longrunning import operations_proto_pb2
from google.protobuf import duration_pb2
from opentelemetry.trace import SpanKind, StatusCode
from support.polling import eventually
from support.spans import Traced, traced_server

from jobpulse.v1 import (
    admin_service_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from jobpulse_server.api.tracing import RpcSpans
from jobpulse_server.http.tracing import TracedHttp
from jobpulse_server.platform.logs import JsonFormatter

JOBS = "jobpulse.v1.JobService"
WORKERS = "jobpulse.v1.WorkerService"
# A caller's span, as a W3C traceparent: version 00, trace id, parent span id, sampled.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def traced(make_server: Callable[..., Any]) -> Traced:
    return traced_server(make_server)


def _stubs(
    address: str,
) -> tuple[grpc.Channel, job_service_pb2_grpc.JobServiceStub, worker_service_pb2_grpc.WorkerServiceStub]:
    channel = grpc.insecure_channel(address)
    return (
        channel,
        job_service_pb2_grpc.JobServiceStub(channel),
        worker_service_pb2_grpc.WorkerServiceStub(channel),
    )


def _create(jobs: job_service_pb2_grpc.JobServiceStub, items: int = 2, **kw: Any) -> str:
    response = jobs.CreateJob(
        job_service_pb2.CreateJobRequest(kind="trace", total_items=items, chunk_size=1), timeout=10, **kw
    )
    return str(response.job.id)


def test_unary_calls_make_one_server_span_each_by_the_rpc_conventions(traced: Traced) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        job_id = _create(jobs)
        jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=10)
        with pytest.raises(grpc.RpcError) as missing:
            jobs.GetJob(job_service_pb2.GetJobRequest(job_id="no-such-job"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    create = traced.one(f"{JOBS}/CreateJob")
    assert create.kind == SpanKind.SERVER
    assert create.attributes is not None
    assert create.attributes["rpc.system"] == "grpc"
    assert create.attributes["rpc.service"] == JOBS
    assert create.attributes["rpc.method"] == "CreateJob"
    assert create.attributes["rpc.grpc.status_code"] == 0
    assert create.attributes["jobpulse.owner"] == "anonymous"  # open mode: everyone is the anonymous admin
    assert create.status.status_code == StatusCode.UNSET

    found, not_found = eventually(lambda: _two(traced.named(f"{JOBS}/GetJob")), what="both GetJob spans")
    assert found.attributes is not None and not_found.attributes is not None
    assert found.attributes["jobpulse.job_id"] == job_id
    assert found.attributes["rpc.grpc.status_code"] == 0
    assert found.status.status_code == StatusCode.UNSET
    assert not_found.attributes["jobpulse.job_id"] == "no-such-job"
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0] == 5
    assert not_found.status.status_code == StatusCode.ERROR
    # Each call is a trace of its own (no caller context was sent).
    assert create.parent is None and found.parent is None
    assert len({create.context.trace_id, found.context.trace_id, not_found.context.trace_id}) == 3


def _two(spans: list[Any]) -> tuple[Any, Any] | None:
    return (spans[0], spans[1]) if len(spans) == 2 else None


def test_worker_calls_carry_the_chunk_and_the_streams_one_span(traced: Traced) -> None:
    channel, jobs, workers = _stubs(traced.address)
    with channel:
        job_id = _create(jobs, items=1)
        lease = duration_pb2.Duration(seconds=60)
        claims = workers.ClaimChunks(
            worker_service_pb2.ClaimChunksRequest(
                worker_id="w", kinds=["trace"], max_chunks=1, lease_duration=lease
            ),
            timeout=10,
        ).claims
        assert len(claims) == 1
        chunk = claims[0].chunk
        workers.CompleteChunk(
            worker_service_pb2.CompleteChunkRequest(chunk_id=chunk.id, lease_token=claims[0].lease_token),
            timeout=10,
        )
        # The job is complete: WatchJob sends its snapshot and ends.
        messages = list(jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=10))
        assert messages

    complete = traced.one(f"{WORKERS}/CompleteChunk")
    assert complete.attributes is not None
    assert complete.attributes["jobpulse.chunk_id"] == chunk.id
    assert complete.attributes["jobpulse.chunk_index"] == chunk.index == 0
    assert complete.attributes["jobpulse.job_id"] == job_id
    assert complete.attributes["rpc.grpc.status_code"] == 0
    assert traced.one(f"{WORKERS}/ClaimChunks").attributes["rpc.method"] == "ClaimChunks"  # type: ignore[index]

    watch = eventually(lambda: traced.named(f"{JOBS}/WatchJob"), what="the WatchJob span")
    assert len(watch) == 1, "a stream is one span, however many messages it sent"
    assert watch[0].kind == SpanKind.SERVER
    assert watch[0].attributes is not None
    assert watch[0].attributes["jobpulse.job_id"] == job_id
    assert watch[0].attributes["rpc.grpc.status_code"] == 0
    assert watch[0].status.status_code == StatusCode.UNSET


def test_a_failed_stream_has_its_code_and_error_status(traced: Traced) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        with pytest.raises(grpc.RpcError) as missing:
            list(jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id="no-such-job"), timeout=10))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    watch = eventually(lambda: traced.named(f"{JOBS}/WatchJob"), what="the WatchJob span")[0]
    assert watch.attributes is not None
    assert watch.attributes["rpc.grpc.status_code"] == 5
    assert watch.status.status_code == StatusCode.ERROR


def test_a_callers_traceparent_makes_the_span_its_child(traced: Traced) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        _create(jobs, metadata=(("traceparent", TRACEPARENT), ("baggage", "tenant=acme")))
    span = traced.one(f"{JOBS}/CreateJob")
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert span.parent is not None and span.parent.is_remote
    assert format(span.parent.span_id, "016x") == CALLER_SPAN


def test_the_stores_transactions_are_children_of_the_rpc_span(traced: Traced, database_url: str) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        job_id = _create(jobs)
        jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id), timeout=10)
    system = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    for method in ("CreateJob", "CancelJob"):
        rpc = traced.one(f"{JOBS}/{method}")
        writes = [s for s in traced.children(rpc) if s.name == "jobpulse.store write"]
        assert len(writes) == 1, f"{method}: {[s.name for s in traced.children(rpc)]}"
        assert writes[0].kind == SpanKind.CLIENT
        assert writes[0].attributes is not None and writes[0].attributes["db.system.name"] == system
        assert writes[0].context.trace_id == rpc.context.trace_id
        assert rpc.start_time is not None and writes[0].start_time is not None
        assert rpc.end_time is not None and writes[0].end_time is not None
        assert rpc.start_time <= writes[0].start_time <= writes[0].end_time <= rpc.end_time
    # Background work (the health probe, the sweeps) starts no traces of its own.
    assert all(s.parent is not None for s in traced.spans() if s.name.startswith("jobpulse.store"))


def test_http_requests_and_a_whole_sse_stream_get_server_spans(traced: Traced) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        job_id = _create(jobs)
        jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id), timeout=10)
    base = str(traced.app.http_url)
    # A terminal job's event stream: its snapshot, then the end.
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers={"traceparent": TRACEPARENT}) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert "JOB_STATE_CANCELLED" in body
    assert httpx.get(f"{base}/no/such/page").status_code == 404
    assert httpx.get(f"{base}/healthz").status_code == 200

    events = eventually(lambda: traced.named("GET /v1/jobs/{job_id}/events"), what="the SSE span")
    assert len(events) == 1
    sse = events[0]
    assert sse.kind == SpanKind.SERVER
    assert sse.attributes is not None
    assert sse.attributes["http.request.method"] == "GET"
    assert sse.attributes["http.route"] == "/v1/jobs/{job_id}/events"
    assert sse.attributes["url.path"] == f"/v1/jobs/{job_id}/events"
    assert sse.attributes["http.response.status_code"] == 200
    assert format(sse.context.trace_id, "032x") == CALLER_TRACE
    assert sse.parent is not None and format(sse.parent.span_id, "016x") == CALLER_SPAN
    # The stream's reads of the store are inside it.
    assert any(s.name == "jobpulse.store read" for s in traced.children(sse))

    missing = eventually(lambda: traced.named("GET"), what="the 404's span")[0]
    assert missing.attributes is not None
    assert missing.attributes["http.response.status_code"] == 404
    assert "http.route" not in missing.attributes
    assert not [s for s in traced.spans() if s.attributes and s.attributes.get("url.path") == "/healthz"]


def test_a_json_face_call_is_named_by_its_rule_and_carries_its_rpc(traced: Traced) -> None:
    channel, jobs, _ = _stubs(traced.address)
    with channel:
        job_id = _create(jobs)
    base = str(traced.app.http_url)
    got = httpx.get(f"{base}/v1/jobs/{job_id}", headers={"traceparent": TRACEPARENT})
    assert got.status_code == 200 and got.json()["job"]["id"] == job_id
    assert httpx.get(f"{base}/v1/no/such/rule").status_code == 404

    span = eventually(lambda: traced.named("GET /v1/jobs/{job_id}"), what="the JSON call's span")[0]
    assert span.kind == SpanKind.SERVER and span.attributes is not None
    assert span.attributes["http.route"] == "/v1/jobs/{job_id}"
    assert (span.attributes["rpc.service"], span.attributes["rpc.method"]) == (
        "jobpulse.v1.JobService",
        "GetJob",
    )
    assert span.attributes["http.response.status_code"] == 200
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert any(s.name == "jobpulse.store read" for s in traced.children(span))
    # A path no rule has: the span names no route (not the face's catch-all).
    missing = eventually(
        lambda: [
            s for s in traced.spans() if s.attributes and s.attributes.get("url.path") == "/v1/no/such/rule"
        ],
        what="the 404's span",
    )[0]
    assert missing.name == "GET" and "http.route" not in (missing.attributes or {})


def test_log_records_carry_the_trace_and_span_ids(traced: Traced) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    access = logging.getLogger("jobpulse.rpc")
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        channel, jobs, _ = _stubs(traced.address)
        with channel:
            _create(jobs, metadata=(("traceparent", TRACEPARENT),))
        line = eventually(
            lambda: [r for r in records if getattr(r, "method", "") == "CreateJob"],
            what="the access log line",
        )[0]
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    span = traced.one(f"{JOBS}/CreateJob")
    as_json = json.loads(JsonFormatter().format(line))
    assert as_json["trace_id"] == CALLER_TRACE == format(span.context.trace_id, "032x")
    assert as_json["span_id"] == format(span.context.span_id, "016x")
    # Outside any span, a record has no trace fields.
    assert "trace_id" not in json.loads(
        JsonFormatter().format(logging.LogRecord("x", 20, "", 0, "m", (), None))
    )


def test_with_tracing_off_nothing_is_installed(make_server: Callable[..., Any], monkeypatch: Any) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    srv = make_server()
    app = srv.app
    assert not app.tracing.on
    assert not app.tracer.start_span("x").is_recording()
    assert app.db.spans is None
    assert not isinstance(app.http.config.app, TracedHttp)
    assert app.interceptors == []  # the CallGuard wraps the handlers themselves: no interceptor at all
    with grpc.insecure_channel(srv.address) as channel:
        _create(job_service_pb2_grpc.JobServiceStub(channel))


def test_with_tracing_on_the_interceptor_is_first(traced: Traced) -> None:
    assert [type(i) for i in traced.app.interceptors] == [RpcSpans]
    assert isinstance(traced.app.http.config.app, TracedHttp)
    assert traced.app.db.spans is not None


def test_every_method_of_every_service_makes_one_server_span(traced: Traced) -> None:
    """Each method the server registers for callers, called once with an empty request (most answer
    INVALID_ARGUMENT or NOT_FOUND, a feed stream runs until the client's deadline), ends as exactly one
    SERVER span named after it, with its status code."""
    services = [
        job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
        worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
        admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
        operations_proto_pb2.DESCRIPTOR.services_by_name["Operations"],
    ]
    names = []
    with grpc.insecure_channel(traced.address) as channel:
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                names.append(path.lstrip("/"))
                try:
                    if method.server_streaming:
                        for _ in channel.unary_stream(path)(b"", timeout=0.5):
                            pass
                    else:
                        channel.unary_unary(path)(b"", timeout=5)
                except grpc.RpcError:
                    pass  # the span is what this test looks at
    assert len(names) >= 25

    def all_ended() -> dict[str, Any]:
        by_name: dict[str, Any] = {}
        for span in traced.spans():
            if span.kind == SpanKind.SERVER and span.name in names:
                assert span.name not in by_name, f"two spans for {span.name}"
                by_name[span.name] = span
        missing = sorted(set(names) - set(by_name))
        assert not missing, f"no span for {missing}"
        return by_name

    spans = eventually(all_ended, what="a span for every method")
    for name, span in spans.items():
        assert span.attributes is not None
        assert span.attributes["rpc.system"] == "grpc", name
        assert f"{span.attributes['rpc.service']}/{span.attributes['rpc.method']}" == name
        assert isinstance(span.attributes["rpc.grpc.status_code"], int), name
