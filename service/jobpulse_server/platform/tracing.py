"""The server's tracing set-up: whether tracing is on, and the tracer provider when it is.

Tracing is configured the OpenTelemetry way, by the standard ``OTEL_*`` variables, not by jobpulse
settings (docs/operations.md, "Tracing"). It is on when ``OTEL_TRACES_EXPORTER`` names an exporter
(``otlp``, ``console``) or, that variable unset, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; ``OTEL_SDK_DISABLED=true`` turns it off whatever else
says. When it is off nothing of it is on the call path: the wiring installs no interceptor, middleware
or store hook, and the server's tracer is a no-op one.

When it is on: a TracerProvider of the server's own (not the global one, so tests run several servers
with in-memory exporters in one process), its Resource from ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (service.name ``jobpulse-server`` unless they name one), its sampler from
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (the SDK reads them), and a BatchSpanProcessor
(``OTEL_BSP_*``) exporting OTLP over gRPC (the default) or HTTP by ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
/ ``OTEL_EXPORTER_OTLP_PROTOCOL``; the exporters read their endpoint, headers and timeout themselves.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

TRACER_NAME = "jobpulse_server"
DEFAULT_SERVICE_NAME = "jobpulse-server"
_EXPORTERS = ("otlp", "console")
_PROTOCOLS = ("grpc", "http/protobuf")


def _exporter_names(env: Mapping[str, str]) -> list[str] | None:
    """The names in OTEL_TRACES_EXPORTER without ``none`` (None: the variable is unset)."""
    text = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not text:
        return None
    return [n for n in (part.strip().lower() for part in text.split(",")) if n and n != "none"]


def tracing_requested(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = _exporter_names(env)
    if names is not None:
        return bool(names)
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


@dataclass(frozen=True)
class Tracing:
    """The server's tracer (a no-op one when off) and the provider behind it.

    ``owned``: the provider was made here from the environment, so closing shuts it down; an injected
    provider (tests) belongs to whoever made it and is only flushed.
    """

    tracer: trace.Tracer
    provider: Any = None
    owned: bool = False
    where: str = ""

    @property
    def on(self) -> bool:
        return self.provider is not None

    async def close(self) -> None:
        """Exports what is still batched (off the event loop: the exporter may wait on the network)."""
        provider = self.provider
        if provider is None:
            return
        if self.owned:
            await asyncio.to_thread(provider.shutdown)
        elif hasattr(provider, "force_flush"):
            await asyncio.to_thread(provider.force_flush)


OFF = Tracing(trace.NoOpTracer())


def tracing_for(provider: Any, where: str = "the tracer provider given") -> Tracing:
    """Tracing through ``provider`` (an SDK TracerProvider, or any API one)."""
    return Tracing(provider.get_tracer(TRACER_NAME, _version()), provider, owned=False, where=where)


def tracing_from_environment(env: Mapping[str, str] | None = None) -> Tracing:
    """Tracing as the ``OTEL_*`` variables say: ``OFF``, or an SDK provider of the server's own.
    Raises ValueError for an exporter or protocol the server does not know."""
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return OFF
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    names = _exporter_names(env)
    if names is None:
        names = ["otlp"]  # an OTLP endpoint was set
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={env.get('OTEL_TRACES_EXPORTER')!r}: the server exports traces with "
            f"{', '.join(_EXPORTERS)} or none, not {', '.join(unknown)}"
        )
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER(_ARG)
    where: list[str] = []
    for name in names:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
            where.append("the console (stdout)")
        else:
            exporter, described = _otlp_exporter(env)
            where.append(described)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(
        provider.get_tracer(TRACER_NAME, _version()),
        provider,
        owned=True,
        where=f"{' and '.join(where)}, as service {resource.attributes.get(SERVICE_NAME)}",
    )


def _otlp_exporter(env: Mapping[str, str]) -> tuple[Any, str]:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    ).lower()
    if protocol not in _PROTOCOLS:
        raise ValueError(
            f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL): the server exports "
            f"traces over {' or '.join(_PROTOCOLS)}"
        )
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(), f"OTLP/gRPC at {endpoint or 'http://localhost:4317 (the default)'}"
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    exporter = HttpExporter()
    return exporter, f"OTLP/HTTP at {getattr(exporter, '_endpoint', endpoint) or endpoint}"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("jobpulse-server")
    except Exception:
        return ""


class StoreSpans:
    """The store's transaction spans (``SqlStore.spans``): a span per read snapshot and write
    transaction, named ``jobpulse.store read`` / ``jobpulse.store write``, made only inside a span
    being recorded (an RPC's or an HTTP request's), so background work (probes, sweeps, flushes) does
    not start traces of its own."""

    __slots__ = ("_attributes", "_names", "_tracer")

    def __init__(self, tracer: trace.Tracer, system: str) -> None:
        self._tracer = tracer
        self._attributes = {"db.system.name": system}
        self._names = {"read": "jobpulse.store read", "write": "jobpulse.store write"}

    def start(self, operation: str) -> trace.Span | None:
        if not trace.get_current_span().is_recording():
            return None
        return self._tracer.start_span(
            self._names[operation], kind=trace.SpanKind.CLIENT, attributes=self._attributes
        )

    def end(self, span: trace.Span | None, error: BaseException | None) -> None:
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, type(error).__name__)
        span.end()
