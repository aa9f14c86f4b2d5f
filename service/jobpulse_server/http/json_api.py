"""The JSON face: every RPC with a ``google.api.http`` rule (wire/http_rules.py) served on the HTTP side,
in-process, through the very handlers gRPC calls.

A request is matched against the rules (built once from the descriptors), made into the RPC's request
message (path variables, query parameters and the JSON body, in the proto3 JSON mapping: either spelling
of a field name in, lowerCamel out) and handed to the method's guarded handler (api/interceptors.py) with
a context standing in for gRPC's: so authentication (``Authorization: Bearer``), roles, rate limits,
validation, ownership, metrics and the access log are gRPC's own, and an error is the same status with
the same details, answered as ``{"error": {"code", "status", "reason", "message", "details"}}`` with the
canonical HTTP status. A server-streaming method other than the watches (served as Server-Sent Events by
routes.py) answers NDJSON, a message a line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlencode

import grpc
from google.protobuf import any_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from jobpulse.export_csv import COLUMNS, row
from jobpulse_server.domain.errors import DomainError, FieldViolation, InvalidArgument, MalformedRequest
from jobpulse_server.http.errors import error_response
from jobpulse_server.http.query import parse
from jobpulse_server.http.tracing import RPC_NAME, RULE_TEMPLATE
from jobpulse_server.wire.http_rules import HttpRule
from jobpulse_server.wire.json_encode import to_json
from jobpulse_server.wire.status import HTTP_STATUS, code_of, details_of

log = logging.getLogger(__name__)

# The largest JSON body read (gRPC's own limit on a request message).
MAX_BODY = 4 * 1024 * 1024
_JSON = "application/json"
_NDJSON = b"application/x-ndjson"
_CSV = b"text/csv; charset=utf-8"
# Request headers passed to the handler as gRPC metadata (what the guard and the logs read).
_METADATA_HEADERS = frozenset(
    {b"authorization", b"x-request-id", b"traceparent", b"tracestate", b"user-agent"}
)
_TRUE = {"true": True, "1": True, "false": False, "0": False}
# The watches, whose rules' paths routes.py serves as Server-Sent Events.
SSE_METHODS = frozenset({"/jobpulse.v1.JobService/WatchJob", "/jobpulse.v1.JobService/WatchJobs"})
# The export: NDJSON, or CSV with ?format=csv.
EXPORT_METHOD = "/jobpulse.v1.JobService/ExportJobs"


class _Aborted(grpc.aio.AbortError):
    """What ``_Context.abort`` raises: the call's status, as gRPC would have sent it (an AbortError, which
    the guard lets through as it lets gRPC's own)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        self.code = code
        self.details = details
        self.trailing = trailing or ()


