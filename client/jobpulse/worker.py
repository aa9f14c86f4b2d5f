"""A ready-made worker loop: claim chunks, run a handler on each, heartbeat, complete or fail them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from opentelemetry import trace

from jobpulse import _tracing
from jobpulse._client import Client
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

__all__ = ["Task", "Worker"]

_log = log
_TRANSIENT = TRANSIENT


class Task(TaskState):
    """One claimed chunk, handed to a :class:`Worker` handler (in a worker thread).

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
        """Wraps a claim; created by :class:`Worker`, not by handlers."""
        super().__init__(claim, worker_id, claimed_in)
        self.cancel_event = threading.Event()
        self._changed = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (or the lease lost): the handler should stop soon and return."""
        return self.cancel_event.is_set()

    def _notify(self) -> None:
        self._changed.set()

    def _lose_lease(self) -> None:
        self.lease_lost = True
        self.cancel_event.set()


Handler = Callable[[Task], object]


class _Heartbeat:
    """Reports a task's progress in the background: soon after a change, and at least every lease/3."""

    def __init__(self, client: Client, task: Task, lease_duration: float, min_interval: float) -> None:
        self._client = client
        self._task = task
        self._lease_duration = lease_duration
        self._period = heartbeat_period(lease_duration)
        self._min_interval = min_interval
        self._stop = threading.Event()
        # (stage, message, external_task_id) as last reported, to flush a change made just before the end.
        self._sent: tuple[str, str, str] = ("", "", "")
        self._thread = threading.Thread(
            target=self._run, name=f"jobpulse-heartbeat-{task.chunk_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._task._changed.set()
        self._thread.join()
        # A stage or message set right before the handler returned would otherwise never be reported
        # (completion reports items, not the stage).
        _, stage, message, external_task_id = self._task._snapshot()
        if (stage, message, external_task_id) != self._sent and not self._task.lease_lost:
            self._beat()

    def _run(self) -> None:
        last_sent = time.monotonic()
        while not self._stop.is_set():
            self._task._changed.wait(max(0.0, self._period - (time.monotonic() - last_sent)))
            if self._stop.is_set():
                return
            since = time.monotonic() - last_sent
            if since < self._min_interval:
                # Coalesce bursts of progress calls into at most one report per min_interval.
                if self._stop.wait(self._min_interval - since):
                    return
            self._task._changed.clear()
            last_sent = time.monotonic()
            self._beat()
            if self._task.lease_lost:
                return

    def _beat(self) -> None:
        self._sent = _beat(self._client, self._task, self._lease_duration, self._period)


def _beat(client: Client, task: Task, lease_duration: float, timeout: float) -> tuple[str, str, str]:
    """Reports a task's progress once, extending its lease; marks the lease lost or the job cancelled on the
    task as the server answers. Returns the (stage, message, external_task_id) sent."""
    items_done, stage, message, external_task_id = task._snapshot()
    try:
        response = client.report_chunk_progress(
            task.chunk_id,
            task.lease_token,
            items_done=items_done,
            stage=stage,
            message=message,
            external_task_id=external_task_id,
            lease_duration=lease_duration,
            timeout=timeout,
        )
    except JobpulseError as exc:
        heartbeat_answered(task, None, exc)
    else:
        heartbeat_answered(task, response, None)
    return stage, message, external_task_id


class _LeaseKeeper:
    """Keeps the leases of a batch's chunks that are in hand but not running: waiting for their turn, or
    done and waiting for the batch's completion. Every lease/3, like a running chunk's heartbeat (which
    takes over while its handler runs). A server that answers LEASE_LOST or cancel_requested marks the task
    as a heartbeat would."""

    def __init__(self, client: Client, tasks: list[Task], lease_duration: float) -> None:
        self._client = client
        self._lease_duration = lease_duration
        self._period = heartbeat_period(lease_duration)
        # Held while a report is in flight, so a task let go of is never reported after release() returns
        # (a late heartbeat after the completion would be refused, and log a lost lease that was not).
        self._lock = threading.Lock()
        self._held = {task.chunk_id: task for task in tasks}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"jobpulse-leases-{threading.current_thread().name}", daemon=True
        )

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def hold(self, task: Task) -> None:
        """Keeps ``task``'s lease from now on."""
        with self._lock:
            self._held[task.chunk_id] = task

    def release(self, task: Task) -> None:
        """Stops keeping ``task``'s lease: its handler's heartbeat takes over, or it is being reported."""
        with self._lock:
            self._held.pop(task.chunk_id, None)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            with self._lock:
                waiting = list(self._held.values())
            for task in waiting:
                with self._lock:
                    if self._stop.is_set():
                        return
                    if self._held.get(task.chunk_id) is task and not task.lease_lost:
                        _beat(self._client, task, self._lease_duration, self._period)


