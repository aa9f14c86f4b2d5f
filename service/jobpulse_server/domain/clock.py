"""Wall-clock time in integer microseconds (the unit every stored time uses)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def now_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000
