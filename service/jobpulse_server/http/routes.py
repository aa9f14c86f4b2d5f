"""The HTTP side's Starlette app: the events paths under /v1 (with CORS when configured), the probes
and /metrics. Every error is a JSON body (errors.py); no request ever gets a traceback."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from jobpulse.v1 import job_service_pb2
from jobpulse_server.domain.errors import (
    FieldViolation,
    InvalidArgument,
    RevisionAhead,
    ShuttingDown,
)
from jobpulse_server.domain.model import JobState
from jobpulse_server.domain.principal import Principal
from jobpulse_server.http import openapi
from jobpulse_server.http.auth import HttpAuth
from jobpulse_server.http.dashboard import Dashboard
from jobpulse_server.http.errors import error_response, response_for
from jobpulse_server.http.query import filter_request, parse
from jobpulse_server.http.sse import END, EventStream, SseEvent, feed_event
from jobpulse_server.services.watch import FeedMessage, FeedService, WatchService
from jobpulse_server.wire.filters import job_filter
from jobpulse_server.wire.validation import Checker

_JOB_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
_MAX_REVISION = 2**63 - 1
_TERMINAL = {f"JOB_STATE_{s.name}" for s in JobState if s.terminal}
# The HTTP methods the JSON face's rules use (and HEAD, answered as GET without a body).
_VERBS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"})


class _NoContent(Exception):
    """The client resumes at or after the job's terminal revision: nothing more will come (204)."""


def _revision(text: str, field: str) -> int:
    if not text.isdigit() or int(text) > _MAX_REVISION:
        raise InvalidArgument(
            [FieldViolation(field, f"must be a revision: a whole number from 0 (got {text[:40]!r})")]
        )
    return int(text)


def _params(scope: dict[str, Any]) -> list[tuple[str, str]]:
    return parse(scope.get("query_string", b""))


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    text = _header(scope, b"cookie")
    return cookie_parser(text) if text else {}


