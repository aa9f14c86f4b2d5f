"""A server span for every HTTP request, by the OpenTelemetry HTTP conventions (installed only when
tracing is on; docs/operations.md, "Tracing").

``TracedHttp`` wraps the whole Starlette app as plain ASGI: the span covers the request from its
headers to its last byte, so an SSE stream (``/v1/jobs/{id}/events``, ``/v1/events``) is one span for
its whole life. An incoming ``traceparent`` (and ``tracestate``, ``baggage``) makes it a child of the
caller's span. The span is named by method and route template (``GET /v1/jobs/{job_id}/events``), never
by the concrete path, so traces group by endpoint; a JSON-face call is named by its rule's template and
carries the RPC it called (``rpc.service``, ``rpc.method``). The probes and ``/metrics`` are not traced: they
are asked every few seconds and say nothing about jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter

_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# What the JSON face (json_api.py) leaves in the scope of a call it served: the rule's path template (the
# span's route) and (service, method) of the RPC.
RULE_TEMPLATE = "jobpulse.rule_template"
RPC_NAME = "jobpulse.rpc"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


class _HeaderGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation fields from an ASGI scope's headers (lower-case byte pairs)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


class TracedHttp:
    """ASGI middleware: ``app`` with a SERVER span per HTTP request."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNTRACED:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        known = method if method in _METHODS else "_OTHER"
        root_path = scope.get("root_path", "")
        parent = propagate.extract(scope.get("headers") or (), getter=_GETTER)
        span = self.tracer.start_span(
            known,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": known,
                "url.path": scope.get("path", ""),
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def traced_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            if not status:
                status = 500
                span.set_attribute("http.response.status_code", status)
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            raise
        finally:
            # The JSON face leaves its rule's template, or "" for a path none of its rules has.
            route = scope[RULE_TEMPLATE] if RULE_TEMPLATE in scope else _route_of(scope, root_path)
            rpc = scope.get(RPC_NAME)
            if rpc is not None:  # a call of the JSON face (json_api.py): the RPC it is
                span.set_attribute("rpc.service", rpc[0])
                span.set_attribute("rpc.method", rpc[1])
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{known} {route}")
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR, str(status))
            span.end()
            otel_context.detach(token)  # type: ignore[arg-type]


def _route_of(scope: Any, root_path: str) -> str:
    """The template of the route that served the request (Starlette leaves the route it matched, and a
    Mount's prefix in ``root_path``, in the scope)."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return ""
    prefix = str(scope.get("root_path", ""))[len(root_path) :]
    return f"{prefix}{path_format}" if path_format.startswith("/") else f"{prefix}/{path_format}"
