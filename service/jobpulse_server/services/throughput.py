"""Chunks completed (and their items) per minute and job kind, for the dashboard's stats page ("chunks
completed per minute over the last hours"): counted in memory on the worker path once a completion has
committed, added to the database in batches by a background flusher, read back per minute with this
server's unflushed counts on top.

Why not count from the chunks table: the chart would scan every chunk completed in the hours it shows
(tens of millions of rows with a million jobs, and ``end_time`` has no index) on every view. The
``throughput_minutes`` table holds one row per minute and kind instead: a week of it is about 10,000
rows per kind, read by its primary key.

Why batches: the same reason as ``services/usage.py``. A write per completion would put a round trip
(and, on SQLite, the single writer's lock) behind every CompleteChunk; instead each flush adds every
(minute, kind)'s counts since the previous one in one statement (``ThroughputStore.add``), every few
seconds and once more at shutdown. Replicas add to the same rows, so the stored figures are the sum over
all of them; a report adds this server's counts not yet flushed, another replica's show up after its
next flush. A flush that fails keeps its counts for the next one, so a database outage loses nothing
while the process lives; SIGKILL loses at most one interval's counts. A flush whose commit is lost
in transit (it committed, the answer did not arrive) is written again by the next: the figures are for
a chart, an over-count there beats a gap.

Counts belong to the minute in which this server saw the completion commit (its clock), not to the
chunk's end_time: the two differ by the commit's duration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.services.background import FailingPasses, unavailable_reason

log = logging.getLogger(__name__)

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
#: How long the per-minute rows are kept: the longest window ``recent`` serves.
KEEP_US = 7 * 24 * HOUR_US
#: How often (at most) the flush loop deletes the rows older than KEEP_US. Every replica does it; a
#: second DELETE of the same range finds nothing.
PRUNE_EVERY_US = HOUR_US


def minute_of(t_us: int) -> int:
    """The start of the minute ``t_us`` falls in (microseconds since the epoch)."""
    return t_us - t_us % MINUTE_US


class ThroughputStore(Protocol):
    """The per-minute counts kept across restarts and summed over replicas (``SqlStore``)."""

    async def add_throughput(self, counts: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Adds each (minute, kind)'s (chunks, items) to its stored row: one statement for the batch."""
        ...

    async def throughput_since(self, since_minute_us: int) -> list[tuple[int, str, int, int]]:
        """The stored (minute, kind, chunks, items) from ``since_minute_us`` on, ordered by minute."""
        ...

    async def prune_throughput(self, before_minute_us: int) -> int:
        """Deletes the minutes before ``before_minute_us``; returns how many rows."""
        ...


class MinutePoint(NamedTuple):
    """One minute of the chart: completions summed over kinds (0 and 0 for a quiet minute)."""

    minute: int  # start of the minute, microseconds since the epoch
    chunks: int
    items: int


class KindTotal(NamedTuple):
    """One kind's completions over the whole window."""

    chunks: int
    items: int


class ThroughputReport(NamedTuple):
    """What ``Throughput.recent`` reports."""

    #: One point per minute of the window, oldest first; the last is the current, unfinished minute.
    points: list[MinutePoint]
    #: Totals over the window by kind, in kind order (kinds with no completion in it are left out).
    by_kind: dict[str, KindTotal]


