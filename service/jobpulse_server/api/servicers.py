"""gRPC servicers: parse and check requests, call the services, build responses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import json_format

from jobpulse.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from jobpulse_server.api.convert import chunk_pb, duration, job_pb, timestamp
from jobpulse_server.api.encoded_jobs import EncodedJobs, message_fields
from jobpulse_server.api.error_mapping import rpc
from jobpulse_server.api.validation import (
    MAX_BATCH,
    MAX_DISPLAY_NAME,
    MAX_ID,
    Checker,
    duration_us,
    timestamp_us,
)
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.model import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Artifact,
    ChunkState,
    JobState,
)
from jobpulse_server.domain.principal import Principal
from jobpulse_server.observability import Observer
from jobpulse_server.services import auth, webhooks
from jobpulse_server.services.jobs import JobPage, JobService, Known, NewJob
from jobpulse_server.services.watch import FeedService, WatchMessage, WatchService, horizon_cursor
from jobpulse_server.services.workers import Claim, ClaimAsk, Completion, WorkerService
from jobpulse_server.store import repository as repo

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
T = TypeVar("T")
R = TypeVar("R")

# Responses are parsed whole from kept job bytes (one parse, not a message merged per job).
_GET_JOB_FIELD = job_service_pb2.GetJobResponse.DESCRIPTOR.fields_by_name["job"].number
_LIST_JOBS_FIELD = job_service_pb2.ListJobsResponse.DESCRIPTOR.fields_by_name["jobs"].number
_BATCH_JOBS_FIELD = job_service_pb2.BatchGetJobsResponse.DESCRIPTOR.fields_by_name["jobs"].number
_JOB_STATES = [int(s) for s in JobState]
_CHUNK_STATES = [int(s) for s in ChunkState]
_VIEWS = [job_pb2.JOB_VIEW_UNSPECIFIED, job_pb2.JOB_VIEW_BASIC, job_pb2.JOB_VIEW_FULL]
MAX_PAGE_JOBS = 100
DEFAULT_PAGE_JOBS = 20
MAX_PAGE_CHUNKS = 1000
DEFAULT_PAGE_CHUNKS = 100
MAX_CLAIM = 100
MAX_COMPLETIONS = 100
DEFAULT_LEASE_US = 60_000_000


def who(context: Ctx) -> Principal:
    """The caller, as authenticated by the ``rpc`` decorator."""
    return auth.current()


def _full(view: int, default_full: bool) -> bool:
    return default_full if view == job_pb2.JOB_VIEW_UNSPECIFIED else view == job_pb2.JOB_VIEW_FULL


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    """jobpulse.v1.JobService."""

    ROLES = auth.CLIENT_ROLES

    def __init__(
        self,
        authenticator: auth.Authenticator,
        jobs: JobService,
        watches: WatchService,
        feeds: FeedService,
        clock: Clock,
        observer: Observer,
        encoded: EncodedJobs,
    ) -> None:
        self.auth = authenticator
        self.observer = observer
        self.jobs = jobs
        self.watches = watches
        self.feeds = feeds
        self.clock = clock
        self.encoded = encoded

    def _job(self, page: JobPage) -> job_pb2.Job:
        return job_pb(page.job, self.clock(), page.chunks, page.chunks_next_page_token)

    async def _reusing(
        self, full: bool, fetch: Callable[[Known], Awaitable[T]], build: Callable[[T], R]
    ) -> R:
        """Reads with the encoded-job cache's help; should an entry it relied on be evicted in the
        meantime (a read that suspended while many others filled the cache), reads again in full."""
        found = await fetch(self.encoded.held_revision if full else None)
        try:
            return build(found)
        except LookupError:
            return build(await fetch(None))

    @rpc
    async def CreateJob(
        self, request: job_service_pb2.CreateJobRequest, context: Ctx
    ) -> job_service_pb2.CreateJobResponse:
        c = Checker()
        c.text(request.display_name, "display_name", MAX_DISPLAY_NAME)
        c.text(request.kind, "kind", MAX_ID)
        c.text(request.request_id, "request_id", MAX_ID)
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
        c.done()
        page = await self.jobs.create_job(
            who(context),
            NewJob(
                kind=request.kind or "default",
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
            ),
        )
        return job_service_pb2.CreateJobResponse(job=self._job(page))

    @rpc
    async def GetJob(
        self, request: job_service_pb2.GetJobRequest, context: Ctx
    ) -> job_service_pb2.GetJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.enums([request.view], _VIEWS, "view")
        c.done()
        full = _full(request.view, True)
        caller = who(context)

        def build(page: JobPage) -> job_service_pb2.GetJobResponse:
            return job_service_pb2.GetJobResponse.FromString(
                message_fields(_GET_JOB_FIELD, [self.encoded.job_bytes(page, full, self.clock())])
            )

        return await self._reusing(
            full, lambda known: self.jobs.get_job(caller, request.job_id, full=full, known=known), build
        )

    @rpc
    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: Ctx
    ) -> job_service_pb2.ListJobsResponse:
        c = Checker()
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.enums([request.view], _VIEWS, "view")
        order_by = " ".join(request.order_by.lower().split()) or "create_time desc"
        if order_by == "create_time asc":
            order_by = "create_time"
        c.check(
            order_by in repo.ORDERS, "order_by", f"must be one of: {', '.join(repr(o) for o in repo.ORDERS)}"
        )
        f = _job_filter(request, c)
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_JOBS, MAX_PAGE_JOBS)
        full = _full(request.view, False)
        caller = who(context)

        def build(found: tuple[list[JobPage], str, int, int]) -> job_service_pb2.ListJobsResponse:
            pages, token, total, horizon = found
            now = self.clock()
            out = job_service_pb2.ListJobsResponse.FromString(
                message_fields(_LIST_JOBS_FIELD, [self.encoded.job_bytes(p, full, now) for p in pages])
            )
            out.next_page_token = token
            out.total_size = total
            out.watch_cursor = horizon_cursor(horizon)
            return out

        return await self._reusing(
            full,
            lambda known: self.jobs.list_jobs(
                caller,
                f,
                order_by=order_by,
                page_size=page_size,
                page_token=request.page_token,
                full=full,
                known=known,
            ),
            build,
        )

    @rpc
    async def ListJobChunks(
        self, request: job_service_pb2.ListJobChunksRequest, context: Ctx
    ) -> job_service_pb2.ListJobChunksResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        c.enums(request.states, _CHUNK_STATES, "states")
        c.done()
        page_size = min(request.page_size or DEFAULT_PAGE_CHUNKS, MAX_PAGE_CHUNKS)
        found, token, total = await self.jobs.list_chunks(
            who(context),
            request.job_id,
            [ChunkState(s) for s in request.states],
            page_size,
            request.page_token,
        )
        return job_service_pb2.ListJobChunksResponse(
            chunks=[chunk_pb(ch) for ch in found], next_page_token=token, total_size=total
        )

    @rpc
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
        full = _full(request.view, True)
        caller = who(context)

        def build(pages: list[JobPage]) -> job_service_pb2.BatchGetJobsResponse:
            now = self.clock()
            return job_service_pb2.BatchGetJobsResponse.FromString(
                message_fields(_BATCH_JOBS_FIELD, [self.encoded.job_bytes(p, full, now) for p in pages])
            )

        return await self._reusing(
            full,
            lambda known: self.jobs.batch_get(caller, list(request.job_ids), full=full, known=known),
            build,
        )

    @rpc
    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: Ctx
    ) -> job_service_pb2.CancelJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.text(request.reason, "reason", 1024)
        c.done()
        page = await self.jobs.cancel_job(who(context), request.job_id, request.reason)
        return job_service_pb2.CancelJobResponse(job=self._job(page))

    @rpc
    async def RetryJob(
        self, request: job_service_pb2.RetryJobRequest, context: Ctx
    ) -> job_service_pb2.RetryJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        page = await self.jobs.retry_job(who(context), request.job_id)
        return job_service_pb2.RetryJobResponse(job=self._job(page))

    @rpc
    async def UpdateJob(
        self, request: job_service_pb2.UpdateJobRequest, context: Ctx
    ) -> job_service_pb2.UpdateJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        paths = set(request.update_mask.paths)
        allowed = {"priority", "labels", "display_name"}
        for p in paths - allowed:
            c.fail("update_mask", f"unknown path {p!r}; allowed: display_name, labels, priority")
        if not paths:
            paths = {
                name
                for name, present in (
                    ("priority", request.HasField("priority")),
                    ("labels", bool(request.labels)),
                    ("display_name", bool(request.display_name)),
                )
                if present
            }
            c.check(bool(paths), "update_mask", "nothing to update: set priority, labels or display_name")
        if "priority" in paths:
            c.check(request.HasField("priority"), "priority", "is in update_mask but not set")
            c.priority(request.priority, "priority")
        c.labels(dict(request.labels))
        c.text(request.display_name, "display_name", MAX_DISPLAY_NAME)
        c.done()
        page = await self.jobs.update_job(
            who(context),
            request.job_id,
            priority=request.priority if "priority" in paths else None,
            labels=dict(request.labels) if "labels" in paths else None,
            display_name=request.display_name if "display_name" in paths else None,
        )
        return job_service_pb2.UpdateJobResponse(job=self._job(page))

    @rpc
    async def DeleteJob(
        self, request: job_service_pb2.DeleteJobRequest, context: Ctx
    ) -> job_service_pb2.DeleteJobResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        await self.jobs.delete_job(who(context), request.job_id, request.force)
        return job_service_pb2.DeleteJobResponse()

    @rpc
    def WatchJob(  # type: ignore[override]  # returns the stream's coroutine, which writes with context.write
        self, request: job_service_pb2.WatchJobRequest, context: Ctx
    ) -> Awaitable[None]:
        # Not a coroutine of its own and not an async generator: ``rpc`` awaits the watch directly,
        # so a stream keeps two frames (the decorator's and the watch loop's) instead of four.
        _check_watch(request)
        return self.watches.watch(who(context), request.job_id, request.after_revision, context.write)

    @rpc
    async def ListWebhookDeliveries(
        self, request: job_service_pb2.ListWebhookDeliveriesRequest, context: Ctx
    ) -> job_service_pb2.ListWebhookDeliveriesResponse:
        c = Checker()
        c.text(request.job_id, "job_id", MAX_ID, required=True)
        c.done()
        found = await webhooks.list_deliveries(self.jobs.db, who(context), request.job_id)
        return job_service_pb2.ListWebhookDeliveriesResponse(deliveries=[_delivery_pb(d) for d in found])

    @rpc
    async def RedeliverWebhook(
        self, request: job_service_pb2.RedeliverWebhookRequest, context: Ctx
    ) -> job_service_pb2.RedeliverWebhookResponse:
        c = Checker()
        c.text(request.delivery_id, "delivery_id", MAX_ID, required=True)
        c.done()
        delivery = await webhooks.redeliver(self.jobs.db, who(context), request.delivery_id, self.clock())
        return job_service_pb2.RedeliverWebhookResponse(delivery=_delivery_pb(delivery))

    @rpc
    async def WatchJobs(
        self, request: job_service_pb2.WatchJobsRequest, context: Ctx
    ) -> AsyncIterator[job_service_pb2.WatchJobsResponse]:
        c = Checker()
        f = _job_filter(request, c)
        c.done()
        async for msg in self.feeds.watch(who(context), f, request.cursor):
            now = self.clock()
            yield job_service_pb2.WatchJobsResponse(
                type=int(msg.type),  # type: ignore[arg-type]
                jobs=[job_pb(j, now) for j in msg.jobs],
                cursor=msg.cursor,
                deleted_job_ids=msg.deleted,
            )

    @rpc
    async def GetJobStats(
        self, request: job_service_pb2.GetJobStatsRequest, context: Ctx
    ) -> job_service_pb2.GetJobStatsResponse:
        c = Checker()
        f = repo.JobFilter(kind=request.kind)
        _time_range(request, c, f)
        c.done()
        overall, kinds = await self.jobs.stats(who(context), f)
        return job_service_pb2.GetJobStatsResponse(
            stats=_stats_pb(overall), kinds=[_stats_pb(k) for k in kinds]
        )


def watch_encoder(clock: Clock) -> Callable[[WatchMessage], job_service_pb2.WatchJobResponse]:
    """How WatchService encodes its messages for the wire."""

    def encode(msg: WatchMessage) -> job_service_pb2.WatchJobResponse:
        return job_service_pb2.WatchJobResponse(
            type=int(msg.type),  # type: ignore[arg-type]
            revision=msg.revision,
            job=job_pb(msg.job, clock()) if msg.job is not None else None,
            chunks=[chunk_pb(ch) for ch in msg.chunks],
            more=msg.more,
        )

    return encode


def _check_watch(request: job_service_pb2.WatchJobRequest) -> None:
    # A function of its own so that the checker is not kept alive by the stream's frame.
    c = Checker()
    c.text(request.job_id, "job_id", MAX_ID, required=True)
    c.check(request.after_revision >= 0, "after_revision", "must not be negative")
    c.done()


def _delivery_pb(d: webhooks.Delivery) -> job_service_pb2.WebhookDelivery:
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


def _job_filter(
    request: job_service_pb2.ListJobsRequest | job_service_pb2.WatchJobsRequest, c: Checker
) -> repo.JobFilter:
    """The ListJobs-style filters of a request, checked."""
    c.enums(request.states, _JOB_STATES, "states")
    f = repo.JobFilter(states=[JobState(s) for s in request.states if s in _JOB_STATES], kind=request.kind)
    c.text(request.kind, "kind", MAX_ID)
    if request.HasField("min_priority"):
        c.priority(request.min_priority, "min_priority")
        f.min_priority = request.min_priority
    if request.HasField("max_priority"):
        c.priority(request.max_priority, "max_priority")
        f.max_priority = request.max_priority
    if f.min_priority is not None and f.max_priority is not None and f.min_priority > f.max_priority:
        c.fail("min_priority", "must not be greater than max_priority")
    _time_range(request, c, f)
    c.text(request.search, "search", MAX_DISPLAY_NAME)
    f.search = request.search
    c.labels(dict(request.labels))
    f.labels = dict(request.labels)
    return f


def _time_range(
    request: job_service_pb2.ListJobsRequest
    | job_service_pb2.WatchJobsRequest
    | job_service_pb2.GetJobStatsRequest,
    c: Checker,
    f: repo.JobFilter,
) -> None:
    if request.HasField("created_after"):
        f.created_after = timestamp_us(request.created_after, "created_after", c)
    if request.HasField("created_before"):
        f.created_before = timestamp_us(request.created_before, "created_before", c)
    if f.created_after is not None and f.created_before is not None and f.created_after > f.created_before:
        c.fail("created_after", "must not be later than created_before")


def _stats_pb(row: repo.StatsRow) -> job_service_pb2.JobStats:
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
    )
    for name in ("p50", "p95", "p99", "max"):
        value = row.durations.get(name)
        if value is not None:
            getattr(msg, f"duration_{name}").CopyFrom(duration(value / 1e6))
    return msg


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """jobpulse.v1.WorkerService."""

    ROLES = auth.WORKER_ROLES

    def __init__(
        self, authenticator: auth.Authenticator, work: WorkerService, clock: Clock, observer: Observer
    ) -> None:
        self.auth = authenticator
        self.observer = observer
        self.work = work
        self.clock = clock

    @rpc
    async def ClaimChunks(
        self, request: worker_service_pb2.ClaimChunksRequest, context: Ctx
    ) -> worker_service_pb2.ClaimChunksResponse:
        c = Checker()
        ask = _claim_request(request, c, "")
        c.done()
        out = worker_service_pb2.ClaimChunksResponse()
        _add_claims(out.claims, await self.work.claim(*ask.args()))
        return out

    @rpc
    async def ReportChunkProgress(
        self, request: worker_service_pb2.ReportChunkProgressRequest, context: Ctx
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        c = Checker()
        c.text(request.chunk_id, "chunk_id", MAX_ID, required=True)
        c.text(request.lease_token, "lease_token", MAX_ID, required=True)
        c.check(request.items_done >= 0, "items_done", "must not be negative")
        c.text(request.stage, "stage", 256)
        c.text(request.message, "message", 4096)
        c.text(request.external_task_id, "external_task_id", 256)
        lease_us = None
        if request.HasField("lease_duration"):
            lease_us = duration_us(request.lease_duration, "lease_duration", c, lo_s=0.001, hi_s=24 * 3600)
        c.done()
        cancel, expire = await self.work.report_progress(
            request.chunk_id,
            request.lease_token,
            items_done=request.items_done,
            stage=request.stage,
            message=request.message,
            external_task_id=request.external_task_id,
            lease_us=lease_us,
        )
        return worker_service_pb2.ReportChunkProgressResponse(
            cancel_requested=cancel, lease_expire_time=timestamp(expire)
        )

    @rpc
    async def CompleteChunk(
        self, request: worker_service_pb2.CompleteChunkRequest, context: Ctx
    ) -> worker_service_pb2.CompleteChunkResponse:
        c = Checker()
        item = _completion(request, c, "")
        ask = _claim_request(request.claim_next, c, "claim_next.") if request.HasField("claim_next") else None
        c.done()
        state, claims = await self.work.complete(
            item.chunk_id, item.lease_token, item.artifacts, item.external_task_id, ask
        )
        out = worker_service_pb2.CompleteChunkResponse(job_state=int(state))  # type: ignore[arg-type]
        _add_claims(out.claims, claims)
        return out

    @rpc
    async def CompleteChunks(
        self, request: worker_service_pb2.CompleteChunksRequest, context: Ctx
    ) -> worker_service_pb2.CompleteChunksResponse:
        c = Checker()
        n = len(request.completions)
        c.check(n <= MAX_COMPLETIONS, "completions", f"at most {MAX_COMPLETIONS} per call (got {n})")
        c.check(
            n > 0 or request.HasField("claim_next"),
            "completions",
            "must not be empty (unless claim_next is set)",
        )
        items = [_completion(item, c, f"completions[{i}].") for i, item in enumerate(request.completions)]
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.chunk_id in seen:
                c.fail(f"completions[{i}].chunk_id", f"chunk {item.chunk_id} appears more than once")
            seen.add(item.chunk_id)
        ask = _claim_request(request.claim_next, c, "claim_next.") if request.HasField("claim_next") else None
        c.done()
        out = worker_service_pb2.CompleteChunksResponse()
        results, claims = await self.work.complete_many(items, ask)
        for r in results:
            if r.error is None:
                out.results.add(chunk_id=r.chunk_id, ok=True, job_state=int(r.job_state or 0))  # type: ignore[arg-type]
            else:
                out.results.add(chunk_id=r.chunk_id, ok=False, reason=r.error.reason, message=r.error.message)
        _add_claims(out.claims, claims)
        return out

    @rpc
    async def FailChunk(
        self, request: worker_service_pb2.FailChunkRequest, context: Ctx
    ) -> worker_service_pb2.FailChunkResponse:
        c = Checker()
        c.text(request.chunk_id, "chunk_id", MAX_ID, required=True)
        c.text(request.lease_token, "lease_token", MAX_ID, required=True)
        c.text(request.error.reason, "error.reason", 128)
        c.text(request.error.message, "error.message", 4096)
        c.done()
        outcome = await self.work.fail(
            request.chunk_id,
            request.lease_token,
            request.error.reason,
            request.error.message,
            request.retryable,
        )
        return worker_service_pb2.FailChunkResponse(
            will_retry=outcome.will_retry, next_attempt_time=timestamp(outcome.next_attempt_time)
        )


def _claim_request(request: worker_service_pb2.ClaimChunksRequest, c: Checker, prefix: str) -> ClaimAsk:
    """ClaimChunks' arguments, checked."""
    c.text(request.worker_id, prefix + "worker_id", MAX_ID, required=True)
    c.check(
        0 <= request.max_chunks <= MAX_CLAIM,
        prefix + "max_chunks",
        f"must be between 0 (means 1) and {MAX_CLAIM}",
    )
    lease_us = DEFAULT_LEASE_US
    if request.HasField("lease_duration"):
        lease_us = duration_us(
            request.lease_duration, prefix + "lease_duration", c, lo_s=0.001, hi_s=24 * 3600
        )
    wait_s = 0.0
    if request.HasField("wait"):
        wait_s = duration_us(request.wait, prefix + "wait", c, lo_s=0, hi_s=60) / 1e6
    for i, kind in enumerate(request.kinds):
        c.text(kind, f"{prefix}kinds[{i}]", MAX_ID, required=True)
    return ClaimAsk(request.worker_id, list(request.kinds), request.max_chunks or 1, lease_us, wait_s)


