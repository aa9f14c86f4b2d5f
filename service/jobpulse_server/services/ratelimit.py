"""Per-key token buckets, and the call / rejection counts GetUsage reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from jobpulse_server.domain.errors import RateLimited


@dataclass
class Bucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> float:
        """Takes a token; returns 0 on success, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class Usage:
    """Calls admitted and rejected for one key since the server started."""

    role: str
    calls: int = 0
    rejected: int = 0


class RateLimiter:
    """Admits calls per key name at the rate its role allows (0 = unlimited)."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates
        self._buckets: dict[str, Bucket] = {}
        self.usage: dict[str, Usage] = {}

    def admit(self, key_name: str, role: str) -> None:
        usage = self.usage.setdefault(key_name, Usage(role))
        rate = self.rates.get(role, 0.0)
        if rate > 0:
            bucket = self._buckets.get(key_name)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[key_name] = Bucket(rate, max(1.0, 2 * rate))
            wait = bucket.take(time.monotonic())
            if wait > 0:
                usage.rejected += 1
                raise RateLimited(
                    f"key {key_name!r} is over its rate limit of {rate:g} calls/s; retry in {wait:.2f}s",
                    retry_after=wait,
                    key=key_name,
                )
        usage.calls += 1
