"""Whether a PER_CHUNK dependant holds chunks anywhere, as this process last saw (PostgreSQL).

Only then can a group-committed completion have a dependant's chunk to free (services/pipeline.py), so
only then do PostgreSQL's completion statements carry the CTEs that free them (store/batch/sql.py
``_released``: 3-5% of complete-and-claim's rate when they find nothing, by bench.compare). Without them
a pipeline job's completions decline to the transaction path, which frees what they free; so a stale
answer costs time, never a held chunk. Looked up again at most every ``REFRESH_S`` by the next
completion flush (off ix_jobs_per_chunk_held); a PER_CHUNK dependant made in this process counts at once.
"""

from __future__ import annotations

import time

REFRESH_S = 0.2


class Holds:
    """What the last look found: ``any`` (assumed until the first look)."""

    __slots__ = ("_looked", "any")

    def __init__(self) -> None:
        self.any = True
        self._looked = -REFRESH_S

    def stale(self) -> bool:
        return time.monotonic() - self._looked >= REFRESH_S

    def settle(self, found: bool) -> None:
        self._looked = time.monotonic()
        self.any = found

    def saw(self) -> None:
        """A PER_CHUNK dependant holding chunks is being made in this process."""
        self.any = True
