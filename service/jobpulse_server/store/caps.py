"""Which kinds have a max_running_chunks, as this process last saw (PostgreSQL).

A group-committed claim that may take chunks of such a kind names them to its statement, which locks
their rows before any job and counts their running chunks after the lock (jobpulse_kind_rooms, migration
0020; store/batch/sql.py), then takes no more of each kind's chunks than its room: the lock every claim
counting a kind's running chunks takes (store/tx.py ``SqlTx._capped_rooms``), so claims of a capped kind
on every replica count one after the other. A stale answer costs time, never a cap: a claim statement
passes over the jobs of every capped kind it did not name (statements.kind_capped), and those take the
transaction path. Looked up again at most every ``REFRESH_S`` by the next claim flush.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

REFRESH_S = 0.2


class Caps:
    """What the last look found: ``kinds``, the capped kinds (none until the first look: the statements
    pass over what they did not lock)."""

    __slots__ = ("_looked", "kinds")

    def __init__(self) -> None:
        self.kinds: frozenset[str] = frozenset()
        self._looked = -REFRESH_S

    def stale(self) -> bool:
        return time.monotonic() - self._looked >= REFRESH_S

    def settle(self, kinds: Sequence[str]) -> None:
        self._looked = time.monotonic()
        self.kinds = frozenset(kinds)

    def among(self, kinds: Sequence[str]) -> list[str]:
        """The capped kinds a claim of ``kinds`` (empty: any) may take chunks of, in kind order (the order
        their rows are locked in)."""
        if not kinds:
            return sorted(self.kinds)
        return sorted(self.kinds.intersection(kinds))
