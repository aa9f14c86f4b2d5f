"""Retry policy: which failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random

import grpc

from jobpulse.errors import JobpulseError

#: Unary calls that only read, or whose repetition is harmless, are retried on these codes.
# UNAVAILABLE: the server or its database is away for a moment. RESOURCE_EXHAUSTED: over the rate
# limit; the server's RetryInfo says how long to wait, and the retry waits that long.
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

#: Attempts (first call included) for a retried unary call, within its deadline.
MAX_UNARY_ATTEMPTS = 5


class Backoff:
    """Capped exponential backoff with full jitter on the upper half of each step.

    Args:
        initial: The first delay, in seconds.
        maximum: The cap on any delay, in seconds.
        multiplier: The growth factor between consecutive delays.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, multiplier: float = 2.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._current = initial

    def reset(self) -> None:
        """Starts over from the initial delay (call after a success)."""
        self._current = self._initial

    def next_delay(self, server_hint: float | None = None) -> float:
        """Returns the next delay and grows the following one.

        Args:
            server_hint: A delay the server asked for (``RetryInfo``); the result is never shorter.
        """
        step = self._current
        self._current = min(self._maximum, self._current * self._multiplier)
        delay = random.uniform(step / 2, step)
        if server_hint is not None:
            delay = max(delay, server_hint)
        return delay


def is_retryable(error: JobpulseError) -> bool:
    """Tells whether a unary call that failed with ``error`` may be sent again."""
    return error.code in RETRYABLE_CODES


def is_transport_failure(error: JobpulseError) -> bool:
    """Tells whether a stream broke because of the connection rather than a server decision.

    UNAVAILABLE always qualifies. INTERNAL or UNKNOWN without jobpulse ``ErrorInfo`` also do: the server
    attaches ErrorInfo to every status it sends itself, so a bare one comes from the transport (a reset
    stream, a proxy dropping the connection).
    """
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    if error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return error.domain != "jobpulse" and not error.reason
    return False
