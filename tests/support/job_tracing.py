"""Tracing for the tests of a job's trace across processes (tests/tracing/test_job_trace.py, tests/sdk):
one SDK tracer provider with an in-memory exporter, used by a test server and by the SDK in the test.

The server side: ``traced_server`` starts a server whose job and worker services trace through the
provider, with a server span per unary RPC that honours the caller's ``traceparent`` (the services'
spans are its children, as they are under the server's own RPC spans). It stands in for the wiring
(app.py passing the tracer of ``create_server(config, tracer_provider=...)`` to the services, and the
server's own RPC interceptor): once both are there, ``traced_server`` becomes
``make_server(tracer_provider=provider)``.

The SDK side: ``global_provider`` makes the provider the process's global one (what an application
does with ``trace.set_tracer_provider``) for the length of a ``with`` block, then restores the one
before, which OpenTelemetry otherwise allows only once per process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from jobpulse_server.domain.model import Job
from jobpulse_server.services import job_trace


class Spans:
    """An SDK provider exporting every span to memory as it ends, and lookups over what it holds."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": "jobpulse-test"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def by_id(self, span_id: int) -> ReadableSpan:
        found = [s for s in self.all() if s.context is not None and s.context.span_id == span_id]
        assert len(found) == 1, f"no span {span_id:016x} among {[s.name for s in self.all()]}"
        return found[0]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        return self.by_id(span.parent.span_id)


@contextmanager
def global_provider(provider: TracerProvider) -> Iterator[None]:
    """``provider`` as the global tracer provider inside the block (the SDK's tracer comes from it)."""
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


class _RpcSpans(grpc.aio.ServerInterceptor):
    """A SERVER span around each unary call, a child of the caller's context read from the metadata."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        name = details.method.lstrip("/")  # type: ignore[attr-defined]
        carrier = {k: v for k, v in details.invocation_metadata if isinstance(v, str)}  # type: ignore[attr-defined]

        async def call(request: Any, context: Any) -> Any:
            parent = propagate.extract(carrier)
            with self.tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def traced_server(
    make_server: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, spans: Spans, **overrides: Any
) -> Any:
    """``make_server(**overrides)`` whose RPCs and job and worker services trace into ``spans``."""
    plain = grpc.aio.server

    def server(*args: Any, interceptors: Sequence[Any] = (), **kwargs: Any) -> Any:
        return plain(*args, interceptors=[_RpcSpans(spans.tracer), *interceptors], **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(grpc.aio, "server", server)
        srv = make_server(**overrides)
    tracer = spans.provider.get_tracer("jobpulse-server")
    for service in (srv.app.jobs, srv.app.workers):
        service.tracer, service._traced = job_trace.tracing(tracer)
    return srv


def stored_job(srv: Any, job_id: str) -> Job:
    """The job as the server's store has it."""

    async def read() -> Job:
        async with srv.app.store.read() as tx:
            job = await tx.get_job(job_id, None)
        assert job is not None
        return job

    return srv.call(read())  # type: ignore[no-any-return]


def context_of(trace_parent: str) -> trace.SpanContext:
    """The span context a stored ``trace_parent`` (or a ``job_traceparent``) names."""
    links = job_trace.creation_links(trace_parent)
    assert links, f"not a valid W3C context: {trace_parent!r}"
    return links[0].context
