"""A server tracing into an in-memory exporter of its own (an SDK TracerProvider handed to
``create_server``), so several traced servers can run in one test process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Traced:
    """A server, the spans it has ended so far, and lookups over them."""

    def __init__(self, server: Any, exporter: InMemorySpanExporter) -> None:
        self.server = server
        self.exporter = exporter

    @property
    def app(self) -> Any:
        return self.server.app

    @property
    def address(self) -> str:
        return str(self.server.address)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        """The one span named ``name`` (fails unless there is exactly one)."""
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in self.spans()]}"
        return found[0]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        span_id = parent.get_span_context().span_id
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id == span_id]

    def clear(self) -> None:
        self.exporter.clear()


def traced_server(make_server: Callable[..., Any], **overrides: Any) -> Traced:
    """``make_server(**overrides)`` with an SDK provider exporting to memory, synchronously (each span
    is there once it ended)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "jobpulse-server"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Traced(make_server(tracer_provider=provider, **overrides), exporter)
