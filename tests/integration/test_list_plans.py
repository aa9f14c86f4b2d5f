"""Every ListJobs order walks an index in its order: no sort of the matching jobs, first page or deep.

The statements are the ones the server runs (store/statements.py list_jobs), over 20,000 jobs half
of which belong to one owner. PostgreSQL plans with statistics (ANALYZE, as autovacuum keeps
them); the plan must have no Sort node and no Seq Scan, for every caller and for that owner.
SQLite plans without statistics (the server never runs ANALYZE), so its choice is a heuristic:
an unfiltered listing must walk an index without a temporary B-tree. With ``owner = ?`` SQLite
takes ux_jobs_owner_request_id and sorts the owner's jobs, for every order alike; that is not
asserted here.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from support.sql import insert_generated, series

from jobpulse_server.domain.filters import ORDERS, JobFilter
from jobpulse_server.store import statements as sql
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.tables import jobs

N = 20_000
OWNER = "tenant"  # every second job


def _values(dialect: sql.Dialect) -> dict[str, str]:
    """SQL for the columns the listing looks at, in terms of ``g`` = 1..N; others get defaults."""
    pad = (
        "lpad(g::text, 22, '0')" if dialect == sql.POSTGRES else "substr('0000000000000000000000' || g, -22)"
    )
    return {
        "id": f"'PLAN' || {pad}",
        "owner": f"CASE WHEN g % 2 = 0 THEN '{OWNER}' ELSE 'other-' || (g % 7) END",
        "display_name": "'plan ' || g",
        "kind": "'plan'",
        "state": "4",
        "priority": "g % 11",
        "labels": "'{}'",
        "job_metadata": "'{}'",
        "create_time": "g",
        "update_time": "(g * 7919) % 15000",  # shuffled, with ties
    }


def _insert(dialect: sql.Dialect) -> str:
    postgres = dialect == sql.POSTGRES
    return insert_generated(jobs, _values(dialect), series(postgres, 1, N))


def _key_at(rows: list[Any]) -> list[Any]:
    """The sort key half-way down a listing: a deep page's keyset."""
    return list(rows[len(rows) // 2])


def _nodes(plan: dict[str, Any]) -> list[str]:
    out = [plan["Node Type"]]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def test_every_order_walks_an_index_first_page_and_deep(database_url: str) -> None:
    db = SqlStore(database_url)
    await db.start()  # runs the migrations
    await db.close()
    if database_url.startswith("postgresql"):
        problems = await _postgresql_problems(database_url)
    else:
        problems = _sqlite_problems(database_url)
    assert problems == []


async def _postgresql_problems(database_url: str) -> list[str]:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await conn.execute(_insert(sql.POSTGRES))
        await conn.execute("ANALYZE jobs")
        problems = []
        for order, (cols, desc) in ORDERS.items():
            for owner in (None, OWNER):
                f = JobFilter(owner=owner)
                where = sql.job_filter(sql.POSTGRES, f)
                direction = " DESC" if desc else ""
                keys_sql = sql.for_postgres(
                    f"SELECT {', '.join(cols)} FROM jobs{where.sql()} "
                    f"ORDER BY {', '.join(c + direction for c in cols)}"
                )
                keys = await conn.fetch(keys_sql.sql, *keys_sql.values(where.params))
                for after in (None, _key_at(keys)):
                    text, params = sql.list_jobs(sql.POSTGRES, f, order, after, 101)
                    q = sql.for_postgres(text)
                    raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + q.sql, *q.values(params))
                    nodes = _nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
                    if "Sort" in nodes or "Seq Scan" in nodes or not any("Index" in n for n in nodes):
                        problems.append(f"{order!r} owner={owner} after={after}: {nodes}")
        return problems
    finally:
        await conn.close()


def _sqlite_problems(database_url: str) -> list[str]:
    con = sqlite3.connect(make_url(database_url).database or "")
    try:
        con.execute(_insert(sql.SQLITE))
        con.commit()
        problems = []
        for order, (cols, desc) in ORDERS.items():
            f = JobFilter()
            direction = " DESC" if desc else ""
            keys = con.execute(
                f"SELECT {', '.join(cols)} FROM jobs ORDER BY {', '.join(c + direction for c in cols)}"
            )
            for after in (None, _key_at(keys.fetchall())):
                q, params = sql.list_jobs(sql.SQLITE, f, order, after, 101)
                rendered = sql.for_sqlite(q)
                details = [
                    row[-1]
                    for row in con.execute("EXPLAIN QUERY PLAN " + rendered.sql, rendered.values(params))
                ]
                if any("TEMP B-TREE" in d for d in details) or not any("INDEX" in d for d in details):
                    problems.append(f"{order!r} after={after}: {details}")
        return problems
    finally:
        con.close()
