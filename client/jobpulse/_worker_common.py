"""What the thread-based :class:`~jobpulse.Worker` and the asyncio :class:`~jobpulse.AsyncWorker` share.

Only the logic that does not care whether it runs in a thread or on an event loop lives here: the state a
handler records on its task, the claim budget, the heartbeat cadence, and how a handler's exception becomes
a FailChunk. Waiting, sleeping and calling the server stay in each worker, in its own concurrency model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from jobpulse import _requests
from jobpulse._convert import struct_to_dict
from jobpulse.errors import DeadlineExceeded, PermanentError, Unavailable
from jobpulse.v1 import job_pb2, worker_service_pb2

log = logging.getLogger("jobpulse.worker")

#: Errors on the worker loop that are waited out with backoff instead of stopping the worker.
TRANSIENT = (Unavailable, DeadlineExceeded)


def default_worker_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in ListJobChunks."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def heartbeat_period(lease_duration: float) -> float:
    """Seconds between two heartbeats of an unchanged task: three chances per lease to extend it."""
    return max(0.05, lease_duration / 3)


def failure_report(error: BaseException) -> tuple[str, str, bool]:
    """(reason, message, retryable) of the FailChunk sent for a handler that raised ``error``."""
    return type(error).__name__, str(error), not isinstance(error, PermanentError)


def next_claim(
    worker_id: str, kinds: list[str], lease_duration: float
) -> worker_service_pb2.ClaimChunksRequest:
    """The ``claim_next`` of a completion: one more chunk, and no long poll (a completion must not wait)."""
    return _requests.claim_chunks(worker_id, kinds, 1, lease_duration, None)


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
        with self._lock:
            if self._remaining is None:
                return True
            if self._remaining <= 0:
                return False
            self._remaining -= 1
            return True

    def give_back(self) -> None:
        """Returns a reserved claim that brought no chunk."""
        with self._lock:
            if self._remaining is not None:
                self._remaining += 1

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

    def __init__(self, claim: worker_service_pb2.ChunkClaim, worker_id: str) -> None:
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

    def add_artifact(self, name: str, uri: str, media_type: str = "", size_bytes: int = 0) -> None:
        """Adds an artifact (a reference, never content) to send when the chunk completes.

        Args:
            name: Name of the artifact, e.g. ``"thumbnails.zip"``.
            uri: Where it is, e.g. ``"s3://bucket/key"``.
            media_type: Its media type, if known.
            size_bytes: Its size, if known.
        """
        with self._lock:
            self.artifacts.append(
                job_pb2.Artifact(
                    name=name,
                    uri=uri,
                    media_type=media_type,
                    size_bytes=size_bytes,
                    chunk_index=self.chunk.index,
                )
            )

    def _snapshot(self) -> tuple[int, str, str, str]:
        with self._lock:
            return self._items_done, self._stage, self._message, self._external_task_id
