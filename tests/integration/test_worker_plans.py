"""The worker path's reads walk the partial chunk indexes: a claim ix_chunks_claim (pending chunks, in
claim order), the sweep's expired leases and the health report's leases in flight ix_chunks_lease
(running chunks), the promotion of due retries ix_chunks_retry (pending chunks waiting out a backoff,
migration 0014). Those indexes hold only the chunks of their state (migration 0012), and a planner uses
a partial index only for a statement whose WHERE implies the index's, which a bound parameter does not:
the statements write the state in. A statement that went back to ``state = ?`` would scan every chunk;
this test fails then.

The statements are the ones the server runs (store/statements.py, store/batch/), over 30,000 chunks of
which a third are pending (half of those waiting out a backoff), a third running and a third
completed. PostgreSQL plans with statistics (ANALYZE, as autovacuum keeps them); SQLite without (the
server never runs ANALYZE).
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from support.sql import insert_generated, series

from jobpulse_server.domain.model import ChunkState
from jobpulse_server.store import statements as sql
from jobpulse_server.store.batch import sql as group
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.drivers.asyncpg import FLUSHER_SETTINGS
from jobpulse_server.store.tables import PENDING, RUNNING, chunks, jobs

N = 30_000
COMPLETED = int(ChunkState.COMPLETED)


def _inserts(dialect: sql.Dialect) -> list[str]:
    """100 jobs, then N chunks of theirs, each chunk's state by ``g % 3``: pending, running (with a
    lease) or completed."""
    job_rows = insert_generated(
        jobs,
        # Three owners, each job with pending chunks (as its chunks below have): fair share's walk.
        {
            "id": "'PLAN' || g",
            "owner": "'owner-' || (g % 3)",
            "kind": "'plan'",
            "state": "2",
            "labels": "'{}'",
            "job_metadata": "'{}'",
            "n_pending": "50",
            "n_processing": "100",
        },
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
        # Half the pending chunks wait out a retry backoff (store/waiting.py): out of ix_chunks_claim.
        "next_attempt_time": "CASE WHEN g % 6 = 0 THEN g ELSE NULL END",
        "retry_at": "CASE WHEN g % 6 = 0 THEN g ELSE NULL END",
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
            # Fair share: an owner's chunks, its jobs off ix_jobs_fair and each one's off ix_chunks_claim.
            "an owner's claim": ("ix_chunks_claim", sql.owner_ready(sql.SQLITE, 0, sql.OWNER_FROM_START)),
            "an owner's claim, next job": (
                "ix_jobs_fair",
                sql.owner_ready(sql.SQLITE, 2, sql.OWNER_AFTER_JOB),
            ),
            "an owner's claim, same job": (
                "ix_chunks_claim",
                sql.owner_ready(sql.SQLITE, 1, sql.OWNER_AFTER_INDEX),
            ),
            "an owner's claim, lower": (
                "ix_chunks_claim",
                sql.owner_ready(sql.SQLITE, 1, sql.OWNER_AFTER_PRIORITY),
            ),
            "another owner": ("ix_jobs_fair", sql.OTHER_OWNER),
            "the next owner": ("ix_jobs_fair", sql.NEXT_OWNER),
            "running by job": ("ix_chunks_lease", sql.SQLITE_RUNNING_BY_JOB),
            "expired leases": ("ix_chunks_lease", sql.expired_leases(sql.SQLITE)),
            "leases in flight": ("ix_chunks_lease", sql.LEASES_IN_FLIGHT),
            "due retries": ("ix_chunks_retry", sql.SQLITE_PROMOTE),
            "next retry": ("ix_chunks_retry", sql.NEXT_RETRY),
        }
        problems = []
        for name, (index, statement) in statements.items():
            rendered = sql.for_sqlite(statement)
            params = [1] * len(rendered.names)
            plan = " | ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + rendered.sql, params))
            # The claim reads the index in its order: no temporary B-tree to sort the pending chunks (nor
            # the chunks of each job: "FOR RIGHT PART OF ORDER BY").
            if index not in plan or re.search("TEMP B-TREE FOR (RIGHT PART OF )?ORDER BY", plan):
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
        # Parameters: the kind when one is named, the limit; the claims take them twice.
        claim_group = group.claim_group_statement(1, 1)
        claim_group_values = {
            "kinds": ["plan"],
            "now": 1,
            "interval": 5_000_000,
            "channel": "ch",
            "replica": "r",
            "spin": "1",
        } | group.slots_given([("w", 1_000, 1)])
        # A transaction's claim with fair share: the running counts of one job it holds.
        fair = {"limit": 1, "held_ids": ["PLAN1"], "held_n": [0], "spin": "1", "full": []}
        statements: dict[str, tuple[str, str, dict[str, Any]]] = {
            "claim, any kind": (
                "ix_chunks_claim",
                sql.pg_claim(0, skip_locked=False),
                {"limit": 1, "full": []},
            ),
            "claim, one kind": (
                "ix_chunks_claim",
                sql.pg_claim(1, skip_locked=True),
                {"kinds": ["plan"], "limit": 1, "full": ["capped"]},
            ),
            "group-committed claim": ("ix_chunks_claim", claim_group, claim_group_values),
            "fair claim": ("ix_jobs_fair", sql.pg_claim(0, skip_locked=False, fair=True), fair),
            "fair claim, chunks": ("ix_chunks_claim", sql.pg_claim(0, skip_locked=False, fair=True), fair),
            "fair group-committed claim": (
                "ix_jobs_fair",
                group.claim_group_statement(1, 1, fair=True),
                claim_group_values,
            ),
            "expired leases": ("ix_chunks_lease", sql.expired_leases(sql.POSTGRES), {"now": 1, "limit": 10}),
            "leases in flight": ("ix_chunks_lease", sql.LEASES_IN_FLIGHT, {}),
            "due retries": ("ix_chunks_retry", sql.PG_PROMOTE, {"now": 1, "limit": 1000}),
        }
        problems = []
        for name, (index, statement, params) in statements.items():
            rendered = sql.for_postgres(statement)
            raw = await conn.fetchval("EXPLAIN (FORMAT JSON) " + rendered.sql, *rendered.values(params))
            nodes = _nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
            # Every read of chunks goes through an index: no scan of the whole table.
            if not any(index in n for n in nodes) or "Seq Scan chunks" in nodes:
                problems.append(f"{name}: {' | '.join(nodes)}")
        return problems
    finally:
        await conn.close()


def _literal(typename: str) -> str:
    """A value of a statement parameter's type, written in SQL (for EXPLAIN EXECUTE)."""
    element = {"text": "'x'", "int8": "1", "int4": "1", "int2": "1", "bool": "true", "float8": "0.5"}
    if typename.endswith("[]"):
        return f"ARRAY[{element[typename[:-2]]}]::{typename}"
    return f"{element[typename]}::{typename}"


