"""The dashboard: server-rendered pages (Jinja2) on the HTTP port, improved by a little plain JavaScript of
our own (static/). Every page works before its script runs; the script makes it live from the /v1
events paths, draws the chunk grid and the throughput chart on canvases, and asks before acting.

Pages read and act through the same services as the RPCs, for the principal of the visitor's session
(session.py), so what a page shows and allows is what that key may see and do over gRPC: another owner's
job is 404 here too. Actions are POSTs from forms, checked for a same-site origin, answered with a
redirect back to the page (the result is what the next page shows) and a one-shot message.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jobpulse.v1 import admin_service_pb2, job_service_pb2
from jobpulse_server.domain.bulk import NAME_PREFIX, BulkAction
from jobpulse_server.domain.errors import (
    DatabaseUnavailable,
    DomainError,
    FieldViolation,
    InvalidArgument,
    OperationNotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from jobpulse_server.domain.filters import DEFAULT_ORDER, ORDERS, JobFilter
from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.domain.principal import Principal
from jobpulse_server.http import present
from jobpulse_server.http.errors import error_response, response_for
from jobpulse_server.http.query import filter_request, job_state, parse
from jobpulse_server.http.session import CrossSite, Sessions, same_origin
from jobpulse_server.services import auth
from jobpulse_server.services.bulk import BulkService
from jobpulse_server.services.jobs import EVERY_JOB, RETRY_FAILURES_LIMIT, JobListing, JobService
from jobpulse_server.services.kinds import KindService
from jobpulse_server.services.schedules import ScheduleService
from jobpulse_server.services.throughput import Throughput
from jobpulse_server.services.usage import UsageLedger
from jobpulse_server.services.webhooks import WebhookService
from jobpulse_server.wire.filters import job_filter
from jobpulse_server.wire.status import HTTP_STATUS, code_of
from jobpulse_server.wire.validation import MAX_ID, Checker

log = logging.getLogger(__name__)

# The attempts a chunk panel lists (ListChunkAttempts, the CLI's `jobpulse attempts`, has them all).
ATTEMPTS_SHOWN = 50
PAGE_SIZES = (10, 20, 50, 100)
DEFAULT_PAGE_SIZE = 20
CHUNKS_SHOWN = 50  # the server-rendered chunk list of a job page (the grid shows them all)
KINDS_SHOWN = 100  # kinds per page of the Kinds page
SCHEDULES_SHOWN = 50  # schedules per page of the Schedules page (each with its last jobs)
OPERATIONS_SHOWN = 50  # bulk operations per page of the Bulk operations page
# Failed chunks of one reason the Failures page reads to list the jobs it broke (the newest jobs).
FAILED_CHUNKS_SHOWN = 500
FLASH = "jobpulse_flash"
_MAX_FORM = 64 * 1024
_ORDER_NAMES = {
    "create_time desc": "Newest first",
    "create_time": "Oldest first",
    "update_time desc": "Recently updated",
    "update_time": "Least recently updated",
    "priority desc": "Highest priority",
    "priority": "Lowest priority",
}
_STATIC = ("dashboard.css", "dashboard.js", "favicon.svg")
_MEDIA = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    # Our own files only: no inline script, no third party; images and media may come from the
    # artifacts' http(s) URIs (previews).
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
        "media-src https: http:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class _LogIn(Exception):
    """The visitor has no (valid) session: to /login, and back here afterwards."""


@dataclass
class Extras:
    """What the health page adds to GetServerHealth, from the wiring."""

    report: Callable[[], Awaitable[admin_service_pb2.GetServerHealthResponse]]
    leases: Callable[[], Awaitable[tuple[int, int]]]  # chunks leased now, workers holding them
    workers_seen: Callable[[], dict[str, float]]  # worker id -> seconds since it last claimed here
    started: float  # time.time() when the server started


class Dashboard:
    """The dashboard's routes, over the services the RPCs use."""

    def __init__(
        self,
        jobs: JobService,
        webhooks: WebhookService,
        usage: UsageLedger,
        sessions: Sessions,
        extras: Extras,
        clock: Callable[[], int],
        kinds: KindService,
        throughput: Throughput | None = None,
        schedules: ScheduleService | None = None,
        bulk: BulkService | None = None,
    ) -> None:
        self.jobs = jobs
        self.bulk = bulk
        self.kinds = kinds
        self.schedules = schedules
        self.webhooks = webhooks
        self.usage = usage
        self.sessions = sessions
        self.extras = extras
        self.clock = clock
        self.throughput = throughput
        self.version = _version()
        self.static = {
            name: (resources.files(__package__) / "static" / name).read_bytes() for name in _STATIC
        }
        digest = hashlib.sha256(b"".join(self.static.values())).hexdigest()[:12]
        self.static_prefix = f"/static/{digest}"
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader(__package__, "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(present.FILTERS, urldecode=unquote)
        self.env.globals.update(
            static=self.static_prefix,
            version=self.version,
            JobState=JobState,
            ChunkState=ChunkState,
            orders=_ORDER_NAMES,
            page_sizes=PAGE_SIZES,
            relative=present.relative,
            eta=present.eta,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/", self.jobs_page, methods=["GET"]),
            Route("/jobs/{job_id}", self.job_page, methods=["GET"]),
            Route("/jobs/{job_id}/grid", self.job_grid, methods=["GET"]),
            Route("/jobs/{job_id}/chunks/{index:int}", self.chunk_detail, methods=["GET"]),
            Route("/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{job_id}/retry", self.retry, methods=["POST"]),
            Route("/jobs/{job_id}/pause", self.pause, methods=["POST"]),
            Route("/jobs/{job_id}/resume", self.resume, methods=["POST"]),
            Route("/jobs/{job_id}/delete", self.delete, methods=["POST"]),
            Route("/jobs/{job_id}/priority", self.priority, methods=["POST"]),
            Route("/jobs/{job_id}/chunks/{chunk_id}/retry", self.retry_chunk, methods=["POST"]),
            Route("/actions/bulk", self.bulk_selected, methods=["POST"]),
            Route("/actions/bulk-filter", self.bulk_filter, methods=["POST"]),
            Route("/operations", self.operations_page, methods=["GET"]),
            Route("/operations/{name}", self.operation_page, methods=["GET"]),
            Route("/operations/{name}/stop", self.stop_operation, methods=["POST"]),
            Route("/kinds", self.kinds_page, methods=["GET"]),
            Route("/kinds/pause", self.pause_kind, methods=["POST"]),
            Route("/kinds/resume", self.resume_kind, methods=["POST"]),
            Route("/schedules", self.schedules_page, methods=["GET"]),
            Route("/failures", self.failures_page, methods=["GET"]),
            Route("/failures/retry", self.retry_failures, methods=["POST"]),
            Route("/stats", self.stats_page, methods=["GET"]),
            Route("/stats/throughput", self.throughput_json, methods=["GET"]),
            Route("/health", self.health_page, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/{digest}/{name}", self.static_file, methods=["GET"]),
        ]

    # --- plumbing ---------------------------------------------------------------------------

    async def _who(self, request: Request) -> Principal:
        try:
            return await self.sessions.principal(request.cookies, "use the dashboard")
        except Unauthenticated:
            raise _LogIn from None

    def _render(
        self, request: Request, template: str, status: int = 200, who: Principal | None = None, **context: Any
    ) -> HTMLResponse:
        flash = request.cookies.get(FLASH, "")
        body = self.env.get_template(template).render(
            who=who,
            sessions=self.sessions.needed,
            path=request.url.path,
            flash=flash[:500],
            now=self.clock(),
            **context,
        )
        response = HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)
        response.headers["cache-control"] = "no-store"
        if flash:
            response.delete_cookie(FLASH, path="/", httponly=True, samesite="strict")
        return response

    async def _page(self, request: Request, build: Callable[[Principal], Awaitable[Response]]) -> Response:
        """Runs a page: no session goes to /login; a domain error becomes a page saying what to do."""
        try:
            who = await self._who(request)
            return await build(who)
        except _LogIn:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
        except Exception as exc:
            return self._error_page(request, exc)

    def _error_page(self, request: Request, exc: Exception) -> Response:
        err = exc if isinstance(exc, DomainError) else None
        if err is None:
            log.exception("dashboard: %s %s failed", request.method, request.url.path[:200])
            return self._render(
                request,
                "error.html",
                500,
                title="Something went wrong",
                message="The server could not show this page. It has logged why; try again in a moment.",
                violations=[],
                reload_after=0,
            )
        exc = err
        if isinstance(err, DatabaseUnavailable):
            log.warning(
                "dashboard: %s %s: database unavailable: %s", request.method, request.url.path[:200], err
            )
        status = HTTP_STATUS.get(code_of(err), 500)
        titles = {
            404: "Not found",
            401: "Log in again",
            403: "Not allowed",
            429: "One moment",
            503: "Unavailable",
        }
        violations = exc.violations if isinstance(exc, InvalidArgument) else []
        # Over the key's rate limit: the page loads itself again once a call will be admitted, so the
        # person looking at it waits a moment instead of reading an error.
        reload_after = max(1, math.ceil(err.retry_after)) if isinstance(err, RateLimited) else 0
        response = self._render(
            request,
            "error.html",
            status,
            title=titles.get(status, "That did not work"),
            message=str(exc),
            violations=violations,
            reload_after=reload_after,
        )
        if reload_after:
            response.headers["retry-after"] = str(reload_after)
        return response

    async def _act(
        self, request: Request, action: Callable[[Principal, dict[str, str]], Awaitable[str]], back: str
    ) -> Response:
        """A POST: same-site origin, a session, then ``action``; a redirect to ``back`` with what it did."""
        try:
            same_origin(request)
            who = await self._who(request)
            form = dict(await _form(request))
            done = await action(who, form)
        except _LogIn:
            return RedirectResponse(f"/login?{urlencode({'next': back})}", status_code=303)
        except Exception as exc:
            return self._error_page(request, exc)
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(FLASH, quote(done)[:1000], max_age=60, path="/", httponly=True, samesite="strict")
        return response

    # --- jobs -------------------------------------------------------------------------------

    async def jobs_page(self, request: Request) -> Response:
        async def build(who: Principal) -> Response:
            params = parse(request.url.query)
            view = _JobsView.read(params)
            listing: JobListing | None = None
            try:
                listing = await self.jobs.browse_jobs(
                    who,
                    view.filter(),
                    order_by=view.order_by,
                    page_size=view.page_size,
                    page_token=view.token,
                    backward=view.backward,
                )
            except InvalidArgument as exc:
                view.violations = exc.violations
            return self._render(
                request,
                "jobs.html",
                400 if view.violations else 200,
                who=who,
                view=view,
                listing=listing,
                filtered=view.filtered,
                title="Jobs",
            )

        return await self._page(request, build)

    async def job_page(self, request: Request) -> Response:
        async def build(who: Principal) -> Response:
            job_id = _job_id(request)
            page = await self.jobs.get_job(who, job_id, full=False)
            chunks, next_token, _ = await self.jobs.list_chunks(who, job_id, [], CHUNKS_SHOWN, "")
            deliveries = await self.webhooks.list_deliveries(who, job_id) if page.job.webhook_url else []
            job = page.job
            dependants = await self.jobs.dependants(who, job)
            dependencies = await self.jobs.dependencies(who, job)
            error_chunk = None
            if job.error_chunk_index is not None:
                error_chunk = next((c for c in chunks if c.index == job.error_chunk_index), None)
            return self._render(
                request,
                "job.html",
                who=who,
                job=job,
                chunks=chunks,
                more_chunks=bool(next_token),
                deliveries=deliveries[:50],
                error_chunk=error_chunk,
                dependants=dependants,
                dependencies=dependencies,
                title=job.display_name or job.id,
            )

        return await self._page(request, build)

    async def job_grid(self, request: Request) -> Response:
        """Every chunk's state, one digit each, and the job revision they were read at: the grid draws
        them, then follows /v1/jobs/{id}/events from that revision (nothing missed in between)."""
        try:
            who = await self._who(request)
            job, states = await self.jobs.chunk_states(who, _job_id(request))
        except _LogIn:
            return _json_error(401, "UNAUTHENTICATED", "log in again")
        except Exception as exc:
            return response_for(exc, "GET /jobs/{id}/grid")
        return JSONResponse(
            {"revision": job.revision, "states": states, "state": job.state.name},
            headers={"cache-control": "no-store"},
        )

    async def chunk_detail(self, request: Request) -> Response:
        """A chunk's attempts, worker, task id, error and artifacts (an HTML fragment for the panel)."""

        async def build(who: Principal) -> Response:
            job_id = _job_id(request)
            index = int(request.path_params["index"])
            job, chunk = await self.jobs.chunk_at(who, job_id, index)
            # Its attempts, the newest first (the first ATTEMPTS_SHOWN of the chunk's).
            attempts, more = await self.jobs.list_attempts(who, job_id, chunk.id, ATTEMPTS_SHOWN, "")
            # The grid's panel asks for the fragment; a link opened on its own gets a whole page.
            template = "chunk.html" if request.headers.get("x-fragment") else "chunk_page.html"
            return self._render(
                request,
                template,
                who=who,
                job=job,
                chunk=chunk,
                attempts=attempts[::-1],
                more_attempts=bool(more),
                title=f"Chunk {index}",
            )

        return await self._page(request, build)

    # --- actions ----------------------------------------------------------------------------

    async def cancel(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            reason = form.get("reason", "").strip()
            c = Checker()
            c.text(reason, "reason", 1024)
            c.done()
            await self.jobs.cancel_job(who, job_id, reason or "cancelled from the dashboard")
            return "Cancel requested: pending chunks are cancelled, running ones stop at their next report."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def pause(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            await self.jobs.pause_job(who, job_id, paused=True)
            return "Paused: no chunk of the job is claimed until it is resumed; running ones finish."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def resume(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            await self.jobs.pause_job(who, job_id, paused=False)
            return "Resumed: its chunks are claimed again."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def retry(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            await self.jobs.retry_job(who, job_id)
            return "Retrying: failed and cancelled chunks are pending again."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def retry_chunk(self, request: Request) -> Response:
        job_id = _job_id(request)
        chunk_id = str(request.path_params["chunk_id"])

        async def act(who: Principal, form: dict[str, str]) -> str:
            c = Checker()
            c.text(chunk_id, "chunk_id", MAX_ID, required=True)
            c.done()
            await self.jobs.retry_chunk(who, job_id, chunk_id)
            return f"Chunk {chunk_id} is pending again."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def delete(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            await self.jobs.delete_job(who, job_id, form.get("force") == "1")
            return f"Job {job_id} deleted."

        return await self._act(request, act, "/")

    async def priority(self, request: Request) -> Response:
        job_id = _job_id(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            text = form.get("priority", "").strip()
            c = Checker()
            c.check(
                text.isdigit() and len(text) < 4, "priority", f"must be a whole number (got {text[:20]!r})"
            )
            c.done()
            c.priority(int(text), "priority")
            c.done()
            await self.jobs.update_job(who, job_id, priority=int(text), labels=None, display_name=None)
            return f"Priority set to {int(text)}."

        return await self._act(request, act, f"/jobs/{job_id}")

    async def bulk_selected(self, request: Request) -> Response:
        """Cancel, retry or delete the jobs selected on the jobs page, each as its own RPC would be: one
        that cannot be (already finished, still running) is reported, the others are done."""
        try:
            pairs = await _form(request)
        except DomainError as exc:
            return self._error_page(request, exc)
        back = _next(dict(pairs).get("back", "/"))

        async def act(who: Principal, fields: dict[str, str]) -> str:
            ids = [v for k, v in pairs if k == "job_id"][:100]
            action = fields.get("action", "")
            c = Checker()
            c.check(action in ("cancel", "retry", "delete"), "action", "must be cancel, retry or delete")
            c.check(bool(ids), "job_id", "select at least one job")
            for job_id in ids:
                c.text(job_id, "job_id", MAX_ID, required=True)
            c.done()
            done, problems = 0, []
            for job_id in ids:
                try:
                    if action == "cancel":
                        await self.jobs.cancel_job(who, job_id, "cancelled from the dashboard")
                    elif action == "retry":
                        await self.jobs.retry_job(who, job_id)
                    else:
                        await self.jobs.delete_job(who, job_id, False)
                    done += 1
                except DomainError as exc:
                    problems.append(str(exc))
            verb = {"cancel": "Cancel requested for", "retry": "Retrying", "delete": "Deleted"}[action]
            text = f"{verb} {done} job{'s' if done != 1 else ''}."
            if problems:
                text += f" {len(problems)} not: " + "; ".join(problems[:3])
            return text

        return await self._act(request, act, back)

    async def bulk_filter(self, request: Request) -> Response:
        """Cancel, retry or delete every job matching the jobs page's filters (``query``: the page's
        query string), as CancelJobs, RetryJobs and PurgeJobs: first a page that counts them and asks,
        then (``confirm``) the operation, whose page follows its progress."""
        try:
            same_origin(request)
            who = await self._who(request)
            fields = dict(await _form(request))
            action = fields.get("action", "")
            c = Checker()
            c.check(action in _BULK_ACTIONS, "action", "must be cancel, retry or purge")
            c.done()
            query = fields.get("query", "")[:4000]
            view = _JobsView.read(parse(query))
            f = view.filter()
            if self.bulk is None:
                raise InvalidArgument([FieldViolation("action", "bulk operations are not served here")])
            verb, noun = _BULK_ACTIONS[action]
            if fields.get("confirm") != "yes":
                counted = await self.bulk.start(who, BulkAction[action.upper()], f, validate_only=True)
                return self._render(
                    request,
                    "bulk_confirm.html",
                    who=who,
                    title=f"{verb} {counted.matched} jobs?",
                    action=action,
                    verb=verb,
                    noun=noun,
                    matched=counted.matched,
                    query=query,
                    back="/?" + query if query else "/",
                )
            op = await self.bulk.start(
                who, BulkAction[action.upper()], f, reason="cancelled from the dashboard (by filter)"
            )
        except _LogIn:
            return RedirectResponse("/login?next=/", status_code=303)
        except Exception as exc:
            return self._error_page(request, exc)
        return RedirectResponse(f"/operations/{op.name}", status_code=303)

    async def operations_page(self, request: Request) -> Response:
        """The bulk operations the session's key may see, newest first, each with its progress."""

        async def build(who: Principal) -> Response:
            token = dict(parse(request.url.query)).get("page_token", "")
            found: list[Any] = []
            next_token = ""
            if self.bulk is not None:
                found, next_token = await self.bulk.list_operations(who, OPERATIONS_SHOWN, token)
            return self._render(
                request,
                "operations.html",
                who=who,
                operations=[(op, _BULK_VERBS[op.action]) for op in found],
                next_token=next_token,
                title="Bulk operations",
            )

        return await self._page(request, build)

    async def operation_page(self, request: Request) -> Response:
        """A bulk operation's progress: a bar, the counts, a way to stop it; it loads itself again
        every two seconds while the operation runs (with JavaScript; without, a link does)."""

        async def build(who: Principal) -> Response:
            if self.bulk is None:
                raise OperationNotFound("no bulk operations here", name=str(request.path_params["name"]))
            op = await self.bulk.get(who, _operation_name(request))
            return self._render(
                request,
                "operation.html",
                who=who,
                op=op,
                verb=_BULK_VERBS[op.action],
                title=f"{_BULK_VERBS[op.action]} jobs: {op.done + op.skipped} of {op.matched}",
                reload_after=0 if op.finished else 2,
            )

        return await self._page(request, build)

    async def stop_operation(self, request: Request) -> Response:
        name = _operation_name(request)

        async def act(who: Principal, form: dict[str, str]) -> str:
            if self.bulk is None:
                raise OperationNotFound("no bulk operations here", name=name)
            op = await self.bulk.cancel(who, name)
            if not op.cancelled:
                return "It had already ended."
            return f"Stopped after {op.done} of {op.matched} jobs."

        return await self._act(request, act, f"/operations/{name}")

    # --- kinds ------------------------------------------------------------------------------

    async def kinds_page(self, request: Request) -> Response:
        async def build(who: Principal) -> Response:
            token = dict(parse(request.url.query)).get("page_token", "")
            kinds, next_token = await self.kinds.list_kinds(who, KINDS_SHOWN, token)
            return self._render(
                request,
                "kinds.html",
                who=who,
                kinds=kinds,
                next_token=next_token,
                here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                # The buttons are shown to those who may use them; the service checks it again.
                admin=who.role in auth.ADMIN_ROLES,
                title="Kinds",
            )

        return await self._page(request, build)

    async def pause_kind(self, request: Request) -> Response:
        return await self._kind_action(request, paused=True)

    async def resume_kind(self, request: Request) -> Response:
        return await self._kind_action(request, paused=False)

    async def _kind_action(self, request: Request, *, paused: bool) -> Response:
        """UpdateKind's pause or resume from the Kinds page: the same service call, and so the same
        permission (admin), as the RPC; back to the page it was posted from."""
        try:
            fields = dict(await _form(request))
        except DomainError as exc:
            return self._error_page(request, exc)
        back = fields.get("back", "")
        back = back if back.startswith("/kinds") and _next(back) == back else "/kinds"

        async def act(who: Principal, form: dict[str, str]) -> str:
            kind = form.get("kind", "").strip()
            c = Checker()
            c.text(kind, "kind", MAX_ID, required=True)
            c.done()
            await self.kinds.update_kind(who, kind, paused=paused)
            if paused:
                return f"Paused {kind}: no chunk of it is claimed until it is resumed; running ones finish."
            return f"Resumed {kind}: its chunks are claimed again."

        return await self._act(request, act, back)

    # --- schedules -----------------------------------------------------------------------------

    async def schedules_page(self, request: Request) -> Response:
        """The schedules the session's key may see (ListSchedules), oldest first, each with its cron,
        zone, next run and its last jobs (newest first)."""

        async def build(who: Principal) -> Response:
            token = dict(parse(request.url.query)).get("page_token", "")
            found: list[Any] = []
            next_token = ""
            if self.schedules is not None:
                listed, next_token = await self.schedules.list_schedules(who, SCHEDULES_SHOWN, token)
                found = [(s, await self.schedules.recent_jobs(s)) for s in listed]
            return self._render(
                request, "schedules.html", who=who, schedules=found, next_token=next_token, title="Schedules"
            )

        return await self._page(request, build)

    # --- failures across jobs -------------------------------------------------------------------

    async def failures_page(self, request: Request) -> Response:
        """The chunks failed for good by reason (SummarizeFailures), the reason failed most lately first;
        with ``reason``, the jobs it broke, newest first (ListJobChunks over "-")."""

        async def build(who: Principal) -> Response:
            params = dict(parse(request.url.query))
            kind = params.get("kind", "").strip()
            reason = params.get("reason", "").strip()
            c = Checker()
            c.text(kind, "kind", MAX_ID)
            c.text(reason, "reason", MAX_ID)
            c.done()
            groups = await self.jobs.summarize_failures(who, kind, None, None)
            affected: list[dict[str, Any]] = []
            shown = 0
            if reason:
                chunks, _, _ = await self.jobs.list_chunks(
                    who, EVERY_JOB, [ChunkState.FAILED], FAILED_CHUNKS_SHOWN, "", kind, [reason]
                )
                shown = len(chunks)
                by_job: dict[str, dict[str, Any]] = {}
                for ch in chunks:
                    row = by_job.get(ch.job_id)
                    if row is None:
                        row = by_job[ch.job_id] = {"job_id": ch.job_id, "chunks": [], "last": ch}
                        affected.append(row)
                    row["chunks"].append(ch.index)
                    if (ch.end_time or 0) > (row["last"].end_time or 0):
                        row["last"] = ch
            return self._render(
                request,
                "failures.html",
                who=who,
                groups=groups,
                kind=kind,
                reason=reason,
                group=next((g for g in groups if g.reason == reason), None),
                affected=affected,
                shown=shown,
                shown_limit=FAILED_CHUNKS_SHOWN,
                title="Failures",
            )

        return await self._page(request, build)

    async def retry_failures(self, request: Request) -> Response:
        """ "Retry all failed chunks with this reason": RetryChunk on each of them (JobService.retry_failures,
        the same permission and checks as the RPC), back to the Failures page."""
        try:
            fields = dict(await _form(request))
        except DomainError as exc:
            return self._error_page(request, exc)
        kind = fields.get("kind", "").strip()
        back = "/failures" + (f"?{urlencode({'kind': kind})}" if kind else "")

        async def act(who: Principal, form: dict[str, str]) -> str:
            reason = form.get("reason", "").strip()
            c = Checker()
            c.text(reason, "reason", MAX_ID, required=True)
            c.text(kind, "kind", MAX_ID)
            c.done()
            retried, skipped, more = await self.jobs.retry_failures(who, reason, kind)
            said = f"Retried {retried:,} chunk{'s' if retried != 1 else ''} that failed with {reason}"
            if skipped:
                said += (
                    f"; skipped {skipped:,} (their jobs were cancelled or failed at once: retry those jobs)"
                )
            if more:
                said += f". More are left: retry again for the next {RETRY_FAILURES_LIMIT:,}"
            return said + "."

        return await self._act(request, act, back)

    # --- stats and health -------------------------------------------------------------------

    async def stats_page(self, request: Request) -> Response:
        async def build(who: Principal) -> Response:
            params = dict(parse(request.url.query))
            kind = params.get("kind", "").strip()
            c = Checker()
            c.text(kind, "kind", MAX_ID)
            c.done()
            overall, kinds = await self.jobs.stats(who, JobFilter(kind=kind))
            usage = await self.usage.report() if who.role == "admin" or not self.sessions.needed else None
            hours = _hours(params.get("hours", ""))
            throughput = await self._throughput(hours)
            return self._render(
                request,
                "stats.html",
                who=who,
                overall=overall,
                kinds=kinds,
                usage=sorted(usage.items()) if usage is not None else None,
                kind=kind,
                hours=hours,
                throughput=json.dumps(throughput, separators=(",", ":")),
                title="Stats",
            )

        return await self._page(request, build)

    async def _throughput(self, hours: int) -> dict[str, Any]:
        """Chunks completed per minute, [[minute start (us), chunks, items], ...] oldest first, summed
        over every replica from the per-minute rollup (services/throughput.py): no scan of chunks."""
        if self.throughput is None:
            return {"points": [], "step_s": 60, "kinds": {}}
        report = await self.throughput.recent(hours)
        return {
            "points": [list(p) for p in report.points],
            "step_s": 60,
            "kinds": {kind: list(total) for kind, total in report.by_kind.items()},
        }

    async def throughput_json(self, request: Request) -> Response:
        try:
            await self._who(request)
        except _LogIn:
            return _json_error(401, "UNAUTHENTICATED", "log in again")
        hours = _hours(dict(parse(request.url.query)).get("hours", ""))
        return JSONResponse(await self._throughput(hours), headers={"cache-control": "no-store"})

    async def health_page(self, request: Request) -> Response:
        async def build(who: Principal) -> Response:
            report = await self.extras.report()
            try:
                leases, holders = await self.extras.leases()
            except Exception as exc:  # the report says the database is away; the page still shows
                log.warning("health page: leases unknown: %s", exc)
                leases = holders = -1
            seen = sorted(self.extras.workers_seen().items(), key=lambda kv: kv[1])
            return self._render(
                request,
                "health.html",
                who=who,
                report=report,
                leases=leases,
                holders=holders,
                seen=seen,
                uptime=time.time() - self.extras.started,
                title="Health",
            )

        return await self._page(request, build)

    # --- login ------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        target = _next(request.query_params.get("next", "/"))
        return self._render(request, "login.html", next=target, error="", title="Log in")

    async def login(self, request: Request) -> Response:
        target = "/"
        try:
            same_origin(request)  # no login CSRF: another site cannot log a visitor in as its key
            form = dict(await _form(request))
            target = _next(form.get("next", "/"))
            response = RedirectResponse(target, status_code=303)
            if self.sessions.needed:
                await self.sessions.log_in(form.get("key", ""), response)
            return response
        except (Unauthenticated, PermissionDenied) as exc:
            if isinstance(exc, CrossSite):
                return self._error_page(request, exc)
            status = 401 if isinstance(exc, Unauthenticated) else 403
            message = "That key is not known, or was revoked." if status == 401 else str(exc)
            return self._render(request, "login.html", status, next=target, error=message, title="Log in")
        except DomainError as exc:
            return self._error_page(request, exc)

    async def logout(self, request: Request) -> Response:
        try:
            same_origin(request)
        except DomainError as exc:
            return self._error_page(request, exc)
        response = RedirectResponse("/login", status_code=303)
        self.sessions.log_out(response)
        return response

    async def static_file(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        body = self.static.get(name)
        if body is None:
            return _json_error(404, "NOT_FOUND", f"no such file: {name[:100]}")
        current = request.path_params["digest"] == self.static_prefix.rsplit("/", 1)[1]
        media = _MEDIA[name[name.rindex(".") :]]
        # The URL names the files' digest: a new version is a new URL, so this one never changes.
        cache = "public, max-age=31536000, immutable" if current else "no-cache"
        return Response(
            body, media_type=media, headers={"cache-control": cache, "x-content-type-options": "nosniff"}
        )


@dataclass
class _JobsView:
    """The jobs page's view as the URL says it: filters, order, page; every link keeps them."""

    params: list[tuple[str, str]]
    request: job_service_pb2.ListJobsRequest
    order_by: str
    page_size: int
    token: str
    backward: bool
    violations: list[FieldViolation]

    @classmethod
    def read(cls, params: list[tuple[str, str]]) -> _JobsView:
        violations: list[FieldViolation] = []
        request = job_service_pb2.ListJobsRequest()
        try:
            filter_request(params, request)
        except InvalidArgument as exc:
            violations = list(exc.violations)
        q = dict(params)
        c = Checker()
        order_by = c.order_by(q.get("order_by", ""))
        size_text = q.get("page_size", "")
        page_size = (
            int(size_text) if size_text.isdigit() and int(size_text) in PAGE_SIZES else DEFAULT_PAGE_SIZE
        )
        backward = bool(q.get("before"))
        token = q.get("before", "") if backward else q.get("page_token", "")
        try:
            c.done()
        except InvalidArgument as exc:
            violations += exc.violations
            order_by = DEFAULT_ORDER
        keep = [(k, v) for k, v in params if k not in ("page_token", "before") and v.strip()]
        return cls(
            keep,
            request,
            order_by if order_by in ORDERS else DEFAULT_ORDER,
            page_size,
            token,
            backward,
            violations,
        )

    def filter(self) -> Any:
        if self.violations:
            raise InvalidArgument(self.violations)
        c = Checker()
        f = job_filter(self.request, c)
        c.done()
        return f

    @property
    def filtered(self) -> bool:
        return any(k not in ("order_by", "page_size") for k, _ in self.params)

    def has(self, name: str, value: str) -> bool:
        return (name, value) in self.params

    def value(self, name: str) -> str:
        return next((v for k, v in self.params if k == name), "")

    @property
    def states(self) -> set[JobState]:
        return {s for k, v in self.params if k == "state" and (s := job_state(v)) is not None}

    def url(self, **changes: str) -> str:
        """This view's URL with some parameters changed (empty: removed)."""
        kept = [(k, v) for k, v in self.params if k not in changes]
        kept += [(k, v) for k, v in changes.items() if v]
        return "/?" + urlencode(kept) if kept else "/"

    @property
    def feed_query(self) -> str:
        """The /v1/events filters of this view, bar the states: a job that leaves the states shown
        still comes, so its row can say so instead of going stale."""
        keep = [
            (k, v) for k, v in self.params if k in ("kind", "label", "search", "min_priority", "max_priority")
        ]
        return urlencode(keep)

    @property
    def query(self) -> str:
        """The filters and order of this view as a query string, without the page (what a bulk
        operation by filter is handed)."""
        return urlencode(self.params)

    @property
    def here(self) -> str:
        extra = (
            [("before", self.token)] if self.backward else [("page_token", self.token)] if self.token else []
        )
        every = self.params + extra
        return "/?" + urlencode(every) if every else "/"


async def _form(request: Request) -> list[tuple[str, str]]:
    """A form's fields (application/x-www-form-urlencoded, what the pages' forms send)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidArgument([FieldViolation("form", f"is larger than {_MAX_FORM} bytes")])
    if body and kind != "application/x-www-form-urlencoded":
        raise InvalidArgument([FieldViolation("form", "must be application/x-www-form-urlencoded")])
    return parse(body.decode("utf-8", "replace"))


# The dashboard's bulk actions by filter: the form's action -> (the verb, what it does to each job).
_BULK_ACTIONS = {
    "cancel": ("Cancel", "cancelled (those that have not ended)"),
    "retry": ("Retry", "run again (those FAILED or CANCELLED)"),
    "purge": ("Delete", "deleted (those that have ended; this cannot be undone)"),
}
_BULK_VERBS = {BulkAction.CANCEL: "Cancel", BulkAction.RETRY: "Retry", BulkAction.PURGE: "Delete"}


def _operation_name(request: Request) -> str:
    """The ``bulk-<id>`` of a /operations/ path."""
    name = str(request.path_params["name"])
    c = Checker()
    c.text(name, "name", MAX_ID, required=True)
    c.check(name.startswith(NAME_PREFIX), "name", "must be bulk-<id>")
    c.done()
    return name


def _job_id(request: Request) -> str:
    job_id = str(request.path_params["job_id"])
    c = Checker()
    c.text(job_id, "job_id", MAX_ID, required=True)
    c.done()
    return job_id


def _next(target: str) -> str:
    """Where to go after logging in: a path on this server only (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _hours(text: str) -> int:
    return int(text) if text.isdigit() and 1 <= int(text) <= 48 else 3


def _json_error(status: int, code: str, message: str) -> Response:
    return error_response(status, code, code, message)


def _version() -> str:
    try:
        return importlib.metadata.version("jobpulse-server")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
