"""A ready-made worker loop: claim chunks, run a handler on each, heartbeat, complete or fail them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from jobpulse._client import Client
from jobpulse._retry import Backoff
from jobpulse._worker_common import (
    TRANSIENT,
    ClaimBudget,
    TaskState,
    default_worker_id,
    failure_report,
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

    def __init__(self, claim: worker_service_pb2.ChunkClaim, worker_id: str) -> None:
        """Wraps a claim; created by :class:`Worker`, not by handlers."""
        super().__init__(claim, worker_id)
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
        items_done, stage, message, external_task_id = self._task._snapshot()
        self._sent = (stage, message, external_task_id)
        try:
            response = self._client.report_chunk_progress(
                self._task.chunk_id,
                self._task.lease_token,
                items_done=items_done,
                stage=stage,
                message=message,
                external_task_id=external_task_id,
                lease_duration=self._lease_duration,
                timeout=self._period,
            )
        except (LeaseLost, NotFound) as exc:
            _log.warning("chunk %s: lease lost (%s); dropping it", self._task.chunk_id, exc)
            self._task._lose_lease()
            return
        except JobpulseError as exc:
            _log.warning("chunk %s: heartbeat failed (%s); will retry", self._task.chunk_id, exc)
            return
        if response.cancel_requested and not self._task.cancel_event.is_set():
            _log.info(
                "chunk %s: job %s was cancelled; asking the handler to stop",
                self._task.chunk_id,
                self._task.job_id,
            )
            self._task.cancel_event.set()


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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
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
        chunk is claimed and ``run`` returns once the chunks in hand are finished, within about
        ``poll_wait`` seconds. A first Ctrl-C (KeyboardInterrupt) does the same; a second one abandons the
        chunks in hand (their leases expire and other workers pick them up) and re-raises.

        Args:
            handler: Called with a :class:`Task` for each claimed chunk, in a worker thread.
            stop_event: Set it to stop the worker gracefully.
            max_chunks: Stop after claiming this many chunks in total.

        Raises:
            jobpulse.errors.JobpulseError: An error retrying cannot fix, e.g. ``Unauthenticated`` or
                ``InvalidArgument`` on claims.
        """
        stop = stop_event or threading.Event()
        self._budget = ClaimBudget(max_chunks)
        failures: list[BaseException] = []
        threads = [
            threading.Thread(
                target=self._loop, args=(handler, stop, failures), name=f"jobpulse-worker-{n}", daemon=True
            )
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            self._join(threads)
        except KeyboardInterrupt:
            _log.info("stopping: finishing the chunks in hand (Ctrl-C again to abandon them)")
            stop.set()
            self._join(threads)
        if failures:
            raise failures[0]
        return self._budget.processed

    @staticmethod
    def _join(threads: list[threading.Thread]) -> None:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)

    def _loop(self, handler: Handler, stop: threading.Event, failures: list[BaseException]) -> None:
        backoff = Backoff(initial=0.2, maximum=10.0)
        # Claims in hand, each with a budget slot taken: the next ones come back with the completion
        # of the previous chunk (complete-and-claim), so a busy worker makes one call per chunk.
        claims: list[worker_service_pb2.ChunkClaim] = []
        while not stop.is_set() or claims:
            if not claims:
                if not self._budget.take():
                    return
                try:
                    claims = list(
                        self.client.claim_chunks(
                            self.worker_id,
                            kinds=self.kinds,
                            max_chunks=1,
                            lease_duration=self.lease_duration,
                            wait=self.poll_wait,
                        )
                    )
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
            claim = claims.pop(0)
            ask_next = not claims and not stop.is_set() and self._budget.take()
            got = self._process(handler, Task(claim, self.worker_id), ask_next, stop)
            if ask_next and not got:
                self._budget.give_back()
            claims += got

    def _process(
        self, handler: Handler, task: Task, ask_next: bool, stop: threading.Event
    ) -> list[worker_service_pb2.ChunkClaim]:
        """Runs the handler on one chunk and reports the outcome; with ``ask_next``, a successful
        completion also claims the worker's next chunk, which is returned, unless ``stop`` was set while
        the handler ran (a stopping worker takes no new work)."""
        _log.info(
            "chunk %s of job %s: items %d..%d",
            task.chunk_id,
            task.job_id,
            task.items.start,
            task.items.stop - 1,
        )
        error: BaseException | None = None
        with _Heartbeat(self.client, task, self.lease_duration, self.progress_interval):
            try:
                handler(task)
            except Exception as exc:
                error = exc
        self._budget.count_processed()
        if task.lease_lost:
            return []
        if error is None:
            _, _, _, external_task_id = task._snapshot()
            claim_next = (
                next_claim(self.worker_id, self.kinds, self.lease_duration)
                if ask_next and not stop.is_set()
                else None
            )
            done = self._finish(
                task,
                lambda: self.client.complete_chunk(
                    task.chunk_id,
                    task.lease_token,
                    task.artifacts,
                    external_task_id=external_task_id,
                    claim_next=claim_next,
                ),
            )
            return list(done.claims) if isinstance(done, worker_service_pb2.CompleteChunkResponse) else []
        reason, message, retryable = failure_report(error)
        _log.warning("chunk %s failed: %s: %s (retryable=%s)", task.chunk_id, reason, message, retryable)
        self._finish(
            task, lambda: self.client.fail_chunk(task.chunk_id, task.lease_token, reason, message, retryable)
        )
        return []

    def _finish(self, task: Task, send: Callable[[], object]) -> object:
        """Sends the completion or failure, retrying transient errors while the lease can still be valid.
        Returns the server's answer, or None when the outcome could not be delivered."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        give_up = time.monotonic() + self.lease_duration
        while True:
            try:
                return send()
            except (LeaseLost, NotFound) as exc:
                _log.warning(
                    "chunk %s: lease lost before it could be finished (%s); dropping it", task.chunk_id, exc
                )
                return None
            except _TRANSIENT as exc:
                delay = backoff.next_delay(exc.retry_delay)
                if time.monotonic() + delay > give_up:
                    _log.error(
                        "chunk %s: could not report its outcome (%s); its lease will expire",
                        task.chunk_id,
                        exc,
                    )
                    return None
                time.sleep(delay)
            except JobpulseError as exc:
                _log.error("chunk %s: the server refused its outcome: %s", task.chunk_id, exc)
                return None
