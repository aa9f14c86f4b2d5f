"""Tracing for the tests of a job's trace across processes (tests/tracing/test_job_trace.py, tests/sdk):
one SDK tracer provider with an in-memory exporter, used by a test server and by the SDK in the test.

The server side: ``traced_server`` starts a server tracing through the provider
(``create_server(config, tracer_provider=...)``): its RPC spans honour the caller's ``traceparent``, and
the services' chunk spans are their children.

The SDK side: ``global_provider`` makes the provider the process's global one (what an application
does with ``trace.set_tracer_provider``) for the length of a ``with`` block, then restores the one
before, which OpenTelemetry otherwise allows only once per process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
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


def traced_server(make_server: Callable[..., Any], spans: Spans, **overrides: Any) -> Any:
    """``make_server(**overrides)`` tracing into ``spans`` (its RPCs, its services, its store)."""
    return make_server(tracer_provider=spans.provider, **overrides)


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
