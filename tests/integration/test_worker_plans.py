"""The worker path's reads walk the partial chunk indexes: a claim ix_chunks_claim (pending chunks, in
claim order), the sweep's expired leases and the health report's leases in flight ix_chunks_lease
(running chunks). Those indexes hold only the chunks of their state (migration 0012), and a planner uses
a partial index only for a statement whose WHERE implies the index's, which a bound parameter does not:
the statements write the state in. A statement that went back to ``state = ?`` would scan every chunk;
this test fails then.

The statements are the ones the server runs (store/statements.py, store/group.py), over 30,000 chunks of
which a third are pending, a third running and a third completed. PostgreSQL plans with statistics
(ANALYZE, as autovacuum keeps them); SQLite without (the server never runs ANALYZE).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from support.sql import insert_generated, series

from jobpulse_server.domain.model import ChunkState
from jobpulse_server.store import group
from jobpulse_server.store import statements as sql
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.tables import PENDING, RUNNING, chunks, jobs

N = 30_000
COMPLETED = int(ChunkState.COMPLETED)


def _inserts(dialect: sql.Dialect) -> list[str]:
    """100 jobs, then N chunks of theirs, each chunk's state by ``g % 3``: pending, running (with a
    lease) or completed."""
    job_rows = insert_generated(
        jobs,
        {"id": "'PLAN' || g", "kind": "'plan'", "state": "2", "labels": "'{}'", "job_metadata": "'{}'"},
        series(dialect == sql.POSTGRES, 0, 99),
    )
    state = f"CASE g % 3 WHEN 0 THEN {PENDING} WHEN 1 THEN {RUNNING} ELSE {COMPLETED} END"
    given = {
        "id": "'PLAN' || (g % 100) || '-' || g",
        "job_id": "'PLAN' || (g % 100)",
        "idx": "g",
        "state": state,
        "kind": "'plan'",
        "priority": "g % 5",
        "lease_expire_time": "CASE WHEN g % 3 = 1 THEN g ELSE NULL END",
    }
    return [job_rows, insert_generated(chunks, given, series(dialect == sql.POSTGRES, 1, N))]


async def test_claims_and_lease_reads_walk_the_partial_indexes(database_url: str) -> None:
    db = SqlStore(database_url)
    await db.start()  # runs the migrations
    await db.close()
    if database_url.startswith("postgresql"):
        problems = await _postgresql_problems(database_url)
    else:
        problems = _sqlite_problems(database_url)
    assert problems == []


def _sqlite_problems(database_url: str) -> list[str]:
    con = sqlite3.connect(make_url(database_url).database or "")
    try:
        for statement in _inserts(sql.SQLITE):
            con.execute(statement)
        con.commit()
        statements = {
            "claim, any kind": ("ix_chunks_claim", sql.pick_ready(sql.SQLITE, 0)),
            "claim, two kinds": ("ix_chunks_claim", sql.pick_ready(sql.SQLITE, 2)),
            "expired leases": ("ix_chunks_lease", sql.expired_leases(sql.SQLITE)),
            "leases in flight": ("ix_chunks_lease", sql.LEASES_IN_FLIGHT),
        }
        problems = []
        for name, (index, statement) in statements.items():
            params = [1] * statement.count("?")
            plan = " | ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + statement, params))
            # The claim reads the index in its order: no temporary B-tree to sort the pending chunks.
            if index not in plan or "TEMP B-TREE FOR ORDER BY" in plan:
                problems.append(f"{name}: {plan}")
        return problems
    finally:
        con.close()


def _nodes(plan: dict[str, Any]) -> list[str]:
    out = [f"{plan['Node Type']} {plan.get('Index Name', plan.get('Relation Name', ''))}".strip()]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def _postgresql_problems(database_url: str) -> list[str]:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        for statement in _inserts(sql.POSTGRES):
            await conn.execute(statement)
        await conn.execute("ANALYZE jobs")
        await conn.execute("ANALYZE chunks")
        # Parameters: now (ready), the kind when one is named, the limit; the claims take them twice.
        claim_group = group.claim_group_params(["plan"], [("w", 1_000, 1)], 1, "ch", "r")
        statements = {
            "claim, any kind": ("ix_chunks_claim", sql.pg_claim(0, skip_locked=False), [1, 1] * 2),
            "claim, one kind": ("ix_chunks_claim", sql.pg_claim(1, skip_locked=True), [1, "plan", 1] * 2),
            "group-committed claim": ("ix_chunks_claim", group.claim_group_statement(1), claim_group),
            "expired leases": ("ix_chunks_lease", sql.expired_leases(sql.POSTGRES), [1, 10]),
            "leases in flight": ("ix_chunks_lease", sql.LEASES_IN_FLIGHT, []),
        }
        problems = []
        for name, (index, statement, params) in statements.items():
            text = statement if statement.count("$1") else sql.numbered(statement)
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + text, *params)
            nodes = _nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
            # Every read of chunks goes through an index: no scan of the whole table.
            if not any(index in n for n in nodes) or "Seq Scan chunks" in nodes:
                problems.append(f"{name}: {' | '.join(nodes)}")
        return problems
    finally:
        await conn.close()