class _Context:
    """The part of grpc.aio.ServicerContext the guarded handlers use, for a call that came over HTTP."""

    __slots__ = ("_code", "_metadata")

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self._code = code
        raise _Aborted(code, details, trailing_metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def peer(self) -> str:
        return "http"


class Route:
    """One rule and the guarded handler it calls."""

    __slots__ = ("handler", "masks", "message", "name", "rule")

    def __init__(self, rule: HttpRule, handler: grpc.RpcMethodHandler) -> None:
        self.rule = rule
        self.handler = handler
        self.message = message_factory.GetMessageClass(rule.request)
        self.name = rule.method.name
        # The request's FieldMask fields (update_mask).
        self.masks = [
            f
            for f in rule.request.fields
            if f.message_type is not None and f.message_type.full_name == "google.protobuf.FieldMask"
        ]


class JsonApi:
    """The ASGI endpoint serving every rule's path under /v1 (mounted after the SSE routes)."""

    def __init__(
        self,
        rules: Iterable[HttpRule],
        handler: Callable[[str], grpc.RpcMethodHandler | None],
        skip: Iterable[str],
    ) -> None:
        skipped = set(skip)
        self.routes: list[Route] = []
        # The rules served elsewhere (the watches, as Server-Sent Events): their paths exist, so another
        # verb on one is 405 naming theirs, not 404.
        self.elsewhere: list[HttpRule] = []
        for rule in rules:
            if rule.full_method in skipped:
                self.elsewhere.append(rule)
                continue
            found = handler(rule.full_method)
            if found is None:
                raise LookupError(f"{rule.full_method} has an HTTP rule but no handler")
            self.routes.append(Route(rule, found))
        # Rules with a custom verb first: "/v1/jobs/{job_id}:cancel" before "/v1/jobs/{job_id}".
        self.routes.sort(key=lambda r: ":" not in r.rule.template.rsplit("/", 1)[-1])

    def find(self, verb: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """The route and its path values; else the verbs the path has routes for (empty: none)."""
        allowed = []
        for route in self.routes:
            values = route.rule.match(path)
            if values is None:
                continue
            if route.rule.verb == verb:
                return route, values
            allowed.append(route.rule.verb)
        allowed += [r.verb for r in self.elsewhere if r.verb != verb and r.match(path) is not None]
        return allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path, root = scope["path"], scope.get("root_path", "")
        if root and not path.startswith(root):  # a mount that cut its prefix off
            path = root + path
        verb = scope["method"]
        found = self.find("GET" if verb == "HEAD" else verb, path)
        if isinstance(found, list):
            scope[RULE_TEMPLATE] = ""  # no rule: no route to name the span by
            if found:
                response = error_response(
                    405, "INVALID_ARGUMENT", "METHOD_NOT_ALLOWED", f"{verb} is not allowed here",
                    {"allow": ", ".join(sorted(set(found)))},
                )  # fmt: skip
            else:
                response = error_response(404, "NOT_FOUND", "NOT_FOUND", f"no such path: {path[:200]}")
            await response(scope, receive, send)
            return
        route, values = found
        scope[RULE_TEMPLATE] = route.rule.template
        scope[RPC_NAME] = (route.rule.service.full_name, route.name)
        context = _Context(_metadata(scope["headers"]))
        try:
            body = await _body(receive) if route.rule.body else b""
            query, csv_rows = scope.get("query_string", b""), False
            if route.rule.full_method == EXPORT_METHOD:
                csv_rows, query = _export_format(query)
            request = _request(route, values, query, body)
        except Exception as exc:  # a request that is not one: answered as the guard answers gRPC's
            await _failed(exc, route.name, scope, receive, send)
            return
        handler = route.handler
        if handler.unary_unary is not None:
            try:
                reply = await handler.unary_unary(request, context)
            except _Aborted as aborted:
                await _aborted(aborted, scope, receive, send)
                return
            await _send(scope, send, 200, _JSON, _to_json(reply, route.rule.response_body).encode())
            return
        await self._stream(handler, request, context, route, scope, receive, send, csv_rows)

    async def _stream(
        self, handler: grpc.RpcMethodHandler, request: Message, context: _Context, route: Route,
        scope: Any, receive: Any, send: Any, csv_rows: bool,
    ) -> None:  # fmt: skip
        """NDJSON, a message a line (or CSV, a job a row, for the export): the headers go with the first
        message, so an error before it is a JSON error response; one after it ends NDJSON with a line
        holding the error (and CSV just ends)."""
        items: AsyncIterator[Any] = handler.unary_stream(request, context)
        content_type = _CSV if csv_rows else _NDJSON
        started = False

        async def start() -> None:
            nonlocal started
            started = True
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
            )
            if csv_rows:
                await send({"type": "http.response.body", "body": _csv_lines([COLUMNS]), "more_body": True})

        try:
            async for item in items:
                if csv_rows:
                    body = _csv_lines(row(job) for job in item.jobs)
                else:
                    body = (_to_json(item, route.rule.response_body) + "\n").encode()
                if not started:
                    await start()
                await send({"type": "http.response.body", "body": body, "more_body": True})
        except _Aborted as aborted:
            if not started:
                await _aborted(aborted, scope, receive, send)
                return
            if not csv_rows:
                line = json.dumps({"error": {"status": aborted.code.name, "message": aborted.details}})
                await send({"type": "http.response.body", "body": line.encode() + b"\n", "more_body": True})
        if not started:
            await start()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _csv_lines(rows: Iterable[Sequence[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _export_format(query_string: bytes) -> tuple[bool, bytes]:
    """(CSV asked for, the query without ``format``): ExportJobs' ``format=ndjson`` (the default) or
    ``format=csv`` (the columns of ``jobpulse export --format csv``)."""
    params = parse(query_string)
    formats = [v for k, v in params if k == "format"]
    if not formats:
        return False, query_string
    if formats[-1] not in ("ndjson", "csv"):
        raise InvalidArgument([FieldViolation("format", f"must be ndjson or csv (got {formats[-1][:40]!r})")])
    return formats[-1] == "csv", urlencode([(k, v) for k, v in params if k != "format"]).encode()


def _metadata(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k in _METADATA_HEADERS)


async def _body(receive: Any) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise InvalidArgument([FieldViolation("body", f"is larger than {MAX_BODY} bytes")])
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _request(route: Route, values: Mapping[str, str], query_string: bytes, body: bytes) -> Message:
    """The request message of ``route`` from its path values, query parameters and body."""
    rule = route.rule
    data: dict[str, Any] = {}
    if rule.body and body.strip():
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedRequest(f"the body is not JSON: {exc}") from None
        if rule.body == "*":
            if not isinstance(parsed, dict):
                raise MalformedRequest(f"the body must be a JSON object (a {rule.request.name})")
            data = parsed
        else:
            data[rule.body] = parsed
    params = parse(query_string)
    if params:
        if rule.body == "*":
            names = ", ".join(sorted({k for k, _ in params}))[:200]
            raise InvalidArgument(
                [
                    FieldViolation(
                        names, f"{rule.verb} {rule.template} takes its fields in the JSON body, not the query"
                    )
                ]
            )
        _query(rule.request, params, data, rule.bound | ({rule.body} if rule.body else set()))
    for field_path, value in values.items():
        _place(data, field_path.split("."), unquote(value))
    for field in route.masks:  # snake_case paths too (the JSON mapping writes them lowerCamel)
        for key in (field.name, field.json_name):
            if isinstance(data.get(key), str):
                data[key] = ",".join(_camel(p.strip()) for p in data[key].split(","))
    message = route.message()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise MalformedRequest(
            f"the request is not a valid {rule.request.name}: {_parse_problem(exc)}"
        ) from None
    return message


def _parse_problem(exc: Exception) -> str:
    return str(exc).replace("\n", " ")[:300]


def _camel(path: str) -> str:
    """A field path's names in lowerCamel (max_running_chunks -> maxRunningChunks; a.b_c -> a.bC)."""
    return ".".join(
        head + "".join(w[:1].upper() + w[1:] for w in rest)
        for head, *rest in (name.split("_") for name in path.split("."))
    )


def _place(data: dict[str, Any], path: list[str], value: Any) -> None:
    for name in path[:-1]:
        inner = data.get(name)
        if not isinstance(inner, dict):
            inner = data[name] = {}
        data = inner
    data[path[-1]] = value


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is None:
        field = next((f for f in message.fields if f.json_name == name), None)
    return field


def _query(
    message: Descriptor, params: list[tuple[str, str]], data: dict[str, Any], bound: set[str] | frozenset[str]
) -> None:
    """Query parameters into ``data`` (AIP-127: a field by its name or lowerCamel name, a nested one by a
    dotted path, a repeated one by repeating the parameter, a map entry as ``field.key``)."""
    bad = []
    for key, value in params:
        names = key.split(".")
        descriptor: Descriptor | None = message
        target = data
        path: list[str] = []
        field = None
        for i, name in enumerate(names):
            assert descriptor is not None
            field = _field(descriptor, name)
            if field is None:
                break
            path.append(field.name)
            if _is_map(field):
                if i != len(names) - 2:
                    field = None
                break
            if i < len(names) - 1:
                if field.message_type is None or field.is_repeated:
                    field = None
                    break
                descriptor = field.message_type
                target = target.setdefault(field.name, {})
        if field is None or path[0] in bound:
            bad.append(FieldViolation(key[:100], f"is not a query parameter of {message.name}"))
            continue
        if _is_map(field):
            target.setdefault(field.name, {})[names[-1]] = value
            continue
        converted = _scalar(field, value)
        if converted is None:
            bad.append(FieldViolation(key[:100], f"must be true or false (got {value[:40]!r})"))
            continue
        if field.is_repeated:
            target.setdefault(field.name, []).append(converted)
        else:
            target[field.name] = converted
    if bad:
        raise InvalidArgument(bad)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _scalar(field: FieldDescriptor, value: str) -> Any:
    """A query value as JSON would give it: booleans as booleans; everything else as the string, which
    the JSON mapping reads for numbers, enums, timestamps, durations and field masks alike."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _TRUE.get(value.strip().lower())
    return value


def _to_json(message: Any, field: str) -> str:
    return to_json(getattr(message, field) if field else message)


async def _send(scope: Any, send: Any, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _failed(exc: Exception, name: str, scope: Any, receive: Any, send: Any) -> None:
    """A request the JSON face could not make into a message (or a bug while making it), answered with
    the status and details the guard would give it (wire/status.py)."""
    err = exc if isinstance(exc, DomainError) else None
    if err is None:
        log.error("unhandled error in %s", name, exc_info=exc)
        err = DomainError("internal error; the server logged the details")
    packed = []
    for detail in details_of(err):
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = status_pb2.Status(message=err.message, details=packed)
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    await _aborted(_Aborted(grpc.StatusCode[code_of(err)], err.message, trailing), scope, receive, send)


async def _aborted(aborted: _Aborted, scope: Any, receive: Any, send: Any) -> None:
    """A failed call as the JSON error of the HTTP side, with the status's details (ErrorInfo,
    BadRequest, RetryInfo ...) in the proto3 JSON mapping."""
    name = aborted.code.name
    http = HTTP_STATUS.get(name, 500)
    reason, details, headers = name, [], {}
    for key, value in aborted.trailing:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for any_detail in status.details:
            details.append(json_format.MessageToDict(any_detail))
            if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                reason = info.reason or reason
            elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                any_detail.Unpack(retry)
                seconds = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                headers["retry-after"] = str(max(1, round(seconds + 0.499)))
    if http == 401:
        headers["www-authenticate"] = 'Bearer realm="jobpulse"'
    body = {
        "error": {
            "code": http,
            "status": name,
            "reason": reason,
            "message": aborted.details,
            "details": details,
        }
    }
    await _send_json(scope, receive, send, http, body, headers)


async def _send_json(
    scope: Any, receive: Any, send: Any, status: int, body: Any, headers: Mapping[str, str]
) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", _JSON.encode()), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
