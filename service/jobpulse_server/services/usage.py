"""Calls admitted and rejected per API key: counted in memory on the call's path, added to the
database in batches by a background flusher, reported (GetUsage) as the stored totals plus what
this server counted since its last flush.

Why batches: a write per call would put a database round trip (and, on SQLite, the single writer's
lock) behind every RPC. Instead each flush adds every key's counts since the previous one in one
statement (``UsageStore.add_usage``), every ``usage_flush_interval`` seconds and once more at a
graceful shutdown. A flush that fails (database away) keeps its counts and they go with the next
one, so an outage loses nothing while the process lives; a server killed with SIGKILL loses what it
counted since its last flush, at most one interval's calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services.background import FailingPasses, unavailable_reason

log = logging.getLogger(__name__)


class UsageStore(Protocol):
    """Where the counts are kept across restarts and summed over replicas (``SqlStore``)."""

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        """Adds each key's counts to its stored totals, in one transaction."""
        ...

    async def usage(self) -> dict[str, KeyUsage]:
        """The stored totals by key name."""
        ...


class UsageLedger:
    """Per-key counts since the last flush, and the flusher that adds them to the store."""

    def __init__(self, store: UsageStore, clock: Clock = now_us) -> None:
        self.store = store
        self.clock = clock
        self._pending: dict[str, KeyUsage] = {}
        # Held by a flush and by a report, so a report never sees a batch both in the database and
        # still pending (or in neither).
        self._lock = asyncio.Lock()
        self.flushes = 0  # flushes that wrote something
        self.failed_flushes = 0

    def admitted(self, key_name: str, role: str) -> None:
        usage = self._pending.get(key_name)
        if usage is None:
            usage = self._pending[key_name] = KeyUsage(role)
        usage.calls += 1

    def rejected(self, key_name: str, role: str) -> None:
        usage = self._pending.get(key_name)
        if usage is None:
            usage = self._pending[key_name] = KeyUsage(role)
        usage.rejected += 1

    @property
    def pending(self) -> dict[str, KeyUsage]:
        """What was counted and not yet written (a copy)."""
        return {name: KeyUsage(u.role, u.calls, u.rejected) for name, u in self._pending.items()}

    async def flush(self) -> None:
        """Adds the counts gathered since the last flush to the store; if that fails they are kept
        for the next flush and the error is raised."""
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                await self.store.add_usage(batch, self.clock())
            except BaseException:
                for name, usage in batch.items():  # counts made meanwhile stay, these join them
                    kept = self._pending.get(name)
                    if kept is None:
                        self._pending[name] = usage
                    else:
                        kept.calls += usage.calls
                        kept.rejected += usage.rejected
                self.failed_flushes += 1
                raise
            self.flushes += 1

    async def report(self) -> dict[str, KeyUsage]:
        """Every key's totals: stored (every replica, every earlier run) plus this server's unflushed
        counts. Another replica's calls since its last flush are not in yet."""
        async with self._lock:
            totals = await self.store.usage()
            for name, usage in self._pending.items():
                totals.setdefault(name, KeyUsage(usage.role)).add(usage)
        return totals

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Flushes every ``interval`` seconds until ``stop``; failures are logged and retried."""
        passes = FailingPasses("usage count flush (counts are kept for the next one)", log)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                try:
                    await self.flush()
                    passes.worked()
                except Exception as exc:
                    passes.failed(exc)

    async def close(self, timeout: float = 5.0) -> None:
        """The last flush, at shutdown (after the server stopped taking calls)."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception as exc:
            lost = sum(u.calls + u.rejected for u in self._pending.values())
            why = unavailable_reason(exc)
            log.error(
                "could not write the last usage counts: %d calls are not counted (%s)",
                lost,
                why or f"{type(exc).__name__}: {exc}",
                exc_info=not why,
            )
