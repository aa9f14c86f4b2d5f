"""A job's trace across processes, with the OpenTelemetry API alone (the wiring hands in the tracer).

CreateJob keeps the W3C trace context of the span it runs in with the job (``Job.trace_parent``: the
traceparent, then a space and the tracestate if there is one). Every later claim, completion and failure
of one of the job's chunks happens in another trace (a worker's call, perhaps on another replica), so
its span is a child of that call's span and *links* to the job's creation: a trace view leads from the
creating request to every chunk attempt and back.

When the server does not trace (the tracer is OpenTelemetry's no-op one) none of this runs: the
services test one flag per call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()

# Span names of a chunk's moves in the server.
CLAIM = "jobpulse.chunk.claim"
COMPLETE = "jobpulse.chunk.complete"
FAIL = "jobpulse.chunk.fail"


def tracing(tracer: trace.Tracer | None) -> tuple[trace.Tracer, bool]:
    """The tracer a service keeps (None: a no-op one) and whether it traces at all."""
    if tracer is None:
        return trace.NoOpTracer(), False
    return tracer, not isinstance(tracer, trace.NoOpTracer)


def current_trace_parent() -> str | None:
    """The W3C context of the current span as ``Job.trace_parent`` keeps it; None without a valid span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    parent = carrier.get("traceparent")
    if not parent:
        return None
    state = carrier.get("tracestate")
    return f"{parent} {state}" if state else parent


def traceparent(trace_parent: str | None) -> str:
    """The W3C traceparent part of a stored ``Job.trace_parent`` ("" for none): ChunkClaim.job_traceparent."""
    return trace_parent.split(" ", 1)[0] if trace_parent else ""


@functools.lru_cache(maxsize=1024)
def _creation(trace_parent: str) -> trace.SpanContext | None:
    """The span context a stored ``Job.trace_parent`` names (None if it does not parse). Kept: every chunk
    of a job links to the same one."""
    parent, _, state = trace_parent.partition(" ")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def creation_links(trace_parent: str | None) -> list[trace.Link]:
    """A link to the job's creation, when the job has a trace context."""
    found = _creation(trace_parent) if trace_parent else None
    return [trace.Link(found)] if found is not None else []


@dataclass
class ChunkMove:
    """One claim, completion or failure of a chunk, to be recorded as a span."""

    job_id: str
    index: int
    attempt: int
    trace_parent: str | None
    # More attributes of the span (e.g. the chunk's new state).
    extra: dict[str, str | bool | int] | None = None


def record(tracer: trace.Tracer, name: str, moves: list[ChunkMove], start_ns: int) -> None:
    """One span per move (``name``: CLAIM, COMPLETE or FAIL), children of the current span (the call's),
    from ``start_ns`` (when the service began the operation) to now, each linked to its job's creation."""
    for move in moves:
        attributes: dict[str, str | bool | int] = {
            "jobpulse.job_id": move.job_id,
            "jobpulse.chunk_index": move.index,
            "jobpulse.attempt": move.attempt,
        }
        if move.extra:
            attributes.update(move.extra)
        span = tracer.start_span(
            name,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            links=creation_links(move.trace_parent),
            start_time=start_ns,
        )
        span.end()