class _Asgi:
    """An endpoint that speaks ASGI itself (Starlette wraps plain functions and methods as
    request -> response endpoints; an SSE stream writes its events as they come)."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Callable[[Any, Any, Any], Any]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.endpoint(scope, receive, send)


class HttpSide:
    """What the HTTP routes serve from: the same watch services, authenticator and health as gRPC."""

    def __init__(
        self,
        watches: WatchService,
        feeds: FeedService,
        http_auth: HttpAuth,
        encode_feed: Callable[[FeedMessage], Any],
        serving: Callable[[], bool],
        outage: Callable[[], str | None],
        registry: CollectorRegistry,
        cors_origins: list[str],
        dashboard: Dashboard | None = None,
        json_api: Callable[[Any, Any, Any], Any] | None = None,
    ) -> None:
        self.watches = watches
        self.feeds = feeds
        self.auth = http_auth
        self.encode_feed = encode_feed
        self.serving = serving
        self.outage = outage
        self.registry = registry
        self.cors_origins = cors_origins
        self.dashboard = dashboard
        # The JSON face (json_api.py): every other path under /v1.
        self.json_api = json_api
        self._openapi: bytes | None = None

    def app(self) -> Starlette:
        v1 = [
            Route("/jobs/{job_id}/events", _Asgi(self.job_events), methods=["GET"]),
            Route("/events", _Asgi(self.feed_events), methods=["GET"]),
        ]
        if self.json_api is not None:
            v1.append(Route("/openapi.json", self.openapi, methods=["GET"]))
            # OPTIONS and TRACE too, so that they get the JSON face's 405 naming the path's own verbs (a
            # CORS preflight is answered before routing, by the middleware).
            v1.append(Route("/{rest:path}", _Asgi(self.json_api), methods=[*_VERBS, "OPTIONS", "TRACE"]))
        cors = []
        if self.cors_origins:
            cors = [
                Middleware(
                    CORSMiddleware,
                    allow_origins=self.cors_origins,
                    allow_methods=list(_VERBS - {"HEAD"}) if self.json_api is not None else ["GET"],
                    allow_headers=["authorization", "content-type", "last-event-id", "cache-control"],
                    max_age=600,
                )
            ]
        return Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Mount("/v1", routes=v1, middleware=cors),
                *(self.dashboard.routes() if self.dashboard is not None else []),
            ],
            exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        )

    # --- probes -----------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.serving():
            return JSONResponse({"status": "ready", "database": "reachable"})
        why = self.outage() or "the database does not answer, or the server is shutting down"
        return JSONResponse({"status": "not ready", "reason": why}, status_code=503)

    async def metrics(self, request: Request) -> Response:
        # The Prometheus text format, or OpenMetrics (the only one with exemplars) when the scraper asks.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await asyncio.to_thread(encode, self.registry)
        return Response(body, headers={"content-type": content_type})

    async def openapi(self, request: Request) -> Response:
        """``GET /v1/openapi.json``: the JSON face's OpenAPI document (what protos/openapi.json holds),
        made from the descriptors on the first request and kept."""
        if self._openapi is None:
            self._openapi = json.dumps(openapi.document(), indent=2, sort_keys=True).encode() + b"\n"
        return Response(self._openapi, media_type="application/json")

    # --- events -----------------------------------------------------------------------------

    async def job_events(self, scope: Any, receive: Any, send: Any) -> None:
        """``GET /v1/jobs/{job_id}/events``: WatchJob as Server-Sent Events."""
        stream: EventStream | None = None
        after = 0
        try:
            job_id = scope["path_params"]["job_id"]
            if not _JOB_ID.match(job_id):
                raise InvalidArgument(
                    [FieldViolation("job_id", "must be a job id: 1 to 128 letters, digits, '_' or '-'")]
                )
            params = _params(scope)
            query = dict(params)
            last_id = _header(scope, b"last-event-id")
            if last_id:  # what a reconnecting EventSource sends; it wins over the URL's after_revision
                after = _revision(last_id.strip(), "Last-Event-ID")
            elif "after_revision" in query:
                after = _revision(query["after_revision"], "after_revision")
            who = await self.auth.principal(
                _header(scope, b"authorization"), query.get("access_token"), job_id, _cookies(scope)
            )
            stream = EventStream(receive, send)

            async def write(event: SseEvent) -> None:
                if not stream.started and after and event.terminal and event.revision <= after:
                    raise _NoContent
                await stream.write(event.data)

            await self.watches.watch(who, job_id, after, write, "sse")
            await stream.finish(END)
        except asyncio.CancelledError:
            if stream is None or not stream.gone:
                raise
        except _NoContent:
            await _no_content(stream, send)
        except RevisionAhead as exc:
            if exc.metadata.get("state") in _TERMINAL:
                await _no_content(stream, send)
            else:
                await self._fail(stream, send, scope, exc, "GET /v1/jobs/{id}/events")
        except Exception as exc:
            await self._fail(stream, send, scope, exc, "GET /v1/jobs/{id}/events")

    async def feed_events(self, scope: Any, receive: Any, send: Any) -> None:
        """``GET /v1/events``: WatchJobs as Server-Sent Events; the event id is the cursor."""
        stream: EventStream | None = None
        try:
            params = _params(scope)
            request = filter_request(params, job_service_pb2.WatchJobsRequest())
            c = Checker()
            f = job_filter(request, c)
            c.done()
            query = dict(params)
            cursor = _header(scope, b"last-event-id") or request.cursor
            who: Principal = await self.auth.principal(
                _header(scope, b"authorization"), query.get("access_token"), "", _cookies(scope)
            )
            stream = EventStream(receive, send)
            encode = self.encode_feed
            async for msg in self.feeds.watch(who, f, cursor.strip(), announce=True):
                await stream.write(feed_event(msg, encode(msg)))
        except asyncio.CancelledError:
            if stream is None or not stream.gone:
                raise
        except Exception as exc:
            await self._fail(stream, send, scope, exc, "GET /v1/events")

    async def _fail(
        self, stream: EventStream | None, send: Any, scope: Any, exc: Exception, what: str
    ) -> None:
        """Before the first event: a JSON error response. After it: the stream just ends (shutdown, a
        lost database); the EventSource reconnects with its Last-Event-ID and misses nothing."""
        if stream is not None:
            stream.close()
            if stream.started:
                if not isinstance(exc, ShuttingDown):
                    response_for(exc, what)  # logs what needs logging
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        response = response_for(exc, what)
        await response(scope, _no_receive, send)


async def _no_content(stream: EventStream | None, send: Any) -> None:
    """204 before any event: the client resumes at or after the job's terminal revision, so nothing more
    will come (an EventSource stops reconnecting on it)."""
    if stream is not None:
        stream.close()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, "NOT_FOUND", "NOT_FOUND", f"no such path: {request.url.path[:200]}")
    if exc.status_code == 405:
        return error_response(
            405,
            "INVALID_ARGUMENT",
            "METHOD_NOT_ALLOWED",
            f"{request.method} is not allowed here",
            dict(exc.headers or {}),
        )
    return error_response(exc.status_code, "INVALID_ARGUMENT", "BAD_REQUEST", str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return response_for(exc, f"{request.method} {request.url.path[:200]}")
