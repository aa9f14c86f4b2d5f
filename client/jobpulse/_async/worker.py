"""A ready-made worker loop: claim chunks, run a handler on each, heartbeat, complete or fail them.

What does not depend on the concurrency model (the claim budget, the heartbeat cadence, failure reports)
lives in ``jobpulse._worker_common``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from types import TracebackType

from opentelemetry import trace

from jobpulse import _tracing
from jobpulse._async._shim import (
    Background,
    Cancelled,
    Event,
    Lock,
    current_name,
    event_setter,
    run_concurrently,
    sleep,
    wait_for_event,
)
from jobpulse._async.client import AsyncClient
from jobpulse._retry import Backoff
from jobpulse._worker_common import (
    TRANSIENT,
    ClaimBudget,
    TaskState,
    apply_results,
    check_batch_size,
    chunk_completion,
    default_worker_id,
    failure_report,
    heartbeat_answered,
    heartbeat_period,
    log,
    next_claim,
)
from jobpulse.errors import JobpulseError, LeaseLost, NotFound
from jobpulse.v1 import worker_service_pb2

__all__ = ["AsyncHandler", "AsyncTask", "AsyncWorker"]

#: The FailChunk reason of a chunk handed back because ``AsyncWorker.run`` was cancelled.
STOPPED_REASON = "WorkerStopped"


class AsyncTask(TaskState):
    """One claimed chunk, handed to an :class:`AsyncWorker` handler.

    Its ``cancel_event`` is of type :class:`asyncio.Event`, so a handler can wait on it:
    ``await task.cancel_event.wait()``.
    ``progress``, ``preview``, ``set_external_task_id`` and ``add_artifact`` are plain methods that may be
    called from any thread, e.g. one the handler started.

    Attributes:
        job_id: The chunk's job.
        job_kind: The job's kind.
        job_metadata: The job's metadata as a plain dict.
        chunk: The chunk message as claimed (state PROCESSING).
        items: The job-wide item indexes of this chunk: ``range(item_start, item_start + item_count)``.
        lease_token: The fencing token of this claim.
        worker_id: The id of the worker that claimed it.
        cancel_event: Set when the server says the job was cancelled (or the lease was lost).
        artifacts: Artifacts added so far with :meth:`add_artifact`.
    """

    def __init__(
        self,
        claim: worker_service_pb2.ChunkClaim,
        worker_id: str,
        claimed_in: trace.SpanContext | None = None,
    ) -> None:
        """Wraps a claim; created by :class:`AsyncWorker`, not by handlers."""
        super().__init__(claim, worker_id, claimed_in)
        self.cancel_event = Event()
        self._changed = Event()
        self._set_cancel = event_setter(self.cancel_event)
        self._set_changed = event_setter(self._changed)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (or the lease lost): the handler should stop soon and return."""
        return self.cancel_event.is_set()

    def _notify(self) -> None:
        self._set_changed()

    def _lose_lease(self) -> None:
        self.lease_lost = True
        self._set_cancel()


AsyncHandler = Callable[[AsyncTask], Awaitable[object]]


