"""Chunks waiting out a retry backoff, kept out of the claim index until they come due.

A chunk put back to PENDING with a ``next_attempt_time`` (a retryable failure, a lease that ran out) is
saved with ``retry_at`` set to that time (``rows.chunk_saved_values``). ``ix_chunks_claim`` holds only
pending chunks without ``retry_at``, so a claim never reads past the ones still waiting; ``ix_chunks_retry``
holds the waiting ones by ``retry_at``. A claim that finds the earliest of them due first *promotes* every
due one (clears its ``retry_at``: no visible change, so no revision) and they join the claim order where
their (priority, job, index) puts them.

``Waiting`` is what this process knows of when the next one comes due, so a claim costs nothing extra
while none is: the earliest ``retry_at`` found by the last promotion, lowered by every save in this
process that puts a chunk in a backoff. Chunks put in a backoff by another replica (PostgreSQL) are not
noted here; the promotion runs at least every ``REFRESH_US`` while claims come in, so they wait at most
that long past their time, as does anything a rolled-back transaction left unpromoted.
"""

from __future__ import annotations

from collections.abc import Callable

# Nothing is waiting, as far as this process knows.
NEVER = 1 << 62
# The longest a claim goes without looking for due chunks itself (us).
REFRESH_US = 1_000_000
# The most chunks one promotion moves back to the claim order; past it the next claim promotes more.
PROMOTE_LIMIT = 1_000


class Waiting:
    """When the earliest chunk waiting out a backoff comes due (microseconds, the services' clock)."""

    __slots__ = ("_arranged", "_looked", "_noted", "due", "wake")

    def __init__(self, wake: Callable[[float], None] | None = None) -> None:
        self.due = 0  # unknown at start-up: the first claim looks
        self._looked = 0
        self._noted = NEVER
        # Wakes this process's waiting claimers in so many seconds: called when a promotion finds the next
        # chunk due at a time no save in this process announced (one saved before a restart, or by another
        # replica), so they claim it then rather than at the end of their wait.
        self.wake = wake
        self._arranged = NEVER

    def note(self, at: int) -> None:
        """A chunk was saved waiting until ``at``."""
        if at < self.due:
            self.due = at
        if at < self._noted:
            self._noted = at

    def is_due(self, now: int) -> bool:
        """Whether a claim at ``now`` should promote first."""
        return now >= self.due or now - self._looked >= REFRESH_US

    def begin(self, now: int) -> None:
        """A promotion at ``now`` starts: saves noted from here on count against what it finds next."""
        self._looked = now
        self._noted = NEVER

    def settle(self, promoted: int, next_due: int | None, now: int) -> None:
        """The promotion moved ``promoted`` chunks and found the next waiting one due at ``next_due``
        (None: none waits). At its limit some due ones may be left: the next claim promotes again."""
        found = now if promoted >= PROMOTE_LIMIT else (NEVER if next_due is None else next_due)
        self.due = min(found, self._noted)
        if self.wake is not None and now < self.due < NEVER and self.due != self._arranged:
            self._arranged = self.due
            self.wake((self.due - now) / 1e6)
