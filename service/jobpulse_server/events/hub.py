"""The change hub: committed changes wake the watchers of that job and the waiting claimers.

Nothing is queued per watcher: a wake-up is a flag, and the watcher reads the
delta from the database itself. A slow watcher therefore folds any number of
changes into one read, and its memory stays constant whatever the update rate.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager

from jobpulse_server.domain.changes import Changes


class Waker:
    """A wake-up flag one task waits on, with a timeout.

    Cheaper than an ``asyncio.Event`` raced against a timeout and a shutdown
    event: waiting costs one future and creates no task, no coroutine and no
    timer of its own (timeouts come from a shared ``TimeoutWheel``). With
    thousands of streams woken by every change, that is most of the hub's cost.
    """

    __slots__ = ("_flag", "_slot", "_waiter", "_wheel")

    def __init__(self, wheel: TimeoutWheel) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None
        self._slot: set[Waker] | None = None
        self._wheel = wheel

    def set(self) -> None:
        self._flag = True
        self._wake()

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def arm(self, timeout: float) -> asyncio.Future[None] | None:
        """A future done once the flag is set or about ``timeout`` seconds have passed (at most
        an eighth more); None if the flag is already set. Call ``disarm`` after awaiting it."""
        if self._flag:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._slot = self._wheel.add(self, timeout, loop)
        return waiter

    def disarm(self) -> None:
        """Ends the current wait (if any): the wheel forgets this waker."""
        slot = self._slot
        if slot is not None:
            slot.discard(self)
            self._slot = None
        self._waiter = None

    def expire(self) -> None:
        """The wait timed out: wakes the waiter without setting the flag."""
        self._slot = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """True once set; False if ``timeout`` seconds (at most an eighth more) pass first."""
        waiter = self.arm(timeout)
        if waiter is not None:
            try:
                await waiter
            finally:
                self.disarm()
        return self._flag


class TimeoutWheel:
    """Timeouts for many waiting wakers, with one loop timer per moment instead of one per wait.

    A wait of T seconds ends at the next multiple of T/8 after T has passed, so the
    waits started within the same eighth share one slot and one timer. Arming and
    ending a wait are then a set insertion and removal; an asyncio timer per wait
    costs an object, a heap push of Python-level comparisons, and heap rebuilds
    as thousands of them are cancelled by every change.
    """

    def __init__(self) -> None:
        # Each moment's wakers and the one loop timer that ends their waits.
        self._slots: dict[float, tuple[set[Waker], asyncio.TimerHandle]] = {}

    def add(self, waker: Waker, timeout: float, loop: asyncio.AbstractEventLoop) -> set[Waker]:
        quantum = max(timeout, 0.001) / 8
        when = math.ceil((loop.time() + timeout) / quantum) * quantum
        entry = self._slots.get(when)
        if entry is None:
            entry = self._slots[when] = (set(), loop.call_at(when, self._fire, when))
        slot = entry[0]
        slot.add(waker)
        return slot

    def _fire(self, when: float) -> None:
        entry = self._slots.pop(when, None)
        if entry is not None:
            for waker in entry[0]:
                waker.expire()

    def close(self) -> None:
        for _, timer in self._slots.values():
            timer.cancel()
        self._slots.clear()


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
        # Why the database cannot be used, while the health probe finds it so (None: it can). Streams
        # wait on the hub alone, not on the database: this is how they learn it is gone.
        self.outage: str | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._wheel = TimeoutWheel()

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
            self.notify_work_later(delay)

    def notify_work_later(self, delay: float) -> None:
        """Wakes every claim waiting for work ``delay`` seconds from now (a retry's backoff or a job's
        scheduled start runs out then)."""

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
        ev = Waker(self._wheel)
        topic = self._watchers.get(job_id)
        if topic is None:
            topic = self._watchers[job_id] = _Topic(next(self._tick))
        topic.events.add(ev)
        return ev

    def remove_watcher(self, job_id: str, ev: Waker) -> None:
        ev.disarm()
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
        ev = Waker(self._wheel)
        self._feeds.add(ev)
        try:
            yield ev
        finally:
            ev.disarm()
            self._feeds.discard(ev)

    def wake_all(self) -> None:
        """Wakes every watcher, feed and claim (after notifications may have been lost)."""
        for topic in self._watchers.values():
            topic.wake(next(self._tick))
        for ev in self._feeds:
            ev.set()
        self.notify_work()

    def database_lost(self, why: str) -> None:
        """The database cannot be used (says the health probe): every stream and claim is woken,
        finds ``outage`` set (or its read failing) and ends, instead of heartbeating as if all
        were well. A stream that opens meanwhile ends at its first wait."""
        self.outage = why
        self.wake_all()

    def database_back(self) -> None:
        """The database answers again: streams wait and heartbeat as usual."""
        self.outage = None

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
        self._wheel.close()
