"""The batcher of the worker path's writes on PostgreSQL: callers queue a completion, a claim, a progress
report or a retryable failure and wait for the flush that writes it. One flusher per process takes
everything queued while its previous flush ran (no timer: an idle server flushes at once), hands it to
``_flush`` (flushes.py: the statements), and answers every caller from what the flush did; a flush's
failure is each caller's, and a fault of the flusher itself fails every caller it took rather than
leaving calls that never end. It knows no SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobpulse_server.domain.model import Artifact, Chunk, Job
from jobpulse_server.domain.work import Completed, Retried

log = logging.getLogger("jobpulse.store")

# At most this many completions (or claimed chunks) per statement: a flush's statement stays short, and
# callers beyond it wait for the next flush.
MAX_GROUP = 256


_Queued = TypeVar("_Queued", "QueuedCompletion", "QueuedReport", "QueuedFailure")


def _once_each(queue: list[_Queued]) -> tuple[list[_Queued], list[_Queued]]:
    """A flush's share of a queue: up to MAX_GROUP items in order, each chunk once (one statement
    updates a row once; a second item for the chunk waits for the next flush), and what is left."""
    taken: list[_Queued] = []
    seen: set[str] = set()
    rest: list[_Queued] = []
    for item in queue:
        if len(taken) < MAX_GROUP and item.chunk_id not in seen:
            seen.add(item.chunk_id)
            taken.append(item)
        else:
            rest.append(item)
    return taken, rest


def _answer(
    items: Sequence[QueuedCompletion | QueuedReport | QueuedFailure], results: dict[int, Any]
) -> None:
    """Answers each item of a flush's statement from its rows' results by position (from 1); None for
    an item with no row: it declined, and the general path decides."""
    for pos, item in enumerate(items, 1):
        if not item.done.done():
            item.done.set_result(results.get(pos))


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _drop(fut: asyncio.Future[Any]) -> None:
    """A claim's answer its caller will not read (its completions failed, and it raises theirs): the
    failed flush gave both the same error, which is marked as seen so that asyncio does not log it as
    never retrieved; an answer still to come is cancelled."""
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()


# The queues' entries: a request of the worker path (domain/work.py) as the flusher needs it (its job,
# the caller's clock, its lease token) and the future its caller waits on.
@dataclass
class QueuedCompletion:
    chunk_id: str
    job_id: str
    token: str
    external_task_id: str
    artifacts: Sequence[Artifact]
    now: int
    done: asyncio.Future[Completed | None] = field(repr=False, default_factory=_future)


@dataclass
class QueuedClaim:
    worker_id: str
    kinds: tuple[str, ...]
    limit: int
    lease_us: int
    now: int
    # A claim made with completions (claim_next): written in the flush that writes the last of them,
    # after them; with ``if_done``, only if they all went through.
    after: Sequence[QueuedCompletion] = ()
    if_done: bool = False
    got: asyncio.Future[list[tuple[Job, Chunk]] | None] = field(repr=False, default_factory=_future)


@dataclass
class QueuedReport:
    """A progress report (heartbeat): a ProgressReport's fields with its job and the caller's clock;
    ``lease_us`` 0 keeps the chunk's lease duration. Answered with (cancel requested, the chunk's new
    lease end), or None when it declined."""

    chunk_id: str
    job_id: str
    token: str
    items_done: int
    stage: str
    message: str
    external_task_id: str
    lease_us: int
    now: int
    done: asyncio.Future[tuple[bool, int] | None] = field(repr=False, default_factory=_future)


@dataclass
class QueuedFailure:
    """A retryable failure: a Failure's fields with its job, the jitter of its backoff (in [0, 1)) and the
    backoff's base and cap (seconds). Answered with what it did, or None when it declined."""

    chunk_id: str
    job_id: str
    token: str
    reason: str
    message: str
    jitter: float
    backoff_s: float
    backoff_max_s: float
    now: int
    details: str = ""
    done: asyncio.Future[Retried | None] = field(repr=False, default_factory=_future)