def _scale_problems(plan: dict[str, Any], under_sort: bool = False) -> list[str]:
    """What in a plan grows with the tables rather than with the flush: a whole-table scan of chunks or
    jobs, a walk of jobs_pkey with no key to look up, ix_chunks_lease (every running chunk), or a sort
    fed by a scan of chunks with no LIMIT between them (every ready chunk sorted, where ix_chunks_claim
    gives them in order)."""
    node = f"{plan['Node Type']} {plan.get('Index Name', plan.get('Relation Name', ''))}".strip()
    found = []
    relation = plan.get("Relation Name")
    if plan["Node Type"] == "Seq Scan" and relation in ("chunks", "jobs"):
        found.append(node)
    # ix_jobs_claimable holds only the jobs with pending chunks, walked in claim order until the claim
    # has its chunks.
    keyless = "Index" in plan["Node Type"] and "Index Cond" not in plan
    # So does ix_jobs_fair, walked owner by owner (fair share).
    if relation == "jobs" and keyless and plan.get("Index Name") not in ("ix_jobs_claimable", "ix_jobs_fair"):
        found.append(f"{node} (no key)")
    # ix_chunks_claim is read job by job (its entries of one job, from the job's key): walked from its
    # start, a claim read past the dead entries of every older job's claimed chunks until a vacuum.
    if plan.get("Index Name") == "ix_chunks_claim" and keyless:
        found.append(f"{node} (no key)")
    if plan.get("Index Name") == "ix_chunks_lease":
        found.append(node)
    if under_sort and relation == "chunks":
        found.append(f"Sort over {node}")
    # A sort of what a LIMIT below it lets through is as small as the flush.
    sorting = (under_sort or plan["Node Type"] == "Sort") and plan["Node Type"] != "Limit"
    for child in plan.get("Plans", []):
        found += _scale_problems(child, sorting)
    return found


