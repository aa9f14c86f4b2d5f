"""Per-key rate limits: token buckets of ``rate`` calls a second holding at most ``burst`` (twice the
rate, at least 1), by the key's role; a rejected call is RATE_LIMITED with the seconds until a token.

Two limiters share one interface, ``admit(key_name, role)``: None when the call is admitted, an
awaitable when the answer needs the database (await it: it returns when admitted, or raises
RateLimited), RateLimited at once when the call is refused. Both count calls in the ``UsageLedger``.

* ``RateLimiter``: buckets in this process's memory. Exact for one server (SQLite, or PostgreSQL
  with ``rate_limit_shared`` off, where N replicas admit up to N times the limit).
* ``SharedRateLimiter`` (PostgreSQL): one bucket per key in the database (``rate_buckets``), shared by
  every replica. A replica does not visit it per call: it takes a *block* of tokens at a time
  (``rate x rate_limit_lease_seconds``, at least 1) and admits calls from that block in memory,
  taking the next block in the background once half of it is used (unless the key is at its limit,
  where that would only add statements). A call waits for the database
  only when its replica holds no token (the first call of a key, or traffic faster than the
  background lease). A lease is all or none; a refused one says when the bucket will hold the block,
  and calls until then are refused from memory, so a key hammering over its limit costs the database
  about one statement per block per replica, however many calls it sends.

Tolerance of the shared limiter, N replicas, block size b: tokens are taken from the shared bucket
before they are spent, so the limit over time is the bucket's; the only slack is the tokens the
replicas hold, at most b each. Calls admitted for one key in any T seconds, over all replicas, are at
most ``burst + rate*T + N*b`` (one replica alone: ``burst + rate*T``); and a replica may refuse a call
while up to ``(N-1)*b`` tokens sit unused on the others. While the database does not answer a lease
(or takes longer than LEASE_TIMEOUT), each replica limits the key on its own, with its own full
bucket, and tries the database again after DEGRADED_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from jobpulse_server.domain.errors import RateLimited
from jobpulse_server.domain.usage import Lease
from jobpulse_server.services.background import unavailable_reason
from jobpulse_server.services.usage import UsageLedger

log = logging.getLogger(__name__)


class TokenBuckets(Protocol):
    """The replicas' shared token buckets (PostgreSQL: ``store.batch``)."""

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        """Takes ``want`` tokens, all or none, from the key's shared bucket (``rate`` a second, at most
        ``burst``; full when first seen), in one statement; when it grants none, the wait is until the
        bucket holds ``want``."""
        ...


# The longest a call waits for a lease before its replica limits the key on its own, and how long
# it then does so before asking the database again.
LEASE_TIMEOUT = 2.0
DEGRADED_SECONDS = 1.0


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


class Limiter(Protocol):
    """What the authenticator asks about each call of a known key."""

    def admit(self, key_name: str, role: str) -> Awaitable[None] | None:
        """None: admitted. An awaitable: await it (admitted, or it raises RateLimited). Raises
        RateLimited when the call is refused outright."""
        ...


def burst_for(rate: float) -> float:
    return max(1.0, 2 * rate)


def _refuse(ledger: UsageLedger, key_name: str, role: str, rate: float, wait: float) -> RateLimited:
    ledger.rejected(key_name, role)
    return RateLimited(
        f"key {key_name!r} is over its rate limit of {rate:g} calls/s; retry in {wait:.2f}s",
        retry_after=wait,
        key=key_name,
    )


class RateLimiter:
    """Admits calls per key name at the rate its role allows (0 = unlimited), in this process alone."""

    def __init__(
        self, rates: dict[str, float], ledger: UsageLedger, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = rates
        self.ledger = ledger
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}

    def admit(self, key_name: str, role: str) -> Awaitable[None] | None:
        rate = self.rates.get(role, 0.0)
        if rate > 0:
            bucket = self._buckets.get(key_name)
            now = self.clock()
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[key_name] = Bucket(rate, burst_for(rate), stamp=now)
            wait = bucket.take(now)
            if wait > 0:
                raise _refuse(self.ledger, key_name, role, rate, wait)
        self.ledger.admitted(key_name, role)
        return None


