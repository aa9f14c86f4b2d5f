"""failure_counts (SummarizeFailures' rows: the chunks FAILED for good by owner, kind and reason) kept
with job_failures within one write transaction.

The transaction's moves note here how job_failures rows changed (SqlTx.save adds chunks; RetryJob,
RetryChunk and deletes take rows away); ``flush``, just before the commit, writes each key's change once,
in key order. A failure_counts row is shared by every job of an owner, kind and reason, so on PostgreSQL
it is locked from that write to the commit: last in the transaction, after the job rows it locks, and in
one order, so two transactions never wait on each other's keys in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import jobpulse_server.store.statements as q
from jobpulse_server.store.drivers import Conn

Key = tuple[str, str, str]  # owner, kind, error_reason


class FailureCounts:
    def __init__(self) -> None:
        # key -> [chunks, jobs, the last end_time added (0: none)]
        self._change: dict[Key, list[int]] = {}
        # Keys rows left: their last_time is found again from job_failures.
        self._left: set[Key] = set()

    def _of(self, key: Key) -> list[int]:
        return self._change.setdefault(key, [0, 0, 0])

    def added(self, key: Key, chunks: int, new_row: bool, last_time: int) -> None:
        """``chunks`` added to a job_failures row of ``key`` (a row made: ``new_row``)."""
        change = self._of(key)
        change[0] += chunks
        change[1] += int(new_row)
        change[2] = max(change[2], last_time)

    def moved(self, before: Iterable[Sequence[Any]], after: Iterable[Sequence[Any]]) -> None:
        """job_failures rows (owner, kind, reason, chunks) before and after a change to them."""
        for sign, rows in ((-1, before), (1, after)):
            for owner, kind, reason, chunks in rows:
                key = (owner, kind, reason)
                change = self._of(key)
                change[0] += sign * int(chunks)
                change[1] += sign
                self._left.add(key)

    async def flush(self, conn: Conn) -> None:
        """Writes the changes noted so far, key by key in order."""
        for key in sorted(self._change):
            chunks, jobs, last = self._change[key]
            row = {"owner": key[0], "kind": key[1], "error_reason": key[2]}
            if chunks or jobs or last:
                await conn.execute(
                    q.ADD_FAILURE_COUNTS, {**row, "chunks": chunks, "jobs": jobs, "last_time": last}
                )
            if key in self._left:
                await conn.execute(q.FIND_FAILURE_LAST, row)
                await conn.execute(q.DROP_EMPTY_FAILURES, row)
        self._change.clear()
        self._left.clear()
