"""Load generation helpers: closed-loop rate at a fixed concurrency, sequential latency, percentiles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.procs import Served, cpu_seconds

Call = Callable[[], Awaitable[Any]]


@dataclass
class Rate:
    """Calls completed in a closed loop, and the CPU time the server and this process used meanwhile."""

    calls: int
    seconds: float
    server_cpu_seconds: float | None
    client_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_us_per_call(self) -> float | None:
        if self.server_cpu_seconds is None or not self.calls:
            return None
        return self.server_cpu_seconds / self.calls * 1e6

    @property
    def client_cpu_us_per_call(self) -> float | None:
        return self.client_cpu_seconds / self.calls * 1e6 if self.calls else None

    def __add__(self, other: Rate) -> Rate:
        a, b = self.server_cpu_seconds, other.server_cpu_seconds
        cpu = a + b if a is not None and b is not None else None
        client = self.client_cpu_seconds + other.client_cpu_seconds
        return Rate(self.calls + other.calls, self.seconds + other.seconds, cpu, client)


async def closed_loop(call: Call, *, concurrency: int, seconds: float, server: Served | None = None) -> Rate:
    """Keeps ``concurrency`` calls in flight for ``seconds``; counts the calls that completed.

    Calls started before the deadline are awaited and counted, and the elapsed time runs until the
    last of them returns, so the rate is not skewed by the stragglers.
    """
    done = 0
    deadline = 0.0

    async def one_lane() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    cpu0 = cpu_seconds(server)
    own0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(one_lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    own = time.process_time() - own0
    cpu1 = cpu_seconds(server)
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return Rate(done, elapsed, cpu, own)


async def sequential_latencies(call: Call, count: int, prepare: Call | None = None) -> list[float]:
    """Seconds taken by each of ``count`` calls made one after another (``prepare``, if set, is
    awaited before each call and not timed)."""
    out = []
    for _ in range(count):
        if prepare is not None:
            await prepare()
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


def shares(n: int, parts: int) -> list[int]:
    """n split into ``parts`` shares as even as can be."""
    return [n // parts + (1 if j < n % parts else 0) for j in range(parts)]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def summary(samples: list[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of a non-empty sample."""
    q = {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples)}
    return {"samples": len(samples), **q}
