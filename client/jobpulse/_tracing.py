"""OpenTelemetry in the SDK, through the API alone: nothing to configure here.

Every call of :class:`~jobpulse.Client` and :class:`~jobpulse.AsyncClient` carries the caller's trace
context (``traceparent``, ``tracestate``, ``baggage``, as the application's global propagator writes
them) in its metadata, so the server's span of the call is a child of the caller's. The workers make
spans with the tracer of the application's tracer provider: a CLIENT span around each call that claims
chunks (ClaimChunks, and a completion that claims the next ones), and a ``jobpulse.chunk.process`` span
around each handler, a child of the claim call's span and linked to the request that created the job
(``ChunkClaim.job_traceparent``). With no provider set up, OpenTelemetry's no-op one records nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from jobpulse.v1 import worker_service_pb2

Metadata = tuple[tuple[str, str], ...]

WORKER_SERVICE = "jobpulse.v1.WorkerService"
PROCESS = "jobpulse.chunk.process"

_W3C = TraceContextTextMapPropagator()

# The tracer of the provider it came from: the application may set its provider after the SDK was
# imported (or a test may swap it), so the provider is looked up on each use and the tracer made again
# only when it changed.
_tracer: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The SDK's tracer, from the application's current tracer provider (a no-op one by default)."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    made = provider.get_tracer("jobpulse")
    _tracer = (provider, made)
    return made


def with_trace_context(metadata: Metadata | None) -> Metadata | None:
    """A call's metadata with the current trace context added by the global propagator. An empty context
    (no span, no baggage: the common case without tracing) adds nothing and costs one lookup."""
    if not context.get_current():
        return metadata
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return metadata
    return (*(metadata or ()), *carrier.items())


@contextmanager
def calling(method: str, worker_id: str, links: Sequence[trace.Link] = ()) -> Iterator[trace.Span]:
    """A CLIENT span around a worker's call of ``method`` that claims chunks (current while it runs, so
    the call carries it); its context is the parent of the claimed chunks' ``PROCESS`` spans."""
    with tracer().start_as_current_span(
        f"{WORKER_SERVICE}/{method}",
        kind=trace.SpanKind.CLIENT,
        links=links,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": WORKER_SERVICE,
            "rpc.method": method,
            "jobpulse.worker_id": worker_id,
        },
    ) as span:
        yield span


@functools.lru_cache(maxsize=256)
def _creation(job_traceparent: str) -> trace.SpanContext | None:
    context = trace.get_current_span(_W3C.extract({"traceparent": job_traceparent})).get_span_context()
    return context if context.is_valid else None


def creation_links(job_traceparent: str) -> list[trace.Link]:
    """A link to the request that created the job, when the claim names one."""
    found = _creation(job_traceparent) if job_traceparent else None
    return [trace.Link(found)] if found is not None else []


@contextmanager
def processing(
    claim: worker_service_pb2.ChunkClaim, worker_id: str, claimed_in: trace.SpanContext | None
) -> Iterator[trace.Span]:
    """The ``PROCESS`` span of one chunk's handler (current while it runs): a child of the span of the call
    that claimed the chunk (``claimed_in``), linked to the job's creation. The worker records the
    handler's exception on it itself (it catches it to fail the chunk)."""
    parent = (
        trace.set_span_in_context(trace.NonRecordingSpan(claimed_in))
        if claimed_in is not None and claimed_in.is_valid
        else None
    )
    with tracer().start_as_current_span(
        PROCESS,
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=creation_links(claim.job_traceparent),
        attributes={
            "jobpulse.job_id": claim.job_id,
            "jobpulse.job_kind": claim.job_kind,
            "jobpulse.chunk_id": claim.chunk.id,
            "jobpulse.chunk_index": claim.chunk.index,
            "jobpulse.attempt": claim.chunk.attempt,
            "jobpulse.worker_id": worker_id,
        },
    ) as span:
        yield span


def failed(span: trace.Span, error: BaseException) -> None:
    """Records a handler's exception on its span, with an error status."""
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def links_to(spans: Sequence[trace.SpanContext | None]) -> list[trace.Link]:
    """Links to the given spans (e.g. the handler spans of the chunks a call completes)."""
    return [trace.Link(s) for s in spans if s is not None and s.is_valid]


#: A claim in a worker's hands, with the context of the span of the call that brought it.
Claimed = tuple[worker_service_pb2.ChunkClaim, trace.SpanContext]


def brought(claims: Sequence[worker_service_pb2.ChunkClaim], span: trace.Span) -> list[Claimed]:
    """The claims a call returned, each with the context of the call's span."""
    context = span.get_span_context()
    return [(claim, context) for claim in claims]
