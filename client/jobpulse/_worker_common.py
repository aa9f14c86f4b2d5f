"""What the thread-based :class:`~jobpulse.Worker` and the asyncio :class:`~jobpulse.AsyncWorker` share.

Only the logic that does not care whether it runs in a thread or on an event loop lives here: the state a
handler records on its task, the claim budget, the heartbeat cadence, how a handler's exception becomes
a FailChunk, and how a batch's CompleteChunks items are built and their per-item results taken. Waiting,
sleeping and calling the server stay in each worker, in its own concurrency model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from opentelemetry import trace

from jobpulse import _requests
from jobpulse._convert import struct_to_dict
from jobpulse.errors import (
    ChunkFailure,
    DeadlineExceeded,
    JobpulseError,
    LeaseLost,
    NotFound,
    PermanentError,
    Unavailable,
)
from jobpulse.v1 import job_pb2, worker_service_pb2

log = logging.getLogger("jobpulse.worker")

#: Errors on the worker loop that are waited out with backoff instead of stopping the worker.
TRANSIENT = (Unavailable, DeadlineExceeded)

#: The largest ``batch_size``: the server claims, and completes, at most 100 chunks per call.
MAX_BATCH = 100

#: Per-item refusals of CompleteChunks that mean the chunk is no longer this worker's (the single-chunk
#: path gets them as ``LeaseLost`` / ``NotFound``): dropped quietly, like a lease lost on a heartbeat.
_LOST = frozenset({"LEASE_LOST", "CHUNK_NOT_FOUND"})


def default_worker_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in ListJobChunks."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def heartbeat_period(lease_duration: float) -> float:
    """Seconds between two heartbeats of an unchanged task: three chances per lease to extend it."""
    return max(0.05, lease_duration / 3)


# The most of ChunkError.details the server keeps (8 KiB of UTF-8); longer ones are cut in the middle.
MAX_DETAILS = 8192


def trimmed_details(text: str, limit: int = MAX_DETAILS) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8: when longer, its start and its end (a traceback's
    outer frames and the exception itself) around a line saying how much was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    marker = f"\n[... {len(data) - limit:,}+ bytes cut ...]\n"
    room = limit - len(marker.encode())
    head = data[: room // 2].decode(errors="ignore")
    tail = data[len(data) - (room - room // 2) :].decode(errors="ignore")
    return head + marker + tail


def failure_report(error: BaseException) -> tuple[str, str, bool, str]:
    """(reason, message, retryable, details) of the FailChunk sent for a handler that raised ``error``:
    what ``task.fail`` said, or the exception's type, text and formatted traceback (cut in the middle
    when longer than the server keeps)."""
    if isinstance(error, ChunkFailure):
        return error.reason, error.message, error.retryable, trimmed_details(error.details)
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return type(error).__name__, str(error), not isinstance(error, PermanentError), trimmed_details(details)


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` as given, or ValueError when the server could not take batches that large."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
    return batch_size


def next_claim(
    worker_id: str, kinds: list[str], lease_duration: float, max_chunks: int = 1
) -> worker_service_pb2.ClaimChunksRequest:
    """The ``claim_next`` of a completion: ``max_chunks`` more chunks (one, or the next batch), and no long
    poll (a completion must not wait)."""
    return _requests.claim_chunks(worker_id, kinds, max_chunks, lease_duration, None)


def chunk_completion(task: TaskState) -> worker_service_pb2.ChunkCompletion:
    """The CompleteChunks item of a task whose handler returned: its own lease token, artifacts and
    external task id, as CompleteChunk would send them."""
    _, _, _, external_task_id = task._snapshot()
    return worker_service_pb2.ChunkCompletion(
        chunk_id=task.chunk_id,
        lease_token=task.lease_token,
        artifacts=task.artifacts,
        external_task_id=external_task_id,
    )


def apply_results(
    tasks: Sequence[TaskState], results: Iterable[worker_service_pb2.ChunkCompletionResult]
) -> int:
    """Takes CompleteChunks' per-item results (in request order) to the tasks sent; returns how many
    committed.

    A refused item is handled as the single-chunk path handles the error: a lost lease (or a chunk gone
    with its job) marks the task's lease lost and drops it with a warning; anything else is logged as
    refused. Either way the other items stand: the server commits each on its own lease.
    """
    committed = 0
    for task, result in zip(tasks, results, strict=True):
        if result.ok:
            committed += 1
        elif result.reason in _LOST:
            log.warning(
                "chunk %s: lease lost before it could be finished (%s: %s); dropping it",
                task.chunk_id,
                result.reason,
                result.message,
            )
            task._lose_lease()
        else:
            log.error(
                "chunk %s: the server refused its outcome: %s: %s",
                task.chunk_id,
                result.reason,
                result.message,
            )
    return committed


def heartbeat_answered(
    task: Any, response: worker_service_pb2.ReportChunkProgressResponse | None, error: JobpulseError | None
) -> None:
    """What a heartbeat's answer means for its task (a :class:`jobpulse.Task` or
    :class:`jobpulse.AsyncTask`): the lease lost (LEASE_LOST or NOT_FOUND), a failure to retry at the
    next beat, or the job cancelled (its cancel event set)."""
    if isinstance(error, (LeaseLost, NotFound)):
        log.warning("chunk %s: lease lost (%s); dropping it", task.chunk_id, error)
        task._lose_lease()
    elif error is not None:
        log.warning("chunk %s: heartbeat failed (%s); will retry", task.chunk_id, error)
    elif response is not None and response.cancel_requested and not task.cancel_event.is_set():
        log.info("chunk %s: job %s was cancelled; asking the handler to stop", task.chunk_id, task.job_id)
        task.cancel_event.set()


class ClaimBudget:
    """Counts claims against ``max_chunks`` (``None``: unlimited) and the chunks handled.

    A lock guards it because the thread worker's loops share one; asyncio loops never await while holding it.
    """

    def __init__(self, max_chunks: int | None) -> None:
        self._lock = threading.Lock()
        self._remaining = max_chunks
        self.processed = 0

    def take(self) -> bool:
        """Reserves one claim; False once the budget is spent."""
        return self.take_up_to(1) == 1

    def take_up_to(self, wanted: int) -> int:
        """Reserves up to ``wanted`` claims and returns how many: fewer near the end of the budget, 0 once
        it is spent."""
        with self._lock:
            if self._remaining is None:
                return wanted
            granted = max(0, min(wanted, self._remaining))
            self._remaining -= granted
            return granted

    def give_back(self, count: int = 1) -> None:
        """Returns ``count`` reserved claims that brought no chunk."""
        with self._lock:
            if self._remaining is not None:
                self._remaining += count

    def count_processed(self) -> None:
        """Counts one chunk the handler ran on."""
        with self._lock:
            self.processed += 1


class TaskState:
    """The claim and what the handler recorded on it; :class:`jobpulse.Task` and
    :class:`jobpulse.AsyncTask` add the cancel signal of their concurrency model.

    Attributes:
        job_id: The chunk's job.
        job_kind: The job's kind.
        job_metadata: The job's metadata as a plain dict.
        chunk: The chunk message as claimed (state PROCESSING).
        items: The job-wide item indexes of this chunk: ``range(item_start, item_start + item_count)``.
        lease_token: The fencing token of this claim.
        worker_id: The id of the worker that claimed it.
        artifacts: Artifacts added so far with :meth:`add_artifact`.
        lease_lost: True once the server said the lease is no longer this worker's.
    """

    def __init__(
        self,
        claim: worker_service_pb2.ChunkClaim,
        worker_id: str,
        claimed_in: trace.SpanContext | None = None,
    ) -> None:
        # The claim as it came, and the context of the span of the call that brought it: the handler's
        # span is its child (jobpulse/_tracing.py); ``_span`` is the handler's span once it runs.
        self._claim = claim
        self._claimed_in = claimed_in
        self._span: trace.SpanContext | None = None
        self.job_id = claim.job_id
        self.job_kind = claim.job_kind
        self.job_metadata: dict[str, Any] = struct_to_dict(claim.job_metadata)
        self.chunk: job_pb2.Chunk = claim.chunk
        self.items = range(claim.chunk.item_start, claim.chunk.item_start + claim.chunk.item_count)
        self.lease_token = claim.lease_token
        self.worker_id = worker_id
        self.artifacts: list[job_pb2.Artifact] = []
        # A plain lock even for asyncio: an async handler may report progress from a thread it started.
        self._lock = threading.Lock()
        self._items_done = claim.chunk.items_done
        self._stage = ""
        self._message = ""
        self._external_task_id = ""
        # Previews (``preview``) not sent yet, by name: the next heartbeat sends them.
        self._previews: dict[str, job_pb2.Artifact] = {}
        self.lease_lost = False

    @property
    def chunk_id(self) -> str:
        """The chunk's id."""
        return self.chunk.id

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (or the lease lost): the handler should stop soon and return."""
        raise NotImplementedError

    def _notify(self) -> None:
        """Wakes the heartbeat: something worth reporting changed."""
        raise NotImplementedError

    def _lose_lease(self) -> None:
        """Marks the lease lost and tells the handler to stop."""
        raise NotImplementedError

    def progress(self, items_done: int, stage: str = "", message: str = "") -> None:
        """Records progress; the worker's heartbeat sends it shortly after.

        Args:
            items_done: Items of this chunk done so far (0..item_count; it never goes back).
            stage: A short stage name shown on the job ("encoding"); empty keeps the previous one.
            message: A human-readable status message; empty keeps the previous one.
        """
        with self._lock:
            self._items_done = max(self._items_done, min(int(items_done), self.chunk.item_count))
            if stage:
                self._stage = stage
            if message:
                self._message = message
        self._notify()

    def set_external_task_id(self, external_task_id: str) -> None:
        """Records the id this chunk's work has in an outside system; sent with the next heartbeat."""
        with self._lock:
            self._external_task_id = external_task_id
        self._notify()

    def add_artifact(
        self, name: str, uri: str, media_type: str = "", size_bytes: int = 0, role: str | int = 0
    ) -> None:
        """Adds an artifact (a reference, never content) to send when the chunk completes.

        Args:
            name: Name of the artifact, e.g. ``"thumbnails.zip"``.
            uri: Where it is, e.g. ``"s3://bucket/key"``.
            media_type: Its media type, if known.
            size_bytes: Its size, if known.
            role: What it is for: ``"output"`` (the default), ``"preview"``, ``"thumbnail"``, ``"log"``
                or ``"result"`` (its uri becomes the job's ``result_uri`` once the job completes), or
                an ``ArtifactRole`` number.
        """
        with self._lock:
            self.artifacts.append(
                job_pb2.Artifact(
                    name=name,
                    uri=uri,
                    media_type=media_type,
                    size_bytes=size_bytes,
                    chunk_index=self.chunk.index,
                    role=artifact_role(role),  # type: ignore[arg-type]
                )
            )

    def fail(self, reason: str, message: str = "", *, details: str = "", retryable: bool = True) -> NoReturn:
        """Ends the handler here with a failure in your own words: the Worker reports ``reason``,
        ``message`` and ``details`` (anything that explains it, up to 8 KiB; longer is cut in the
        middle) as given, with no traceback, and the chunk is tried again while attempts remain unless
        ``retryable`` is false. Raises :class:`jobpulse.errors.ChunkFailure` (do not catch it)."""
        raise ChunkFailure(reason, message, details, retryable)

    def preview(self, name: str, uri: str, media_type: str = "", role: str | int = "preview") -> None:
        """Shows something while the chunk runs (a frame, a first scene, a partial result): sent with the
        next heartbeat, soon after, it replaces the chunk's earlier artifact of the same name, and watchers
        and the dashboard see it at once. A later preview of the same name before that heartbeat
        replaces this one.

        Args:
            name: Name of the preview, e.g. ``"frame"``; the same name again replaces it.
            uri: Where it is: an absolute URI of a scheme the server allows (``https``, ``s3`` ...).
            media_type: Its media type, e.g. ``"image/jpeg"`` (the dashboard shows http(s) images).
            role: ``"preview"`` (the default) or ``"thumbnail"``, or another ``ArtifactRole``.
        """
        shown = job_pb2.Artifact(
            name=name,
            uri=uri,
            media_type=media_type,
            chunk_index=self.chunk.index,
            role=artifact_role(role),  # type: ignore[arg-type]
        )
        with self._lock:
            self._previews[name] = shown
        self._notify()

    def _take_previews(self) -> list[job_pb2.Artifact]:
        """The previews not sent yet, taken to be sent."""
        with self._lock:
            taken, self._previews = list(self._previews.values()), {}
        return taken

    def _return_previews(self, previews: list[job_pb2.Artifact]) -> None:
        """Previews a report failed to send, kept for the next (unless newer ones of their names came)."""
        with self._lock:
            for p in previews:
                self._previews.setdefault(p.name, p)

    def _has_previews(self) -> bool:
        with self._lock:
            return bool(self._previews)

    def _snapshot(self) -> tuple[int, str, str, str]:
        with self._lock:
            return self._items_done, self._stage, self._message, self._external_task_id


def artifact_role(role: str | int) -> int:
    """An ArtifactRole number from a number or a name (``"result"``, ``"ARTIFACT_ROLE_RESULT"``)."""
    if isinstance(role, int):
        return role
    name = role.upper()
    name = name if name.startswith("ARTIFACT_ROLE_") else "ARTIFACT_ROLE_" + name
    if name not in job_pb2.ArtifactRole.keys():
        raise ValueError(f"role must be output, preview, thumbnail, log or result, not {role!r}")
    return job_pb2.ArtifactRole.Value(name)