class _Heartbeat:
    """Reports a task's progress in the background: soon after a change, and at least every lease/3."""

    def __init__(
        self, client: AsyncClient, task: AsyncTask, lease_duration: float, min_interval: float
    ) -> None:
        self._client = client
        self._task = task
        self._lease_duration = lease_duration
        self._period = heartbeat_period(lease_duration)
        self._min_interval = min_interval
        self._stop = Event()
        # (stage, message, external_task_id) as last reported, to flush a change made just before the end.
        self._sent: tuple[str, str, str] = ("", "", "")
        self._runner = Background(self._run, f"jobpulse-heartbeat-{task.chunk_id}")

    async def __aenter__(self) -> _Heartbeat:
        self._runner.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._task._changed.set()
        if exc_type is not None and issubclass(exc_type, Cancelled):
            # The worker is being cancelled: no more reports, the chunk is handed back by the caller.
            await self._runner.cancel()
            return
        await self._runner.join()
        # A stage or message set right before the handler returned would otherwise never be reported
        # (completion reports items, not the stage).
        _, stage, message, external_task_id = self._task._snapshot()
        changed = (stage, message, external_task_id) != self._sent or self._task._has_previews()
        if changed and not self._task.lease_lost:
            await self._beat()

    async def _run(self) -> None:
        last_sent = time.monotonic()
        while not self._stop.is_set():
            await wait_for_event(self._task._changed, self._period - (time.monotonic() - last_sent))
            if self._stop.is_set():
                return
            since = time.monotonic() - last_sent
            if since < self._min_interval:
                # Coalesce bursts of progress calls into at most one report per min_interval.
                if await wait_for_event(self._stop, self._min_interval - since):
                    return
            self._task._changed.clear()
            last_sent = time.monotonic()
            await self._beat()
            if self._task.lease_lost:
                return

    async def _beat(self) -> None:
        self._sent = await _beat(self._client, self._task, self._lease_duration, self._period)


async def _beat(
    client: AsyncClient, task: AsyncTask, lease_duration: float, timeout: float
) -> tuple[str, str, str]:
    """Reports a task's progress once, extending its lease; marks the lease lost or the job cancelled on the
    task as the server answers. Returns the (stage, message, external_task_id) sent."""
    items_done, stage, message, external_task_id = task._snapshot()
    previews = task._take_previews()
    try:
        response = await client.report_chunk_progress(
            task.chunk_id,
            task.lease_token,
            items_done=items_done,
            stage=stage,
            message=message,
            external_task_id=external_task_id,
            lease_duration=lease_duration,
            artifacts=previews,
            timeout=timeout,
        )
    except JobpulseError as exc:
        task._return_previews(previews)  # sent with the next report
        heartbeat_answered(task, None, exc)
    else:
        heartbeat_answered(task, response, None)
    return stage, message, external_task_id


class _LeaseKeeper:
    """Keeps the leases of a batch's chunks that are in hand but not running: waiting for their turn, or
    done and waiting for the batch's completion. Every lease/3, like a running chunk's heartbeat (which
    takes over while its handler runs). A server that answers LEASE_LOST or cancel_requested marks the task
    as a heartbeat would."""

    def __init__(self, client: AsyncClient, tasks: list[AsyncTask], lease_duration: float) -> None:
        self._client = client
        self._lease_duration = lease_duration
        self._period = heartbeat_period(lease_duration)
        # Held while a report is in flight, so a task let go of is never reported after release() returns
        # (a late heartbeat after the completion would be refused, and log a lost lease that was not).
        self._lock = Lock()
        self._held = {task.chunk_id: task for task in tasks}
        self._stop = Event()
        self._runner = Background(self._run, f"jobpulse-leases-{current_name()}")

    async def __aenter__(self) -> _LeaseKeeper:
        self._runner.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if exc_type is not None and issubclass(exc_type, Cancelled):
            await self._runner.cancel()
            return
        await self._runner.join()

    async def hold(self, task: AsyncTask) -> None:
        """Keeps ``task``'s lease from now on."""
        async with self._lock:
            self._held[task.chunk_id] = task

    async def release(self, task: AsyncTask) -> None:
        """Stops keeping ``task``'s lease: its handler's heartbeat takes over, or it is being reported."""
        async with self._lock:
            self._held.pop(task.chunk_id, None)

    async def _run(self) -> None:
        while not await wait_for_event(self._stop, self._period):
            async with self._lock:
                waiting = list(self._held.values())
            for task in waiting:
                async with self._lock:
                    if self._stop.is_set():
                        return
                    if self._held.get(task.chunk_id) is task and not task.lease_lost:
                        await _beat(self._client, task, self._lease_duration, self._period)


