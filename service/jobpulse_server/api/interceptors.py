"""What every jobpulse RPC goes through, in one place: the caller is authenticated (key, role, rate
limit), any error becomes a status with rich details (never a stack trace), and the call is counted
and logged. Health checks and reflection pass untouched.

The servicers read the authenticated caller with ``caller()`` and hand it to the services as an
argument; nothing below the api layer reads it from a context.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from jobpulse_server.api.error_mapping import status_for
from jobpulse_server.domain.errors import MalformedRequest
from jobpulse_server.domain.principal import ANONYMOUS, Principal
from jobpulse_server.platform.logs import Observer
from jobpulse_server.services.auth import Authenticator

_caller: contextvars.ContextVar[Principal] = contextvars.ContextVar("jobpulse_caller", default=ANONYMOUS)


def caller() -> Principal:
    """The principal of the call being served (set by ``CallGuard`` before the servicer runs)."""
    return _caller.get()


class Undecodable:
    """Stands in for a request whose bytes did not decode. grpc decodes before any handler runs and
    answers a decoding error with UNKNOWN and the exception's class in the message; the guarded
    handler answers this one with INVALID_ARGUMENT instead, after authentication like any call."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning an ``Undecodable`` instead of raising on bytes that are not a message."""
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    type_name = getattr(message_type, "full_name", "") or "request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, UnicodeDecodeError) as exc:
            return Undecodable(f"the request is not a valid {type_name}: {_decode_problem(exc)}")

    return deserialize


def _decode_problem(exc: BaseException) -> str:
    """What was wrong with the bytes, in words (the decoder's text names its internals)."""
    text = str(exc).lower()
    if isinstance(exc, UnicodeDecodeError) or "utf-8" in text or "utf8" in text:
        return "a string field holds bytes that are not valid UTF-8"
    if isinstance(exc, RecursionError) or "depth" in text or "recursion" in text:
        return "messages (or Struct values) are nested too deeply"
    return "its bytes are truncated or corrupt"