async def test_the_flushers_generic_plans_stay_small_on_large_tables(database_url: str) -> None:
    """The group-commit flusher's connection plans each of its statements once, generically (no
    parameter values), and keeps the plan. Each must read what its flush touches, however large the
    tables and whatever the statistics say: here 30,000 chunks of 100 jobs beside 20,000 finished jobs,
    analyzed while every chunk was pending (the server analyzes chunks right after a large CreateJob),
    with a third of them running by the time the statements are planned.

    Three plans did not: an OR of two IN lists walked every job (the completions with their next
    claims); a bound LIMIT, guessed at a tenth of the rows, sorted every ready chunk of the candidate jobs
    (the claims); the completions' chunks were looked up through ix_chunks_lease, every running chunk for
    each completion. With 50,000 finished jobs a complete-and-claim ran at 71 chunks/s."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the group-committed statements are PostgreSQL's")
    db = SqlStore(database_url)
    await db.start()  # runs the migrations
    await db.close()
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    finished = insert_generated(
        jobs,
        {"id": "'DONE' || g", "kind": "'old'", "state": "4", "labels": "'{}'", "job_metadata": "'{}'"},
        series(True, 1, 20_000),
    )
    try:
        for statement in [*_inserts(sql.POSTGRES), finished]:
            await conn.execute(statement)
        await conn.execute(f"UPDATE chunks SET state = {PENDING}, lease_expire_time = NULL")
        await conn.execute("VACUUM ANALYZE chunks")
        await conn.execute("ANALYZE jobs")
        await conn.execute(f"UPDATE chunks SET state = {RUNNING}, lease_expire_time = idx WHERE idx % 3 = 1")
        await conn.execute(FLUSHER_SETTINGS)  # as the flusher's connection plans
        statements = {
            "completions": group.complete_group(True),
            "completions, none held": group.complete_group(False),
            "progress reports": group.PROGRESS_GROUP,
            "retryable failures": group.FAIL_GROUP,
            "due retries": sql.PG_PROMOTE,
        }
        for limit in (1, 10, 256):
            for n_kinds in (0, 1):
                for fair in (False, True):
                    form = f"{limit}, {n_kinds} kinds{', fair' if fair else ''}"
                    statements[f"claims of {form}"] = group.claim_group_statement(n_kinds, limit, fair)
                    statements[f"completions and claims of {form}"] = group.complete_then_claim(
                        bool(n_kinds), limit, fair
                    )
        problems = []
        for n, (name, named) in enumerate(statements.items()):
            text = sql.for_postgres(named).sql
            types = [t.name for t in (await conn.prepare(text)).get_parameters()]
            await conn.execute(f"PREPARE s{n} AS {text}")
            args = ", ".join(_literal(t) for t in types)
            raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE s{n}({args})")
            found = _scale_problems((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
            if found:
                problems.append(f"{name}: {', '.join(found)}")
        assert not problems, "\n".join(problems)
    finally:
        await conn.close()
