"""The jobpulse client: JobService, WorkerService and AdminService calls, with retries and resumed watches."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.longrunning import operations_pb2_grpc as operations_proto_pb2_grpc
from google.longrunning import operations_proto_pb2
from google.protobuf.struct_pb2 import Struct

from jobpulse import _requests, _retry, _schedule_requests
from jobpulse._async._shim import StreamReader, sleep
from jobpulse._bulk import BulkOperation, bulk_request
from jobpulse._channel import CHANNEL_OPTIONS, call_metadata
from jobpulse._convert import ChunkStateLike, JobViewLike, TimeLike, is_terminal, job_view
from jobpulse._events_token import EventsToken, events_token
from jobpulse._filters import JobFilter
from jobpulse._requests import ArtifactLike
from jobpulse._settings import resolve_connection
from jobpulse._tracing import with_trace_context
from jobpulse._watch import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RECONNECT_TIMEOUT,
    OnReconnect,
    OnResume,
    Outage,
    StreamIdle,
    WatchCursor,
)
from jobpulse.errors import DeadlineExceeded, JobpulseError, Unavailable, WaitTimeout, from_rpc_error
from jobpulse.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

_T = TypeVar("_T")


class AsyncClient:
    """An asyncio client for the jobpulse JobService and WorkerService.

    Every RPC error is raised as a subclass of :class:`jobpulse.errors.JobpulseError`. Reads and other calls
    that are safe to repeat are retried on ``UNAVAILABLE`` with capped exponential backoff within the call's
    deadline; ``create_job`` is retried only when it carries a ``request_id``. Use it on one event loop,
    preferably with ``async with``: the channel is opened on first use, on the running loop.

    Example::

        async with jobpulse.AsyncClient("127.0.0.1:50051") as client:
            job = await client.create_job("thumbnails", 2500, chunk_size=500)
            final = await client.wait(job.id, timeout=600)

    Args:
        target: ``host:port`` of the server. ``None`` means ``$JOBPULSE_TARGET``, else ``127.0.0.1:50051``.
        api_key: Sent as ``authorization: Bearer <key>`` metadata with every call. ``None`` means
            ``$JOBPULSE_API_KEY`` (if set); ``""`` sends no key.
        secure: Use TLS (``True``) or a plaintext connection (``False``). ``None`` means
            ``$JOBPULSE_TLS``, or TLS when a CA is given (``root_certificates`` or ``$JOBPULSE_TLS_CA``).
        root_certificates: PEM bytes of the CA that signed the server's certificate (implies TLS).
            ``None`` means the file named by ``$JOBPULSE_TLS_CA``, else the system's roots.
        timeout: Default deadline of each unary call, in seconds (``None``: no deadline).
        channel: A ready ``grpc.aio.Channel`` to use instead of opening one (for tests and custom
            setups); the client does not close a channel it was given.

    Raises:
        jobpulse.errors.SettingError: A bad target (``http://...``, a port past 65535) or a bad
            ``JOBPULSE_*`` value, naming the argument or variable (a ``ValueError``).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        secure: bool | None = None,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        connection = resolve_connection(
            target,
            api_key=api_key,
            secure=False if channel is not None else secure,
            root_certificates=root_certificates,
        )
        self.target = connection.target
        self.timeout = timeout
        self._secure = connection.secure
        self._root_certificates = connection.root_certificates
        self._metadata = call_metadata(connection.api_key)
        self._owns_channel = channel is None
        self._channel: grpc.aio.Channel | None = channel
        self._stubs: tuple[Any, Any, Any, Any, Any] | None = None
        # The channel is opened on first use (one for an event loop binds to the loop running when it is
        # made); the lock keeps threads that share a blocking client from opening two.
        self._opening = threading.Lock()

    def _stub_set(self) -> tuple[Any, Any, Any, Any, Any]:
        stubs = self._stubs
        if stubs is not None:
            return stubs
        with self._opening:
            if self._stubs is None:
                if self._channel is None:
                    if self._secure:
                        credentials = grpc.ssl_channel_credentials(self._root_certificates)
                        self._channel = grpc.aio.secure_channel(self.target, credentials, CHANNEL_OPTIONS)
                    else:
                        self._channel = grpc.aio.insecure_channel(self.target, CHANNEL_OPTIONS)
                self._stubs = (
                    job_service_pb2_grpc.JobServiceStub(self._channel),
                    worker_service_pb2_grpc.WorkerServiceStub(self._channel),
                    admin_service_pb2_grpc.AdminServiceStub(self._channel),
                    schedule_service_pb2_grpc.ScheduleServiceStub(self._channel),
                    operations_proto_pb2_grpc.OperationsStub(self._channel),
                )
            return self._stubs

    @property
    def _jobs(self) -> Any:
        return self._stub_set()[0]

    @property
    def _workers(self) -> Any:
        return self._stub_set()[1]

    @property
    def _admin(self) -> Any:
        return self._stub_set()[2]

    @property
    def _operations(self) -> Any:
        return self._stub_set()[4]

    @property
    def _schedules(self) -> Any:
        return self._stub_set()[3]

    # -- lifecycle -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel (unless it was passed in). Calls in flight are cancelled; a later call opens
        a new channel."""
        with self._opening:
            channel, self._stubs = self._channel, None
            if self._owns_channel:
                self._channel = None
        if self._owns_channel and channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        self._stub_set()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------------------------

    async def _call(self, method: Callable[..., Awaitable[_T]], request: Any, *, timeout: float | None) -> _T:
        """One unary call within ``timeout`` (the client's by default), sent again after a retryable
        failure when its request may be (``_retry.RESENT``)."""
        budget = self.timeout if timeout is None else timeout
        deadline = None if budget is None else time.monotonic() + budget
        backoff = _retry.Backoff()
        retry = _retry.may_resend(request)
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await method(request, timeout=remaining, metadata=with_trace_context(self._metadata))
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if not (retry and _retry.is_retryable(error)) or attempt >= _retry.MAX_UNARY_ATTEMPTS:
                    raise error from rpc_error
                delay = backoff.next_delay(error.retry_delay)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise error from rpc_error
                await sleep(delay)

    async def _pages(
        self, method: Callable[..., Awaitable[Any]], request: Any, items: Callable[[Any], Iterable[_T]]
    ) -> AsyncIterator[_T]:
        while True:
            response = await self._call(method, request, timeout=None)
            for item in items(response):
                yield item
            if not response.next_page_token:
                return
            following = type(request)()
            following.CopyFrom(request)
            following.page_token = response.next_page_token
            request = following

    # -- JobService ------------------------------------------------------------------------------------

    async def create_job(
        self,
        kind: str,
        total_items: int,
        *,
        display_name: str = "",
        chunk_size: int = 0,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | Struct | None = None,
        max_attempts: int = 0,
        request_id: str = "",
        webhook_url: str = "",
        webhook_progress: bool = False,
        ttl: float | timedelta | None = None,
        schedule_time: TimeLike | None = None,
        max_running_chunks: int = 0,
        after: Sequence[str] = (),
        after_mode: str | int = "all",
        finalize_kind: str = "",
        max_failed_chunks: int = 0,
        attempt_timeout: float | timedelta | None = None,
        job_timeout: float | timedelta | None = None,
        unique_key: str = "",
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Creates a job split into ``ceil(total_items / chunk_size)`` chunks.

        Args:
            kind: The type of work; workers claim by kind.
            total_items: Number of items to process (at least 1).
            display_name: Human-readable name.
            chunk_size: Items per chunk; 0 means the server default (500).
            priority: 0..10; ``None`` means the server default (5).
            labels: Labels usable as list filters.
            metadata: JSON-like data handed to workers with every claim.
            max_attempts: Claims allowed per chunk; 0 means the server default (3).
            request_id: Idempotency key. When set, the call is retried on ``UNAVAILABLE`` and a repeat
                returns the first job instead of creating another.
            webhook_url: Where to POST the job's events (empty: the API key's default, if any).
            webhook_progress: Also send throttled ``job.progress`` events.
            ttl: How long the server keeps the job once it is terminal (seconds or a timedelta), then
                deletes it; ``None``: the server's default for the state it ends in; 0: for ever.
            schedule_time: When the job may start (a datetime, naive meaning UTC, an ISO 8601 string
                or a Timestamp): none of its chunks is claimed before; ``None``: at once.
            max_running_chunks: At most this many of the job's chunks processing at once, across
                every server and worker; 0: no limit.
            after: Ids of jobs (at most 20) this one waits for; when one of them ends failed or
                cancelled, this job is cancelled (error reason ``DEPENDENCY_FAILED``).
            after_mode: ``"all"``: no chunk runs until every job in ``after`` has completed;
                ``"per_chunk"``: chunk i runs once chunk i of the one job in ``after`` has completed.
            finalize_kind: Adds a last chunk of this kind (``chunk.finalize``, no items), claimed once
                every other chunk has completed; the job completes when it does.
            max_failed_chunks: Fail fast: once this many chunks have failed for good, the job fails at
                once (error reason ``TOO_MANY_FAILED_CHUNKS``), its other chunks cancelled; 0: no limit.
            attempt_timeout: The longest one attempt of a chunk may run (seconds or a timedelta),
                heartbeats or not; past it the worker loses its lease and the attempt is retried
                (reason ``ATTEMPT_TIMEOUT``). ``None``: no limit.
            job_timeout: How long the job may take from its start (``schedule_time``, else now): not
                ended by then, it fails (error reason ``JOB_DEADLINE_EXCEEDED``; ``job.deadline_time``).
                ``None``: no deadline. (The request's field is ``timeout``; the name here keeps
                ``timeout`` for the call's own deadline, as on every method.)
            unique_key: At most one job of yours with this kind and key that has not ended: while
                one exists, the call raises ``AlreadyExists`` (reason ``JOB_ALREADY_EXISTS``, the
                live job's id in ``metadata["job_id"]``). Empty: no key.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The new (or, for a repeated ``request_id``, the earlier) job in FULL view.
        """
        request = _requests.create_job(
            kind,
            total_items,
            display_name=display_name,
            chunk_size=chunk_size,
            priority=priority,
            labels=labels,
            metadata=metadata,
            max_attempts=max_attempts,
            request_id=request_id,
            webhook_url=webhook_url,
            webhook_progress=webhook_progress,
            ttl=ttl,
            schedule_time=schedule_time,
            max_running_chunks=max_running_chunks,
            after=after,
            after_mode=after_mode,
            finalize_kind=finalize_kind,
            max_failed_chunks=max_failed_chunks,
            attempt_timeout=attempt_timeout,
            job_timeout=job_timeout,
            unique_key=unique_key,
        )
        response = await self._call(self._jobs.CreateJob, request, timeout=timeout)
        return response.job

    async def get_job(
        self, job_id: str, *, view: JobViewLike = "full", timeout: float | None = None
    ) -> job_pb2.Job:
        """Returns one job.

        Args:
            job_id: The job's id.
            view: ``"full"`` (chunks inline, up to 1000) or ``"basic"`` (summary and progress only).
            timeout: Deadline in seconds; defaults to the client's.

        Raises:
            jobpulse.errors.NotFound: The job does not exist or belongs to another owner.
        """
        response = await self._call(self._jobs.GetJob, _requests.get_job(job_id, view), timeout=timeout)
        return response.job

    async def list_jobs_page(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        order_by: str = "",
        view: JobViewLike = 0,
        timeout: float | None = None,
        **filters: Unpack[JobFilter],
    ) -> job_service_pb2.ListJobsResponse:
        """Returns one page of jobs with ``next_page_token`` and ``total_size``.

        Args:
            page_size: Jobs per page (server default 20, at most 100).
            page_token: ``next_page_token`` of the previous page; the filters must be the same.
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            order_by: ``"create_time"``, ``"update_time"`` or ``"priority"``, each optionally
                followed by ``" desc"``; default ``"create_time desc"``. Ties break by id in the
                same direction.
            view: ``"basic"`` (default) or ``"full"``.
            timeout: Deadline in seconds; defaults to the client's.
        """
        request = _requests.list_jobs(
            filters,
            "list_jobs_page",
            page_size=page_size,
            page_token=page_token,
            order_by=order_by,
            view=view,
        )
        return await self._call(self._jobs.ListJobs, request, timeout=timeout)

    def list_jobs(
        self,
        *,
        page_size: int = 0,
        order_by: str = "",
        view: JobViewLike = 0,
        **filters: Unpack[JobFilter],
    ) -> AsyncIterator[job_pb2.Job]:
        """Iterates over every matching job, fetching pages lazily as the iteration proceeds.

        Takes the same filters as :meth:`list_jobs_page`; one page is held in memory at a time.
        """
        request = _requests.list_jobs(
            filters,
            "list_jobs",
            page_size=page_size,
            order_by=order_by,
            view=view,
        )
        return self._pages(self._jobs.ListJobs, request, lambda r: r.jobs)

    def export_jobs(
        self,
        *,
        order_by: str = "",
        timeout: float | None = None,
        **filters: Unpack[JobFilter],
    ) -> AsyncIterator[job_pb2.Job]:
        """Iterates over every matching job, streamed by one ExportJobs call.

        The server sends the jobs (BASIC view, with the job's artifacts) in batches of at most 500 and
        reads the next batch only when this iterator asks for it, so an export of any size holds one batch
        in memory on either side.
        Closing the iterator early (``await it.aclose()``, or iterating inside ``contextlib.aclosing``)
        cancels the stream, and with it the server's reads; an iterator dropped unfinished cancels it
        when it is garbage-collected.

        A stream that fails before its first batch is retried like other reads (on ``UNAVAILABLE``);
        one that breaks later raises, since sending the request again would repeat the jobs already
        yielded.

        Args:
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            order_by: As in :meth:`list_jobs_page`; ``""`` means ``"create_time desc"``.
            timeout: Deadline of the whole export in seconds (``None``: none; the client's default
                deadline for unary calls does not apply to a stream of any length).

        Raises:
            jobpulse.errors.InvalidArgument: A filter or ``order_by`` is invalid; its field violations
                name the field.
        """
        request = _requests.export_jobs(
            filters,
            "export_jobs",
            order_by=order_by,
        )
        return self._export(request, timeout)

    async def _export(
        self, request: job_service_pb2.ExportJobsRequest, timeout: float | None
    ) -> AsyncIterator[job_pb2.Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = _retry.Backoff()
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self._jobs.ExportJobs(
                request, timeout=remaining, metadata=with_trace_context(self._metadata)
            )
            received = False
            try:
                async for response in call:
                    received = True
                    for job in response.jobs:
                        yield job
                return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = backoff.next_delay(error.retry_delay)
                late = deadline is not None and time.monotonic() + delay >= deadline
                if received or late or not _retry.is_retryable(error) or attempt >= _retry.MAX_UNARY_ATTEMPTS:
                    raise error from rpc_error
            finally:
                # Also when the caller stops iterating (the iterator closed): the server stops reading.
                call.cancel()
            await sleep(delay)

    def list_job_chunks(
        self,
        job_id: str,
        states: Iterable[ChunkStateLike] | None = None,
        page_size: int = 0,
        *,
        page_token: str = "",
        kind: str = "",
        error_reasons: Iterable[str] = (),
    ) -> AsyncIterator[job_pb2.Chunk]:
        """Iterates over a job's chunks in index order, fetching pages lazily.

        Example, every chunk that failed for good with one reason, across jobs::

            async for chunk in client.list_job_chunks("-", ["failed"], error_reasons=["DECODE"]):
                print(chunk.job_id, chunk.index, chunk.error.message)

        Args:
            job_id: The job's id; ``"-"``: every job the caller may see, newest job first (each job's
                chunks from its last).
            states: Only chunks in one of these states (``"failed"``, ``CHUNK_STATE_FAILED``, ...).
            page_size: Chunks per page (server default 100, at most 1000).
            page_token: Where to start, e.g. a job's ``chunks_next_page_token``.
            kind: Only chunks of this kind.
            error_reasons: Only chunks whose last failure had one of these reasons (at most 20).
        """
        request = _requests.list_job_chunks(job_id, states, page_size, page_token, kind, error_reasons)
        return self._pages(self._jobs.ListJobChunks, request, lambda r: r.chunks)

    async def summarize_failures(
        self,
        kind: str = "",
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        *,
        timeout: float | None = None,
    ) -> list[job_service_pb2.FailureGroup]:
        """Counts the chunks failed for good across the jobs the caller may see, by error reason: each
        group's ``reason``, ``chunks``, ``jobs``, ``last_time`` and ``sample_message``, the reason that
        failed most lately first (at most 100). List one reason's chunks with
        ``list_job_chunks("-", ["failed"], error_reasons=[reason])``.

        Args:
            kind: Only chunks of this kind.
            created_after: Only chunks of jobs created at or after this time.
            created_before: Only chunks of jobs created before this time.
            timeout: Deadline in seconds; defaults to the client's.
        """
        request = _requests.summarize_failures(kind, created_after, created_before)
        response = await self._call(self._jobs.SummarizeFailures, request, timeout=timeout)
        return list(response.groups)

    def list_chunk_attempts(
        self, job_id: str, chunk_id: str = "", page_size: int = 0, *, page_token: str = ""
    ) -> AsyncIterator[job_pb2.ChunkAttempt]:
        """Iterates over the attempts of a job's chunks (or of one chunk) by chunk index, then attempt:
        who claimed each, when, how it ended (``outcome``: ``ATTEMPT_OUTCOME_COMPLETED``,
        ``_FAILED``, ``_LEASE_EXPIRED``, ``_CANCELLED``, ``_TIMED_OUT``, or ``_RUNNING``) and its
        ``error`` (with ``details``, e.g. the handler's traceback), fetching pages lazily.

        Args:
            job_id: The job's id.
            chunk_id: One chunk's id; empty for every chunk of the job.
            page_size: Attempts per page (server default 100, at most 1000).
            page_token: Where to start (a ``next_page_token``).
        """
        request = job_service_pb2.ListChunkAttemptsRequest(
            job_id=job_id, chunk_id=chunk_id, page_size=page_size, page_token=page_token
        )
        return self._pages(self._jobs.ListChunkAttempts, request, lambda r: r.attempts)

    async def batch_get_jobs(
        self, job_ids: Iterable[str], *, view: JobViewLike = "full", timeout: float | None = None
    ) -> list[job_pb2.Job]:
        """Returns up to 100 jobs in the order asked.

        Raises:
            jobpulse.errors.NotFound: If any of the jobs is missing.
        """
        request = _requests.batch_get_jobs(job_ids, view)
        response = await self._call(self._jobs.BatchGetJobs, request, timeout=timeout)
        return list(response.jobs)

    async def cancel_job(self, job_id: str, reason: str = "", *, timeout: float | None = None) -> job_pb2.Job:
        """Cancels a job: pending chunks at once, running ones through their workers' leases.

        Returns:
            The job, CANCELLING (workers still stopping) or CANCELLED.

        Raises:
            jobpulse.errors.FailedPrecondition: The job already completed or failed
                (``JOB_ALREADY_TERMINAL``).
        """
        request = job_service_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        response = await self._call(self._jobs.CancelJob, request, timeout=timeout)
        return response.job

    async def pause_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Holds a job: none of its chunks is claimed until :meth:`resume_job`; running ones finish.

        Returns:
            The job, with ``paused`` set; its state does not change.

        Raises:
            jobpulse.errors.FailedPrecondition: The job has ended (``JOB_ALREADY_TERMINAL``).
        """
        request = job_service_pb2.PauseJobRequest(job_id=job_id)
        response = await self._call(self._jobs.PauseJob, request, timeout=timeout)
        return response.job

    async def resume_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Lets a paused job's chunks be claimed again.

        Raises:
            jobpulse.errors.FailedPrecondition: The job has ended (``JOB_ALREADY_TERMINAL``).
        """
        request = job_service_pb2.ResumeJobRequest(job_id=job_id)
        response = await self._call(self._jobs.ResumeJob, request, timeout=timeout)
        return response.job

    async def retry_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Puts the failed and cancelled chunks of a FAILED or CANCELLED job back to PENDING, each with
        the job's max_attempts more claims (their ``attempt`` keeps counting).

        Raises:
            jobpulse.errors.FailedPrecondition: The job is not FAILED or CANCELLED (``JOB_NOT_RETRYABLE``).
        """
        request = job_service_pb2.RetryJobRequest(job_id=job_id)
        response = await self._call(self._jobs.RetryJob, request, timeout=timeout)
        return response.job

    async def retry_chunk(self, job_id: str, chunk_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Puts one FAILED chunk back to PENDING with the job's max_attempts more claims (its
        ``attempt`` keeps counting); the job runs again. Returns the job (BASIC view).

        Raises:
            jobpulse.errors.NotFound: No such job (``JOB_NOT_FOUND``) or no such chunk in it
                (``CHUNK_NOT_FOUND``).
            jobpulse.errors.FailedPrecondition: The chunk is not FAILED (``CHUNK_NOT_RETRYABLE``), or
                the job was cancelled (``JOB_NOT_RETRYABLE``: use :meth:`retry_job`).
        """
        request = job_service_pb2.RetryChunkRequest(job_id=job_id, chunk_id=chunk_id)
        response = await self._call(self._jobs.RetryChunk, request, timeout=timeout)
        return response.job

    async def update_job(
        self,
        job_id: str,
        *,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        display_name: str | None = None,
        max_running_chunks: int | None = None,
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Changes the given fields of a job; ``update_mask`` lists exactly the arguments passed.

        Args:
            job_id: The job's id.
            priority: New priority 0..10.
            labels: New labels, replacing all existing ones (``{}`` clears them).
            display_name: New display name.
            max_running_chunks: New limit on the job's chunks processing at once (0: none).
            timeout: Deadline in seconds; defaults to the client's.

        Raises:
            ValueError: If none of the fields is given.
        """
        request = _requests.update_job(
            job_id,
            priority=priority,
            labels=labels,
            display_name=display_name,
            max_running_chunks=max_running_chunks,
        )
        response = await self._call(self._jobs.UpdateJob, request, timeout=timeout)
        return response.job

    def list_kinds(self, *, page_size: int = 0) -> AsyncIterator[job_service_pb2.Kind]:
        """Iterates over the kinds of work in name order, fetching pages lazily: every kind with a
        control (paused, a cap) and every kind with chunks pending or running, with those counts (of
        the caller's own jobs for a key that sees only its own).

        Args:
            page_size: Kinds per page (server default 100, at most 1000).
        """
        request = job_service_pb2.ListKindsRequest(page_size=page_size)
        return self._pages(self._jobs.ListKinds, request, lambda r: r.kinds)

    async def update_kind(
        self,
        kind: str,
        *,
        paused: bool | None = None,
        max_running_chunks: int | None = None,
        timeout: float | None = None,
    ) -> job_service_pb2.Kind:
        """Sets a kind's controls on the claim (an admin key); ``update_mask`` lists exactly the
        arguments passed. They hold for every job of the kind, whoever owns it, on every server, from
        the moment this returns. A kind with no jobs yet may be paused ahead of time.

        Args:
            kind: The kind (``"resize"``) or its resource name (``"kinds/resize"``).
            paused: True: none of the kind's chunks is claimed (running ones finish); False: claimed
                again.
            max_running_chunks: At most this many of the kind's chunks processing at once; 0: no limit.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The kind, with its chunks pending and running now.

        Raises:
            ValueError: If neither ``paused`` nor ``max_running_chunks`` is given.
            jobpulse.errors.PermissionDenied: The key is not an admin key.
        """
        request = _requests.update_kind(kind, paused=paused, max_running_chunks=max_running_chunks)
        response = await self._call(self._jobs.UpdateKind, request, timeout=timeout)
        return response.kind

    async def delete_job(self, job_id: str, force: bool = False, *, timeout: float | None = None) -> None:
        """Deletes a terminal job; with ``force``, cancels a running job first.

        Raises:
            jobpulse.errors.FailedPrecondition: The job is not terminal and ``force`` is false.
        """
        request = job_service_pb2.DeleteJobRequest(job_id=job_id, force=force)
        await self._call(self._jobs.DeleteJob, request, timeout=timeout)

    async def cancel_jobs(
        self,
        *,
        reason: str = "",
        validate_only: bool = False,
        timeout: float | None = None,
        **filters: Unpack[JobFilter],
    ) -> BulkOperation:
        """Cancels every job matching the filters (those of :meth:`list_jobs`) that has not ended, as
        :meth:`cancel_job` does each, in the background on the server.

        Returns at once with the operation: follow it with :meth:`wait_bulk_operation` (or
        :meth:`get_bulk_operation`); stop it with :meth:`cancel_operation`. Only jobs created before
        the call are matched, each acted on at most once, and the server goes on where it stopped after
        a restart. Not retried (each call starts an operation).

        Args:
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            reason: Kept as each job's ``cancel_reason``.
            validate_only: Only count the matching jobs (``matched``); nothing changes.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The operation as it began (``finished`` and unnamed with ``validate_only``).
        """
        request = bulk_request(
            job_service_pb2.CancelJobsRequest,
            filters,
            "cancel_jobs",
            validate_only=validate_only,
            reason=reason,
        )
        op = await self._call(self._jobs.CancelJobs, request, timeout=timeout)
        return BulkOperation.from_operation(op)

    async def retry_jobs(
        self,
        *,
        validate_only: bool = False,
        timeout: float | None = None,
        **filters: Unpack[JobFilter],
    ) -> BulkOperation:
        """Retries every FAILED or CANCELLED job matching the filters, as :meth:`retry_job` does each (a
        job that cannot be retried now is skipped), in the background like :meth:`cancel_jobs`.

        Args:
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            validate_only: Only count the matching jobs; nothing changes.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The operation as it began.
        """
        request = bulk_request(
            job_service_pb2.RetryJobsRequest,
            filters,
            "retry_jobs",
            validate_only=validate_only,
        )
        op = await self._call(self._jobs.RetryJobs, request, timeout=timeout)
        return BulkOperation.from_operation(op)

    async def purge_jobs(
        self,
        *,
        force: bool = False,
        validate_only: bool = False,
        timeout: float | None = None,
        **filters: Unpack[JobFilter],
    ) -> BulkOperation:
        """Deletes every ended job matching the filters (with ``force``, every matching job, as
        :meth:`delete_job` with ``force``), in the background like :meth:`cancel_jobs`.

        Args:
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            force: Delete jobs that have not ended too; without it they are skipped.
            validate_only: Only count the matching jobs; nothing changes.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The operation as it began.
        """
        request = bulk_request(
            job_service_pb2.PurgeJobsRequest,
            filters,
            "purge_jobs",
            validate_only=validate_only,
            force=force,
        )
        op = await self._call(self._jobs.PurgeJobs, request, timeout=timeout)
        return BulkOperation.from_operation(op)

    async def get_operation(
        self, name: str, *, timeout: float | None = None
    ) -> operations_proto_pb2.Operation:
        """Returns a long-running operation as it stands: ``operations/<job id>`` (a job) or
        ``operations/bulk-<id>`` (a bulk operation).

        Raises:
            jobpulse.errors.NotFound: No such operation, or another owner's.
        """
        request = operations_proto_pb2.GetOperationRequest(name=name)
        return await self._call(self._operations.GetOperation, request, timeout=timeout)

    async def wait_operation(
        self, name: str, wait: float = 60.0, *, timeout: float | None = None
    ) -> operations_proto_pb2.Operation:
        """Waits up to ``wait`` seconds (at most 300) for the operation to be done, then returns it as it
        stands, done or not (one WaitOperation call).

        Args:
            name: The operation's name.
            wait: Seconds to wait for it on the server.
            timeout: Deadline of the call; by default ``wait`` plus ten seconds.
        """
        request = operations_proto_pb2.WaitOperationRequest(name=name)
        request.timeout.FromNanoseconds(int(max(0.0, wait) * 1e9))
        deadline = timeout if timeout is not None else wait + 10.0
        return await self._call(self._operations.WaitOperation, request, timeout=deadline)

    async def cancel_operation(self, name: str, *, timeout: float | None = None) -> None:
        """Cancels a long-running operation: a job's (as :meth:`cancel_job`; one that is done is left as
        it is) or a bulk operation's (stopped where it is; what it did stays done)."""
        request = operations_proto_pb2.CancelOperationRequest(name=name)
        await self._call(self._operations.CancelOperation, request, timeout=timeout)

    async def delete_operation(self, name: str, *, timeout: float | None = None) -> None:
        """Deletes an operation that is done: a job's (as :meth:`delete_job`) or a bulk operation's
        record (the jobs it acted on stay as they are).

        Raises:
            jobpulse.errors.FailedPrecondition: It is not done yet (cancel it first).
        """
        request = operations_proto_pb2.DeleteOperationRequest(name=name)
        await self._call(self._operations.DeleteOperation, request, timeout=timeout)

    async def get_bulk_operation(self, name: str, *, timeout: float | None = None) -> BulkOperation:
        """Returns how far a bulk operation (``operations/bulk-<id>``) has got.

        Raises:
            jobpulse.errors.NotFound: No such operation, or another owner's.
        """
        return BulkOperation.from_operation(await self.get_operation(name, timeout=timeout))

    async def wait_bulk_operation(
        self,
        name: str,
        timeout: float | None = None,
        *,
        on_progress: Callable[[BulkOperation], None] | None = None,
    ) -> BulkOperation:
        """Waits until a bulk operation has ended and returns it.

        Args:
            name: ``operations/bulk-<id>``.
            timeout: Seconds to wait in all; ``None``: as long as it takes.
            on_progress: Called with the operation each time the server answers (about every
                ten seconds while it runs, and once at its end), e.g. to draw a progress bar.

        Raises:
            jobpulse.errors.WaitTimeout: It had not ended within ``timeout``.
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else end - time.monotonic()
            wait = 10.0 if left is None else max(0.0, min(10.0, left))
            op = BulkOperation.from_operation(await self.wait_operation(name, wait))
            if on_progress is not None:
                on_progress(op)
            if op.finished:
                return op
            if left is not None and left <= wait:
                raise WaitTimeout(name, timeout or 0.0, op)

    def list_bulk_operations(
        self, *, running: bool | None = None, page_size: int = 0
    ) -> AsyncIterator[BulkOperation]:
        """Iterates over the bulk operations the caller may see (its own; every owner's for a key that
        sees them all), newest first, fetching pages lazily (ListOperations with ``type = bulk``).

        Args:
            running: ``True``: only those still running; ``False``: only those that have ended;
                ``None``: all.
            page_size: Operations per page (server default 20, at most 100).
        """
        wanted = "type = bulk"
        if running is not None:
            wanted += f" AND done = {'false' if running else 'true'}"
        request = operations_proto_pb2.ListOperationsRequest(
            name="operations", filter=wanted, page_size=page_size
        )
        return self._pages(
            self._operations.ListOperations,
            request,
            lambda r: [BulkOperation.from_operation(op) for op in r.operations],
        )

    async def list_webhook_deliveries(
        self, job_id: str, *, timeout: float | None = None
    ) -> list[job_service_pb2.WebhookDelivery]:
        """The webhook deliveries of a job, newest first."""
        request = job_service_pb2.ListWebhookDeliveriesRequest(job_id=job_id)
        response = await self._call(self._jobs.ListWebhookDeliveries, request, timeout=timeout)
        return list(response.deliveries)

    async def redeliver_webhook(
        self, delivery_id: str, *, timeout: float | None = None
    ) -> job_service_pb2.WebhookDelivery:
        """Sends a webhook delivery again as soon as possible (dead or delivered ones too)."""
        request = job_service_pb2.RedeliverWebhookRequest(delivery_id=delivery_id)
        response = await self._call(self._jobs.RedeliverWebhook, request, timeout=timeout)
        return response.delivery

    async def get_server_health(
        self, *, timeout: float | None = None
    ) -> admin_service_pb2.GetServerHealthResponse:
        """Database reachability and latency, schema, sweeper and outbox lag, streams, disk (admin key)."""
        request = admin_service_pb2.GetServerHealthRequest()
        return await self._call(self._admin.GetServerHealth, request, timeout=timeout)

    async def get_usage(self, *, timeout: float | None = None) -> admin_service_pb2.GetUsageResponse:
        """Calls admitted and rejected per API key: every key's with an admin key, else the caller's own."""
        return await self._call(self._admin.GetUsage, admin_service_pb2.GetUsageRequest(), timeout=timeout)

    async def get_job_stats(
        self,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        kind: str = "",
        *,
        timeout: float | None = None,
    ) -> job_service_pb2.GetJobStatsResponse:
        """Returns job counts by state, success rate and duration percentiles, overall and per kind."""
        request = _requests.get_job_stats(created_after, created_before, kind)
        return await self._call(self._jobs.GetJobStats, request, timeout=timeout)

    async def create_events_token(
        self, job_id: str = "", *, ttl: float | timedelta | None = None, timeout: float | None = None
    ) -> EventsToken:
        """Makes a short-lived token with which a browser reads events from the server's HTTP side.

        The token reads one job's Server-Sent Events (``/v1/jobs/<job_id>/events``) or, without a
        ``job_id``, the caller's whole feed (``/v1/events``), as this client's API key would, and nothing
        else, until it expires. Hand the browser ``token.url(http_url)`` (the token travels as the
        ``access_token`` query parameter), not the API key. Retried on ``UNAVAILABLE`` like reads: a
        repeat only makes another token.

        Example::

            token = await client.create_events_token(job.id, ttl=300)
            url = token.url("http://127.0.0.1:8080")  # for an EventSource in the browser

        Args:
            job_id: The job whose events the token reads; ``""``: the caller's whole feed.
            ttl: How long the token stays valid (seconds or a timedelta), from 1 s to 24 h; ``None``:
                the server's default, 10 minutes.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The token, its expiry time, and the path (with the token) to GET on the HTTP side.

        Raises:
            jobpulse.errors.NotFound: The job does not exist or belongs to another owner
                (``JOB_NOT_FOUND``).
            jobpulse.errors.InvalidArgument: ``ttl`` is outside 1 s .. 24 h.
        """
        request = _requests.create_events_token(job_id, ttl)
        response = await self._call(self._jobs.CreateEventsToken, request, timeout=timeout)
        return events_token(job_id, response)

    def watch_job(
        self,
        job_id: str,
        after_revision: int = 0,
        *,
        timeout: float | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_reconnect: OnReconnect | None = None,
        on_resume: OnResume | None = None,
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        """Streams a job's changes until it reaches a terminal state.

        The first message is a SNAPSHOT (with ``after_revision=0``) or everything changed after
        ``after_revision``; then CHANGE messages and idle HEARTBEATs follow. The iteration ends right after
        the message carrying COMPLETED, FAILED or CANCELLED. When the stream breaks (``UNAVAILABLE``, a lost
        connection, or no message at all for ``idle_timeout``), the iterator reconnects with backoff from the
        last complete revision it yielded, so nothing is missed or repeated (except the parts of a revision
        split over several messages with ``more`` set, when the stream broke between them). Breaking out of
        the loop cancels the stream.

        Args:
            job_id: The job's id.
            after_revision: 0 for a snapshot first, else the last revision already seen.
            timeout: Overall deadline of the whole watch in seconds (``None``: none).
            idle_timeout: Seconds without any message after which the stream is presumed dead.
            reconnect_timeout: Give up after failing to reconnect for this many seconds.
            connect_timeout: Give up after this many seconds when no stream has delivered a message yet
                (nothing listening at the target, most likely).
            on_reconnect: Called with a :class:`jobpulse.ReconnectInfo` each time the watch is about to
                try again (the stream broke, or the previous attempt failed): the attempt number, the
                error, the delay before the attempt and the revision it resumes after. Not called when
                the watch gives up instead. Runs in the iterating task, between two messages, and
                must not block; an exception it raises ends the watch.
            on_resume: Called with a :class:`jobpulse.ResumeInfo` when a stream delivers its first
                message after failed attempts (before that message is yielded): how many attempts it
                took, how long the watch was down, and the revision it resumed after.

        Example::

            def say(info: jobpulse.ReconnectInfo) -> None:
                print(f"reconnecting (attempt {info.attempt}): {info.error}", file=sys.stderr)

            async for event in client.watch_job(job_id, on_reconnect=say):
                ...

        Raises:
            jobpulse.errors.JobpulseError: For failures a reconnect cannot fix (e.g. ``NotFound``),
                ``DeadlineExceeded`` once ``timeout`` passes, or the last error after ``reconnect_timeout``.
        """
        cursor = WatchCursor(job_id, after_revision)

        def observe(event: job_service_pb2.WatchJobResponse) -> bool:
            cursor.observe(event)
            return cursor.finished

        return self._resumable(
            self._jobs.WatchJob,
            cursor.request,
            observe,
            f"watch stream of job {job_id}",
            timeout=timeout,
            idle_timeout=idle_timeout,
            reconnect_timeout=reconnect_timeout,
            connect_timeout=connect_timeout,
            on_reconnect=on_reconnect,
            on_resume=on_resume,
        )

    def watch_jobs(
        self,
        *,
        cursor: str = "",
        timeout: float | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_reconnect: OnReconnect | None = None,
        on_resume: OnResume | None = None,
        **filters: Unpack[JobFilter],
    ) -> AsyncIterator[job_service_pb2.WatchJobsResponse]:
        """Streams job-level changes of every job matching the filters (a dashboard feed).

        Each CHANGE carries the jobs (BASIC view) changed since the previous message and a ``cursor``;
        HEARTBEATs come when idle. The stream never ends by itself: stop iterating to end it. When it
        breaks, the iterator reconnects from the last cursor it yielded, so no change is missed. To
        start from a listing, pass ``cursor=list_jobs_page(...).watch_cursor``.

        Args:
            cursor: Resume after this cursor; empty starts from now.
            **filters: Which jobs: the keys of :class:`jobpulse.JobFilter` (``states``, ``kind``,
                ``labels``, ...).
            timeout: Overall deadline of the whole feed in seconds (``None``: none).
            idle_timeout: Seconds without any message after which the stream is presumed dead.
            reconnect_timeout: Give up after failing to reconnect for this many seconds.
            connect_timeout: Give up after this many seconds when no stream has delivered a message yet
                (nothing listening at the target, most likely).
            on_reconnect: Called before each new attempt after the stream broke, as for
                :meth:`watch_job`; its ``ReconnectInfo.cursor`` is the cursor the feed resumes from.
            on_resume: Called when a stream delivers its first message after failed attempts, as for
                :meth:`watch_job`.
        """
        request = _requests.watch_jobs(
            filters,
            "watch_jobs",
            cursor=cursor,
        )

        def observe(event: job_service_pb2.WatchJobsResponse) -> bool:
            request.cursor = event.cursor
            return False

        return self._resumable(
            self._jobs.WatchJobs,
            lambda: request,
            observe,
            "job feed stream",
            timeout=timeout,
            idle_timeout=idle_timeout,
            reconnect_timeout=reconnect_timeout,
            connect_timeout=connect_timeout,
            on_reconnect=on_reconnect,
            on_resume=on_resume,
        )

    async def _resumable(
        self,
        method: Callable[..., Any],
        make_request: Callable[[], Any],
        observe: Callable[[Any], bool],
        what: str,
        *,
        timeout: float | None,
        idle_timeout: float | None,
        reconnect_timeout: float,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_reconnect: OnReconnect | None = None,
        on_resume: OnResume | None = None,
    ) -> AsyncIterator[Any]:
        """Runs a server stream, resuming it from ``make_request()`` whenever it breaks.

        ``observe`` sees each message before it is yielded and returns True once the stream is done;
        ``on_reconnect`` and ``on_resume`` hear about each new attempt and the first message after them.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = _retry.Backoff(initial=0.2, maximum=5.0)
        outage = Outage(on_reconnect, on_resume)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"{what} exceeded its {timeout:g}s deadline")
            request = make_request()
            call = method(request, timeout=remaining, metadata=with_trace_context(self._metadata))
            reader = StreamReader(call, idle_timeout)
            error: JobpulseError
            try:
                while True:
                    event = await reader.read()
                    if event is None:
                        error = Unavailable(f"the {what} ended before it was complete")
                        break
                    outage.delivered(request)
                    finished = observe(event)
                    backoff.reset()
                    yield event
                    if finished:
                        return
            except StreamIdle:
                error = Unavailable(f"no message on the {what} for {idle_timeout:g}s")
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if not _retry.is_transport_failure(error):
                    raise error from rpc_error
            finally:
                reader.close()
            failing_for = outage.broke()
            # Before the first message there is nothing to resume: give up after the (shorter) connect
            # timeout, so a wrong target is reported instead of retried for minutes.
            limit = reconnect_timeout if outage.connected else min(connect_timeout, reconnect_timeout)
            if failing_for >= limit:
                raise error
            delay = backoff.next_delay(error.retry_delay)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            outage.failed(error, delay, make_request())
            await sleep(delay)

    async def wait(
        self, job_id: str, timeout: float | None = None, *, view: JobViewLike = "basic"
    ) -> job_pb2.Job:
        """Waits until a job is COMPLETED, FAILED or CANCELLED, and returns it.

        Built on :meth:`watch_job`, so it survives server restarts and dropped connections.

        Args:
            job_id: The job's id.
            timeout: Seconds to wait at most (``None``: forever).
            view: ``"basic"`` returns the job from the final watch message; ``"full"`` fetches it again
                with its chunks.

        Raises:
            jobpulse.errors.WaitTimeout: The job was not finished after ``timeout`` seconds; its
                ``last_job`` attribute holds the last state seen.
        """
        cursor_job: job_pb2.Job | None = None
        try:
            async for event in self.watch_job(job_id, timeout=timeout):
                if event.HasField("job"):
                    cursor_job = event.job
        except DeadlineExceeded as exc:
            if timeout is None:
                raise
            raise WaitTimeout(job_id, timeout, cursor_job) from exc
        if cursor_job is None or not is_terminal(cursor_job.state):  # pragma: no cover - watch guarantees it
            raise Unavailable(f"watch of job {job_id} ended without a final state")
        if job_view(view) == job_pb2.JOB_VIEW_FULL:
            return await self.get_job(job_id, view="full")
        return cursor_job

    # -- ScheduleService -------------------------------------------------------------------------------

    async def create_schedule(
        self,
        cron: str,
        job: _schedule_requests.JobTemplate,
        *,
        display_name: str = "",
        time_zone: str = "",
        paused: bool = False,
        misfire_policy: _schedule_requests.PolicyLike = "run_once",
        overlap_policy: _schedule_requests.PolicyLike = "allow",
        timeout: float | None = None,
    ) -> schedule_service_pb2.Schedule:
        """Creates a schedule: at every tick of ``cron`` the server creates a job from ``job``, owned by
        the caller. Exactly one job per tick, however many servers run (the tick is the job's
        ``request_id``: ``schedules/<id>/<tick, RFC 3339>``). Not retried (a repeat makes a second
        schedule).

        Example::

            schedule = await client.create_schedule(
                "0 3 * * mon-fri", {"kind": "report", "total_items": 1}, time_zone="Europe/Berlin"
            )

        Args:
            cron: A 5-field cron expression (minute hour day-of-month month day-of-week), e.g.
                ``"*/5 * * * *"``.
            job: The job each tick creates: a ``CreateJobRequest`` or a mapping of
                :meth:`create_job`'s arguments (``kind`` and ``total_items`` at least; no
                ``request_id`` or ``schedule_time``). Checked now as CreateJob checks it.
            display_name: Human-readable name.
            time_zone: The IANA time zone ``cron`` is read in (``"Europe/Berlin"``); ``""``: UTC.
            paused: Create it paused (no ticks until resumed).
            misfire_policy: What to do with ticks missed while no server ran: ``"run_once"`` (one job
                for any number of them) or ``"skip"``.
            overlap_policy: ``"allow"`` (every tick makes a job) or ``"skip"`` (no job while the
                schedule's last job has not ended).
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The schedule, with its name (``schedules/<id>``) and next run time.

        Raises:
            jobpulse.errors.InvalidArgument: A bad cron expression (``schedule.cron``), time zone
                (``schedule.time_zone``) or template (``schedule.job.<field>``).
        """
        request = _schedule_requests.create_schedule(
            cron,
            job,
            display_name=display_name,
            time_zone=time_zone,
            paused=paused,
            misfire=misfire_policy,
            overlap=overlap_policy,
        )
        response = await self._call(self._schedules.CreateSchedule, request, timeout=timeout)
        return response.schedule

    async def get_schedule(
        self, schedule: str, *, timeout: float | None = None
    ) -> schedule_service_pb2.Schedule:
        """Returns one schedule.

        Args:
            schedule: Its id or name (``schedules/<id>``).
            timeout: Deadline in seconds; defaults to the client's.

        Raises:
            jobpulse.errors.NotFound: No such schedule, or another owner's (``SCHEDULE_NOT_FOUND``).
        """
        request = schedule_service_pb2.GetScheduleRequest(name=_schedule_requests.schedule_name(schedule))
        response = await self._call(self._schedules.GetSchedule, request, timeout=timeout)
        return response.schedule

    def list_schedules(self, *, page_size: int = 0) -> AsyncIterator[schedule_service_pb2.Schedule]:
        """Iterates over the caller's schedules (every owner's for a key that sees them all), oldest
        first, fetching pages lazily.

        Args:
            page_size: Schedules per page (server default 50, at most 500).
        """
        request = schedule_service_pb2.ListSchedulesRequest(page_size=page_size)
        return self._pages(self._schedules.ListSchedules, request, lambda r: r.schedules)

    async def update_schedule(
        self,
        schedule: str,
        *,
        display_name: str | None = None,
        cron: str | None = None,
        time_zone: str | None = None,
        job: _schedule_requests.JobTemplate | None = None,
        paused: bool | None = None,
        misfire_policy: _schedule_requests.PolicyLike | None = None,
        overlap_policy: _schedule_requests.PolicyLike | None = None,
        timeout: float | None = None,
    ) -> schedule_service_pb2.Schedule:
        """Changes a schedule; ``update_mask`` lists exactly the arguments passed (not None). A new
        ``cron`` or ``time_zone``, or ``paused=False`` on a paused schedule, counts its next tick from
        now; ``paused=True`` stops its ticks.

        Args:
            schedule: Its id or name (``schedules/<id>``).
            display_name: The new name.
            cron: The new 5-field cron expression.
            time_zone: The new IANA time zone (``""``: UTC).
            job: The new job template (as for :meth:`create_schedule`).
            paused: Pause (True) or resume (False).
            misfire_policy: ``"run_once"`` or ``"skip"``.
            overlap_policy: ``"allow"`` or ``"skip"``.
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The schedule after the change.

        Raises:
            ValueError: Nothing to change was given.
            jobpulse.errors.NotFound: No such schedule, or another owner's (``SCHEDULE_NOT_FOUND``).
            jobpulse.errors.InvalidArgument: A bad value, naming the field.
        """
        request = _schedule_requests.update_schedule(
            schedule,
            display_name=display_name,
            cron=cron,
            time_zone=time_zone,
            job=job,
            paused=paused,
            misfire=misfire_policy,
            overlap=overlap_policy,
        )
        response = await self._call(self._schedules.UpdateSchedule, request, timeout=timeout)
        return response.schedule

    async def delete_schedule(self, schedule: str, *, timeout: float | None = None) -> None:
        """Deletes a schedule; the jobs it made are kept.

        Args:
            schedule: Its id or name (``schedules/<id>``).
            timeout: Deadline in seconds; defaults to the client's.

        Raises:
            jobpulse.errors.NotFound: No such schedule, or another owner's (``SCHEDULE_NOT_FOUND``).
        """
        request = schedule_service_pb2.DeleteScheduleRequest(name=_schedule_requests.schedule_name(schedule))
        await self._call(self._schedules.DeleteSchedule, request, timeout=timeout)

    async def trigger_schedule(
        self, schedule: str, *, timeout: float | None = None
    ) -> schedule_service_pb2.TriggerScheduleResponse:
        """Creates one job from the schedule's template now, paused or not, outside its ticks (which
        do not move); the overlap policy does not apply. Not retried (a repeat makes another job).

        Args:
            schedule: Its id or name (``schedules/<id>``).
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The new job (``.job``, FULL view) and the schedule with it as its last job (``.schedule``).

        Raises:
            jobpulse.errors.NotFound: No such schedule, or another owner's (``SCHEDULE_NOT_FOUND``).
        """
        request = schedule_service_pb2.TriggerScheduleRequest(name=_schedule_requests.schedule_name(schedule))
        return await self._call(self._schedules.TriggerSchedule, request, timeout=timeout)

    # -- WorkerService ---------------------------------------------------------------------------------

    async def claim_chunks(
        self,
        worker_id: str,
        kinds: Iterable[str] | None = None,
        max_chunks: int = 1,
        lease_duration: float | timedelta = 60.0,
        wait: float | timedelta = 0.0,
        *,
        timeout: float | None = None,
    ) -> list[worker_service_pb2.ChunkClaim]:
        """Claims up to ``max_chunks`` pending chunks under a lease.

        Not retried automatically: a lost response would leave claimed chunks to run out their leases.

        Args:
            worker_id: Who is claiming; recorded on the chunks.
            kinds: Only chunks of jobs of these kinds; empty or ``None`` means any.
            max_chunks: At most this many chunks (1..100).
            lease_duration: Seconds the lease lasts without a heartbeat.
            wait: Seconds to block on the server for work to appear (long poll, at most 60).
            timeout: Deadline in seconds; defaults to the client's plus ``wait``.

        Returns:
            The claims; an empty list when there is no work.
        """
        request = _requests.claim_chunks(worker_id, kinds, max_chunks, lease_duration, wait)
        if timeout is None and self.timeout is not None:
            waited = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            timeout = self.timeout + waited
        response = await self._call(self._workers.ClaimChunks, request, timeout=timeout)
        return list(response.claims)

    async def report_chunk_progress(
        self,
        chunk_id: str,
        lease_token: str,
        items_done: int = 0,
        stage: str = "",
        message: str = "",
        external_task_id: str = "",
        lease_duration: float | timedelta | None = None,
        *,
        artifacts: Iterable[ArtifactLike] | None = None,
        timeout: float | None = None,
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        """Reports a chunk's progress and extends its lease (a heartbeat).

        ``artifacts`` are what the chunk has to show while it runs (give them ``role="preview"`` or
        ``"thumbnail"``): each replaces the chunk's earlier artifact of the same name, and watchers see it
        at once.

        Returns:
            The response; ``cancel_requested`` tells the worker to stop.

        Raises:
            jobpulse.errors.LeaseLost: The lease token is no longer current: drop the chunk.
        """
        request = _requests.report_chunk_progress(
            chunk_id,
            lease_token,
            items_done=items_done,
            stage=stage,
            message=message,
            external_task_id=external_task_id,
            lease_duration=lease_duration,
            artifacts=artifacts,
        )
        return await self._call(self._workers.ReportChunkProgress, request, timeout=timeout)

    async def complete_chunk(
        self,
        chunk_id: str,
        lease_token: str,
        artifacts: Iterable[ArtifactLike] | None = None,
        external_task_id: str = "",
        *,
        claim_next: worker_service_pb2.ClaimChunksRequest | None = None,
        timeout: float | None = None,
    ) -> worker_service_pb2.CompleteChunkResponse:
        """Marks a chunk done (the server records CANCELLED if its job was cancelled meanwhile).

        Args:
            chunk_id: The chunk's id.
            lease_token: The token of the claim.
            artifacts: What the chunk produced, as ``Artifact`` messages or dicts of their fields.
            external_task_id: The id of the work in an outside system, if any.
            claim_next: Claim the next chunks in the same call (complete-and-claim): they come back
                in the response's ``claims``. Not retried automatically, like :meth:`claim_chunks`.
            timeout: Deadline in seconds; defaults to the client's.

        Raises:
            jobpulse.errors.LeaseLost: The lease token is no longer current (nothing is claimed then).
        """
        request = _requests.complete_chunk(chunk_id, lease_token, artifacts, external_task_id, claim_next)
        return await self._call(self._workers.CompleteChunk, request, timeout=timeout)

    async def complete_chunks(
        self,
        completions: Iterable[_requests.CompletionLike],
        *,
        claim_next: worker_service_pb2.ClaimChunksRequest | None = None,
        timeout: float | None = None,
    ) -> worker_service_pb2.CompleteChunksResponse:
        """Completes several chunks in one call; each stands or falls on its own lease.

        Args:
            completions: ``ChunkCompletion`` messages, ``(chunk_id, lease_token)`` /
                ``(chunk_id, lease_token, artifacts)`` tuples, or dicts of ``ChunkCompletion``'s
                fields; at most 100.
            claim_next: Claim the next chunks in the same call (see :meth:`complete_chunk`).
            timeout: Deadline in seconds; defaults to the client's.

        Returns:
            The response: ``results`` (one per completion, in order: ``ok``, or ``reason`` such as
            ``LEASE_LOST``) and ``claims``.
        """
        request = _requests.complete_chunks(completions, claim_next)
        return await self._call(self._workers.CompleteChunks, request, timeout=timeout)

    async def fail_chunk(
        self,
        chunk_id: str,
        lease_token: str,
        reason: str = "",
        message: str = "",
        retryable: bool = True,
        *,
        details: str = "",
        timeout: float | None = None,
    ) -> worker_service_pb2.FailChunkResponse:
        """Marks a chunk attempt failed; it is retried later if ``retryable`` and attempts remain.
        ``details``: anything that explains it, such as a traceback (the server keeps 8 KiB, cutting a
        longer one in the middle).

        Raises:
            jobpulse.errors.LeaseLost: The lease token is no longer current.
        """
        request = _requests.fail_chunk(chunk_id, lease_token, reason, message, retryable, details)
        return await self._call(self._workers.FailChunk, request, timeout=timeout)
