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


class _Topic:
    """The watchers of one job, and how many times the job was announced as changed."""

    __slots__ = ("events", "generation")

    def __init__(self, generation: int) -> None:
        self.events: set[asyncio.Event] = set()
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
        self._feeds: set[asyncio.Event] = set()
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
        if changes.jobs:
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
    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the job changes, for as long as the block runs."""
        ev = asyncio.Event()
        topic = self._watchers.get(job_id)
        if topic is None:
            topic = self._watchers[job_id] = _Topic(next(self._tick))
        topic.events.add(ev)
        try:
            yield ev
        finally:
            topic.events.discard(ev)
            if not topic.events and self._watchers.get(job_id) is topic:
                del self._watchers[job_id]

    def generation(self, job_id: str) -> int:
        """How many times the job was announced as changed while it had watchers.

        A read of the job started at generation G sees every change announced up
        to G; a watcher woken later (at a higher generation) must not reuse it.
        """
        topic = self._watchers.get(job_id)
        return topic.generation if topic is not None else next(self._tick)

    @contextmanager
    def subscribe_all(self) -> Iterator[asyncio.Event]:
        """An event set whenever any job changes (for WatchJobs feeds)."""
        ev = asyncio.Event()
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
        for t in self._timers:
            t.cancel()
        self._timers.clear()
