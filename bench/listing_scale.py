"""ListJobs at scale: first page vs a page ~90% deep, on PostgreSQL and on SQLite.

    python -m bench scale [--quick] [--pg-jobs 0]   # 1,000,000 / 200,000 jobs (quick 100,000 / 50,000)

Jobs are bulk-loaded into the migrated schema (COPY / executemany, secondary indexes re-created after).
A jobpulse server in its own process is paged through ListJobs in every order, unfiltered and for
COMPLETED; the deep page is reached by following next_page_token, never by making a token. Then the
server's own statements (store/statements.py) are timed in SQL (page and COUNT, first and deep) and
their plans written to ``--plans``. PostgreSQL: JOBPULSE_BENCH_PG, a database of its own per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench import procs, report
from bench.load import sequential_latencies
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from jobpulse_server.domain.filters import ORDERS as ORDER_COLUMNS
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import JobState
from jobpulse_server.store import statements
from jobpulse_server.store.tables import jobs as jobs_table

ORDERS = tuple(ORDER_COLUMNS)  # every order ListJobs takes, each direction of each field
FILTERS: dict[str, list[JobState]] = {"all": [], "COMPLETED": [JobState.COMPLETED]}
PAGE = 100
DEPTH = 0.9
TIMEOUT = 120.0

# --- synthetic jobs ----------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
KINDS: tuple[tuple[str, int], ...] = (
    ("ingest", 30),
    ("transcode", 20),
    ("thumbnail", 15),
    ("report", 10),
    ("export", 10),
)
KINDS += (("reindex", 6), ("ocr", 5), ("backup", 4))
OWNERS = ("anonymous", "svc-ingest", "svc-reports", "alice", "bob")
TEAMS = ("media", "search", "billing", "data")
PRIORITY_WEIGHTS = (3, 2, 3, 5, 7, 50, 7, 6, 5, 4, 8)  # priorities 0..10
JOB_COLUMNS = [c.name for c in jobs_table.columns]


def _extra_value(column: Any, i: int) -> Any:
    """A value for a NOT NULL jobs column this file does not know (the schema is still moving)."""
    if column.name == "change_seq":
        return i + 1
    default = getattr(column.default, "arg", None)
    if default is not None and not callable(default):
        return default
    python_type = column.type.python_type
    return python_type() if python_type in (str, bool, int, float) else 0


def table_row(table: Any, values: dict[str, Any], i: int = 0) -> tuple[Any, ...]:
    """A row of ``table`` in its column order: ``values``, and for every other column None where it may be
    NULL, else its default or the empty value of its type."""
    return tuple(
        values[c.name] if c.name in values else None if c.nullable else _extra_value(c, i)
        for c in table.columns
    )


def _ulid(ms: int, rng: random.Random) -> str:
    """A ULID like jobpulse_server.domain.ids makes: 48-bit milliseconds then 80 random bits."""
    value = ms << 80 | int.from_bytes(rng.randbytes(10), "big")
    return "".join(_CROCKFORD[value >> shift & 31] for shift in range(125, -1, -5))


def job_rows(n: int, now_us: int, seed: int = 7, batch: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    """``n`` jobs in creation order over the last 30 days, as tuples in JOB_COLUMNS order.

    The newest 2% are PENDING or PROCESSING; older ones COMPLETED (88%), FAILED (7%) or
    CANCELLED (5%). Counts, items, times and error/cancel fields agree with the state.
    """
    rng = random.Random(seed)
    span = 30 * 86_400 * 1_000_000
    kinds = [k for k, _ in KINDS]
    kind_w = [w for _, w in KINDS]
    creates = sorted(now_us - span + rng.randrange(span - 3_600_000_000) for _ in range(n))
    active_from = int(n * 0.98)
    out: list[tuple[Any, ...]] = []
    for i, create in enumerate(creates):
        kind = rng.choices(kinds, kind_w)[0]
        owner = OWNERS[i % len(OWNERS)]
        priority = rng.choices(range(11), PRIORITY_WEIGHTS)[0]
        chunk_size = rng.choice((100, 500, 1000))
        total = rng.randint(1, 200_000)
        n_chunks = -(-total // chunk_size)
        pending = processing = completed = failed = cancelled = 0
        items_done = 0
        stage = message = error_reason = error_message = cancel_reason = ""
        error_chunk = cancel_time = start = end = None
        cancel_requested = False
        if i >= active_from:
            state = JobState.PENDING if rng.random() < 0.6 else JobState.PROCESSING
        else:
            r = rng.random()
            state = JobState.COMPLETED if r < 0.88 else JobState.FAILED if r < 0.95 else JobState.CANCELLED
        if state == JobState.PENDING:
            pending = n_chunks
            update = create
        elif state == JobState.PROCESSING:
            processing = min(4, n_chunks)
            completed = rng.randint(0, n_chunks - processing)
            pending = n_chunks - processing - completed
            items_done = min(total, completed * chunk_size)
            start = create + rng.randint(10_000, 5_000_000)
            update = max(start, now_us - rng.randint(0, 60_000_000))
            stage, message = "processing", f"{completed}/{n_chunks} chunks"
        else:
            start = create + rng.randint(10_000, 5_000_000)
            end = start + int(rng.lognormvariate(17.0, 1.2))  # median ~24 s of work
            update = end
            if state == JobState.COMPLETED:
                completed, items_done, stage = n_chunks, total, "done"
            elif state == JobState.FAILED:
                failed = rng.randint(1, min(3, n_chunks))
                completed = n_chunks - failed
                items_done = min(total, completed * chunk_size)
                error_chunk = rng.randrange(n_chunks)
                error_reason, error_message = "CHUNK_FAILED", "worker error: exit status 1"
            else:
                completed = rng.randint(0, n_chunks - 1)
                cancelled = n_chunks - completed
                items_done = min(total, completed * chunk_size)
                cancel_requested, cancel_reason, cancel_time = True, "cancelled by user", end - 1_000
        team = TEAMS[i % len(TEAMS)]
        row = {"id": _ulid(create // 1000, rng), "owner": owner, "kind": kind, "state": int(state)}
        row["request_id"] = f"req-{i:08d}" if i % 3 == 0 else None
        row["display_name"] = f"{kind} {team} {i:07d}"
        row |= {"stage": stage, "message": message, "priority": priority, "max_attempts": 3}
        row["labels"] = json.dumps({"team": team, "env": "prod" if i % 4 else "staging"})
        row["job_metadata"] = json.dumps({"source": f"s3://{team}-inputs/{i:08d}.csv", "requested_by": owner})
        row |= {"total_items": total, "chunk_size": chunk_size, "items_done": items_done}
        row["revision"] = 1 + 2 * (completed + failed) + processing + (1 if cancelled else 0)
        row |= {"n_pending": pending, "n_processing": processing, "n_completed": completed}
        row |= {"n_failed": failed, "n_cancelled": cancelled, "error_chunk_index": error_chunk}
        row |= {"error_reason": error_reason, "error_message": error_message, "cancel_reason": cancel_reason}
        row |= {"cancel_requested": cancel_requested, "cancel_time": cancel_time, "create_time": create}
        row |= {"update_time": update, "start_time": start, "end_time": end}
        out.append(table_row(jobs_table, row, i))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


@dataclass
class Backend:
    name: str  # "postgresql" | "sqlite"
    url: str  # for the server, SQLAlchemy and asyncpg
    n_jobs: int
    load: dict[str, float] = field(default_factory=dict)


async def load_pg(b: Backend, now_us: int) -> None:
    """COPYs the jobs, the secondary indexes dropped meanwhile and made again afterwards."""
    async with procs.connect(b.url) as conn:
        t0 = time.perf_counter()
        indexes = await conn.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename IN ('jobs', 'chunks') AND indexname NOT LIKE '%_pkey'"
        )
        for r in indexes:
            await conn.execute(f'DROP INDEX "{r["indexname"]}"')
        gen = 0.0
        g0 = time.perf_counter()
        for rows in job_rows(b.n_jobs, now_us):
            gen += time.perf_counter() - g0
            await conn.copy_records_to_table("jobs", records=rows, columns=JOB_COLUMNS)
            g0 = time.perf_counter()
        t_jobs = time.perf_counter() - t0
        t1 = time.perf_counter()
        for r in indexes:
            await conn.execute(r["indexdef"])
        t_idx = time.perf_counter() - t1
        t2 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE jobs")
        b.load = {"copy_jobs_s": t_jobs, "python_generate_s": gen, "indexes_s": t_idx}
        b.load |= {"vacuum_analyze_s": time.perf_counter() - t2, "total_s": time.perf_counter() - t0}
        b.load["jobs_mb"] = await conn.fetchval("SELECT pg_total_relation_size('jobs')") / 1e6


def load_sqlite(b: Backend, now_us: int) -> None:
    path = b.url.removeprefix("sqlite:///")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        t0 = time.perf_counter()
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.execute("BEGIN")
        insert = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
        for rows in job_rows(b.n_jobs, now_us):
            con.executemany(insert, rows)
        con.execute("COMMIT")
        t_rows = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _, ddl in indexes:
            con.execute(ddl)
        now = time.perf_counter()
        b.load = {"insert_jobs_s": t_rows, "indexes_s": now - t1, "total_s": now - t0}
    finally:
        con.close()  # checkpoints the WAL
    b.load["db_mb"] = os.path.getsize(path) / 1e6


# --- gRPC: walk and time -----------------------------------------------------------------------


def _p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _key_of(job: job_pb2.Job, order: str) -> list[Any]:
    """The sort key of a listed job, from the response (to run the same page in SQL)."""
    field = order.split()[0]
    if field == "priority":
        return [job.priority, job.id]
    if field == "update_time":
        return [job.update_time.seconds * 1_000_000 + job.update_time.nanos // 1000, job.id]
    return [job.id]


@dataclass
class Listing:
    order: str
    filter_name: str
    states: list[JobState]
    total: int = 0
    target_rows: int = 0
    deep_rows: int = 0  # rows before the deep page
    pages_walked: int = 0
    walk_s: float = 0.0
    reached: bool = False
    token: str = ""
    deep_key: list[Any] | None = None  # key of the last row before the deep page
    first_ms: float = 0.0
    deep_ms: float = 0.0
    sql: dict[str, float] = field(default_factory=dict)  # p50 ms per query

    @property
    def label(self) -> str:
        return f"{self.order}, {self.filter_name}"


def _request(lst: Listing, token: str = "") -> job_service_pb2.ListJobsRequest:
    request = job_service_pb2.ListJobsRequest(page_size=PAGE, page_token=token, order_by=lst.order)
    request.states.extend(int(s) for s in lst.states)  # type: ignore[misc]
    request.view = job_pb2.JOB_VIEW_BASIC
    return request


async def walk(stub: job_service_pb2_grpc.JobServiceStub, lst: Listing, deadline: float) -> None:
    """Follows next_page_token from the first page until ~DEPTH deep (or the time budget is spent)."""
    t0 = time.perf_counter()
    first = await stub.ListJobs(_request(lst), timeout=TIMEOUT)
    lst.total = first.total_size
    lst.target_rows = int(lst.total * DEPTH) // PAGE * PAGE
    resp, rows, pages = first, len(first.jobs), 1
    while resp.next_page_token and rows < lst.target_rows and time.perf_counter() < deadline:
        lst.token, lst.deep_key = resp.next_page_token, _key_of(resp.jobs[-1], lst.order)
        resp = await stub.ListJobs(_request(lst, lst.token), timeout=TIMEOUT)
        rows += len(resp.jobs)
        pages += 1
    if resp.next_page_token:  # the page after the last one fetched is the deep page
        lst.token, lst.deep_key = resp.next_page_token, _key_of(resp.jobs[-1], lst.order)
        lst.deep_rows = rows
    else:
        lst.deep_rows = rows - len(resp.jobs)
    lst.reached = lst.deep_rows >= lst.target_rows
    lst.pages_walked = pages
    lst.walk_s = time.perf_counter() - t0


async def time_pages(stub: job_service_pb2_grpc.JobServiceStub, lst: Listing, repeats: int) -> None:
    first_req, deep_req = _request(lst), _request(lst, lst.token)
    for req in (first_req, deep_req):  # warm-up: caches, prepared statements
        await stub.ListJobs(req, timeout=TIMEOUT)
    first: list[float] = []
    deep: list[float] = []
    for _ in range(repeats):
        for req, out in ((first_req, first), (deep_req, deep)):
            t = time.perf_counter()
            await stub.ListJobs(req, timeout=TIMEOUT)
            out.append(time.perf_counter() - t)
    lst.first_ms, lst.deep_ms = _p50(first) * 1e3, _p50(deep) * 1e3


async def grpc_phase(b: Backend, listings: list[Listing], walk_seconds: float, repeats: int) -> None:
    with procs.Jobpulse(b.url) as server:
        async with grpc.aio.insecure_channel(
            server.address, options=[("grpc.max_receive_message_length", 32 * 1024 * 1024)]
        ) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            deadline = time.perf_counter() + walk_seconds if walk_seconds > 0 else math.inf
            await asyncio.gather(*(walk(stub, lst, deadline) for lst in listings))
            for lst in listings:
                await time_pages(stub, lst, repeats)


# --- SQL: the statements the server runs (store/statements.py) --------------------------------------


class Raw:
    """A plain connection of the bench's own (asyncpg or sqlite3) that runs the server's statements, with
    their named parameters rendered as the store's drivers send them; ``async with`` opens and closes it."""

    def __init__(self, b: Backend) -> None:
        self.b = b
        self.pg: asyncpg.Connection | None = None
        self.lite: sqlite3.Connection | None = None

    async def __aenter__(self) -> Raw:
        if self.b.name == "postgresql":
            self.pg = await asyncpg.connect(self.b.url)
        else:
            self.lite = sqlite3.connect(self.b.url.removeprefix("sqlite:///"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pg is not None:
            await self.pg.close()
        if self.lite is not None:
            self.lite.close()

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        if self.pg is not None:
            r = statements.for_postgres(sql)
            return list(await self.pg.fetch(r.sql, *r.values(params)))
        assert self.lite is not None
        r = statements.for_sqlite(sql)
        return self.lite.execute(r.sql, r.values(params)).fetchall()

    async def explain(self, sql: str, params: Mapping[str, Any]) -> str:
        if self.pg is not None:
            rows = await self.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            return "\n".join(r[0] for r in rows)
        rows = await self.fetch("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(f"{r[0]:>3} {r[1]:>3}  {r[-1]}" for r in rows)

    async def timed(self, stmt: tuple[str, Mapping[str, Any]], repeats: int) -> float:
        await self.fetch(*stmt)
        return _p50(await sequential_latencies(lambda: self.fetch(*stmt), repeats)) * 1e3


async def _nth_key(raw: Raw, d: statements.Dialect, f: JobFilter, order: str, n: int) -> list[Any]:
    """The sort key of the n-th row (1-based) of a listing, by OFFSET: SQL-side only."""
    cols, desc = ORDER_COLUMNS[order]
    w = statements.job_filter(d, f)
    direction = " DESC" if desc else ""
    sql = (
        f"SELECT {', '.join(cols)} FROM jobs{w.sql()} ORDER BY {', '.join(c + direction for c in cols)} "
        "LIMIT 1 OFFSET :skip"
    )
    return list((await raw.fetch(sql, {**w.params, "skip": n - 1}))[0])


_ALL_JOB_COLUMNS = ", ".join(JOB_COLUMNS)


def _fmt_stmt(stmt: tuple[str, Mapping[str, Any]]) -> str:
    sql = stmt[0].replace(_ALL_JOB_COLUMNS, "<all jobs columns>")
    return f"{sql.strip()}\n-- parameters: {dict(stmt[1])}"


async def sql_phase(b: Backend, listings: list[Listing], repeats: int, plans: list[str]) -> None:
    """Times count / first / deep (as walked and at 90%) with the server's statements; EXPLAINs them."""
    d = statements.POSTGRES if b.name == "postgresql" else statements.SQLITE
    explain = "EXPLAIN (ANALYZE, BUFFERS)" if d.postgres else "EXPLAIN QUERY PLAN"
    what = f"{explain} of the statements in service/jobpulse_server/store/statements.py, as sent"
    head = f"# {b.name}: {b.n_jobs:,} jobs; {what}; SELECT <all jobs columns> stands for the column list"
    plans.extend(["#" * 110, head, "#" * 110])
    async with Raw(b) as raw:
        counted: set[str] = set()
        for lst in listings:
            f = JobFilter(states=list(lst.states))
            first = statements.list_jobs(d, f, lst.order, None, PAGE + 1)
            count_sql, _, count_params = statements.count_jobs(d, f)
            count = (count_sql, count_params)
            deep90_key = await _nth_key(raw, d, f, lst.order, lst.target_rows)
            deep90 = statements.list_jobs(d, f, lst.order, deep90_key, PAGE + 1)
            lst.sql = {"count": await raw.timed(count, repeats), "first": await raw.timed(first, repeats)}
            lst.sql["deep90"] = await raw.timed(deep90, repeats)
            if lst.deep_key is not None:
                walked = statements.list_jobs(d, f, lst.order, lst.deep_key, PAGE + 1)
                lst.sql["walked"] = await raw.timed(walked, repeats)
            sections = [
                (f"ListJobs first page [{lst.label}]", first),
                (f"ListJobs page {lst.target_rows:,} rows deep [{lst.label}]", deep90),
            ]
            if lst.filter_name not in counted:
                counted.add(lst.filter_name)
                title = "capped at COUNT_EXACT_UP_TO + 1" if d.postgres else "exact"
                sections.append((f"ListJobs total_size COUNT ({title}) [{lst.filter_name}]", count))
            for title, stmt in sections:
                plans.extend(["", f"=== {title}", _fmt_stmt(stmt), "--- plan", await raw.explain(*stmt)])


# --- run and print -----------------------------------------------------------------------------


async def run_backend(name: str, n_jobs: int, args: argparse.Namespace, plans: list[str]) -> dict[str, Any]:
    async with procs.database(name, "listing") as url:
        b = Backend(name, url, n_jobs)
        listings = [Listing(o, fname, states) for o in ORDERS for fname, states in FILTERS.items()]
        res: dict[str, Any] = {"backend": b, "listings": listings}
        await procs.migrate(b.url)
        now = time.time_ns() // 1000
        report.log(f"loading {n_jobs:,} jobs ...", name)
        if name == "postgresql":
            await load_pg(b, now)
        else:
            await asyncio.to_thread(load_sqlite, b, now)
        report.log(f"loaded in {b.load['total_s']:.1f} s; walking ...", name)
        t0 = time.perf_counter()
        walk_s = args.pg_walk_seconds if name == "postgresql" else args.sqlite_walk_seconds
        res["walk_budget"] = f"{walk_s:.0f} s" if walk_s > 0 else "none"
        await grpc_phase(b, listings, walk_s, args.repeats)
        res["grpc_s"] = time.perf_counter() - t0
        report.log(f"gRPC phase {res['grpc_s']:.1f} s; SQL ...", name)
        t1 = time.perf_counter()
        await sql_phase(b, listings, args.sql_repeats, plans)
        res["sql_s"] = time.perf_counter() - t1
    return res


def _est90(lst: Listing) -> float:
    return lst.deep_ms - lst.sql.get("walked", 0.0) + lst.sql["deep90"]


GRPC_HEAD = "order, filter|total|deep at row|pages/s walked|first|deep|deep/first|<=1.5".split("|")


def render(res: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    m, mode = report.machine_facts(), "quick" if args.quick else "full"
    machine = f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | {m['cpu_model']}"
    title = f"ListJobs at scale ({mode} run, {elapsed:.0f} s); page_size {PAGE}, BASIC view"
    lines = ["=" * report.WIDTH, title, machine]
    b, listings = res["backend"], res["listings"]
    short = [w for w in listings if not w.reached]
    grpc_rows, sql_rows = [], []
    for w in listings:
        ratio, q = w.deep_ms / w.first_ms, w.sql
        depth, walk = f"{w.deep_rows:,}" + "*" * (not w.reached), f"{w.pages_walked:,}/{w.walk_s:.0f}s"
        ms = [f"{w.first_ms:.1f}", f"{w.deep_ms:.1f}", f"{ratio:.2f}", "yes" if ratio <= 1.5 else "NO"]
        grpc_rows.append([w.label, f"{w.total:,}", depth, walk, *ms])
        cells = [f"{q[k]:.1f}" if k in q else "-" for k in ("count", "first", "walked", "deep90")]
        sql_rows.append([w.label, *cells, f"{q['deep90'] / q['first']:.1f}"])
    # The pace of a walk that fell short, carried on linearly (optimistic).
    pace = [
        f"{w.label}, {w.target_rows:,} rows: ~{w.walk_s * w.target_rows / max(1, w.deep_rows):,.0f} s "
        f"({w.walk_s:.0f} s for {w.deep_rows:,})"
        for w in short
    ]
    est = [f"{w.label} ~{_est90(w):,.0f} ms = {_est90(w) / w.first_ms:.1f}x the first page" for w in short]
    load = ", ".join(f"{k} {v:,.1f}" for k, v in b.load.items())
    lines += report.section(
        f"{b.name}: {b.n_jobs:,} jobs ({load}); gRPC ListJobs, server in its own process; p50 of "
        f"{args.repeats} calls (ms); deep page reached by following next_page_token ({len(listings)} "
        f"walks side by side, budget {res['walk_budget']})",
        GRPC_HEAD,
        grpc_rows,
        *[f"* walk budget spent before {DEPTH:.0%} depth; at the pace seen, it takes: " + "; ".join(pace)]
        * bool(short),
    )
    shares = ", ".join(f"{w.label} {w.sql['count'] / w.first_ms:.0%}" for w in listings)
    lines += report.section(
        f"SQL alone (the server's statements, store/statements.py), p50 of {args.sql_repeats} (ms); "
        f"'90%' = the page {DEPTH:.0%} deep, its key found by OFFSET in SQL; 'walked' = the page the "
        "walk reached",
        ["order, filter", "COUNT", "first", "walked", "90%", "90%/first"],
        sql_rows,
        *[
            "gRPC page 90% deep where the walk fell short (gRPC deep - SQL walked + SQL 90%): "
            + "; ".join(est)
        ]
        * bool(short),
        f"COUNT(*) share of a gRPC first page: {shares}",
    )
    return "\n".join([*lines, "=" * report.WIDTH])


def main(argv: list[str] | None = None) -> int:
    p = report.parser("scale", __doc__)
    p.add_argument("--quick", action="store_true", help="100k jobs on PostgreSQL, 50k on SQLite")
    p.add_argument("--pg-jobs", type=int, default=None, help="jobs on PostgreSQL (0: skip)")
    p.add_argument("--sqlite-jobs", type=int, default=None, help="jobs on SQLite (0: skip)")
    p.add_argument("--repeats", type=int, default=20, help="gRPC calls per timed page")
    p.add_argument("--sql-repeats", type=int, default=10, help="executions per timed SQL statement")
    p.add_argument("--pg-walk-seconds", type=float, default=None, help="token-walk budget (0: none)")
    p.add_argument("--sqlite-walk-seconds", type=float, default=None, help="token-walk budget (0: none)")
    p.add_argument("--plans", type=Path, default=None, help="also write the statements' plans to this file")
    args = p.parse_args(argv)
    if args.pg_jobs is None:
        args.pg_jobs = 100_000 if args.quick else 1_000_000
    if args.sqlite_jobs is None:
        args.sqlite_jobs = 50_000 if args.quick else 200_000
    # The walks of every order run side by side and share the budget: so much time per order
    # keeps each walk as deep as when three orders were walked in 90 s (45 s on SQLite).
    if args.pg_walk_seconds is None:
        args.pg_walk_seconds = (20.0 if args.quick else 30.0) * len(ORDERS)
    if args.sqlite_walk_seconds is None:
        args.sqlite_walk_seconds = (20.0 if args.quick else 15.0) * len(ORDERS)
    plans: list[str] = []
    t0 = time.perf_counter()
    for name, n in (("postgresql", args.pg_jobs), ("sqlite", args.sqlite_jobs)):
        if n > 0:
            res = asyncio.run(run_backend(name, n, args, plans))
            if args.plans is not None:
                args.plans.write_text("\n".join(plans) + "\n")
            print(render(res, args, time.perf_counter() - t0), flush=True)
    elapsed = time.perf_counter() - t0
    print(f"all done in {elapsed:.0f} s" + (f"; plans written to {args.plans}" if args.plans else ""))
    return 0
