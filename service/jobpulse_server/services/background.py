"""How the server's background loops (sweeper, expiry, webhook deliveries) report passes that fail.

A loop that runs every second would otherwise log the same traceback every second for as long as the
database is away: pages of it, burying the one line that says what happened. Instead:

* the first failure of a run is logged once: one WARNING line when the database is unavailable (an
  expected, retried condition whose cause health and the calls already report), an ERROR with the
  traceback for anything else (a bug to report);
* while it keeps failing, one line at most every ``REPEAT_SECONDS`` with how many passes failed;
* the first pass that works again says so, with how long the loop was failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from jobpulse_server.domain.errors import DatabaseUnavailable

#: Seconds between two "still failing" lines of one loop.
REPEAT_SECONDS = 60.0


def unavailable_reason(exc: BaseException) -> str:
    """The plain words for ``exc`` when it says the database is away, refuses us or lacks our schema
    (DatabaseUnavailable: the store raises it for every driver error that means so); ``""`` otherwise."""
    return str(exc) if isinstance(exc, DatabaseUnavailable) else ""


class FailingPasses:
    """Tracks the failing passes of one background loop and logs them as the module says."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        *,
        repeat_seconds: float = REPEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = log
        self.repeat_seconds = repeat_seconds
        self.clock = clock
        self.failures = 0  # passes failed in the current run
        self._since = 0.0  # when the current run began
        self._said = 0.0  # when the run was last logged

    def failed(self, exc: BaseException) -> None:
        """Records a failed pass (call from the ``except`` block: the traceback is the current one)."""
        now = self.clock()
        self.failures += 1
        unavailable = unavailable_reason(exc)
        if self.failures == 1:
            self._since = self._said = now
            if unavailable:
                self.log.warning("%s paused: %s; retrying every pass", self.what, unavailable)
            else:
                self.log.exception("%s failed", self.what)
            return
        if now - self._said >= self.repeat_seconds:
            self._said = now
            self.log.warning(
                "%s still failing: %d passes over %.0fs (last: %s)",
                self.what,
                self.failures,
                now - self._since,
                unavailable or f"{type(exc).__name__}: {exc}",
            )

    def worked(self) -> None:
        """Records a pass that worked; ends a run of failures (logged once)."""
        if self.failures:
            self.log.info(
                "%s works again after %d failed passes over %.0fs",
                self.what,
                self.failures,
                self.clock() - self._since,
            )
            self.failures = 0
