"""The asyncio jobpulse client, over ``grpc.aio``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.struct_pb2 import Struct

from jobpulse import _requests, _retry
from jobpulse._channel import CHANNEL_OPTIONS, call_metadata
from jobpulse._convert import ChunkStateLike, JobStateLike, JobViewLike, TimeLike, is_terminal, job_view
from jobpulse._events_token import EventsToken, events_token
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
    WatchCursor,
)
from jobpulse.errors import DeadlineExceeded, JobpulseError, Unavailable, WaitTimeout, from_rpc_error
from jobpulse.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

_T = TypeVar("_T")


class AsyncClient:
    """An asyncio client for the jobpulse JobService and WorkerService.

    The methods mirror :class:`jobpulse.Client` one for one, as coroutines; ``list_jobs``,
    ``list_job_chunks`` and ``watch_job`` are async iterators. Errors, retries and watch resumption behave
    the same way. Open it inside a running event loop, preferably with ``async with``.

    Example::

        async with jobpulse.AsyncClient() as client:
            job = await client.create_job("thumbnails", 2500)
            async for event in client.watch_job(job.id):
                print(event.job.progress.percent)

    Args:
        target: ``host:port`` of the server. ``None`` means ``$JOBPULSE_TARGET``, else ``127.0.0.1:50051``.
        api_key: Sent as ``authorization: Bearer <key>`` metadata with every call. ``None`` means
            ``$JOBPULSE_API_KEY`` (if set); ``""`` sends no key.
        secure: Use TLS (``True``) or a plaintext connection (``False``). ``None`` means
            ``$JOBPULSE_TLS``, or TLS when a CA is given (``root_certificates`` or ``$JOBPULSE_TLS_CA``).
        root_certificates: PEM bytes of the CA that signed the server's certificate (implies TLS).
            ``None`` means the file named by ``$JOBPULSE_TLS_CA``, else the system's roots.
        timeout: Default deadline of each unary call, in seconds (``None``: no deadline).
        channel: A ready ``grpc.aio.Channel`` to use instead of opening one; the client does not close a
            channel it was given.

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
        self._stubs: tuple[Any, Any, Any] | None = None

    def _stub_pair(self) -> tuple[Any, Any, Any]:
        # grpc.aio channels bind to the running loop, so the channel is opened on first use.
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
            )
        return self._stubs

    @property
    def _jobs(self) -> Any:
        return self._stub_pair()[0]

    @property
    def _workers(self) -> Any:
        return self._stub_pair()[1]

    @property
    def _admin(self) -> Any:
        return self._stub_pair()[2]

    # -- lifecycle -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel (unless it was passed in). Calls in flight are cancelled."""
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None

    async def __aenter__(self) -> AsyncClient:
        self._stub_pair()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------------------------

    async def _call(
        self, method: Callable[..., Awaitable[_T]], request: Any, *, timeout: float | None, retry: bool
    ) -> _T:
        budget = self.timeout if timeout is None else timeout
        deadline = None if budget is None else time.monotonic() + budget
        backoff = _retry.Backoff()
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
                await asyncio.sleep(delay)

    async def _pages(
        self, method: Callable[..., Awaitable[Any]], request: Any, items: Callable[[Any], Iterable[_T]]
    ) -> AsyncIterator[_T]:
        while True:
            response = await self._call(method, request, timeout=None, retry=True)
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
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Creates a job; see :meth:`jobpulse.Client.create_job`."""
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
        )
        response = await self._call(self._jobs.CreateJob, request, timeout=timeout, retry=bool(request_id))
        return response.job

    async def get_job(
        self, job_id: str, *, view: JobViewLike = "full", timeout: float | None = None
    ) -> job_pb2.Job:
        """Returns one job; see :meth:`jobpulse.Client.get_job`."""
        request = _requests.get_job(job_id, view)
        return (await self._call(self._jobs.GetJob, request, timeout=timeout, retry=True)).job

    async def list_jobs_page(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        states: Iterable[JobStateLike] | None = None,
        kind: str = "",
        min_priority: int | None = None,
        max_priority: int | None = None,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        search: str = "",
        labels: Mapping[str, str] | None = None,
        order_by: str = "",
        view: JobViewLike = 0,
        timeout: float | None = None,
    ) -> job_service_pb2.ListJobsResponse:
        """Returns one page of jobs; see :meth:`jobpulse.Client.list_jobs_page`."""
        request = _requests.list_jobs(
            page_size=page_size,
            page_token=page_token,
            states=states,
            kind=kind,
            min_priority=min_priority,
            max_priority=max_priority,
            created_after=created_after,
            created_before=created_before,
            search=search,
            labels=labels,
            order_by=order_by,
            view=view,
        )
        return await self._call(self._jobs.ListJobs, request, timeout=timeout, retry=True)

    def list_jobs(
        self,
        *,
        page_size: int = 0,
        states: Iterable[JobStateLike] | None = None,
        kind: str = "",
        min_priority: int | None = None,
        max_priority: int | None = None,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        search: str = "",
        labels: Mapping[str, str] | None = None,
        order_by: str = "",
        view: JobViewLike = 0,
    ) -> AsyncIterator[job_pb2.Job]:
        """Async-iterates over every matching job, page by page; see :meth:`jobpulse.Client.list_jobs`."""
        request = _requests.list_jobs(
            page_size=page_size,
            states=states,
            kind=kind,
            min_priority=min_priority,
            max_priority=max_priority,
            created_after=created_after,
            created_before=created_before,
            search=search,
            labels=labels,
            order_by=order_by,
            view=view,
        )
        return self._pages(self._jobs.ListJobs, request, lambda r: r.jobs)

    async def export_jobs(
        self,
        *,
        states: Iterable[JobStateLike] | None = None,
        kind: str = "",
        min_priority: int | None = None,
        max_priority: int | None = None,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        search: str = "",
        labels: Mapping[str, str] | None = None,
        order_by: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[job_pb2.Job]:
        """Async-iterates over every matching job, streamed by one ExportJobs call; see
        :meth:`jobpulse.Client.export_jobs` for the arguments, batching and retries.

        To stop early and cancel the stream at once, iterate inside
        ``contextlib.aclosing(client.export_jobs(...))``; otherwise the stream is cancelled when the
        iterator is garbage-collected.
        """
        request = _requests.export_jobs(
            states=states,
            kind=kind,
            min_priority=min_priority,
            max_priority=max_priority,
            created_after=created_after,
            created_before=created_before,
            search=search,
            labels=labels,
            order_by=order_by,
        )
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
                call.cancel()  # also when the caller stops early: the server stops reading
            await asyncio.sleep(delay)

    def list_job_chunks(
        self,
        job_id: str,
        states: Iterable[ChunkStateLike] | None = None,
        page_size: int = 0,
        *,
        page_token: str = "",
    ) -> AsyncIterator[job_pb2.Chunk]:
        """Async-iterates over a job's chunks in index order; see :meth:`jobpulse.Client.list_job_chunks`."""
        request = _requests.list_job_chunks(job_id, states, page_size, page_token)
        return self._pages(self._jobs.ListJobChunks, request, lambda r: r.chunks)

    async def batch_get_jobs(
        self, job_ids: Iterable[str], *, view: JobViewLike = "full", timeout: float | None = None
    ) -> list[job_pb2.Job]:
        """Returns up to 100 jobs in the order asked; see :meth:`jobpulse.Client.batch_get_jobs`."""
        request = _requests.batch_get_jobs(job_ids, view)
        return list((await self._call(self._jobs.BatchGetJobs, request, timeout=timeout, retry=True)).jobs)

    async def cancel_job(self, job_id: str, reason: str = "", *, timeout: float | None = None) -> job_pb2.Job:
        """Cancels a job; see :meth:`jobpulse.Client.cancel_job`."""
        request = job_service_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        return (await self._call(self._jobs.CancelJob, request, timeout=timeout, retry=True)).job

    async def retry_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Retries a FAILED or CANCELLED job; see :meth:`jobpulse.Client.retry_job`."""
        request = job_service_pb2.RetryJobRequest(job_id=job_id)
        return (await self._call(self._jobs.RetryJob, request, timeout=timeout, retry=False)).job

    async def retry_chunk(self, job_id: str, chunk_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Retries one FAILED chunk; see :meth:`jobpulse.Client.retry_chunk`."""
        request = job_service_pb2.RetryChunkRequest(job_id=job_id, chunk_id=chunk_id)
        return (await self._call(self._jobs.RetryChunk, request, timeout=timeout, retry=False)).job

    async def update_job(
        self,
        job_id: str,
        *,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        display_name: str | None = None,
        timeout: float | None = None,
    ) -> job_pb2.Job:
        """Changes the given fields of a job; see :meth:`jobpulse.Client.update_job`."""
        request = _requests.update_job(job_id, priority=priority, labels=labels, display_name=display_name)
        return (await self._call(self._jobs.UpdateJob, request, timeout=timeout, retry=True)).job

    async def delete_job(self, job_id: str, force: bool = False, *, timeout: float | None = None) -> None:
        """Deletes a job; see :meth:`jobpulse.Client.delete_job`."""
        request = job_service_pb2.DeleteJobRequest(job_id=job_id, force=force)
        await self._call(self._jobs.DeleteJob, request, timeout=timeout, retry=False)

    async def list_webhook_deliveries(
        self, job_id: str, *, timeout: float | None = None
    ) -> list[job_service_pb2.WebhookDelivery]:
        """The webhook deliveries of a job, newest first."""
        request = job_service_pb2.ListWebhookDeliveriesRequest(job_id=job_id)
        response = await self._call(self._jobs.ListWebhookDeliveries, request, timeout=timeout, retry=True)
        return list(response.deliveries)

    async def redeliver_webhook(
        self, delivery_id: str, *, timeout: float | None = None
    ) -> job_service_pb2.WebhookDelivery:
        """Sends a webhook delivery again as soon as possible."""
        request = job_service_pb2.RedeliverWebhookRequest(delivery_id=delivery_id)
        return (await self._call(self._jobs.RedeliverWebhook, request, timeout=timeout, retry=True)).delivery

    async def get_usage(self, *, timeout: float | None = None) -> admin_service_pb2.GetUsageResponse:
        """Calls admitted and rejected per API key: every key's with an admin key, else the caller's own."""
        request = admin_service_pb2.GetUsageRequest()
        return await self._call(self._admin.GetUsage, request, timeout=timeout, retry=True)

    async def get_server_health(
        self, *, timeout: float | None = None
    ) -> admin_service_pb2.GetServerHealthResponse:
        """The detailed health report of the server (needs an admin key)."""
        request = admin_service_pb2.GetServerHealthRequest()
        return await self._call(self._admin.GetServerHealth, request, timeout=timeout, retry=True)

    async def get_job_stats(
        self,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        kind: str = "",
        *,
        timeout: float | None = None,
    ) -> job_service_pb2.GetJobStatsResponse:
        """Returns job statistics; see :meth:`jobpulse.Client.get_job_stats`."""
        request = _requests.get_job_stats(created_after, created_before, kind)
        return await self._call(self._jobs.GetJobStats, request, timeout=timeout, retry=True)

    async def create_events_token(
        self, job_id: str = "", *, ttl: float | timedelta | None = None, timeout: float | None = None
    ) -> EventsToken:
        """Makes a short-lived token for the HTTP events paths; see
        :meth:`jobpulse.Client.create_events_token`."""
        request = _requests.create_events_token(job_id, ttl)
        response = await self._call(self._jobs.CreateEventsToken, request, timeout=timeout, retry=True)
        return events_token(job_id, response)

    async def watch_job(
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
        """Async-iterates over a job's changes until it is terminal, resuming across broken streams.

        See :meth:`jobpulse.Client.watch_job` for the arguments and the resumption rules. The
        ``on_reconnect`` and ``on_resume`` callbacks are plain functions called on the event loop, so they
        must not block.
        """
        cursor = WatchCursor(job_id, after_revision)

        def observe(event: job_service_pb2.WatchJobResponse) -> bool:
            cursor.observe(event)
            return cursor.finished

        async for event in self._resumable(
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
        ):
            yield event

    async def watch_jobs(
        self,
        *,
        cursor: str = "",
        states: Iterable[JobStateLike] | None = None,
        kind: str = "",
        min_priority: int | None = None,
        max_priority: int | None = None,
        created_after: TimeLike | None = None,
        created_before: TimeLike | None = None,
        search: str = "",
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        on_reconnect: OnReconnect | None = None,
        on_resume: OnResume | None = None,
    ) -> AsyncIterator[job_service_pb2.WatchJobsResponse]:
        """Async-iterates over job-level changes of every matching job (a dashboard feed), resuming
        from the last cursor across broken streams; see :meth:`jobpulse.Client.watch_jobs` (the
        callbacks are plain functions called on the event loop, as for :meth:`watch_job`)."""
        request = _requests.watch_jobs(
            cursor=cursor,
            states=states,
            kind=kind,
            min_priority=min_priority,
            max_priority=max_priority,
            created_after=created_after,
            created_before=created_before,
            search=search,
            labels=labels,
        )

        def observe(event: job_service_pb2.WatchJobsResponse) -> bool:
            request.cursor = event.cursor
            return False

        async for event in self._resumable(
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
        ):
            yield event

    async def _resumable(
        self,
        method: Any,
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
        """Yields a server stream's messages, reconnecting with backoff after transport failures.

        ``observe`` sees each message before it is yielded (to move the resume point) and returns
        True once the stream is complete; ``make_request`` builds the request to (re)connect with;
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
            error: JobpulseError
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(call.read(), idle_timeout)
                    except asyncio.TimeoutError:
                        error = Unavailable(f"no message on the {what} for {idle_timeout:g}s")
                        break
                    if event is grpc.aio.EOF:
                        error = Unavailable(f"the {what} ended before it was complete")
                        break
                    outage.delivered(request)
                    finished = observe(event)
                    backoff.reset()
                    yield event
                    if finished:
                        return
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if not _retry.is_transport_failure(error):
                    raise error from rpc_error
            finally:
                call.cancel()
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
            await asyncio.sleep(delay)

    async def wait(
        self, job_id: str, timeout: float | None = None, *, view: JobViewLike = "basic"
    ) -> job_pb2.Job:
        """Waits until a job is terminal and returns it; see :meth:`jobpulse.Client.wait`.

        Raises:
            jobpulse.errors.WaitTimeout: The job was not finished after ``timeout`` seconds.
        """
        last: job_pb2.Job | None = None
        try:
            async for event in self.watch_job(job_id, timeout=timeout):
                if event.HasField("job"):
                    last = event.job
        except DeadlineExceeded as exc:
            if timeout is None:
                raise
            raise WaitTimeout(job_id, timeout, last) from exc
        if last is None or not is_terminal(last.state):  # pragma: no cover - watch guarantees it
            raise Unavailable(f"watch of job {job_id} ended without a final state")
        if job_view(view) == job_pb2.JOB_VIEW_FULL:
            return await self.get_job(job_id, view="full")
        return last

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
        """Claims pending chunks under a lease; see :meth:`jobpulse.Client.claim_chunks`."""
        request = _requests.claim_chunks(worker_id, kinds, max_chunks, lease_duration, wait)
        if timeout is None and self.timeout is not None:
            waited = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            timeout = self.timeout + waited
        response = await self._call(self._workers.ClaimChunks, request, timeout=timeout, retry=False)
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
        timeout: float | None = None,
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        """Reports progress and extends the lease; see :meth:`jobpulse.Client.report_chunk_progress`."""
        request = _requests.report_chunk_progress(
            chunk_id,
            lease_token,
            items_done=items_done,
            stage=stage,
            message=message,
            external_task_id=external_task_id,
            lease_duration=lease_duration,
        )
        return await self._call(self._workers.ReportChunkProgress, request, timeout=timeout, retry=True)

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
        """Marks a chunk done; see :meth:`jobpulse.Client.complete_chunk`."""
        request = _requests.complete_chunk(chunk_id, lease_token, artifacts, external_task_id, claim_next)
        return await self._call(self._workers.CompleteChunk, request, timeout=timeout, retry=False)

    async def complete_chunks(
        self,
        completions: Iterable[_requests.CompletionLike],
        *,
        claim_next: worker_service_pb2.ClaimChunksRequest | None = None,
        timeout: float | None = None,
    ) -> worker_service_pb2.CompleteChunksResponse:
        """Completes several chunks in one call; see :meth:`jobpulse.Client.complete_chunks`."""
        request = _requests.complete_chunks(completions, claim_next)
        return await self._call(self._workers.CompleteChunks, request, timeout=timeout, retry=False)

    async def fail_chunk(
        self,
        chunk_id: str,
        lease_token: str,
        reason: str = "",
        message: str = "",
        retryable: bool = True,
        *,
        timeout: float | None = None,
    ) -> worker_service_pb2.FailChunkResponse:
        """Marks a chunk attempt failed; see :meth:`jobpulse.Client.fail_chunk`."""
        request = _requests.fail_chunk(chunk_id, lease_token, reason, message, retryable)
        return await self._call(self._workers.FailChunk, request, timeout=timeout, retry=False)