class AsyncWorker:
    """Runs a handler over chunks claimed from jobpulse, with heartbeats, completion and failure reporting.

    The handler is a coroutine function taking an :class:`AsyncTask`. When it returns, the chunk is completed
    (with the task's artifacts); when it raises, the chunk fails with the exception's class name as reason and
    ``str(exc)`` as message, retryable unless the exception is a :class:`jobpulse.PermanentError`. When the
    job is cancelled, ``task.cancelled`` becomes true and ``task.cancel_event`` is set; the handler should
    return early, after which the chunk is completed and the server records it CANCELLED. A lost lease
    (``LeaseLost``) drops the chunk silently. ``UNAVAILABLE`` from the server is waited out with backoff.
    While there is work, each completion also claims the loop's next chunk (``claim_next``), so a busy worker
    makes one call per chunk; it long-polls with ClaimChunks only when a completion brought no new chunk.
    ``concurrency`` handlers run at once, as tasks on the running event loop.

    With ``batch_size`` above 1, each of the ``concurrency`` loops claims up to that many chunks at once and
    awaits the handler on them one after the other, each with its heartbeat, cancel and failure exactly as
    above (a failure is still reported at once, with FailChunk). The chunks whose handler returned are
    completed together by one CompleteChunks call, which also claims the loop's next batch: about one call
    per batch instead of one per chunk. Every item carries its own lease token and stands alone: one the
    server refuses (its lease was lost, e.g. it expired and another worker took the chunk) is dropped as a
    lost lease is, and the rest of the batch stays completed. Leases of the chunks waiting their turn, or
    waiting for the batch's completion, are kept alive meanwhile; one lost before its turn is skipped. Use
    it when chunks are short and the calls per chunk are what limits throughput. The cost: each loop holds
    up to ``batch_size`` chunks that other workers cannot take, a finished chunk shows COMPLETED only when
    its whole batch is done, and a graceful stop finishes the whole batch in hand.

    Example::

        async def handle(task: jobpulse.AsyncTask) -> None:
            for n, item in enumerate(task.items, 1):
                if task.cancelled:
                    return
                await process(item)
                task.progress(n)

        async with jobpulse.AsyncWorker("127.0.0.1:50051", kinds=["thumbnails"], concurrency=4) as worker:
            await worker.run(handle)

    Args:
        client_or_target: A :class:`jobpulse.AsyncClient`, or a target string to open one (closed by
            :meth:`close`).
        kinds: Only claim chunks of jobs of these kinds; ``None`` means any kind.
        worker_id: Recorded on claimed chunks; defaults to ``<hostname>-<pid>-<random>``.
        concurrency: Number of handlers running at the same time.
        lease_duration: Seconds a lease lasts without a heartbeat; heartbeats go out every third of it.
        poll_wait: Seconds each claim long-polls the server for work; also bounds how long stopping takes.
        progress_interval: Minimum seconds between two progress reports of the same chunk.
        batch_size: Chunks each loop claims, and completes, per call (1..100). 1, the default, claims and
            completes one chunk at a time; more trades chunks held per loop for fewer calls (see above).

    Raises:
        ValueError: ``concurrency`` below 1, or ``batch_size`` outside 1..100.
    """

    def __init__(
        self,
        client_or_target: AsyncClient | str | None = None,
        kinds: Iterable[str] | None = None,
        worker_id: str | None = None,
        concurrency: int = 1,
        lease_duration: float = 30.0,
        poll_wait: float = 5.0,
        *,
        progress_interval: float = 0.5,
        batch_size: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.batch_size = check_batch_size(batch_size)
        if isinstance(client_or_target, AsyncClient):
            self.client = client_or_target
            self._owns_client = False
        else:
            self.client = AsyncClient(client_or_target)
            self._owns_client = True
        self.kinds = list(kinds or ())
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_duration = lease_duration
        self.poll_wait = poll_wait
        self.progress_interval = progress_interval
        self._budget = ClaimBudget(None)

    async def close(self) -> None:
        """Closes the client if this worker opened it."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> AsyncWorker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def run(
        self,
        handler: AsyncHandler,
        stop_event: asyncio.Event | None = None,
        max_chunks: int | None = None,
    ) -> int:
        """Claims and processes chunks until stopped, and returns how many chunks were handled.

        Stopping is graceful: after ``stop_event`` is set (or ``max_chunks`` chunks were claimed), no new
        chunk is claimed and ``run`` returns once the chunks in hand are finished (with ``batch_size`` above
        1, the rest of each loop's batch), within about ``poll_wait`` seconds.

        Cancelling the task running ``run`` (e.g. Ctrl-C under :func:`asyncio.run`) cancels the handlers
        and hands their chunks back at once: each fails retryably with reason ``WorkerStopped`` (an attempt,
        as an expired lease would be, but without waiting for the lease); chunks of a batch whose handler
        had already returned are completed.

        Args:
            handler: Awaited with the :class:`AsyncTask` of each claimed chunk.
            stop_event: Set it to stop the worker gracefully.
            max_chunks: Stop after claiming this many chunks in total (batches never claim beyond it).

        Raises:
            jobpulse.errors.JobpulseError: An error retrying cannot fix, e.g. ``Unauthenticated`` or
                ``InvalidArgument`` on claims.
        """
        stop = stop_event or Event()
        self._budget = ClaimBudget(max_chunks)
        failures: list[BaseException] = []
        body = self._loop if self.batch_size == 1 else self._batch_loop
        await run_concurrently(
            [
                (f"jobpulse-worker-{n}", partial(body, handler, stop, failures))
                for n in range(self.concurrency)
            ],
            stop,
        )
        if failures:
            raise failures[0]
        return self._budget.processed

    async def _loop(self, handler: AsyncHandler, stop: asyncio.Event, failures: list[BaseException]) -> None:
        backoff = Backoff(initial=0.2, maximum=10.0)
        # Claims in hand, each with a budget slot taken: the next ones come back with the completion
        # of the previous chunk (complete-and-claim), so a busy worker makes one call per chunk.
        claims: list[_tracing.Claimed] = []
        while not stop.is_set() or claims:
            if not claims:
                if not self._budget.take():
                    return
                try:
                    claims = await self._claim(1)
                except TRANSIENT as exc:
                    self._budget.give_back()
                    delay = backoff.next_delay(exc.retry_delay)
                    log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    await wait_for_event(stop, delay)
                    continue
                except Exception as exc:
                    self._budget.give_back()
                    failures.append(exc)
                    stop.set()
                    return
                backoff.reset()
                if not claims:
                    self._budget.give_back()
                    continue
            claim, claimed_in = claims.pop(0)
            ask_next = not claims and not stop.is_set() and self._budget.take()
            try:
                got = await self._process(
                    handler, AsyncTask(claim, self.worker_id, claimed_in), ask_next, stop
                )
            except Cancelled:
                # Chunks that came with the last completion were never started: hand them back too.
                for unstarted, _ in claims:
                    await self._release(unstarted.chunk.id, unstarted.lease_token)
                raise
            if ask_next and not got:
                self._budget.give_back()
            claims += got

    async def _batch_loop(
        self, handler: AsyncHandler, stop: asyncio.Event, failures: list[BaseException]
    ) -> None:
        """``_loop`` with batches: claims up to ``batch_size`` chunks, and the completion of each batch
        claims the next one, within what is left of the budget."""
        backoff = Backoff(initial=0.2, maximum=10.0)
        # Claims in hand, each with a budget slot taken.
        claims: list[_tracing.Claimed] = []
        while not stop.is_set() or claims:
            if not claims:
                wanted = self._budget.take_up_to(self.batch_size)
                if not wanted:
                    return
                try:
                    claims = await self._claim(wanted)
                except TRANSIENT as exc:
                    self._budget.give_back(wanted)
                    delay = backoff.next_delay(exc.retry_delay)
                    log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    await wait_for_event(stop, delay)
                    continue
                except Exception as exc:
                    self._budget.give_back(wanted)
                    failures.append(exc)
                    stop.set()
                    return
                backoff.reset()
                self._budget.give_back(wanted - len(claims))
                if not claims:
                    continue
            claims = await self._process_batch(
                handler, [AsyncTask(claim, self.worker_id, claimed_in) for claim, claimed_in in claims], stop
            )

    async def _claim(self, max_chunks: int) -> list[_tracing.Claimed]:
        """ClaimChunks (long-polling up to ``poll_wait``) under a span of its own, the parent of the spans
        of the claimed chunks' handlers."""
        with _tracing.calling("ClaimChunks", self.worker_id) as span:
            claims = await self.client.claim_chunks(
                self.worker_id,
                kinds=self.kinds,
                max_chunks=max_chunks,
                lease_duration=self.lease_duration,
                wait=self.poll_wait,
            )
        return _tracing.brought(claims, span)

    async def _process_batch(
        self, handler: AsyncHandler, tasks: list[AsyncTask], stop: asyncio.Event
    ) -> list[_tracing.Claimed]:
        """Awaits the handler on each chunk of a batch in turn, then completes those whose handler returned
        in one call that also claims the next batch (unless ``stop`` is set), which is returned.

        Cancelled while handlers run, it hands back the chunks not started (the running one is handed back
        by ``_handle``) and completes the finished ones, so no work done is thrown away."""
        finished: list[AsyncTask] = []
        unstarted = list(tasks)
        try:
            async with _LeaseKeeper(self.client, tasks, self.lease_duration) as keeper:
                while unstarted:
                    task = unstarted[0]
                    await keeper.release(task)
                    # Off the list only now: cancelled while waiting for the keeper, it is handed back.
                    unstarted.pop(0)
                    if task.lease_lost:
                        log.warning("chunk %s: lease lost before its turn; skipping it", task.chunk_id)
                        continue
                    if await self._handle(handler, task):
                        finished.append(task)
                        await keeper.hold(task)
        except Cancelled:
            for task in unstarted:
                if not task.lease_lost:
                    await self._release(task.chunk_id, task.lease_token)
            handled = [task for task in finished if not task.lease_lost]
            if handled:
                try:
                    response = await self.client.complete_chunks(
                        [chunk_completion(task) for task in handled], timeout=min(5.0, self.lease_duration)
                    )
                except JobpulseError as exc:
                    log.warning("could not complete the finished chunks (%s); their leases will expire", exc)
                else:
                    apply_results(handled, response.results)
            raise
        # The keeper has stopped: no heartbeat can arrive after the completion and be refused.
        if not finished:
            return []
        wanted = 0 if stop.is_set() else self._budget.take_up_to(self.batch_size)
        claim_next = next_claim(self.worker_id, self.kinds, self.lease_duration, wanted) if wanted else None
        completions = [chunk_completion(task) for task in finished]
        links = _tracing.links_to([task._span for task in finished])
        with _tracing.calling("CompleteChunks", self.worker_id, links) as span:
            done = await self._finish(
                f"batch of {len(finished)} chunks from chunk {finished[0].chunk_id}",
                lambda: self.client.complete_chunks(completions, claim_next=claim_next),
            )
        got: list[_tracing.Claimed] = []
        if isinstance(done, worker_service_pb2.CompleteChunksResponse):
            apply_results(finished, done.results)
            got = _tracing.brought(done.claims, span)
        self._budget.give_back(wanted - len(got))
        return got

    async def _handle(self, handler: AsyncHandler, task: AsyncTask) -> bool:
        """Awaits the handler on one chunk under its heartbeat; a handler that raised fails the chunk at
        once, and a cancelled one hands the chunk back. True when the chunk is to be completed: the handler
        returned and the lease is still held."""
        log.info(
            "chunk %s of job %s: items %d..%d",
            task.chunk_id,
            task.job_id,
            task.items.start,
            task.items.stop - 1,
        )
        error: BaseException | None = None
        # The handler's span; a failure is reported inside it, so FailChunk's server span is in its trace.
        with _tracing.processing(task._claim, self.worker_id, task._claimed_in) as span:
            task._span = span.get_span_context()
            try:
                async with _Heartbeat(self.client, task, self.lease_duration, self.progress_interval):
                    try:
                        await handler(task)
                    except Exception as exc:
                        error = exc
                        _tracing.failed(span, exc)
            except Cancelled:
                if not task.lease_lost:
                    await self._release(task.chunk_id, task.lease_token)
                raise
            self._budget.count_processed()
            if task.lease_lost:
                return False
            if error is None:
                return True
            reason, message, retryable, details = failure_report(error)
            log.warning(
                "chunk %s failed: %s: %s (retryable=%s)",
                task.chunk_id,
                reason,
                message,
                retryable,
                exc_info=error,
            )
            await self._finish(
                f"chunk {task.chunk_id}",
                lambda: self.client.fail_chunk(
                    task.chunk_id, task.lease_token, reason, message, retryable, details=details
                ),
            )
            return False

    async def _process(
        self, handler: AsyncHandler, task: AsyncTask, ask_next: bool, stop: asyncio.Event
    ) -> list[_tracing.Claimed]:
        """Awaits the handler on one chunk and reports the outcome; with ``ask_next``, a successful
        completion also claims the loop's next chunk, which is returned, unless ``stop`` was set while
        the handler ran (a stopping worker takes no new work)."""
        if not await self._handle(handler, task):
            return []
        _, _, _, external_task_id = task._snapshot()
        claim_next = (
            next_claim(self.worker_id, self.kinds, self.lease_duration)
            if ask_next and not stop.is_set()
            else None
        )
        # A span of its own (linked to the handler's), the parent of the spans of the chunks it claims.
        with _tracing.calling("CompleteChunk", self.worker_id, _tracing.links_to([task._span])) as span:
            done = await self._finish(
                f"chunk {task.chunk_id}",
                lambda: self.client.complete_chunk(
                    task.chunk_id,
                    task.lease_token,
                    task.artifacts,
                    external_task_id=external_task_id,
                    claim_next=claim_next,
                ),
            )
        if isinstance(done, worker_service_pb2.CompleteChunkResponse):
            return _tracing.brought(done.claims, span)
        return []

    async def _release(self, chunk_id: str, lease_token: str) -> None:
        """Hands a chunk back when ``run`` is cancelled: a retryable failure, so another worker gets it after
        the retry backoff instead of after the lease. Best effort: a failure leaves the lease to expire."""
        try:
            await self.client.fail_chunk(
                chunk_id,
                lease_token,
                STOPPED_REASON,
                f"worker {self.worker_id} stopped before finishing the chunk",
                retryable=True,
                timeout=min(5.0, self.lease_duration),
            )
        except JobpulseError as exc:
            log.warning("chunk %s: could not hand it back (%s); its lease will expire", chunk_id, exc)

    async def _finish(self, what: str, send: Callable[[], Awaitable[object]]) -> object:
        """Sends a completion or failure (of ``what``: "chunk <id>", or the chunks of a batch), retrying
        transient errors while the lease can still be valid. Returns the server's answer, or None when the
        outcome could not be delivered."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        give_up = time.monotonic() + self.lease_duration
        while True:
            try:
                return await send()
            except (LeaseLost, NotFound) as exc:
                log.warning("%s: lease lost before it could be finished (%s); dropping it", what, exc)
                return None
            except TRANSIENT as exc:
                delay = backoff.next_delay(exc.retry_delay)
                if time.monotonic() + delay > give_up:
                    log.error("%s: could not report its outcome (%s); its lease will expire", what, exc)
                    return None
                await sleep(delay)
            except JobpulseError as exc:
                log.error("%s: the server refused its outcome: %s", what, exc)
                return None