class BatchQueue:
    """The queues and the flusher; a subclass writes a flush (``_flush``)."""

    def __init__(self) -> None:
        self._completions: list[QueuedCompletion] = []
        self._claims: list[QueuedClaim] = []
        self._reports: list[QueuedReport] = []
        self._failures: list[QueuedFailure] = []
        self._flusher: asyncio.Task[None] | None = None
        # What the flushes did, for the metrics (platform/metrics.py), tests and the bench: statements
        # written, completions, claimed chunks, progress reports and retries they wrote, and seconds with a
        # statement in flight (a rate near 1: callers queue for the flusher, the worker path's limit on
        # one server).
        self.flushes = 0
        self.items = 0
        self.busy_seconds = 0.0

    @property
    def queued(self) -> int:
        """Completions, claims, progress reports and failures waiting for a flush."""
        return len(self._completions) + len(self._claims) + len(self._reports) + len(self._failures)

    async def close(self) -> None:
        """Lets the flush under way finish (its callers get their answers)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def complete(self, item: QueuedCompletion) -> Completed | None:
        self._completions.append(item)
        self._kick()
        return await item.done

    async def claim(self, ask: QueuedClaim) -> list[tuple[Job, Chunk]] | None:
        self._claims.append(ask)
        self._kick()
        return await ask.got

    async def report(self, item: QueuedReport) -> tuple[bool, int] | None:
        self._reports.append(item)
        self._kick()
        return await item.done

    async def fail(self, item: QueuedFailure) -> Retried | None:
        self._failures.append(item)
        self._kick()
        return await item.done

    async def complete_and_claim(
        self, item: QueuedCompletion, ask: QueuedClaim
    ) -> tuple[Completed, list[tuple[Job, Chunk]] | None] | None:
        """Both in one flush: the completion, then (if it went through) the claim, which sees it."""
        ask.after, ask.if_done = (item,), True
        self._completions.append(item)
        self._claims.append(ask)
        self._kick()
        try:
            done = await item.done
        except BaseException:
            _drop(ask.got)
            raise
        if done is None:
            ask.got.cancel()
            return None
        return done, await ask.got

    async def complete_many(
        self, items: Sequence[QueuedCompletion], ask: QueuedClaim | None
    ) -> tuple[list[Completed | None], list[tuple[Job, Chunk]] | None]:
        """The completions, then, if every one went through, the claim, in as few flushes as they fit
        in: each completion's outcome (None: declined), and the claims ([] with no ``ask``; None when it
        declined or a completion did, and the caller claims once it has dealt with those)."""
        self._completions.extend(items)
        if ask is not None:
            ask.after, ask.if_done = items, True
            self._claims.append(ask)
        self._kick()
        # One after the other, not gathered: a flush settles every completion it took at once, so the
        # first await wakes this caller and the rest are done already (a gather of a CompleteChunks of
        # 10 ran 10 callbacks and a wake-up of its own for each call).
        try:
            done = [await i.done for i in items]
        except BaseException:
            for i in items:  # a failed flush gave them all its error: seen, not logged as never retrieved
                _drop(i.done)
            if ask is not None:
                _drop(ask.got)
            raise
        return done, (await ask.got if ask is not None else [])

    def _kick(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while self._completions or self._claims or self._reports or self._failures:
                # What this flush took off the queues, so that a fault of the flusher's own (a bug: a
                # statement's failure is each caller's, ``_settle``) is an error for every caller it
                # took, and for those still queued (the fault may lie in taking them), rather than calls
                # that never end or a flusher that fails again and again; later calls are served as usual.
                took: list[asyncio.Future[Any]] = []
                try:
                    await self._flush(took)
                except Exception as exc:
                    log.exception("a group-commit flush failed outside its statement")
                    took += [c.done for c in self._completions]
                    took += [c.got for c in self._claims]
                    took += [r.done for r in self._reports]
                    took += [f.done for f in self._failures]
                    self._completions, self._claims, self._reports, self._failures = [], [], [], []
                    for fut in took:
                        if not fut.done():
                            fut.set_exception(exc)
        finally:
            self._flusher = None
            # Cancelled (the store closing): nobody is left waiting on a flush that will not come.
            queued: list[asyncio.Future[Any]] = [c.done for c in self._completions]
            queued += [c.got for c in self._claims]
            queued += [r.done for r in self._reports]
            queued += [f.done for f in self._failures]
            for fut in queued:
                fut.cancel()
            self._completions.clear()
            self._claims.clear()
            self._reports.clear()
            self._failures.clear()

    async def _flush(self, took: list[asyncio.Future[Any]]) -> None:
        """One flush of what is queued; ``took`` gets the future of each item it takes off the queues."""
        raise NotImplementedError

    @staticmethod
    def _went_through(item: QueuedCompletion) -> bool:
        fut = item.done
        return fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is not None

    async def _settle(self, waiting: Sequence[Any], write: Any) -> None:
        """Runs one flush's statement; a failure (the database away, an abort past the retries) is every
        waiting caller's, as it would have been on a statement of its own."""
        started = time.perf_counter()
        try:
            await write
        except Exception as exc:  # handed to each caller, who maps it as before
            for w in waiting:
                fut = w.got if isinstance(w, QueuedClaim) else w.done
                if not fut.done():
                    fut.set_exception(exc)
        except BaseException:
            # The flusher itself cancelled (the loop closing): nobody waits for this flush's answer.
            for w in waiting:
                (w.got if isinstance(w, QueuedClaim) else w.done).cancel()
            raise
        finally:
            self.busy_seconds += time.perf_counter() - started
