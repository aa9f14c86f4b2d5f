"""AIP-214 expiry: deletes finished jobs past their expire_time, then old tombstones and old webhook
deliveries, in short transactions, a bounded amount per sweep.

Expired jobs are found from indexes, never by scanning every finished job:

* jobs on the server's default ttl (``Job.ttl`` None) from (state, update_time, id), one terminal
  state at a time, up to now minus that state's default. A finished job's update_time is at least
  its end_time, so nothing is deleted early (a job changed after it ended, by UpdateJob, goes that
  much later). The scan remembers how far it got: jobs in that range that have a ttl of their own
  (kept for ever, or for longer) are passed over once, not at every sweep.
* jobs with a ttl of their own from the partial index on end_time + ttl.

Each batch is re-checked and deleted in one write transaction (``JobsTx.delete_expired``), which
leaves tombstones, so WatchJobs reports the deletions and watchers of the jobs get NOT_FOUND, as
after DeleteJob. Between transactions the loop is given back; on SQLite the statements run on a
worker thread (``Transactions`` opened ``off_loop``), so reads go on while a batch is deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.model import JobState
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.platform.config import Config
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.store import Store, Tx

log = logging.getLogger(__name__)

# Chunks deleted per transaction at most (with their jobs): a batch of big jobs stays short too.
CHUNKS_PER_BATCH = 20_000
# After each delete transaction the sweep waits this many times as long as the transaction took: it
# deletes at most a fifth of the time, leaving the rest of the CPU (two cores, shared with the
# database on the machines this is measured on) to the calls being served. With an equal pause (and
# 500-job batches) GetJob's p99 rose 2.8x while a backlog of 200,000 jobs was deleted; see
# ``python -m bench retention`` and docs/retention.md.
PAUSE_RATIO = 4.0
# Longest time between two trims of tombstones (or of deliveries); they are also trimmed at least ten
# times per retention period. A trim is a write transaction even when it finds nothing, and on SQLite
# every writer waits for it: once a minute is plenty for retentions of days.
TRIM_PERIOD_MAX = 60.0
# How far behind its last position the default-ttl scan starts again: a job saved with an older
# update_time by a transaction that committed late is still seen.
RESCAN_US = 10_000_000


@dataclass
class SweepCounts:
    """What one expiry sweep deleted."""

    jobs: int = 0
    tombstones: int = 0
    deliveries: int = 0

    def __bool__(self) -> bool:
        return bool(self.jobs or self.tombstones or self.deliveries)


class RetentionService:
    """Deletes what has outlived its retention (see the module's docstring and docs/retention.md)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock = now_us,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.retention = retention_of(config)
        self.batch = max(1, config.retention_batch)
        self.per_sweep = max(self.batch, config.retention_max_per_sweep)
        # Per terminal state: the (update_time, id) from which the default-ttl scan goes on.
        self._scanned: dict[JobState, tuple[int, str]] = {}
        # When (clock, microseconds) tombstones, and deliveries, are next trimmed.
        self._next_trim: dict[str, int] = {}
        # Set when the server stops: a sweep under way ends after its current transaction.
        self._stop = asyncio.Event()

    async def sweep(self) -> SweepCounts:
        """One bounded pass: expired jobs, then tombstones, then deliveries."""
        counts = SweepCounts()
        budget = self.per_sweep
        for state, ttl in self.retention.defaults():
            deleted, looked = await self._expire_by_default(state, ttl, budget)
            counts.jobs += deleted
            budget -= looked
            if budget <= 0:
                break
        if budget > 0:
            counts.jobs += await self._expire_own_ttl(budget)
        if self._trim_due("tombstones", self.config.tombstone_retention):
            counts.tombstones = await self._trim_tombstones()
        if self._trim_due("deliveries", self.config.webhook_delivery_retention):
            counts.deliveries = await self._trim_deliveries()
        return counts

    def _trim_due(self, what: str, keep: float) -> bool:
        """Whether ``what`` (kept ``keep`` seconds; 0: for ever) is to be trimmed now (by the
        service's clock, so runs on a fake clock trim at the same moments)."""
        if keep <= 0:
            return False
        now = self.clock()
        if now < self._next_trim.get(what, now):
            return False
        period = min(TRIM_PERIOD_MAX, max(self.config.sweep_interval, keep / 10))
        self._next_trim[what] = now + int(period * 1e6)
        return True

    async def _expire_by_default(self, state: JobState, ttl: int, budget: int) -> tuple[int, int]:
        """Deletes jobs of ``state`` on the default ``ttl`` whose time is up; (deleted, looked at)."""
        deleted = looked = 0
        while looked < budget and not self._stop.is_set():
            now = self.clock()
            cutoff = now - ttl
            limit = min(self.batch, budget - looked)
            position = self._scanned.get(state, (0, ""))
            async with self.store.read() as tx:
                found = await tx.expiry_candidates(state, position, cutoff, limit)
            looked += len(found)
            deleted += await self._delete([c for c in found if c.ttl is None])
            if len(found) < limit:
                # Scanned up to the cutoff: go on from a little before it next time.
                self._scanned[state] = (cutoff - RESCAN_US, "")
                break
            self._scanned[state] = (found[-1].update_time, found[-1].job_id)
            await asyncio.sleep(0)
        return deleted, looked

    async def _expire_own_ttl(self, budget: int) -> int:
        deleted = 0
        while budget > 0 and not self._stop.is_set():
            async with self.store.read() as tx:
                found = await tx.own_ttl_expired(self.clock(), min(self.batch, budget))
            budget -= len(found)
            gone = await self._delete(found)
            deleted += gone
            if len(found) < self.batch or not gone:
                break
            await asyncio.sleep(0)
        return deleted

    async def _delete(self, found: list[ExpiryCandidate]) -> int:
        """Deletes the jobs (those still expired) in transactions of at most ``batch`` jobs and
        CHUNKS_PER_BATCH chunks (a single bigger job alone)."""
        deleted = 0
        loop = asyncio.get_running_loop()
        for batch in _batches(found, self.batch, CHUNKS_PER_BATCH):
            if self._stop.is_set():
                break
            started = loop.time()
            ids, now = [c.job_id for c in batch], self.clock()
            # On SQLite on the loop, a bulk write's statements run on the driver's thread.
            gone = await self.store.write(_deleting(ids, now, self.retention), bulk=True)
            deleted += len(gone)
            # Give the loop (and the write lock, to writers waiting for it) back between transactions.
            await asyncio.sleep((loop.time() - started) * PAUSE_RATIO)
        return deleted

    async def _trim_tombstones(self) -> int:
        keep = self.config.tombstone_retention
        trimmed = 0
        while trimmed < self.per_sweep and not self._stop.is_set():
            before = self.clock() - int(keep * 1e6)
            n = await self.store.write(_trimming_tombstones(before, self.batch), bulk=True)
            trimmed += n
            if n < self.batch:
                break
            await asyncio.sleep(0)
        return trimmed

    async def _trim_deliveries(self) -> int:
        keep = self.config.webhook_delivery_retention
        trimmed = 0
        while trimmed < self.per_sweep and not self._stop.is_set():
            before = self.clock() - int(keep * 1e6)
            n = await self.store.write(_trimming_deliveries(before, self.batch), bulk=True)
            trimmed += n
            if n < self.batch:
                break
            await asyncio.sleep(0)
        return trimmed

    async def run(self, stop: asyncio.Event) -> None:
        """Sweeps every ``sweep_interval`` seconds until ``stop`` is set (which also cuts a sweep
        short, so a long deletion does not hold up shutdown)."""
        self._stop = stop
        passes = FailingPasses("expiry sweep", log)
        while not stop.is_set():
            try:
                counts = await self.sweep()
                passes.worked()
                if counts:
                    log.info(
                        "expiry: deleted %d job(s), %d tombstone(s), %d webhook delivery record(s)",
                        counts.jobs,
                        counts.tombstones,
                        counts.deliveries,
                    )
            except Exception as exc:  # keep sweeping even if one pass fails (e.g. database briefly away)
                passes.failed(exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.sweep_interval)
            except asyncio.TimeoutError:
                pass


# One transaction's work each (closures made here, not in the sweep's loops).
def _deleting(ids: list[str], now: int, retention: Retention) -> Callable[[Tx], Awaitable[list[str]]]:
    return lambda tx: tx.delete_expired(ids, now, retention)


def _trimming_tombstones(before: int, limit: int) -> Callable[[Tx], Awaitable[int]]:
    return lambda tx: tx.trim_tombstones(before, limit)


def _trimming_deliveries(before: int, limit: int) -> Callable[[Tx], Awaitable[int]]:
    return lambda tx: tx.trim_deliveries(before, limit)


def retention_of(config: Config) -> Retention:
    """The default ttl per terminal state the config sets."""
    return Retention.from_seconds(
        config.retention_completed, config.retention_failed, config.retention_cancelled
    )


def _batches(found: list[ExpiryCandidate], jobs: int, chunks: int) -> Iterator[list[ExpiryCandidate]]:
    batch: list[ExpiryCandidate] = []
    size = 0
    for c in found:
        if batch and (len(batch) >= jobs or size + c.chunks > chunks):
            yield batch
            batch, size = [], 0
        batch.append(c)
        size += c.chunks
    if batch:
        yield batch
