"""Clocks that move only when a test says so: ``FakeClock`` in microseconds since the epoch (the server's
``Clock``), ``FakeSeconds`` in seconds (the monotonic clocks of rate limits and background passes)."""

from __future__ import annotations

# 2023-11-14T22:13:20Z: a fixed start, so that ids and times in a failing test's output repeat.
START_US = 1_700_000_000_000_000


class FakeClock:
    """Microseconds since the epoch, moved only by the test."""

    def __init__(self, now: int = START_US) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        """Moves the clock on by ``seconds``; the new time."""
        self.now += int(seconds * 1e6)
        return self.now


class FakeSeconds:
    """Seconds, moved only by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
