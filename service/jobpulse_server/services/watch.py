"""WatchJob: a snapshot (or everything after a revision), then changes, heartbeats, and the end.

Resume is computed from current state: every chunk remembers the job revision
of its own last change, so "what changed after R" is one indexed query however
long ago R was.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import (
    DatabaseUnavailable,
    InvalidPageToken,
    JobNotFound,
    RevisionAhead,
    ShuttingDown,
)
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Chunk, Job
from jobpulse_server.domain.principal import Principal
from jobpulse_server.events.hub import ChangeHub, Waker
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics, exemplar
from jobpulse_server.services import pagination
from jobpulse_server.services.artifacts import load_artifacts
from jobpulse_server.store import Store

# A message carries at most this many chunks; bigger deltas span several messages.
CHUNKS_PER_MESSAGE = 1000
SHUTDOWN_MESSAGE = "the server is shutting down; resume from the last revision or cursor you saw"


class EventType(enum.IntEnum):
    """Mirrors jobpulse.v1.WatchEventType."""

    SNAPSHOT = 1
    CHANGE = 2
    HEARTBEAT = 3


@dataclass
class WatchMessage:
    """One message of a watch stream."""

    type: EventType
    revision: int
    job: Job | None = None
    chunks: list[Chunk] = field(default_factory=list)
    more: bool = False
    # The wire forms by name ("grpc": a WatchJobResponse, "sse": its event text), each built once by
    # WatchService's encoder of that form and reused by every watcher sharing this message.
    encoded: dict[str, Any] | None = None


@dataclass
class _Delta:
    """One read of a job and the chunks changed after a revision, shared by every watcher that needs it."""

    job: Job
    chunks: list[Chunk]
    _messages: dict[EventType, list[WatchMessage]] = field(default_factory=dict)

    def messages(self, kind: EventType) -> list[WatchMessage]:
        if kind not in self._messages:
            self._messages[kind] = _split(kind, self.job, self.chunks)
        return self._messages[kind]


def _as_is(msg: WatchMessage) -> Any:
    return msg


_ReadKey = tuple[int, "str | None"]  # (after revision, owner filter)


class _SharedRead:
    """A read (under way or done) and the watchers waiting for it."""

    __slots__ = ("result", "waiters")

    def __init__(self, result: asyncio.Future[_Delta]) -> None:
        self.result = result
        self.waiters: list[asyncio.Future[None]] = []

    def release(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class _JobReads:
    """The reads of one job made since it was last announced as changed (one generation)."""

    __slots__ = ("generation", "reads")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.reads: dict[_ReadKey, _SharedRead] = {}


class WatchService:
    """Streams a job's changes to its watchers.

    Watchers woken by the same commit usually stand at the same revision; they
    share one database read and one encoding of each message instead of doing
    the same work once each.
    """

    def __init__(
        self,
        store: Store,
        hub: ChangeHub,
        config: Config,
        encode: Callable[[WatchMessage], Any] = _as_is,
        metrics: Metrics | None = None,
        clock: Clock = now_us,
    ) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        # jobpulse_watch_delivery_seconds: a live change's time (its job's update_time) -> handed to a stream.
        self.metrics = metrics
        self.clock = clock
        # Turns a message into what ``write`` takes, by form: "grpc" (the servicer: a WatchJobResponse),
        # and whatever ``add_form`` adds (the HTTP side: SSE text).
        self._forms: dict[str, Callable[[WatchMessage], Any]] = {}
        self._wires: dict[str, Callable[[WatchMessage], Any]] = {}
        self.add_form("grpc", encode)
        self._reads: dict[str, _JobReads] = {}

    def add_form(self, form: str, encode: Callable[[WatchMessage], Any]) -> None:
        """Makes ``form`` a wire form that ``watch`` can write: ``encode`` builds it from a message."""
        self._forms[form] = encode

        def wire(msg: WatchMessage) -> Any:
            # Encoded once, then shared by every watcher the message goes to.
            cache = msg.encoded
            if cache is None:
                cache = msg.encoded = {}
            found = cache.get(form)
            if found is None:
                found = cache[form] = encode(msg)
            return found

        self._wires[form] = wire

    def wire(self, form: str) -> Callable[[WatchMessage], Any]:
        """A message's ``form``, built on first use and kept on the message."""
        return self._wires[form]

    async def watch(
        self,
        who: Principal,
        job_id: str,
        after_revision: int,
        write: Callable[[Any], Awaitable[object]],
        form: str = "grpc",
    ) -> None:
        """Writes the job's messages (in the wire ``form``) with ``write`` until it is terminal (then
        returns) or the server closes.

        One flat coroutine per stream, not a stack of generators, and an idle stream waits on one
        future with no timer of its own: with thousands of streams woken by one change, every frame
        resumed per message and every object kept per stream shows in the fan-out's CPU and in the
        memory of each idle stream.
        """
        hub = self.hub
        closing = hub.closing
        heartbeat = self.config.heartbeat_interval
        min_interval = self.config.watch_min_interval
        wire = self._wires[form]
        delivered = self.metrics.watch_delivery_child(form) if self.metrics is not None else None
        exemplars = self.metrics is not None and self.metrics.exemplars
        # Subscribe before the first read so nothing committed in between is missed.
        changed = hub.add_watcher(job_id)
        try:
            delta = await self._read(who, job_id, after_revision)
            job = delta.job
            if after_revision > job.revision:
                raise RevisionAhead(
                    f"after_revision {after_revision} is beyond job {job_id}'s revision {job.revision}",
                    job_id=job_id,
                    revision=str(job.revision),
                    state=f"JOB_STATE_{job.state.name}",
                )
            if after_revision == 0:
                for msg in delta.messages(EventType.SNAPSHOT):
                    await write(wire(msg))
            elif after_revision < job.revision or job.state.terminal:
                for msg in delta.messages(EventType.CHANGE):
                    await write(wire(msg))
            else:
                await write(wire(WatchMessage(EventType.HEARTBEAT, job.revision)))
            last = job.revision
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            while not job.state.terminal:
                # hub.close() sets every flag, so this one wait also covers shutdown.
                if not closing.is_set():
                    waiter = changed.arm(heartbeat)
                    if waiter is not None:
                        await waiter
                        changed.disarm()
                if closing.is_set():
                    raise ShuttingDown(SHUTDOWN_MESSAGE)
                if hub.outage is not None:
                    # The health probe finds the database gone (hub.database_lost woke us): end with
                    # UNAVAILABLE, which the caller retries, rather than heartbeat as if all were well.
                    raise DatabaseUnavailable(hub.outage)
                if not changed.is_set():
                    await write(wire(WatchMessage(EventType.HEARTBEAT, last)))
                    continue
                # At most one message per watch_min_interval: changes committed meanwhile fold into
                # it, so a watcher that reads slower than changes happen never builds a backlog.
                gap = min_interval - (loop.time() - last_sent)
                if gap > 0:
                    await asyncio.sleep(gap)
                changed.clear()
                delta = self._shared(who, job_id, last) or await self._read(who, job_id, last)
                job = delta.job
                if job.revision > last:
                    for msg in delta.messages(EventType.CHANGE):
                        if delivered is not None:
                            delay = (self.clock() - job.update_time) / 1e6
                            delivered.observe(delay, exemplar() if exemplars else None)
                        await write(wire(msg))
                    last = job.revision
                    last_sent = loop.time()
        finally:
            hub.remove_watcher(job_id, changed)
            self._forget_unwatched(job_id)

    def _shared(self, who: Principal, job_id: str, after: int) -> _Delta | None:
        """A finished read of the current generation, if there is one (no coroutine needed)."""
        job_reads = self._reads.get(job_id)
        if job_reads is None or job_reads.generation != self.hub.generation(job_id):
            return None
        shared = job_reads.reads.get((after, who.owner_filter))
        if shared is None or not shared.result.done() or shared.result.exception() is not None:
            return None
        return shared.result.result()

    async def _read(self, who: Principal, job_id: str, after: int) -> _Delta:
        """The job and its chunks changed after ``after``, joining an identical read already under way.

        Only a read started since the job was last announced as changed may be
        joined: an older one may predate the change that woke this watcher, and
        the watcher, its wake-up already spent, would then miss it.
        """
        generation = self.hub.generation(job_id)
        job_reads = self._reads.get(job_id)
        if job_reads is None or job_reads.generation != generation:
            # The job changed since those reads started: they may miss it. Start afresh.
            job_reads = self._reads[job_id] = _JobReads(generation)
        key = (after, who.owner_filter)
        shared = job_reads.reads.get(key)
        if shared is None:
            # This watcher reads for everyone of this generation. Reading here, not in a task of
            # its own, saves a loop turn per watcher when the read does not yield (SQLite on the
            # loop): the watchers woken after it find the result ready.
            result: asyncio.Future[_Delta] = asyncio.get_running_loop().create_future()
            shared = job_reads.reads[key] = _SharedRead(result)
            try:
                delta = await self._read_now(who, job_id, after)
            except asyncio.CancelledError:
                # This watcher went away mid-read; its waiters must not inherit that: they wake,
                # find no result, and read again themselves.
                self._drop(job_reads, key, shared)
                shared.release()
                raise
            except Exception as exc:
                # A failed read is handed to its waiters but not kept for later watchers.
                self._drop(job_reads, key, shared)
                result.set_exception(exc)
                result.exception()  # retrieved: each waiter re-raises it
                shared.release()
                raise
            # A finished read stays shared until the job changes: watchers that open later at
            # the same generation reuse it instead of reading and encoding their own copy.
            result.set_result(delta)
            shared.release()
            return delta
        result = shared.result
        if not result.done():
            # Each watcher waits on a future of its own: one going away cancels only that,
            # never the read the others wait for.
            waiter = asyncio.get_running_loop().create_future()
            shared.waiters.append(waiter)
            await waiter
            if not result.done():  # the reader went away: read again (or join a newer read)
                return await self._read(who, job_id, after)
        return result.result()

    @staticmethod
    def _drop(job_reads: _JobReads, key: _ReadKey, shared: _SharedRead) -> None:
        if job_reads.reads.get(key) is shared:
            del job_reads.reads[key]

    def _forget_unwatched(self, job_id: str) -> None:
        if not self.hub.watched(job_id):
            self._reads.pop(job_id, None)

    async def _read_now(self, who: Principal, job_id: str, after: int) -> _Delta:
        async with self.store.read() as tx:
            job = await tx.get_job(job_id, who.owner_filter)
            if job is None:
                raise JobNotFound(job_id)
            if after > job.revision:
                return _Delta(job, [])
            if after == 0 or job.state.terminal:
                # The snapshot and the last message carry the job's artifacts; changes in between
                # carry them on the chunks that completed.
                await load_artifacts(tx, [job])
            delta = await tx.list_chunks(job_id, after_revision=after if after else None)
            return _Delta(job, delta)


