"""Helpers for the WatchJob tests: a recording watcher, stream checks, a server in a subprocess."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

import jobpulse
from jobpulse.v1 import job_pb2, job_service_pb2

SNAPSHOT = job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT
CHANGE = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT
TERMINAL = {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
WATCH_METHOD = "/jobpulse.v1.JobService/WatchJob"

T = TypeVar("T")


# --- counting the SDK's WatchJob calls -----------------------------------------------------------


class WatchCallCounter(grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Records the ``after_revision`` of every WatchJob stream the SDK opens through this channel."""

    def __init__(self) -> None:
        self.after_revisions: list[int] = []
        self._lock = threading.Lock()

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if client_call_details.method == WATCH_METHOD:
            with self._lock:
                self.after_revisions.append(request.after_revision)
        return continuation(client_call_details, request)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.after_revisions)


#: Channel options for test channels: no shared subchannels, quick reconnects after a server restart.
FAST_RECONNECT = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def counted_channel(address: str) -> tuple[grpc.Channel, grpc.Channel, WatchCallCounter]:
    """A channel whose WatchJob calls are counted: (intercepted channel, raw channel to close, counter)."""
    raw = grpc.insecure_channel(address, options=FAST_RECONNECT)
    counter = WatchCallCounter()
    return grpc.intercept_channel(raw, counter), raw, counter


# --- a watcher in a thread --------------------------------------------------------------------------


@dataclass
class Recorder:
    """Runs ``client.watch_job`` in a thread and records every message it yields."""

    client: jobpulse.Client
    job_id: str
    delay: float = 0.0  # seconds the consumer dawdles after each message (a slow reader)
    timeout: float = 60.0
    events: list[job_service_pb2.WatchJobResponse] = field(default_factory=list)
    error: BaseException | None = None
    finished: bool = False
    abandoned: bool = False  # set to make the consumer stop after the message in hand
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def start(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, name="watch-recorder", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for event in self.client.watch_job(self.job_id, timeout=self.timeout, idle_timeout=20.0):
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
                if self.delay:
                    time.sleep(self.delay)
                if self.abandoned:
                    break
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            with self._cond:
                self.finished = True
                self._cond.notify_all()

    def complete_revision(self) -> int:
        """The last revision seen in a message without ``more`` (0 before any)."""
        with self._cond:
            for event in reversed(self.events):
                if not event.more:
                    return event.revision
            return 0

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                if self.finished:
                    raise AssertionError(f"watch ended ({self.error!r}) before {what or predicate}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
                self._cond.wait(remaining)

    def wait_revision(self, revision: int, timeout: float = 20.0) -> None:
        """Blocks until the watcher has seen every message up to ``revision``."""

        def reached(events: list[Any]) -> bool:
            return any(not e.more and e.revision >= revision for e in events)

        self.wait_for(reached, timeout, f"revision {revision}")

    def join(self, timeout: float = 60.0) -> list[job_service_pb2.WatchJobResponse]:
        """The messages, once the watch ended by itself within ``timeout`` (else it is abandoned)."""
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.abandoned = True
            self._thread.join(10)
            raise AssertionError(f"watch still running after {timeout:g}s ({len(self.events)} messages)")
        if self.error is not None:
            raise AssertionError(f"watch failed: {self.error!r}") from self.error
        return list(self.events)


# --- checking a stream against the final state --------------------------------------------------------


@dataclass
class StreamCheck:
    """What ``check_stream`` found."""

    latest: dict[str, tuple[int, int]]  # chunk id -> (revision, state) last seen
    complete_revisions: list[int]  # revisions of non-heartbeat messages without ``more``, in order


def check_stream(events: list[Any], after_revision: int = 0) -> StreamCheck:
    """Checks the rules every watch stream (as the SDK hands it over) obeys, and folds its chunks.

    * Revisions of messages without ``more`` strictly increase (heartbeats repeat the last one).
    * A message with ``more`` is followed by more of the same revision or (after a resume) a newer one.
    * Every chunk a CHANGE carries changed after the previous complete revision and not after the
      message's own revision; a chunk's revision never goes back.
    """
    prev = after_revision
    latest: dict[str, tuple[int, int]] = {}
    complete: list[int] = []
    for i, event in enumerate(events):
        where = f"message {i} (type {event.type}, revision {event.revision}, previous {prev})"
        assert event.type in (SNAPSHOT, CHANGE, HEARTBEAT), where
        if event.type == HEARTBEAT:
            assert event.revision == prev, f"heartbeat revision is not the current one: {where}"
            assert not event.chunks and not event.more, where
            continue
        assert event.revision > prev, f"revision did not grow (duplicate or backwards): {where}"
        assert event.HasField("job") and event.job.revision == event.revision, where
        for chunk in event.chunks:
            assert chunk.revision <= event.revision, f"chunk {chunk.index} from the future: {where}"
            if event.type == CHANGE:
                assert chunk.revision > prev, f"chunk {chunk.index} sent again without a change: {where}"
            seen = latest.get(chunk.id)
            assert seen is None or chunk.revision >= seen[0], f"chunk {chunk.index} went back: {where}"
            latest[chunk.id] = (chunk.revision, chunk.state)
        if not event.more:
            prev = event.revision
            complete.append(event.revision)
    return StreamCheck(latest, complete)


def assert_matches_final(check: StreamCheck, events: list[Any], final_chunks: list[job_pb2.Chunk]) -> None:
    """Per chunk, the last (revision, state) the watcher saw is the chunk's final one: no gap."""
    want = {c.id: (c.revision, c.state) for c in final_chunks}
    missing = sorted(set(want) - set(check.latest))
    assert not missing, f"{len(missing)} chunk(s) never seen by the watcher"
    extra = sorted(set(check.latest) - set(want))
    assert not extra, f"the watcher saw {len(extra)} chunk(s) the job does not have"
    stale = {
        next(c.index for c in final_chunks if c.id == cid): (check.latest[cid], want[cid])
        for cid in want
        if check.latest[cid] != want[cid]
    }
    assert not stale, f"chunks whose last seen (revision, state) differs from the final one: {stale}"
    last = events[-1]
    assert not last.more and last.job.state in TERMINAL, "the stream did not end with the terminal state"


def final_state(client: jobpulse.Client, job_id: str) -> tuple[job_pb2.Job, list[job_pb2.Chunk]]:
    job = client.get_job(job_id, view="basic")
    chunks = list(client.list_job_chunks(job_id, page_size=1000))
    return job, chunks


# --- a server as a separate process ---------------------------------------------------------------


def ready(channel: grpc.Channel, timeout: float = 20.0) -> None:
    """Waits until ``channel`` is connected (after a restart, before calls that are not retried)."""
    grpc.channel_ready_future(channel).result(timeout=timeout)


def iter_claims(client: jobpulse.Client, kind: str, want: int, **kwargs: Any) -> Iterator[Any]:
    """Claims (in batches of up to 100, long-polling) until ``want`` claims were handed out."""
    got = 0
    deadline = time.monotonic() + 30
    while got < want:
        assert time.monotonic() < deadline, f"only {got} of {want} chunks could be claimed"
        for claim in client.claim_chunks(
            "watch-test", [kind], max_chunks=min(100, want - got), wait=2.0, **kwargs
        ):
            got += 1
            yield claim