class CallGuard:
    """Authentication, error mapping, metrics and the access log for the services in ``roles``
    (full service name -> roles that may call it; "service/Method" for a method whose roles differ).

    Not a grpc.aio interceptor: an interceptor is a coroutine grpc runs, with its continuation, on every
    call, only to hand back the same wrapped handler each time. Here each method's handler is wrapped
    once, when its servicer is added to the server through ``server(...)``, and a call goes straight to
    it (a tracing interceptor, when there is one, still sees the wrapped handler as registered)."""

    def __init__(
        self, authenticator: Authenticator, observer: Observer, roles: Mapping[str, frozenset[str]]
    ) -> None:
        self.auth = authenticator
        self.observer = observer
        self.roles = dict(roles)
        # Each guarded method's handler, wrapped once: both forms a servicer is registered in (generic
        # and registered methods) answer through the same one. Only registered methods come here.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        # Each guarded service's generic handler as registered (``handler`` looks methods up in it).
        self._services: dict[str, grpc.ServiceRpcHandler] = {}

    def server(self, server: grpc.aio.Server, registered: Collection[str]) -> GuardedServer:
        """What to pass to a generated ``add_XServicer_to_server`` in place of ``server``: the methods of
        the guarded services reach ``server`` wrapped; any other service's reach it as they are. Only the
        methods in ``registered`` (``/service/Method``) reach grpc as registered methods as well; the
        others are served through their service's generic handler (``GuardedServer``)."""
        return GuardedServer(server, self, frozenset(registered))

    def wrap_generic(self, handler: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """``handler`` with its methods wrapped, when it serves a guarded service; else ``handler``."""
        if isinstance(handler, grpc.ServiceRpcHandler) and handler.service_name() in self.roles:
            self._services[handler.service_name()] = handler
            return _GuardedService(handler, self)
        return handler

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        """The guarded handler of ``method`` (``/service/Method``) of a service registered through
        ``server``, as gRPC calls it: what the HTTP side's JSON face calls (http/json_api.py)."""
        service = method.lstrip("/").partition("/")[0]
        found = self._services.get(service)
        registered = None if found is None else found.service(_MethodDetails(method))
        return None if registered is None else self.wrap(method, registered)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        """The handler of ``method`` (``/service/Method``, as registered) inside the guard; None if its
        service is not guarded."""
        found = self._wrapped.get(method)
        if found is None:
            found = self._wrap(method, handler)
            if found is not None:
                self._wrapped[method] = found
        return found

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        service, _, name = method.lstrip("/").partition("/")
        # A method whose roles differ from its service's is listed as "service/Method".
        roles = self.roles.get(f"{service}/{name}", self.roles.get(service))
        if roles is None:
            return None
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, name, roles),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            behaviour = handler.unary_stream
            wrapped = (
                self._stream(behaviour, name, roles)
                if inspect.isasyncgenfunction(behaviour)
                else self._unary(behaviour, name, roles)  # a coroutine writing with context.write
            )
            return grpc.unary_stream_rpc_method_handler(
                wrapped,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        raise AssertionError(f"{method}: jobpulse has unary and server-streaming methods only")

    def _unary(
        self, behaviour: Callable[..., Any], name: str, roles: frozenset[str]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        auth, observer = self.auth, self.observer

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, code = time.perf_counter(), "OK"
            try:
                principal = auth.authenticate(context.invocation_metadata(), roles, name)
                if not isinstance(principal, Principal):  # the shared rate limit asks the database
                    principal = await principal
                _caller.set(principal)
                if isinstance(request, Undecodable):
                    raise MalformedRequest(request.problem)
                return await behaviour(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                status = status_for(exc, name)
                code = status.code.name
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                observer.record(name, code, started, request, context)

        return unary

    def _stream(
        self, behaviour: Callable[..., AsyncIterator[Any]], name: str, roles: frozenset[str]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        auth, observer = self.auth, self.observer

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started, code = time.perf_counter(), "OK"
            try:
                principal = auth.authenticate(context.invocation_metadata(), roles, name)
                if not isinstance(principal, Principal):  # the shared rate limit asks the database
                    principal = await principal
                _caller.set(principal)
                if isinstance(request, Undecodable):
                    raise MalformedRequest(request.problem)
                async for item in behaviour(request, context):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                status = status_for(exc, name)
                code = status.code.name
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                observer.record(name, code, started, request, context)

        return stream


class _GuardedService(grpc.ServiceRpcHandler):
    """A service's generic handler whose methods answer through the guard (a made-up method of the
    service finds no registered handler and is wrapped and kept by nobody, so callers cannot grow the
    guard's map)."""

    def __init__(self, inner: grpc.ServiceRpcHandler, guard: CallGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._prefix = f"/{inner.service_name()}/"

    def service_name(self) -> str:
        return self._inner.service_name()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if not method.startswith(self._prefix):
            return None
        registered = self._inner.service(handler_call_details)
        return None if registered is None else self._guard.wrap(method, registered)


class _MethodDetails(grpc.HandlerCallDetails):
    """The details a generic handler's lookup reads: the method's name (no call is made)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class GuardedServer:
    """Stands in for the server while generated ``add_XServicer_to_server`` functions register a
    servicer: both forms they register (the generic handler and the registered methods, which grpc
    prefers) reach the real server wrapped by the guard, the registered methods only for the methods in
    ``registered``.

    grpc.aio keeps one request pending in the core for each registered method, plus one for all the
    generic ones, and its accept loop runs ``asyncio.wait`` over every pending request each time calls
    arrive: the loop's cost per wake grows with the number of registered methods (27 with every
    service's). A method not registered is served as well through its generic handler, sharing that
    one pending request with the others, so calls of different such methods arriving together are
    taken one per wake: the methods called all the time keep a request each."""

    def __init__(self, server: grpc.aio.Server, guard: CallGuard, registered: frozenset[str]) -> None:
        self._server = server
        self._guard = guard
        self._registered = registered
        self._added: set[str] = set()

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(self._guard.wrap_generic(h) for h in handlers))
        # The SDK's stubs come from a generator old enough for grpcio 1.62 (the Makefile says why): their
        # add_XServicer_to_server registers the generic handler alone. The methods to register are taken
        # from it, through the handler's public lookup, as a newer generator would have passed them.
        for handler in handlers:
            if not isinstance(handler, grpc.ServiceRpcHandler):
                continue
            service = handler.service_name()
            found = {}
            for method in sorted(self._registered):
                if method.startswith(f"/{service}/"):
                    method_handler = handler.service(_MethodDetails(method))
                    if method_handler is not None:
                        found[method.rsplit("/", 1)[1]] = method_handler
            if found:
                self.add_registered_method_handlers(service, found)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        kept = {
            n: h
            for n, h in handlers.items()
            if f"/{service}/{n}" in self._registered and f"/{service}/{n}" not in self._added
        }
        if not kept:
            return
        self._added.update(f"/{service}/{n}" for n in kept)
        if service not in self._guard.roles:
            self._server.add_registered_method_handlers(service, kept)
            return
        wrapped = {}
        for name, handler in kept.items():
            guarded = self._guard.wrap(f"/{service}/{name}", handler)
            assert guarded is not None
            wrapped[name] = guarded
        self._server.add_registered_method_handlers(service, wrapped)
