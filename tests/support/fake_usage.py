"""An in-memory ``UsageStore``: stored usage totals and shared rate-limit buckets, with the same
arithmetic as ``store/usage.py``'s statements, a clock the test moves, and faults on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobpulse_server.domain.usage import KeyUsage, Lease
from support.clock import FakeSeconds


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class FakeUsageStore:
    """``UsageStore`` in memory; ``add_calls`` records every batch, ``fail`` makes calls raise."""

    clock: FakeSeconds = field(default_factory=FakeSeconds)
    totals: dict[str, KeyUsage] = field(default_factory=dict)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    add_calls: list[dict[str, KeyUsage]] = field(default_factory=list)
    lease_calls: int = 0
    fail: bool = False
    # One entry per add_usage call: whether it wrote (True) or failed (False).
    add_attempts: asyncio.Queue[bool] = field(default_factory=asyncio.Queue)

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        self.add_attempts.put_nowait(not self.fail)
        if self.fail:
            raise ConnectionRefusedError("the database is away")
        self.add_calls.append({k: KeyUsage(u.role, u.calls, u.rejected) for k, u in counts.items()})
        for name, usage in counts.items():
            self.totals.setdefault(name, KeyUsage(usage.role)).add(usage)

    async def usage(self) -> dict[str, KeyUsage]:
        if self.fail:
            raise ConnectionRefusedError("the database is away")
        return {k: KeyUsage(u.role, u.calls, u.rejected) for k, u in self.totals.items()}

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        self.lease_calls += 1
        if self.fail:
            raise ConnectionRefusedError("the database is away")
        now = self.clock()
        bucket = self.buckets.get(key_name)
        if bucket is None:
            bucket = self.buckets[key_name] = _Bucket(burst, now)
        available = min(burst, bucket.tokens + max(0.0, now - bucket.stamp) * rate)
        granted = want if available >= want else 0
        bucket.tokens, bucket.stamp = available - granted, max(bucket.stamp, now)
        if granted:
            return Lease(granted, left=bucket.tokens)
        return Lease(0, max(0.001, (want - bucket.tokens) / rate), bucket.tokens)
