"""jobpulse.v1.JobService: checks requests, calls the job, watch, feed and webhook services with
the caller, and builds the responses (GetJob, ListJobs and BatchGetJobs from kept encodings)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from google.longrunning import operations_proto_pb2
from google.protobuf import json_format

from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)
from jobpulse_server.api.encoded_jobs import EncodedJobs, message_fields
from jobpulse_server.api.interceptors import caller
from jobpulse_server.api.messages import (
    DEFAULT_PAGE_CHUNKS,
    DEFAULT_PAGE_JOBS,
    DEFAULT_PAGE_KINDS,
    MAX_ERROR_REASONS,
    MAX_PAGE_CHUNKS,
    MAX_PAGE_JOBS,
    MAX_PAGE_KINDS,
    Ctx,
    full_view,
)
from jobpulse_server.domain.bulk import BulkAction
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_KIND,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    MAX_AFTER,
    MAX_RUNNING_CHUNKS,
    ChunkState,
    JobHead,
    JobState,
)
from jobpulse_server.domain.reports import StatsRow
from jobpulse_server.domain.retention import MAX_TTL_US, Retention
from jobpulse_server.domain.webhooks import Delivery
from jobpulse_server.services import auth
from jobpulse_server.services.bulk import BulkService
from jobpulse_server.services.events_tokens import DEFAULT_TTL_US, MIN_TTL_US, EventsTokens
from jobpulse_server.services.events_tokens import MAX_TTL_US as MAX_EVENTS_TTL_US
from jobpulse_server.services.export import export_jobs
from jobpulse_server.services.jobs import JobPage, JobService, Known, NewJob
from jobpulse_server.services.kinds import KindService
from jobpulse_server.services.watch import FeedService, WatchService, horizon_cursor
from jobpulse_server.services.webhooks import WebhookService
from jobpulse_server.wire.bulk import bulk_operation_pb
from jobpulse_server.wire.convert import (
    KIND_NAME_PREFIX,
    attempt_pb,
    chunk_pb,
    duration,
    duration_from_us,
    failure_group_pb,
    job_pb,
    kind_pb,
    timestamp,
)
from jobpulse_server.wire.filters import job_filter, time_range
from jobpulse_server.wire.validation import (
    MAX_BATCH,
    MAX_DISPLAY_NAME,
    MAX_ID,
    Checker,
    timestamp_us,
)
from jobpulse_server.wire.watch import feed_encoder

T = TypeVar("T")
R = TypeVar("R")

# Responses are parsed whole from kept job bytes (one parse, not a message merged per job).
_GET_JOB_FIELD = job_service_pb2.GetJobResponse.DESCRIPTOR.fields_by_name["job"].number
_LIST_JOBS_FIELD = job_service_pb2.ListJobsResponse.DESCRIPTOR.fields_by_name["jobs"].number
_BATCH_JOBS_FIELD = job_service_pb2.BatchGetJobsResponse.DESCRIPTOR.fields_by_name["jobs"].number
_JOB_STATES = [int(s) for s in JobState]
_CHUNK_STATES = [int(s) for s in ChunkState]
# Unknown update_mask paths named in the error, each cut to 80 characters: an error echoes no request
# whole (its details ride in the response's trailers, which gRPC bounds at 16 KiB).
MAX_NAMED_PATHS = 5
_VIEWS = [job_pb2.JOB_VIEW_UNSPECIFIED, job_pb2.JOB_VIEW_BASIC, job_pb2.JOB_VIEW_FULL]


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """jobpulse.v1.JobService."""

    ROLES = auth.CLIENT_ROLES
    # The methods only an admin key may call (a kind's controls hold for every owner's jobs).
    ADMIN_METHODS = ("UpdateKind",)
    # ListKinds: any key, a worker's too (it says why a kind gets no work: paused, or at its cap).
    KINDS_ROLES = auth.CLIENT_ROLES | auth.WORKER_ROLES

    def __init__(
        self,
        jobs: JobService,
        watches: WatchService,
        feeds: FeedService,
        webhooks: WebhookService,
        clock: Clock,
        encoded: EncodedJobs,
        tokens: EventsTokens,
        kinds: KindService,
        bulk: BulkService,
        retention: Retention | None = None,
    ) -> None:
        self.jobs = jobs
        self.kinds = kinds
        self.bulk = bulk
        self.tokens = tokens
        # The server's default ttls, for Job.expire_time (None: never shown).
        self.retention = retention
        self.webhooks = webhooks
        self.watches = watches
        self.feeds = feeds
        self.clock = clock
        self.encoded = encoded
        self.feed_encoder = feed_encoder(clock, retention)

    def _job(self, page: JobPage) -> job_pb2.Job:
        return job_pb(
            page.job, self.clock(), page.chunks, page.chunks_next_page_token, retention=self.retention
        )

    async def _reusing(
        self, full: bool, fetch: Callable[[Known], Awaitable[T]], build: Callable[[T], R]
    ) -> R:
        """Reads with the encoded-job cache's help; should an entry it relied on be evicted in the
        meantime (a read that suspended while many others filled the cache), reads again in full."""
        found = await fetch(functools.partial(self.encoded.held_revision, full=full))
        try:
            return build(found)
        except LookupError:
            return build(await fetch(None))

    async def CreateJob(
        self, request: job_service_pb2.CreateJobRequest, context: Ctx
    ) -> job_service_pb2.CreateJobResponse:
        page = await self.jobs.create_job(caller(), new_job(request, self.clock()))
        return job_service_pb2.CreateJobResponse(job=self._job(page))

    async def GetJob(
        self, request: job_service_pb2.GetJobRequest, context: Ctx
    ) -> job_service_pb2.GetJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.enums([request.view], _VIEWS, "view")
        c.done()
        full = full_view(request.view, True)
        who = caller()

        def build(page: JobPage) -> job_service_pb2.GetJobResponse:
            return job_service_pb2.GetJobResponse.FromString(
                message_fields(_GET_JOB_FIELD, [self.encoded.job_bytes(page, full, self.clock())])
            )

        return await self._reusing(
            full, lambda known: self.jobs.get_job(who, request.job_id, full=full, known=known), build
        )

    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: Ctx
    ) -> job_service_pb2.ListJobsResponse:
        c = Checker()
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.enums([request.view], _VIEWS, "view")
        order_by = c.order_by(request.order_by)
        f = job_filter(request, c)
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_JOBS, MAX_PAGE_JOBS)
        full = full_view(request.view, False)
        who = caller()

        def build(
            found: tuple[Sequence[JobPage | JobHead], str, int, int],
        ) -> job_service_pb2.ListJobsResponse:
            pages, token, total, horizon = found
            now = self.clock()
            encoded = self.encoded
            out = job_service_pb2.ListJobsResponse.FromString(
                message_fields(
                    _LIST_JOBS_FIELD,
                    [
                        encoded.kept_bytes(p, now)
                        if isinstance(p, JobHead)
                        else encoded.job_bytes(p, full, now)
                        for p in pages
                    ],
                )
            )
            out.next_page_token = token
            out.total_size = total
            out.watch_cursor = horizon_cursor(horizon)
            return out

        if full:
            return await self._reusing(
                full,
                lambda known: self.jobs.list_jobs(
                    who,
                    f,
                    order_by=order_by,
                    page_size=page_size,
                    page_token=request.page_token,
                    full=full,
                    known=known,
                ),
                build,
            )
        # BASIC: the page's heads first, and whole only the jobs whose encodings are not kept.
        return await self._reusing(
            full,
            lambda known: self.jobs.list_kept_jobs(
                who, f, order_by=order_by, page_size=page_size, page_token=request.page_token, known=known
            ),
            build,
        )

    async def ExportJobs(
        self, request: job_service_pb2.ExportJobsRequest, context: Ctx
    ) -> AsyncIterator[job_service_pb2.ExportJobsResponse]:
        # Checked exactly as ListJobs, so a bad filter names the same field.
        c = Checker()
        order_by = c.order_by(request.order_by)
        f = job_filter(request, c)
        c.done()
        # An async generator: grpc asks for the next batch only once the previous one is sent, so a
        # slow reader holds the export back and a cancelled one ends it (the generator is closed).
        async for pages in export_jobs(self.jobs, caller(), f, order_by):
            now = self.clock()
            # BASIC jobs built as ListJobs builds them, but not kept in the encoded-jobs cache: an
            # export would fill it with jobs nobody asks for again and evict those that are.
            yield job_service_pb2.ExportJobsResponse(
                jobs=[job_pb(p.job, now, retention=self.retention) for p in pages]
            )

    async def ListJobChunks(
        self, request: job_service_pb2.ListJobChunksRequest, context: Ctx
    ) -> job_service_pb2.ListJobChunksResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.enums(request.states, _CHUNK_STATES, "states")
        c.text(request.kind, "kind", MAX_ID)
        reasons = list(request.error_reasons)
        c.check(
            len(reasons) <= MAX_ERROR_REASONS,
            "error_reasons",
            f"must name at most {MAX_ERROR_REASONS} reasons (got {len(reasons)})",
        )
        for i, reason in enumerate(reasons[:MAX_ERROR_REASONS]):
            c.text(reason, f"error_reasons[{i}]", MAX_ID, required=True)
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_CHUNKS, MAX_PAGE_CHUNKS)
        found, token, total = await self.jobs.list_chunks(
            caller(),
            request.job_id,
            [ChunkState(s) for s in request.states],
            page_size,
            request.page_token,
            request.kind,
            reasons,
        )
        return job_service_pb2.ListJobChunksResponse(
            chunks=[chunk_pb(ch) for ch in found], next_page_token=token, total_size=total
        )

    async def ListChunkAttempts(
        self, request: job_service_pb2.ListChunkAttemptsRequest, context: Ctx
    ) -> job_service_pb2.ListChunkAttemptsResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.text(request.chunk_id, "chunk_id", MAX_ID)
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_CHUNKS, MAX_PAGE_CHUNKS)
        found, token = await self.jobs.list_attempts(
            caller(), request.job_id, request.chunk_id, page_size, request.page_token
        )
        return job_service_pb2.ListChunkAttemptsResponse(
            attempts=[attempt_pb(a) for a in found], next_page_token=token
        )

    async def SummarizeFailures(
        self, request: job_service_pb2.SummarizeFailuresRequest, context: Ctx
    ) -> job_service_pb2.SummarizeFailuresResponse:
        c = Checker()
        c.text(request.kind, "kind", MAX_ID)
        f = JobFilter(kind=request.kind)
        time_range(request, c, f)
        c.done()
        groups = await self.jobs.summarize_failures(caller(), request.kind, f.created_after, f.created_before)
        return job_service_pb2.SummarizeFailuresResponse(groups=[failure_group_pb(g) for g in groups])

    async def BatchGetJobs(
        self, request: job_service_pb2.BatchGetJobsRequest, context: Ctx
    ) -> job_service_pb2.BatchGetJobsResponse:
        c = Checker()
        c.check(
            len(request.job_ids) <= MAX_BATCH,
            "job_ids",
            f"at most {MAX_BATCH} ids (got {len(request.job_ids)})",
        )
        for i, job_id in enumerate(request.job_ids):
            c.text(job_id, f"job_ids[{i}]", MAX_ID, required=True)
        c.enums([request.view], _VIEWS, "view")
        c.done()
        full = full_view(request.view, True)
        who = caller()

        def build(pages: list[JobPage]) -> job_service_pb2.BatchGetJobsResponse:
            now = self.clock()
            return job_service_pb2.BatchGetJobsResponse.FromString(
                message_fields(_BATCH_JOBS_FIELD, [self.encoded.job_bytes(p, full, now) for p in pages])
            )

        return await self._reusing(
            full,
            lambda known: self.jobs.batch_get(who, list(request.job_ids), full=full, known=known),
            build,
        )

    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: Ctx
    ) -> job_service_pb2.CancelJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.text(request.reason, "reason", 1024)
        c.done()
        page = await self.jobs.cancel_job(caller(), request.job_id, request.reason)
        return job_service_pb2.CancelJobResponse(job=self._job(page))

    async def PauseJob(
        self, request: job_service_pb2.PauseJobRequest, context: Ctx
    ) -> job_service_pb2.PauseJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        page = await self.jobs.pause_job(caller(), request.job_id, paused=True)
        return job_service_pb2.PauseJobResponse(job=self._job(page))

    async def ResumeJob(
        self, request: job_service_pb2.ResumeJobRequest, context: Ctx
    ) -> job_service_pb2.ResumeJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        page = await self.jobs.pause_job(caller(), request.job_id, paused=False)
        return job_service_pb2.ResumeJobResponse(job=self._job(page))

    async def RetryJob(
        self, request: job_service_pb2.RetryJobRequest, context: Ctx
    ) -> job_service_pb2.RetryJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        page = await self.jobs.retry_job(caller(), request.job_id)
        return job_service_pb2.RetryJobResponse(job=self._job(page))

    async def RetryChunk(
        self, request: job_service_pb2.RetryChunkRequest, context: Ctx
    ) -> job_service_pb2.RetryChunkResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.text(request.chunk_id, "chunk_id", MAX_ID, required=True)
        c.done()
        page = await self.jobs.retry_chunk(caller(), request.job_id, request.chunk_id)
        return job_service_pb2.RetryChunkResponse(job=self._job(page))

    async def CancelJobs(
        self, request: job_service_pb2.CancelJobsRequest, context: Ctx
    ) -> operations_proto_pb2.Operation:
        return await self._bulk(BulkAction.CANCEL, request, context, reason=request.reason)

    async def RetryJobs(
        self, request: job_service_pb2.RetryJobsRequest, context: Ctx
    ) -> operations_proto_pb2.Operation:
        return await self._bulk(BulkAction.RETRY, request, context)

    async def PurgeJobs(
        self, request: job_service_pb2.PurgeJobsRequest, context: Ctx
    ) -> operations_proto_pb2.Operation:
        return await self._bulk(BulkAction.PURGE, request, context, force=request.force)

    async def _bulk(
        self,
        action: BulkAction,
        request: job_service_pb2.CancelJobsRequest
        | job_service_pb2.RetryJobsRequest
        | job_service_pb2.PurgeJobsRequest,
        context: Ctx,
        *,
        reason: str = "",
        force: bool = False,
    ) -> operations_proto_pb2.Operation:
        c = Checker()
        f = job_filter(request, c)
        c.text(reason, "reason", MAX_DISPLAY_NAME)
        c.done()
        op = await self.bulk.start(
            caller(), action, f, reason=reason, force=force, validate_only=request.validate_only
        )
        return bulk_operation_pb(op)

    async def UpdateJob(
        self, request: job_service_pb2.UpdateJobRequest, context: Ctx
    ) -> job_service_pb2.UpdateJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        paths = set(request.update_mask.paths)
        allowed = {"priority", "labels", "display_name", "max_running_chunks"}
        for p in sorted(paths - allowed)[:MAX_NAMED_PATHS]:
            c.fail(
                "update_mask",
                f"unknown path {p[:80]!r}; allowed: display_name, labels, max_running_chunks, priority",
            )
        if not paths:
            paths = {
                name
                for name, present in (
                    ("priority", request.HasField("priority")),
                    ("labels", bool(request.labels)),
                    ("display_name", bool(request.display_name)),
                    ("max_running_chunks", request.HasField("max_running_chunks")),
                )
                if present
            }
            c.check(
                bool(paths),
                "update_mask",
                "nothing to update: set priority, labels, display_name or max_running_chunks",
            )
        if "priority" in paths:
            c.check(request.HasField("priority"), "priority", "is in update_mask but not set")
            c.priority(request.priority, "priority")
        if "max_running_chunks" in paths:
            _check_max_running(request.max_running_chunks, c)
        c.labels(dict(request.labels))
        c.text(request.display_name, "display_name", MAX_DISPLAY_NAME)
        c.done()
        page = await self.jobs.update_job(
            caller(),
            request.job_id,
            priority=request.priority if "priority" in paths else None,
            labels=dict(request.labels) if "labels" in paths else None,
            display_name=request.display_name if "display_name" in paths else None,
            max_running_chunks=request.max_running_chunks if "max_running_chunks" in paths else None,
        )
        return job_service_pb2.UpdateJobResponse(job=self._job(page))

    async def DeleteJob(
        self, request: job_service_pb2.DeleteJobRequest, context: Ctx
    ) -> job_service_pb2.DeleteJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        await self.jobs.delete_job(caller(), request.job_id, request.force)
        return job_service_pb2.DeleteJobResponse()

    def WatchJob(  # type: ignore[override]  # returns the stream's coroutine, which writes with context.write
        self, request: job_service_pb2.WatchJobRequest, context: Ctx
    ) -> Awaitable[None]:
        # Not a coroutine of its own and not an async generator: the CallGuard awaits the watch directly,
        # so a stream keeps two frames (the guard's and the watch loop's) instead of four.
        _check_watch(request)
        return self.watches.watch(caller(), request.job_id, request.after_revision, context.write)

    async def ListWebhookDeliveries(
        self, request: job_service_pb2.ListWebhookDeliveriesRequest, context: Ctx
    ) -> job_service_pb2.ListWebhookDeliveriesResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        found = await self.webhooks.list_deliveries(caller(), request.job_id)
        return job_service_pb2.ListWebhookDeliveriesResponse(deliveries=[_delivery_pb(d) for d in found])

    async def RedeliverWebhook(
        self, request: job_service_pb2.RedeliverWebhookRequest, context: Ctx
    ) -> job_service_pb2.RedeliverWebhookResponse:
        c = Checker()
        c.text(request.delivery_id, "delivery_id", MAX_ID, required=True)
        c.done()
        delivery = await self.webhooks.redeliver(caller(), request.delivery_id)
        return job_service_pb2.RedeliverWebhookResponse(delivery=_delivery_pb(delivery))

    async def WatchJobs(
        self, request: job_service_pb2.WatchJobsRequest, context: Ctx
    ) -> AsyncIterator[job_service_pb2.WatchJobsResponse]:
        c = Checker()
        f = job_filter(request, c)
        c.done()
        encode = self.feed_encoder
        async for msg in self.feeds.watch(caller(), f, request.cursor):
            yield encode(msg)

    async def CreateEventsToken(
        self, request: job_service_pb2.CreateEventsTokenRequest, context: Ctx
    ) -> job_service_pb2.CreateEventsTokenResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID)
        ttl_us = DEFAULT_TTL_US
        if request.HasField("ttl"):
            d = request.ttl
            ttl_us = d.seconds * 1_000_000 + d.nanos // 1000
            c.check(
                MIN_TTL_US <= ttl_us <= MAX_EVENTS_TTL_US and d.nanos >= 0,
                "ttl",
                "must be from 1 second to 24 hours (unset: 10 minutes)",
            )
        c.done()
        who = caller()
        if request.job_id:
            await self.jobs.get_job(who, request.job_id, full=False)  # JOB_NOT_FOUND as GetJob would say
        token, expire = self.tokens.mint(who, request.job_id, ttl_us)
        return job_service_pb2.CreateEventsTokenResponse(token=token, expire_time=timestamp(expire))

    async def ListKinds(
        self, request: job_service_pb2.ListKindsRequest, context: Ctx
    ) -> job_service_pb2.ListKindsResponse:
        c = Checker()
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_KINDS, MAX_PAGE_KINDS)
        found, token = await self.kinds.list_kinds(caller(), page_size, request.page_token)
        return job_service_pb2.ListKindsResponse(kinds=[kind_pb(k) for k in found], next_page_token=token)

    async def UpdateKind(
        self, request: job_service_pb2.UpdateKindRequest, context: Ctx
    ) -> job_service_pb2.UpdateKindResponse:
        c = Checker()
        given = request.kind
        kind = _kind_named(given, c)
        paths = set(request.update_mask.paths)
        for p in sorted(paths - {"paused", "max_running_chunks"})[:MAX_NAMED_PATHS]:
            c.fail("update_mask", f"unknown path {p[:80]!r}; allowed: max_running_chunks, paused")
        if not paths:
            set_fields = (("paused", given.paused), ("max_running_chunks", given.max_running_chunks))
            paths = {name for name, value in set_fields if value}
            c.check(
                bool(paths),
                "update_mask",
                "nothing to update: set paused or max_running_chunks, and name them in update_mask to "
                "set them back (resume, no limit)",
            )
        if "max_running_chunks" in paths:
            _check_max_running(given.max_running_chunks, c, "kind.max_running_chunks")
        c.done()
        found = await self.kinds.update_kind(
            caller(),
            kind,
            paused=given.paused if "paused" in paths else None,
            max_running_chunks=given.max_running_chunks if "max_running_chunks" in paths else None,
        )
        return job_service_pb2.UpdateKindResponse(kind=kind_pb(found))

    async def GetJobStats(
        self, request: job_service_pb2.GetJobStatsRequest, context: Ctx
    ) -> job_service_pb2.GetJobStatsResponse:
        c = Checker()
        f = JobFilter(kind=request.kind)
        time_range(request, c, f)
        c.done()
        overall, kinds = await self.jobs.stats(caller(), f)
        return job_service_pb2.GetJobStatsResponse(
            stats=_stats_pb(overall), kinds=[_stats_pb(k) for k in kinds]
        )


def new_job(request: job_service_pb2.CreateJobRequest, now: int) -> NewJob:
    """A CreateJob request, checked (InvalidArgument naming every bad field), as the services take it;
    ScheduleService checks its templates with it too."""
    c = Checker()
    c.text(request.display_name, "display_name", MAX_DISPLAY_NAME)
    c.text(request.kind, "kind", MAX_ID)
    c.text(request.request_id, "request_id", MAX_ID)
    c.text(request.unique_key, "unique_key", MAX_ID)
    c.check(
        "\x00" in request.unique_key or request.unique_key.isprintable(),  # NUL: said above
        "unique_key",
        "must not contain control characters",
    )
    c.text(request.webhook_url, "webhook_url", 2048)
    c.check(request.total_items > 0, "total_items", f"must be at least 1 (got {request.total_items})")
    c.check(request.chunk_size >= 0, "chunk_size", f"must be 0 (default {DEFAULT_CHUNK_SIZE}) or more")
    c.check(
        0 <= request.max_attempts <= 100,
        "max_attempts",
        f"must be between 0 (default {DEFAULT_MAX_ATTEMPTS}) and 100 (got {request.max_attempts})",
    )
    if request.HasField("priority"):
        c.priority(request.priority, "priority")
    c.labels(dict(request.labels))
    metadata: dict[str, Any] = {}
    if request.HasField("metadata"):
        try:
            metadata = json_format.MessageToDict(request.metadata)
        except ValueError:  # NaN or infinity: not representable in JSON
            c.fail("metadata", "numbers must be finite (no NaN or infinity)")
    c.metadata(metadata)
    ttl = _ttl_us(request, c)
    schedule_time = _schedule_us(request, c, now)
    _check_max_running(request.max_running_chunks, c)
    after = _check_after(request, c)
    c.check(
        0 <= request.max_failed_chunks <= MAX_RUNNING_CHUNKS,
        "max_failed_chunks",
        f"must be between 0 (no limit) and {MAX_RUNNING_CHUNKS} (got {request.max_failed_chunks})",
    )
    attempt_timeout = _limit_us(request, "attempt_timeout", c)
    timeout = _limit_us(request, "timeout", c)
    c.done()
    return NewJob(
        kind=request.kind or DEFAULT_KIND,
        total_items=request.total_items,
        chunk_size=request.chunk_size or DEFAULT_CHUNK_SIZE,
        max_attempts=request.max_attempts or DEFAULT_MAX_ATTEMPTS,
        priority=request.priority if request.HasField("priority") else DEFAULT_PRIORITY,
        display_name=request.display_name,
        labels=dict(request.labels),
        metadata=metadata,
        request_id=request.request_id,
        webhook_url=request.webhook_url,
        webhook_progress=request.webhook_progress,
        ttl=ttl,
        schedule_time=schedule_time,
        max_running_chunks=request.max_running_chunks,
        after=after,
        after_mode=request.after_mode,
        finalize_kind=request.finalize_kind,
        max_failed_chunks=request.max_failed_chunks,
        attempt_timeout=attempt_timeout,
        timeout=timeout,
        unique_key=request.unique_key,
    )


def _ttl_us(request: job_service_pb2.CreateJobRequest, c: Checker) -> int | None:
    """CreateJobRequest.ttl in microseconds: None when unset (the server's default applies), 0 to
    keep the job for ever; a positive ttl below a microsecond counts as one."""
    if not request.HasField("ttl"):
        return None
    d = request.ttl
    if d.seconds < 0 or d.nanos < 0:
        c.fail("ttl", "must not be negative (0 keeps the job for ever; unset takes the server's default)")
        return None
    if d.nanos >= 1_000_000_000:
        c.fail("ttl", "is not a valid duration (nanos must be below one second)")
        return None
    us = d.seconds * 1_000_000 + -(-d.nanos // 1000)
    if us > MAX_TTL_US:
        c.fail("ttl", f"must be at most 3650 days (got {d.seconds}s)")
        return None
    return us


def _limit_us(
    request: job_service_pb2.CreateJobRequest, field: Literal["attempt_timeout", "timeout"], c: Checker
) -> int:
    """CreateJobRequest.attempt_timeout or .timeout in microseconds: 0 when unset or zero (no limit),
    else at least a second (a sweep's own granularity) and at most 3650 days."""
    if not request.HasField(field):
        return 0
    d = getattr(request, field)
    if d.seconds < 0 or d.nanos < 0 or d.nanos >= 1_000_000_000:
        c.fail(field, "must be a positive duration (unset or 0: no limit)")
        return 0
    us = d.seconds * 1_000_000 + -(-d.nanos // 1000)
    if us and us < 1_000_000:
        c.fail(field, f"must be at least 1 second (got {us / 1e6:g}s; unset or 0: no limit)")
    elif us > MAX_TTL_US:
        c.fail(field, f"must be at most 3650 days (got {d.seconds}s)")
    return us


def _check_max_running(value: int, c: Checker, field: str = "max_running_chunks") -> None:
    c.check(
        0 <= value <= MAX_RUNNING_CHUNKS,
        field,
        f"must be between 0 (no limit) and {MAX_RUNNING_CHUNKS} (got {value})",
    )


def _kind_named(given: job_service_pb2.Kind, c: Checker) -> str:
    """The kind an UpdateKindRequest names: by ``name`` ("kinds/{kind}") or ``kind``; both must agree."""
    by_name = ""
    if given.name:
        if not given.name.startswith(KIND_NAME_PREFIX) or given.name == KIND_NAME_PREFIX:
            c.fail("kind.name", f"must be {KIND_NAME_PREFIX}{{kind}} (got {given.name[:MAX_ID]!r})")
            return ""
        by_name = given.name[len(KIND_NAME_PREFIX) :]
        c.text(by_name, "kind.name", MAX_ID)
    if given.kind:
        c.text(given.kind, "kind.kind", MAX_ID)
        if by_name and by_name != given.kind:
            c.fail("kind.kind", f"names another kind than kind.name ({given.kind[:MAX_ID]!r})")
    if not by_name and not given.kind:
        c.fail("kind.name", f"is required: {KIND_NAME_PREFIX}{{kind}} (or set kind.kind)")
    return by_name or given.kind


_AFTER_MODES = [
    job_pb2.DEPENDENCY_MODE_UNSPECIFIED,
    job_pb2.DEPENDENCY_MODE_ALL,
    job_pb2.DEPENDENCY_MODE_PER_CHUNK,
]


def _check_after(request: job_service_pb2.CreateJobRequest, c: Checker) -> list[str]:
    """CreateJobRequest.after (at most MAX_AFTER job ids, each once), after_mode and finalize_kind, as
    far as their shape goes; the jobs themselves are looked at by the service."""
    after = list(request.after)
    c.check(len(after) <= MAX_AFTER, "after", f"must name at most {MAX_AFTER} jobs (got {len(after)})")
    for i, job_id in enumerate(after[:MAX_AFTER]):
        c.text(job_id, f"after[{i}]", MAX_ID, required=True)
    c.check(len(set(after)) == len(after), "after", "must not name a job twice")
    c.enums([request.after_mode], _AFTER_MODES, "after_mode")
    if request.after_mode == job_pb2.DEPENDENCY_MODE_PER_CHUNK:
        c.check(len(after) == 1, "after_mode", "DEPENDENCY_MODE_PER_CHUNK needs exactly one job in after")
    c.text(request.finalize_kind, "finalize_kind", MAX_ID)
    return after


def _schedule_us(request: job_service_pb2.CreateJobRequest, c: Checker, now: int) -> int | None:
    """CreateJobRequest.schedule_time in microseconds since the epoch; None when unset."""
    if not request.HasField("schedule_time"):
        return None
    at = timestamp_us(request.schedule_time, "schedule_time", c)
    if at > now + MAX_TTL_US:
        c.fail("schedule_time", "must be at most 3650 days ahead")
    return at


def _check_watch(request: job_service_pb2.WatchJobRequest) -> None:
    # A function of its own so that the checker is not kept alive by the stream's frame.
    c = Checker()
    c.text(request.job_id, "job_id", MAX_ID, required=True)
    c.check(request.after_revision >= 0, "after_revision", "must not be negative")
    c.done()


def _delivery_pb(d: Delivery) -> job_service_pb2.WebhookDelivery:
    return job_service_pb2.WebhookDelivery(
        id=d.id,
        job_id=d.job_id,
        event_type=d.event_type,
        url=d.url,
        state=d.state,  # type: ignore[arg-type]
        attempts=d.attempts,
        last_status=d.last_status or 0,
        last_error=d.last_error,
        create_time=timestamp(d.create_time),
        delivered_time=timestamp(d.delivered_time),
        next_attempt_time=timestamp(d.next_attempt_time) if d.state == 1 else None,
    )


def _stats_pb(row: StatsRow) -> job_service_pb2.JobStats:
    finished = sum(row.by_state.get(s, 0) for s in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED))
    msg = job_service_pb2.JobStats(
        kind=row.kind,
        total_jobs=row.total,
        state_counts=[
            job_service_pb2.JobStateCount(state=int(s), count=row.by_state.get(s, 0))  # type: ignore[arg-type]
            for s in JobState
        ],
        success_rate=(row.by_state.get(JobState.COMPLETED, 0) / finished) if finished else 0.0,
        items_done=row.items_done,
        items_per_second=row.items_per_second,
        processing_time_total=duration_from_us(row.processing_us),
        processing_time_avg=duration_from_us(
            row.processing_us // row.processed_jobs if row.processed_jobs else 0
        ),
        processed_jobs=row.processed_jobs,
    )
    for name in ("p50", "p95", "p99", "max"):
        value = row.durations.get(name)
        if value is not None:
            getattr(msg, f"duration_{name}").CopyFrom(duration(value / 1e6))
    return msg
