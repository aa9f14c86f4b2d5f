"""The change hub: committed changes wake the watchers of that job and the waiting claimers.

Nothing is queued per watcher: a wake-up is a flag, and the watcher reads the
delta from the database itself. A slow watcher therefore folds any number of
changes into one read, and its memory stays constant whatever the update rate.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from .db import Changes


class Waker:
    """A wake-up flag one task waits on, with a timeout.

    Cheaper than an ``asyncio.Event`` raced against a timeout and a shutdown
    event: a wait costs one future and one timer, and creates no task. With
    thousands of streams woken by every change, that is most of the hub's cost.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self, timeout: float) -> bool:
        """True once set; False if ``timeout`` seconds pass first."""
        if self._flag:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return self._flag


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Topic:
    """The watchers of one job, and the generation of its latest change announcement."""

    __slots__ = ("events", "generation")

    def __init__(self, generation: int) -> None:
        self.events: set[Waker] = set()
        self.generation = generation

    def wake(self, generation: int) -> None:
        self.generation = generation
        for ev in self.events:
            ev.set()


class ChangeHub:
    """Fans committed changes out to in-process watchers and claim long-polls."""

    def __init__(self) -> None:
        self._watchers: dict[str, _Topic] = {}
        # Generations come from one counter, so a job watched again later never
        # reuses a number from before (see generation()).
        self._tick = itertools.count(1)
        self._feeds: set[Waker] = set()
        # Set when webhook events were committed (wakes the deliverer).
        self.webhooks = asyncio.Event()
        self._work = asyncio.Event()
        self.closing = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()

    # --- publishing (called after commit) ----------------------------------
    def publish(self, changes: Changes) -> None:
        for job_id in (*changes.jobs, *changes.deleted):
            topic = self._watchers.get(job_id)
            if topic is not None:
                topic.wake(next(self._tick))
        if changes.jobs or changes.deleted:
            for ev in self._feeds:
                ev.set()
        if changes.new_work:
            self.notify_work()
        if changes.webhooks:
            self.webhooks.set()
        for delay in changes.work_later:
            self._notify_work_later(delay)

    def _notify_work_later(self, delay: float) -> None:
        # Retried chunks become claimable after their backoff: wake claimers then.
        def fire() -> None:
            self._timers.discard(handle)
            self.notify_work()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def notify_work(self) -> None:
        """Wakes every claim that is waiting for work."""
        ev, self._work = self._work, asyncio.Event()
        ev.set()

    def work_event(self) -> asyncio.Event:
        """An event set the next time work may have appeared."""
        return self._work

    # --- watching ------------------------------------------------------------
    def add_watcher(self, job_id: str) -> Waker:
        """A flag set whenever the job changes (and at shutdown), until ``remove_watcher``.

        The pair costs less per stream than ``subscribe`` (no generator kept for
        the life of the stream), which counts with thousands of streams open.
        """
        ev = Waker()
        topic = self._watchers.get(job_id)
        if topic is None:
            topic = self._watchers[job_id] = _Topic(next(self._tick))
        topic.events.add(ev)
        return ev

    def remove_watcher(self, job_id: str, ev: Waker) -> None:
        topic = self._watchers.get(job_id)
        if topic is None:
            return
        topic.events.discard(ev)
        if not topic.events:
            del self._watchers[job_id]

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Waker]:
        """``add_watcher`` for as long as the block runs."""
        ev = self.add_watcher(job_id)
        try:
            yield ev
        finally:
            self.remove_watcher(job_id, ev)

    def watched(self, job_id: str) -> bool:
        """Whether the job has a watcher in this server."""
        return job_id in self._watchers

    def generation(self, job_id: str) -> int:
        """A number that grows each time the job is announced as changed (or newly watched).

        A read of the job started at generation G sees every change announced up
        to G; a watcher woken later (at a higher generation) must not reuse it.
        """
        topic = self._watchers.get(job_id)
        return topic.generation if topic is not None else next(self._tick)

    @contextmanager
    def subscribe_all(self) -> Iterator[Waker]:
        """A flag set whenever any job changes, and at shutdown (for WatchJobs feeds)."""
        ev = Waker()
        self._feeds.add(ev)
        try:
            yield ev
        finally:
            self._feeds.discard(ev)

    def wake_all(self) -> None:
        """Wakes every watcher, feed and claim (after notifications may have been lost)."""
        for topic in self._watchers.values():
            topic.wake(next(self._tick))
        for ev in self._feeds:
            ev.set()
        self.notify_work()

    @property
    def open_streams(self) -> int:
        return sum(len(t.events) for t in self._watchers.values()) + len(self._feeds)

    def close(self) -> None:
        """Tells every stream the server is going away."""
        self.closing.set()
        self.wake_all()  # every waiting stream sees `closing` and ends
        for t in self._timers:
            t.cancel()
        self._timers.clear()