def _completion(
    request: worker_service_pb2.CompleteChunkRequest | worker_service_pb2.ChunkCompletion,
    c: Checker,
    prefix: str,
) -> Completion:
    """One completion, checked."""
    c.text(request.chunk_id, prefix + "chunk_id", MAX_ID, required=True)
    c.text(request.lease_token, prefix + "lease_token", MAX_ID, required=True)
    c.text(request.external_task_id, prefix + "external_task_id", 256)
    c.check(len(request.artifacts) <= 100, prefix + "artifacts", "at most 100 artifacts per chunk")
    for i, a in enumerate(request.artifacts):
        c.text(a.name, f"{prefix}artifacts[{i}].name", 256, required=True)
        c.text(a.uri, f"{prefix}artifacts[{i}].uri", 2048, required=True)
        c.text(a.media_type, f"{prefix}artifacts[{i}].media_type", 128)
        c.check(a.size_bytes >= 0, f"{prefix}artifacts[{i}].size_bytes", "must not be negative")
    return Completion(
        request.chunk_id,
        request.lease_token,
        [Artifact(a.name, a.uri, a.media_type, a.size_bytes) for a in request.artifacts],
        request.external_task_id,
    )


def _add_claims(out: Any, claims: list[Claim]) -> None:
    """Appends claims to a repeated ChunkClaim field."""
    for cl in claims:
        claim = out.add(
            job_id=cl.job.id,
            job_kind=cl.job.kind,
            chunk=chunk_pb(cl.chunk),
            lease_token=cl.lease_token,
            lease_expire_time=timestamp(cl.lease_expire_time),
        )
        claim.job_metadata.update(cl.job.metadata)


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """jobpulse.v1.AdminService."""

    ROLES = auth.ADMIN_ROLES

    def __init__(
        self,
        authenticator: auth.Authenticator,
        observer: Observer,
        report: Callable[[], Awaitable[admin_service_pb2.GetServerHealthResponse]],
    ) -> None:
        self.auth = authenticator
        self.observer = observer
        self.report = report  # builds the GetServerHealth answer

    @rpc
    async def GetServerHealth(
        self, request: admin_service_pb2.GetServerHealthRequest, context: Ctx
    ) -> admin_service_pb2.GetServerHealthResponse:
        return await self.report()

    @rpc
    async def GetUsage(
        self, request: admin_service_pb2.GetUsageRequest, context: Ctx
    ) -> admin_service_pb2.GetUsageResponse:
        usage = self.auth.limiter.usage
        return admin_service_pb2.GetUsageResponse(
            usage=[
                admin_service_pb2.KeyUsage(key_name=name, role=u.role, calls=u.calls, rejected=u.rejected)
                for name, u in sorted(usage.items())
            ]
        )