def _split(kind: EventType, job: Job, chunks: list[Chunk]) -> list[WatchMessage]:
    if not chunks:
        return [WatchMessage(kind, job.revision, job, [])]
    parts = [chunks[i : i + CHUNKS_PER_MESSAGE] for i in range(0, len(chunks), CHUNKS_PER_MESSAGE)]
    return [
        WatchMessage(kind, job.revision, job, part, more=i < len(parts) - 1) for i, part in enumerate(parts)
    ]


# --- WatchJobs: a feed of job-level changes ---------------------------------------

JOBS_PER_MESSAGE = 500
# While changes exist past the horizon (PostgreSQL: a transaction older than them is
# still open), look again this often instead of waiting for the next notification.
_HORIZON_RECHECK = 0.1
_END = "~"  # sorts after every job id: (seq, _END) means "all of seq delivered"


def encode_cursor(position: tuple[int, str]) -> str:
    return pagination.encode("feed", "any", [position[0], position[1]])


def decode_cursor(cursor: str) -> tuple[int, str]:
    key = pagination.decode(cursor, "feed", "any")
    seq_ok = len(key) == 2 and isinstance(key[0], int) and not isinstance(key[0], bool)
    if not seq_ok or not isinstance(key[1], str):
        raise InvalidPageToken("cursor is malformed")
    return key[0], key[1]


