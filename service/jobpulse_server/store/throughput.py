"""Chunks and items completed per minute and job kind (``throughput_minutes``), over SQLAlchemy on both
databases, for ``services/throughput.py``.

Not on a call's path: a server adds the counts it gathered since its previous flush in one statement
per flush (``add``), the dashboard reads a range of minutes by the primary key (``recent``), and a
week's rows are a few thousand per kind, so neither the reads nor the prune touch the chunks table.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from jobpulse_server.store.engine import Database
from jobpulse_server.store.tables import throughput_minutes

# (minute, kind) rows per INSERT of a flush: 4 parameters a row stays far below SQLite's oldest limit
# (999). A flush every few seconds carries one or two minutes per kind, so one statement in practice.
FLUSH_ROWS = 200


class SqlThroughput:
    """The per-minute throughput counts on the ``Database``'s engine."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, counts: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Adds each (minute, kind)'s (chunks, items) to its stored row, made if missing: one INSERT ...
        ON CONFLICT DO UPDATE for the whole batch (up to FLUSH_ROWS rows), in one transaction. Adding,
        not overwriting, is what lets every replica flush into the same minute."""
        if not counts:
            return
        # Rows in key order: two replicas flushing the same minutes lock their rows in the same order,
        # so they wait for each other instead of deadlocking.
        keys = sorted(counts)
        # ``t.c["items"]``, not ``t.c.items``: that is the column collection's items() method.
        t = throughput_minutes
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        async with self.db.write() as uow:
            for start in range(0, len(keys), FLUSH_ROWS):
                rows = []
                for minute, kind in keys[start : start + FLUSH_ROWS]:
                    chunks, items = counts[minute, kind]
                    rows.append({"minute": minute, "kind": kind, "chunks": chunks, "items": items})
                stmt = insert(t).values(rows)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c.minute, t.c.kind],
                    set_={
                        "chunks": t.c.chunks + stmt.excluded.chunks,
                        "items": t.c["items"] + stmt.excluded["items"],
                    },
                )
                await uow.conn.execute(stmt)

    async def recent(self, since_minute_us: int) -> list[tuple[int, str, int, int]]:
        """Every stored (minute, kind, chunks, items) from ``since_minute_us`` on, by minute then kind."""
        t = throughput_minutes
        q = select(t.c.minute, t.c.kind, t.c.chunks, t.c["items"]).where(t.c.minute >= since_minute_us)
        async with self.db.read() as conn:
            rows = (await conn.execute(q.order_by(t.c.minute, t.c.kind))).all()
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def prune(self, before_minute_us: int) -> int:
        """Deletes the rows of the minutes before ``before_minute_us``; returns how many."""
        async with self.db.write() as uow:
            result = await uow.conn.execute(
                delete(throughput_minutes).where(throughput_minutes.c.minute < before_minute_us)
            )
        return int(result.rowcount or 0)