@dataclass
class _Share:
    """One key on one replica: the tokens it holds from the shared bucket, and what it knows."""

    rate: float
    burst: float
    block: int
    tokens: int = 0
    # The shared bucket was empty: refuse from memory until then.
    refused_until: float = 0.0
    # The database failed: limit on this replica alone (``local``) until then.
    alone_until: float = 0.0
    local: Bucket | None = None
    lease: asyncio.Task[None] | None = None
    # The last lease was refused, or left less than a block: the key is at its limit, where leasing
    # ahead of need would mostly be refused, a statement for nothing.
    short: bool = False


class SharedRateLimiter:
    """Admits calls per key from a bucket shared by every replica in the database (see the module
    docstring for how, and for the tolerance)."""

    def __init__(
        self,
        rates: dict[str, float],
        ledger: UsageLedger,
        store: TokenBuckets,
        lease_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates = rates
        self.ledger = ledger
        self.store = store
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._shares: dict[str, _Share] = {}
        self.leases = 0  # lease statements sent
        self._failing = False

    def block_for(self, rate: float) -> int:
        """Tokens a replica takes at a time: ``rate * lease_seconds``, at least 1, at most half a burst."""
        return max(1, min(int(burst_for(rate) // 2), round(rate * self.lease_seconds)))

    def admit(self, key_name: str, role: str) -> Awaitable[None] | None:
        rate = self.rates.get(role, 0.0)
        if rate <= 0:
            self.ledger.admitted(key_name, role)
            return None
        share = self._shares.get(key_name)
        if share is None or share.rate != rate:
            share = self._shares[key_name] = _Share(rate, burst_for(rate), self.block_for(rate))
        if share.tokens > 0:
            self._spend(key_name, role, share)
            return None
        now = self.clock()
        if now < share.alone_until:
            self._admit_alone(key_name, role, share, now)
            return None
        if now < share.refused_until:
            raise _refuse(self.ledger, key_name, role, rate, share.refused_until - now)
        return self._after_lease(key_name, role, share)

    def _spend(self, key_name: str, role: str, share: _Share) -> None:
        share.tokens -= 1
        self.ledger.admitted(key_name, role)
        if share.tokens <= share.block // 2 and share.lease is None and not share.short:
            now = self.clock()
            if now >= share.refused_until and now >= share.alone_until:  # the next block, ahead of need
                self._start_lease(key_name, share)

    def _admit_alone(self, key_name: str, role: str, share: _Share, now: float) -> None:
        if share.local is None:
            share.local = Bucket(share.rate, share.burst, stamp=now)
        wait = share.local.take(now)
        if wait > 0:
            raise _refuse(self.ledger, key_name, role, share.rate, wait)
        self.ledger.admitted(key_name, role)

    async def _after_lease(self, key_name: str, role: str, share: _Share) -> None:
        while True:
            if share.lease is None:
                self._start_lease(key_name, share)
            assert share.lease is not None
            # Shielded: a caller that gives up must not cancel the lease other callers wait for.
            await asyncio.shield(share.lease)
            if share.tokens > 0:
                self._spend(key_name, role, share)
                return
            now = self.clock()
            if now < share.alone_until:
                self._admit_alone(key_name, role, share, now)
                return
            if now < share.refused_until:
                raise _refuse(self.ledger, key_name, role, share.rate, share.refused_until - now)
            # Callers that waited on the same lease took its tokens first: lease again.

    def _start_lease(self, key_name: str, share: _Share) -> None:
        share.lease = asyncio.ensure_future(self._lease(key_name, share))

    async def _lease(self, key_name: str, share: _Share) -> None:
        try:
            want = max(1, share.block - share.tokens)
            self.leases += 1
            got = await asyncio.wait_for(
                self.store.lease_tokens(key_name, want, share.rate, share.burst), LEASE_TIMEOUT
            )
            share.tokens += got.granted
            share.short = got.granted < want or got.left < share.block
            if not got.granted:
                share.refused_until = self.clock() + got.wait
            share.local = None
            if self._failing:
                log.info("rate limits are shared by the replicas again")
                self._failing = False
        except Exception as exc:
            # Limit on this replica alone for a while rather than refuse every call or admit all.
            if not self._failing:
                why = unavailable_reason(exc)
                log.warning(
                    "could not take rate-limit tokens from the database (%s); each replica limits on its "
                    "own until it answers",
                    why or f"{type(exc).__name__}: {exc}",
                    exc_info=not why,
                )
                self._failing = True
            share.alone_until = self.clock() + DEGRADED_SECONDS
        finally:
            share.lease = None
