"""A server span for every jobpulse RPC, by the OpenTelemetry RPC conventions (installed only when
tracing is on; docs/operations.md, "Tracing").

``RpcSpans`` is the server's outermost interceptor, in front of ``CallGuard``: the span covers
authentication, the servicer and the error mapping, and is the current span while they run, so the
store's transaction spans and the access log line are inside it. It honours the caller's W3C
``traceparent`` / ``tracestate`` and ``baggage`` metadata (through the configured propagator), so the
span is a child of the caller's. The status code is the one the call ended with: ``CallGuard`` ends
failed calls with ``context.abort``, and the code it set is read back from the context.

Our own rather than ``opentelemetry-instrumentation-grpc``'s aio server interceptor (README,
"Tracing"): that one iterates every response-streaming handler with ``async for`` (jobpulse's WatchJob
is a coroutine writing with ``context.write``: the call would fail), leaves a cancelled call's code at
OK, builds a new handler and a proxy of the context on every call, records none of the job, chunk or
caller a call is about, and uses the older ``net.peer.*`` attribute names. Here a method's wrapper is
made once, and a call costs the span and the propagator's read of its metadata.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter

from jobpulse_server.api.interceptors import caller
from jobpulse_server.platform.logs import job_id_of

_OK, _CANCELLED, _UNKNOWN, _UNAUTHENTICATED = 0, 1, 2, 16
_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}
# The codes a server span is marked failed for: every code but OK and CANCELLED (a client that goes
# away, e.g. ending a watch, is not a failure of the server's).
_NOT_FAILED = frozenset({_OK, _CANCELLED})


class _MetadataGetter(Getter[Sequence[tuple[str, Any]]]):
    """Reads propagation fields from gRPC invocation metadata (a sequence of key, value pairs)."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> int:
    code = context.code()
    if code is None:
        return _UNKNOWN
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code)


class RpcSpans(grpc.aio.ServerInterceptor):
    """Server spans for the methods of ``services`` (full service names); health checks and reflection
    pass untraced."""

    def __init__(self, tracer: trace.Tracer, services: Collection[str]) -> None:
        self.tracer = tracer
        self.services = frozenset(services)
        # Wrapped handlers by method path, made once per method (the handlers below are fixed).
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        found = self._handlers.get(method)
        if found is not None:
            return found
        registered = await continuation(handler_call_details)
        if registered is None:  # an unknown method: not remembered (callers may make up any number)
            return registered
        if method.lstrip("/").partition("/")[0] not in self.services:  # health, reflection
            return registered
        found = self._handlers.get(method)
        if found is None:
            found = self._handlers[method] = self._wrap(method, registered)
        return found

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        full = method.lstrip("/")
        service, _, name = full.partition("/")
        start = self._starter(full, service, name)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, start),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            behaviour = handler.unary_stream
            return grpc.unary_stream_rpc_method_handler(
                _stream(behaviour, start)
                if inspect.isasyncgenfunction(behaviour)
                else _unary(behaviour, start),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise AssertionError(f"{method}: jobpulse has unary and server-streaming methods only")

    def _starter(self, full: str, service: str, name: str) -> _Start:
        tracer = self.tracer
        attributes: dict[str, str | int] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        server = trace.SpanKind.SERVER

        def start(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[trace.Span, object]:
            parent = propagate.extract(context.invocation_metadata() or (), getter=_GETTER)
            # Every attribute known at the start goes in with it: one call, not one (locked) call each.
            wanted = attributes
            job_id = job_id_of(request)
            chunk_id = getattr(request, "chunk_id", "")
            if job_id or chunk_id:
                wanted = dict(attributes)
                if job_id:
                    wanted["jobpulse.job_id"] = job_id
                if chunk_id and isinstance(chunk_id, str):
                    wanted["jobpulse.chunk_id"] = chunk_id
                    index = chunk_id.rpartition("-")[2]
                    if index.isdigit():
                        wanted["jobpulse.chunk_index"] = int(index)
            span = tracer.start_span(full, context=parent, kind=server, attributes=wanted)
            return span, otel_context.attach(trace.set_span_in_context(span, parent))

        return start


_Start = Callable[[Any, "grpc.aio.ServicerContext[Any, Any]"], tuple[trace.Span, object]]


def _finish(span: trace.Span, code: int, error: BaseException | None = None) -> None:
    if span.is_recording():
        if code != _UNAUTHENTICATED:  # the caller, set by CallGuard once authenticated
            span.set_attributes({"jobpulse.owner": caller().name, "rpc.grpc.status_code": code})
        else:
            span.set_attribute("rpc.grpc.status_code", code)
        if code not in _NOT_FAILED:
            if error is not None and not isinstance(error, grpc.aio.AbortError):
                span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, _NAMES.get(code, str(code)))
    span.end()


def _unary(
    behaviour: Callable[..., Awaitable[Any]], start: _Start
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        span, token = start(request, context)
        try:
            result = await behaviour(request, context)
        except grpc.aio.AbortError as exc:
            _finish(span, _code_of(context), exc)
            raise
        except asyncio.CancelledError:
            _finish(span, _CANCELLED)
            raise
        except BaseException as exc:
            _finish(span, _UNKNOWN, exc)
            raise
        else:
            code = context.code()
            _finish(span, _OK if code is None else _code_of(context))
            return result
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]

    return unary


def _stream(
    behaviour: Callable[..., AsyncIterator[Any]], start: _Start
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        span, token = start(request, context)
        code: int | None = None
        error: BaseException | None = None
        try:
            async for item in behaviour(request, context):
                yield item
        except grpc.aio.AbortError as exc:
            code, error = _code_of(context), exc
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = _CANCELLED
            raise
        except BaseException as exc:
            code, error = _UNKNOWN, exc
            raise
        finally:
            if code is None:
                code = _OK if context.code() is None else _code_of(context)
            _finish(span, code, error)
            if code != _CANCELLED:  # a stream closed from elsewhere may run this in another context
                otel_context.detach(token)  # type: ignore[arg-type]

    return stream
