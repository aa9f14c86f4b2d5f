"""Whether jobs of more than one owner have pending chunks, as this process last saw (PostgreSQL).

Only then can fair share's order (domain/model.py ``fair_order``) differ from the claim order, so only
then do PostgreSQL's claims run the fair statements: their larger plans cost a claim about 0.1 ms of the
database's time even when one owner's chunks are all there is (13-15% of complete-and-claim's rate,
measured with bench.compare). The answer is looked up again at most every ``REFRESH_S`` by the next
claim, and a job made in this process by a second owner sets it at once; a second owner's first job made
on another replica is dealt its turns from that replica's next look, within ``REFRESH_S``, and meanwhile
the claims of this one keep the claim order (the oldest job first). SQLite asks on every claim instead
(two index probes there cost microseconds: store/tx.py ``SqlTx.claim``).
"""

from __future__ import annotations

import time

REFRESH_S = 0.2


class Owners:
    """What the last look found: ``several`` (assumed until the first look), and the one owner then."""

    __slots__ = ("_looked", "several", "sole")

    def __init__(self) -> None:
        self.several = True
        self.sole: str | None = None
        self._looked = -REFRESH_S

    def stale(self) -> bool:
        """Whether a claim should look again before choosing its statement."""
        return time.monotonic() - self._looked >= REFRESH_S

    def settle(self, sole: str | None, several: bool) -> None:
        """A look found ``sole`` (the first owner with pending chunks, None for none) and ``several``."""
        self._looked = time.monotonic()
        self.sole, self.several = sole, several

    def saw(self, owner: str) -> None:
        """A job of ``owner`` with pending chunks is being made in this process."""
        if self.sole is None:
            self.sole = owner
        elif owner != self.sole:
            self.several = True