class Throughput:
    """Per-(minute, kind) counts since the last flush, the flusher that adds them to the store, and the
    report the stats page reads."""

    def __init__(
        self,
        store: ThroughputStore,
        clock: Clock = now_us,
        *,
        keep_us: int = KEEP_US,
        prune_every_us: int = PRUNE_EVERY_US,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep_us = keep_us
        self.prune_every_us = prune_every_us
        self._pending: dict[tuple[int, str], tuple[int, int]] = {}
        # Held by a flush and by a report, so a report never sees a batch both in the database and
        # still pending (or in neither).
        self._lock = asyncio.Lock()
        self._next_prune: int | None = None  # None: at the loop's first pass
        self.flushes = 0  # flushes that wrote something
        self.failed_flushes = 0

    def count(self, kind: str, chunks: int, items: int) -> None:
        """Counts completions that have committed (never from inside a transaction that may still roll
        back or run again). In memory: a dictionary update, no await."""
        if chunks <= 0 and items <= 0:
            return
        key = (minute_of(self.clock()), kind)
        was = self._pending.get(key)
        self._pending[key] = (chunks, items) if was is None else (was[0] + chunks, was[1] + items)

    @property
    def pending(self) -> dict[tuple[int, str], tuple[int, int]]:
        """What was counted and not yet written (a copy)."""
        return dict(self._pending)

    def _keep(self, batch: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Puts a batch that was not written back with the counts made meanwhile."""
        for key, (chunks, items) in batch.items():
            was = self._pending.get(key)
            self._pending[key] = (chunks, items) if was is None else (was[0] + chunks, was[1] + items)

    async def flush(self) -> None:
        """Adds the counts gathered since the last flush to the store in one statement; if that fails
        they are kept for the next flush and the error is raised."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await self.store.add_throughput(batch)
            except BaseException:
                self._keep(batch)
                self.failed_flushes += 1
                raise
            self.flushes += 1

    async def prune(self) -> int:
        """Deletes the stored minutes older than ``keep_us``; returns how many rows."""
        return await self.store.prune_throughput(minute_of(self.clock() - self.keep_us))

    async def tick(self) -> None:
        """One pass of the flush loop: the flush, then the prune when one is due (the first pass, then
        every ``prune_every_us``). A prune that fails is tried again at the next pass."""
        await self.flush()
        now = self.clock()
        if self._next_prune is None or now >= self._next_prune:
            await self.prune()
            self._next_prune = now + self.prune_every_us

    async def run(self, stop: asyncio.Event, every: float = 10.0) -> None:
        """Flushes (and now and then prunes) every ``every`` seconds until ``stop``, then flushes once
        more; failures are logged and retried."""
        passes = FailingPasses("throughput count flush (counts are kept for the next one)", log)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except asyncio.TimeoutError:
                try:
                    await self.tick()
                    passes.worked()
                except Exception as exc:
                    passes.failed(exc)
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:
        """A last flush, at shutdown; logs (does not raise) what it could not write. ``run`` ends with
        one; calling it again once the server stopped taking calls writes what a drain completed."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception as exc:
            lost = sum(chunks for chunks, _ in self._pending.values())
            why = unavailable_reason(exc)
            log.error(
                "could not write the last throughput counts: %d completed chunks are not counted (%s)",
                lost,
                why or f"{type(exc).__name__}: {exc}",
                exc_info=not why,
            )

    async def recent(self, hours: int) -> ThroughputReport:
        """The last ``hours`` hours minute by minute (``hours * 60`` points, the current minute last),
        summed over kinds, quiet minutes as zeros, and each kind's totals over them: the stored counts
        of every replica plus this server's not yet flushed. Rows a replica whose clock runs ahead wrote
        for minutes after this server's current one are left out until that minute comes.
        ValueError unless 1 <= ``hours`` <= the hours kept."""
        if not 1 <= hours <= self.keep_us // HOUR_US:
            raise ValueError(f"hours must be from 1 to {self.keep_us // HOUR_US}, not {hours}")
        n = hours * 60
        last = minute_of(self.clock())
        first = last - (n - 1) * MINUTE_US
        async with self._lock:
            rows = await self.store.throughput_since(first)
            unflushed = list(self._pending.items())  # after the read: counts made during it are here
        chunks = [0] * n
        items = [0] * n
        by_kind: dict[str, tuple[int, int]] = {}

        def add(minute: int, kind: str, c: int, i: int) -> None:
            if not first <= minute <= last:
                return
            at = (minute_of(minute) - first) // MINUTE_US
            chunks[at] += c
            items[at] += i
            was = by_kind.get(kind, (0, 0))
            by_kind[kind] = (was[0] + c, was[1] + i)

        for minute, kind, c, i in rows:
            add(minute, kind, c, i)
        for (minute, kind), (c, i) in unflushed:
            add(minute, kind, c, i)
        return ThroughputReport(
            [MinutePoint(first + k * MINUTE_US, chunks[k], items[k]) for k in range(n)],
            {kind: KindTotal(*by_kind[kind]) for kind in sorted(by_kind)},
        )
