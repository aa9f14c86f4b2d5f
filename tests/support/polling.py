"""Waiting for a state by polling with a deadline (tests never sleep a fixed time to wait for state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    fn: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
    expect: Any = None,
) -> T:
    """Calls ``fn`` until it returns something truthy (or, with ``expect``, something equal to it)
    without raising AssertionError, and returns that; fails after ``timeout`` seconds with the last
    AssertionError ``fn`` raised, or a message naming ``what`` and the last value. Any other exception
    from ``fn`` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        failure: AssertionError | None = None
        try:
            value = fn()
            if (value == expect) if expect is not None else value:
                return value  # type: ignore[return-value]
        except AssertionError as exc:
            failure = exc
        if time.monotonic() > deadline:
            if failure is not None:
                raise failure
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(interval)