def horizon_cursor(horizon: int) -> str:
    """The cursor meaning "every change below ``horizon`` was seen"."""
    return encode_cursor((horizon - 1, _END))


@dataclass
class FeedMessage:
    """One message of a WatchJobs stream."""

    type: EventType
    jobs: list[Job]
    cursor: str
    # Ids of matching jobs deleted since the previous message.
    deleted: list[str] = field(default_factory=list)


class FeedService:
    """WatchJobs: job-level changes of every matching job, resumable by cursor.

    Each job row carries a change_seq; a change is handed out only once it is
    below the change horizon, i.e. once no transaction that could still commit
    a smaller change_seq is open. So a cursor never skips a change that commits late.
    """

    def __init__(self, store: Store, hub: ChangeHub, config: Config) -> None:
        self.store = store
        self.hub = hub
        self.config = config

    async def watch(
        self, who: Principal, f: JobFilter, cursor: str, *, announce: bool = False
    ) -> AsyncIterator[FeedMessage]:
        """The feed's messages. ``announce``: when resuming from a cursor, a HEARTBEAT once the
        changes since it are delivered (at once when there are none), so a client that must answer
        before its first event (an HTTP response's headers) need not wait for a change."""
        f.owner = who.owner_filter
        announce = announce and bool(cursor)
        with self.hub.subscribe_all() as changed:
            if cursor:
                position = decode_cursor(cursor)
                async with self.store.read() as tx:
                    floor = await tx.feed_floor()
                if position[0] < floor or (position[0] == floor and position[1] != _END):
                    # Tombstones after this cursor have been trimmed (tombstone_retention): resuming
                    # would miss those deletions without a word.
                    raise InvalidPageToken(
                        "cursor is too old: deletions since then are no longer kept "
                        "(tombstone_retention); list again and follow the new watch_cursor"
                    )
            else:
                async with self.store.read() as tx:
                    horizon = await tx.change_horizon()
                position = (horizon - 1, _END)
                yield FeedMessage(EventType.HEARTBEAT, [], encode_cursor(position))
            while True:
                changed.clear()
                beyond = False
                while True:
                    async with self.store.read() as tx:
                        horizon = await tx.change_horizon()
                        found, beyond = await tx.changed_jobs(f, position, horizon, JOBS_PER_MESSAGE + 1)
                        # Finished jobs come with their results (running ones carry them on chunks).
                        await load_artifacts(
                            tx,
                            [
                                e.job
                                for e in found[:JOBS_PER_MESSAGE]
                                if e.job is not None and e.job.state.terminal
                            ],
                        )
                    more = len(found) > JOBS_PER_MESSAGE
                    found = found[:JOBS_PER_MESSAGE]
                    if more:
                        position = (found[-1].change_seq, found[-1].job_id)
                    elif horizon - 1 > position[0]:
                        position = (horizon - 1, _END)
                    if found:
                        yield FeedMessage(
                            EventType.CHANGE,
                            [e.job for e in found if e.job is not None],
                            encode_cursor(position),
                            [e.job_id for e in found if e.job is None],
                        )
                    if not more:
                        break
                if announce:
                    announce = False
                    yield FeedMessage(EventType.HEARTBEAT, [], encode_cursor(position))
                if not await self._wait(changed, _HORIZON_RECHECK if beyond else None):
                    if not beyond:
                        yield FeedMessage(EventType.HEARTBEAT, [], encode_cursor(position))

    async def _wait(self, changed: Waker, timeout: float | None) -> bool:
        return await wait_for_change(self.hub, changed, timeout or self.config.heartbeat_interval)


async def wait_for_change(hub: ChangeHub, changed: Waker, timeout: float) -> bool:
    """True when ``changed`` is set, False after ``timeout``; ShuttingDown if the server is closing,
    DatabaseUnavailable while the health probe finds the database gone.

    The hub sets every subscriber's flag when it closes or loses the database, so one wait covers all.
    """
    woke = hub.closing.is_set() or await changed.wait(timeout)
    if hub.closing.is_set():
        raise ShuttingDown(SHUTDOWN_MESSAGE)
    if hub.outage is not None:
        raise DatabaseUnavailable(hub.outage)
    return woke
