"""Usage counts per API key and the replicas' shared rate-limit buckets, over SQLAlchemy on both
databases (the buckets on PostgreSQL only: SQLite is served by one process, whose in-memory limiter
is exact).

Neither is on a call's path statement by statement: a server adds the counts it gathered since its
previous flush in one statement per flush (``add_usage``), and takes a key's tokens from the shared
bucket in blocks (``lease_tokens``); see ``services/usage.py`` and ``services/ratelimit.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite

from jobpulse_server.domain.usage import KeyUsage, Lease
from jobpulse_server.store.engine import Database
from jobpulse_server.store.tables import key_usage

# Keys per INSERT of a flush: 5 parameters a row stays far below SQLite's oldest limit (999).
FLUSH_ROWS = 150

# Takes :want tokens from a key's bucket, all or none, after refilling it for the time since its
# last lease at :rate tokens a second (capped at :burst), on the database's clock, in one statement
# that is its own transaction. A key seen for the first time starts with a full bucket. The row lock
# orders replicas leasing the same key; RETURNING gives the grant and what is left. All or none:
# with partial grants, replicas competing for a key at its limit took its trickle a token or two
# per statement (one statement per 1.5 calls in tests/unit/test_usage_and_rate_limits.py).
_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
_BURST = "CAST(:burst AS double precision)"
_AVAILABLE = (
    f"LEAST({_BURST}, b.tokens + GREATEST(0, excluded.refill_time - b.refill_time)"
    " * CAST(:rate AS double precision) / 1000000.0)"
)
_GRANT = f"CASE WHEN {_AVAILABLE} >= CAST(:want AS bigint) THEN CAST(:want AS bigint) ELSE 0 END"
PG_LEASE = text(
    "INSERT INTO rate_buckets AS b (key_name, tokens, refill_time, granted) "
    f"SELECT :key, {_BURST} - n.g, n.t, n.g FROM (SELECT {_NOW_US} AS t, "
    f"CASE WHEN {_BURST} >= CAST(:want AS bigint) THEN CAST(:want AS bigint) ELSE 0 END AS g) AS n "
    "ON CONFLICT (key_name) DO UPDATE SET "
    f"tokens = {_AVAILABLE} - {_GRANT}, granted = {_GRANT}, "
    "refill_time = GREATEST(b.refill_time, excluded.refill_time) "
    "RETURNING granted, tokens"
)


class SqlUsage:
    """``UsageStore`` on the ``Database``'s engine."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        if not counts:
            return
        # Keys in name order: two replicas flushing the same keys lock their rows in the same order,
        # so they wait for each other instead of deadlocking.
        names = sorted(counts)
        insert = postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert
        async with self.db.write() as uow:
            for start in range(0, len(names), FLUSH_ROWS):
                rows = [
                    {
                        "key_name": name,
                        "role": counts[name].role,
                        "calls": counts[name].calls,
                        "rejected": counts[name].rejected,
                        "update_time": now,
                    }
                    for name in names[start : start + FLUSH_ROWS]
                ]
                stmt = insert(key_usage).values(rows)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[key_usage.c.key_name],
                    set_={
                        "role": stmt.excluded.role,
                        "calls": key_usage.c.calls + stmt.excluded.calls,
                        "rejected": key_usage.c.rejected + stmt.excluded.rejected,
                        "update_time": stmt.excluded.update_time,
                    },
                )
                await uow.conn.execute(stmt)

    async def usage(self) -> dict[str, KeyUsage]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(key_usage))).all()
        return {
            r.key_name: KeyUsage(r.role, int(r.calls), int(r.rejected))  # type: ignore[attr-defined]
            for r in rows
        }

    async def lease_tokens(self, key_name: str, want: int, rate: float, burst: float) -> Lease:
        if self.db.dialect != "postgresql":
            raise NotImplementedError("SQLite is served by one process: its in-memory limiter is exact")
        async with self.db.engine.connect() as conn:
            # One statement, its own transaction: no BEGIN and COMMIT round trips around it.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            row = (
                await conn.execute(PG_LEASE, {"key": key_name, "want": want, "rate": rate, "burst": burst})
            ).one()
        granted, left = int(row[0]), float(row[1])
        if granted:
            return Lease(granted, left=left)
        # Refused: come back when the bucket holds what was asked for, not a single token, so that
        # replicas competing for a key over its limit take blocks, not a statement per token.
        return Lease(0, max(0.001, (want - left) / rate), left)