class _Running:
    """Counts the worker threads still running, for ``run`` to wait on.

    Not ``Thread.join``: on Python 3.11 a KeyboardInterrupt landing inside ``join`` can mark a thread that
    is still running as stopped (``is_alive()`` false from then on), and ``run`` returned with chunks in
    hand while their threads went on, on a client about to be closed ("Channel closed").
    """

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._ended = threading.Event()

    def one_ended(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._ended.set()

    def wait(self) -> None:
        # A timeout keeps the main thread returning to Python, where a Ctrl-C is raised.
        while not self._ended.wait(0.2):
            pass


class Worker:
    """Runs a handler over chunks claimed from jobpulse, with heartbeats, completion and failure reporting.

    The handler gets a :class:`Task`. When it returns, the chunk is completed (with the task's artifacts);
    when it raises, the chunk fails with the exception's class name as reason and ``str(exc)`` as message,
    retryable unless the exception is a :class:`jobpulse.PermanentError`. When the job is cancelled,
    ``task.cancelled`` becomes true; the handler should return early, after which the chunk is completed and
    the server records it CANCELLED. A lost lease (``LeaseLost``) drops the chunk silently. ``UNAVAILABLE``
    from the server is waited out with backoff. While there is work, each completion also claims the
    thread's next chunk (``claim_next``), so a busy worker makes one call per chunk; it long-polls
    with ClaimChunks only when a completion brought no new chunk.

    With ``batch_size`` above 1, each thread claims up to that many chunks at once and runs the handler on
    them one after the other, each with its heartbeat, cancel and failure exactly as above (a failure is
    still reported at once, with FailChunk). The chunks whose handler returned are completed together by
    one CompleteChunks call, which also claims the thread's next batch: about one call per batch instead
    of one per chunk. Every item carries its own lease token and stands alone: one the server refuses (its
    lease was lost, e.g. it expired and another worker took the chunk) is dropped as a lost lease is, and
    the rest of the batch stays completed. Leases of the chunks waiting their turn, or waiting for the
    batch's completion, are kept alive meanwhile; one lost before its turn is skipped. Use it when chunks
    are short and the calls per chunk are what limits throughput. The cost: each thread holds up to
    ``batch_size`` chunks that other workers cannot take, a finished chunk shows COMPLETED only when its
    whole batch is done, and stopping finishes the whole batch in hand.

    Example::

        def handle(task):
            for n, item in enumerate(task.items, 1):
                if task.cancelled:
                    return
                process(item)
                task.progress(n)

        jobpulse.Worker("127.0.0.1:50051", kinds=["thumbnails"], concurrency=4).run(handle)

    Args:
        client_or_target: A :class:`jobpulse.Client`, or a target string to open one (closed by
            :meth:`close`).
        kinds: Only claim chunks of jobs of these kinds; ``None`` means any kind.
        worker_id: Recorded on claimed chunks; defaults to ``<hostname>-<pid>-<random>``.
        concurrency: Number of threads processing chunks at the same time.
        lease_duration: Seconds a lease lasts without a heartbeat; heartbeats go out every third of it.
        poll_wait: Seconds each claim long-polls the server for work; also bounds how long stopping takes.
        progress_interval: Minimum seconds between two progress reports of the same chunk.
        batch_size: Chunks each thread claims, and completes, per call (1..100). 1, the default, claims
            and completes one chunk at a time; more trades chunks held per thread for fewer calls (see
            above).

    Raises:
        ValueError: ``concurrency`` below 1, or ``batch_size`` outside 1..100.
    """

    def __init__(
        self,
        client_or_target: Client | str | None = None,
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
        if isinstance(client_or_target, Client):
            self.client = client_or_target
            self._owns_client = False
        else:
            self.client = Client(client_or_target)
            self._owns_client = True
        self.kinds = list(kinds or ())
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.lease_duration = lease_duration
        self.poll_wait = poll_wait
        self.progress_interval = progress_interval
        self._budget = ClaimBudget(None)

    def close(self) -> None:
        """Closes the client if this worker opened it."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(
        self,
        handler: Handler,
        stop_event: threading.Event | None = None,
        max_chunks: int | None = None,
    ) -> int:
        """Claims and processes chunks until stopped, and returns how many chunks were handled.

        Stopping is cooperative: after ``stop_event`` is set (or ``max_chunks`` chunks were claimed), no new
        chunk is claimed and ``run`` returns once the chunks in hand are finished (with ``batch_size`` above
        1, the rest of each thread's batch), within about ``poll_wait`` seconds. A first Ctrl-C
        (KeyboardInterrupt) does the same; a second one abandons the chunks in hand (their leases expire
        and other workers pick them up) and re-raises.

        Args:
            handler: Called with a :class:`Task` for each claimed chunk, in a worker thread.
            stop_event: Set it to stop the worker gracefully.
            max_chunks: Stop after claiming this many chunks in total (batches never claim beyond it).

        Raises:
            jobpulse.errors.JobpulseError: An error retrying cannot fix, e.g. ``Unauthenticated`` or
                ``InvalidArgument`` on claims.
        """
        stop = stop_event or threading.Event()
        self._budget = ClaimBudget(max_chunks)
        failures: list[BaseException] = []
        body = self._loop if self.batch_size == 1 else self._batch_loop
        running = _Running(self.concurrency)

        def thread_body() -> None:
            try:
                body(handler, stop, failures)
            finally:
                running.one_ended()

        threads = [
            threading.Thread(target=thread_body, name=f"jobpulse-worker-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            running.wait()
        except KeyboardInterrupt:
            _log.info("stopping: finishing the chunks in hand (Ctrl-C again to abandon them)")
            stop.set()
            running.wait()
        if failures:
            raise failures[0]
        return self._budget.processed

    def _loop(self, handler: Handler, stop: threading.Event, failures: list[BaseException]) -> None:
        backoff = Backoff(initial=0.2, maximum=10.0)
        # Claims in hand, each with a budget slot taken: the next ones come back with the completion
        # of the previous chunk (complete-and-claim), so a busy worker makes one call per chunk.
        claims: list[_tracing.Claimed] = []
        while not stop.is_set() or claims:
            if not claims:
                if not self._budget.take():
                    return
                try:
                    claims = self._claim(1)
                except _TRANSIENT as exc:
                    self._budget.give_back()
                    delay = backoff.next_delay(exc.retry_delay)
                    _log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    stop.wait(delay)
                    continue
                except BaseException as exc:
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
            got = self._process(handler, Task(claim, self.worker_id, claimed_in), ask_next, stop)
            if ask_next and not got:
                self._budget.give_back()
            claims += got

    def _batch_loop(self, handler: Handler, stop: threading.Event, failures: list[BaseException]) -> None:
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
                    claims = self._claim(wanted)
                except _TRANSIENT as exc:
                    self._budget.give_back(wanted)
                    delay = backoff.next_delay(exc.retry_delay)
                    _log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                    stop.wait(delay)
                    continue
                except BaseException as exc:
                    self._budget.give_back(wanted)
                    failures.append(exc)
                    stop.set()
                    return
                backoff.reset()
                self._budget.give_back(wanted - len(claims))
                if not claims:
                    continue
            claims = self._process_batch(
                handler, [Task(claim, self.worker_id, claimed_in) for claim, claimed_in in claims], stop
            )

    def _claim(self, max_chunks: int) -> list[_tracing.Claimed]:
        """ClaimChunks (long-polling up to ``poll_wait``) under a span of its own, the parent of the spans
        of the claimed chunks' handlers."""
        with _tracing.calling("ClaimChunks", self.worker_id) as span:
            claims = self.client.claim_chunks(
                self.worker_id,
                kinds=self.kinds,
                max_chunks=max_chunks,
                lease_duration=self.lease_duration,
                wait=self.poll_wait,
            )
        return _tracing.brought(claims, span)

    def _process_batch(
        self, handler: Handler, tasks: list[Task], stop: threading.Event
    ) -> list[_tracing.Claimed]:
        """Runs the handler on each chunk of a batch in turn, then completes those whose handler returned
        in one call that also claims the next batch (unless ``stop`` is set), which is returned."""
        finished: list[Task] = []
        with _LeaseKeeper(self.client, tasks, self.lease_duration) as keeper:
            for task in tasks:
                keeper.release(task)
                if task.lease_lost:
                    _log.warning("chunk %s: lease lost before its turn; skipping it", task.chunk_id)
                    continue
                if self._handle(handler, task):
                    finished.append(task)
                    keeper.hold(task)
        # The keeper has stopped: no heartbeat can arrive after the completion and be refused.
        if not finished:
            return []
        wanted = 0 if stop.is_set() else self._budget.take_up_to(self.batch_size)
        claim_next = next_claim(self.worker_id, self.kinds, self.lease_duration, wanted) if wanted else None
        completions = [chunk_completion(task) for task in finished]
        links = _tracing.links_to([task._span for task in finished])
        with _tracing.calling("CompleteChunks", self.worker_id, links) as span:
            done = self._finish(
                f"batch of {len(finished)} chunks from chunk {finished[0].chunk_id}",
                lambda: self.client.complete_chunks(completions, claim_next=claim_next),
            )
        got: list[_tracing.Claimed] = []
        if isinstance(done, worker_service_pb2.CompleteChunksResponse):
            apply_results(finished, done.results)
            got = _tracing.brought(done.claims, span)
        self._budget.give_back(wanted - len(got))
        return got

    def _handle(self, handler: Handler, task: Task) -> bool:
        """Runs the handler on one chunk under its heartbeat; a handler that raised fails the chunk at once.
        True when the chunk is to be completed: the handler returned and the lease is still held."""
        _log.info(
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
            with _Heartbeat(self.client, task, self.lease_duration, self.progress_interval):
                try:
                    handler(task)
                except Exception as exc:
                    error = exc
                    _tracing.failed(span, exc)
            self._budget.count_processed()
            if task.lease_lost:
                return False
            if error is None:
                return True
            reason, message, retryable = failure_report(error)
            _log.warning(
                "chunk %s failed: %s: %s (retryable=%s)",
                task.chunk_id,
                reason,
                message,
                retryable,
                exc_info=error,
            )
            self._finish(
                f"chunk {task.chunk_id}",
                lambda: self.client.fail_chunk(task.chunk_id, task.lease_token, reason, message, retryable),
            )
            return False

    def _process(
        self, handler: Handler, task: Task, ask_next: bool, stop: threading.Event
    ) -> list[_tracing.Claimed]:
        """Runs the handler on one chunk and reports the outcome; with ``ask_next``, a successful
        completion also claims the worker's next chunk, which is returned, unless ``stop`` was set while
        the handler ran (a stopping worker takes no new work)."""
        if not self._handle(handler, task):
            return []
        _, _, _, external_task_id = task._snapshot()
        claim_next = (
            next_claim(self.worker_id, self.kinds, self.lease_duration)
            if ask_next and not stop.is_set()
            else None
        )
        # A span of its own (linked to the handler's), the parent of the spans of the chunks it claims.
        with _tracing.calling("CompleteChunk", self.worker_id, _tracing.links_to([task._span])) as span:
            done = self._finish(
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

    def _finish(self, what: str, send: Callable[[], object]) -> object:
        """Sends a completion or failure (of ``what``: "chunk <id>", or the chunks of a batch), retrying
        transient errors while the lease can still be valid. Returns the server's answer, or None when the
        outcome could not be delivered."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        give_up = time.monotonic() + self.lease_duration
        while True:
            try:
                return send()
            except (LeaseLost, NotFound) as exc:
                _log.warning("%s: lease lost before it could be finished (%s); dropping it", what, exc)
                return None
            except _TRANSIENT as exc:
                delay = backoff.next_delay(exc.retry_delay)
                if time.monotonic() + delay > give_up:
                    _log.error("%s: could not report its outcome (%s); its lease will expire", what, exc)
                    return None
                time.sleep(delay)
            except JobpulseError as exc:
                _log.error("%s: the server refused its outcome: %s", what, exc)
                return None
