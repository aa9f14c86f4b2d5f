"""Chunk claim + complete throughput on PostgreSQL: jobpulse next to PgQueuer, same run, same server.

    python -m bench.pg_peer            # 5,000 units of work per row
    python -m bench.pg_peer --quick    # 1,000

jobpulse: a server in a process of its own on a fresh PostgreSQL database; N one-item chunks
(spread over 10 jobs made with CreateJob, not timed) are drained by W asyncio workers on one
channel until a claim comes back empty, each worker in one of the ways of ``bench.work``:
  * one-by-one: ClaimChunks(max_chunks=1), then CompleteChunk;
  * complete-and-claim: CompleteChunk with claim_next (max_chunks=1), which returns the next claim;
  * ClaimChunks(max_chunks=10), then CompleteChunk for each (the protocol of the PgQueuer loops);
  * batched: ClaimChunks(max_chunks=10) once, then CompleteChunks of the 10 with claim_next
    (max_chunks=10), which returns the next 10.
PgQueuer (the version installed; asyncpg, no CLI): a fresh database of its own,
``Queries.install()``, N jobs enqueued in one batch (not timed), then drained with a no-op
entrypoint by
  * W QueueManagers, each on its own asyncpg connection, ``run(mode=drain, batch_size=k)``
    (PgQueuer as shipped: completions are buffered and written in batches), and
  * W bare loops over the same Queries API, ``dequeue(batch_size=k)`` then ``log_jobs`` per job
    (the same protocol as the jobpulse workers: one round trip per claim and one per completion).
Every row uses a fresh database; the clock runs from the first claim to the last completion.
Ratios: jobpulse one by one against PgQueuer batch 1, jobpulse batched against PgQueuer batch 10.
The floor rows send jobpulse's own SQL straight from asyncpg (no gRPC, no server): what one by one
and complete-and-claim could reach if the server cost nothing.
CPU per unit of work: the jobpulse server process (all threads), and, for every row, the PostgreSQL
processes of this machine (all of them, background ones included), from /proc.
The printout ends with the targets and whether each is met; the rows go to a JSON file too.

PostgreSQL: postgresql://postgres@127.0.0.1:5432 (override with JOBPULSE_BENCH_PG).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2

from bench import report, work
from bench.procs import ServerProcess, _cpu_seconds
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from jobpulse_server.store.tables import chunks as chunks_table

PG_ADMIN = os.environ.get("JOBPULSE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)
JOBS_PER_RUN = 10
ENTRYPOINT = "noop"
DEFAULT_JSON = Path(__file__).resolve().parent / "results-pg.json"

# jobpulse rows: key -> bench.work mode, and the row's name.
JOBPULSE_ROWS = {
    "jp1": ("one_by_one", "jobpulse, ClaimChunks(1) + CompleteChunk"),
    "jpcc": ("complete_and_claim", "jobpulse, CompleteChunk + claim_next(1)"),
    "jp10": ("batched", "jobpulse, ClaimChunks(10) + CompleteChunk x10"),
    "jpb10": ("batched_complete_chunks", "jobpulse, CompleteChunks(10) + claim_next(10)"),
}


def _dsn(database: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{database}"


@asynccontextmanager
async def fresh_database(tag: str) -> AsyncIterator[str]:
    """Creates a database for one row and drops it afterwards; yields its DSN."""
    name = f"bench_peer_{tag}_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _dsn(name)
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the PostgreSQL processes of this machine that are alive now
    (None if there are none to see, e.g. PostgreSQL runs elsewhere)."""
    total = 0.0
    seen = False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        cpu = _cpu_seconds(int(proc.name))
        if cpu is not None:
            total += cpu
            seen = True
    return total if seen else None


def _per_unit_us(before: float | None, after: float | None, n: int) -> float | None:
    return (after - before) / n * 1e6 if before is not None and after is not None and n else None


def _row(name: str, n: int, seconds: float, round_trips: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "n": n,
        "seconds": seconds,
        "per_second": n / seconds,
        "round_trips": round_trips,
        **extra,
    }


# --- jobpulse ----------------------------------------------------------------------------------


async def jobpulse_drain(n: int, workers: int, key: str) -> dict[str, Any]:
    mode_key, name = JOBPULSE_ROWS[key]
    mode = work.MODES[mode_key]
    async with fresh_database(key) as dsn:
        server = ServerProcess("jobpulse", dsn)
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
                if not await work.supported(stub, mode, TIMEOUT):
                    return {"name": name, "n": n, "unimplemented": True}
                for j in range(JOBS_PER_RUN):
                    await jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(
                            display_name=f"peer {j}",
                            kind="bench-work",
                            total_items=n // JOBS_PER_RUN + (1 if j < n % JOBS_PER_RUN else 0),
                            chunk_size=1,
                        ),
                        timeout=TIMEOUT,
                    )
                counts = work.Counts()
                cpu0, db0 = server.cpu_seconds(), postgres_cpu_seconds()
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        work.worker(
                            stub,
                            mode,
                            worker_id=f"peer-{w}",
                            lease=LEASE,
                            keep_going=lambda: True,
                            counts=counts,
                            timeout=TIMEOUT,
                        )
                        for w in range(workers)
                    )
                )
                elapsed = time.perf_counter() - t0
                cpu1, db1 = server.cpu_seconds(), postgres_cpu_seconds()
                listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=100), timeout=TIMEOUT)
                left = sum(j.chunks_summary.pending + j.chunks_summary.processing for j in listed.jobs)
                completed = sum(j.chunks_summary.completed for j in listed.jobs)
        finally:
            server.stop()
    if counts.chunks != n or completed != n or left:
        raise RuntimeError(f"jobpulse drained {counts.chunks}/{n} (completed {completed}, left {left})")
    return _row(
        name,
        n,
        elapsed,
        counts.rpcs,
        server_cpu_us=_per_unit_us(cpu0, cpu1, n),
        db_cpu_us=_per_unit_us(db0, db1, n),
        counts=counts.as_dict(),
    )


# Where the claim's chunk rows hold a chunk's id, job id and lease token (the chunks table's column order).
_CHUNK_COLUMNS = [c.name for c in chunks_table.columns]
ID, JOB_ID, TOKEN = (_CHUNK_COLUMNS.index(c) for c in ("id", "job_id", "lease_token"))

FLOOR_ROWS = {
    "floor": "floor: one by one's SQL from asyncpg, no gRPC",
    "floorcc": "floor: complete-and-claim's SQL, no gRPC",
}


async def statements_floor(n: int, workers: int, key: str) -> dict[str, Any]:
    """The floor under jobpulse's worker path on this PostgreSQL: the SQL the server sends for jobs
    without webhooks (store/fast.py: fencing, the job's counts, state and revision, NOTIFY), sent straight
    from asyncpg by W workers, one connection each, with no gRPC, no server process and no Python of the
    store in between:
      * ``floor``: the one-statement claim, then the one-statement completion (one by one);
      * ``floorcc``: one claim, then the complete-and-claim function, which completes and claims
        the next chunk in one round trip (complete-and-claim).
    The jobs are made by a server, which is stopped before the clock starts. Whatever the server
    does, the mode cannot beat its floor."""
    from jobpulse_server.domain.changes import CHANNEL
    from jobpulse_server.domain.clock import now_us
    from jobpulse_server.domain.model import ChunkState
    from jobpulse_server.store import fast

    claim_sql = fast.claim_statement(0)
    lease_us = LEASE.seconds * 1_000_000
    async with fresh_database(key) as dsn:
        server = ServerProcess("jobpulse", dsn)
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                for j in range(JOBS_PER_RUN):
                    await jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(
                            display_name=f"floor {j}",
                            kind="bench-work",
                            total_items=n // JOBS_PER_RUN + (1 if j < n % JOBS_PER_RUN else 0),
                            chunk_size=1,
                        ),
                        timeout=TIMEOUT,
                    )
        finally:
            server.stop()
        conns = [await asyncpg.connect(dsn) for _ in range(workers)]
        for conn in conns:
            await fast.define_functions(conn)
        done = [0]
        trips = [0]
        retries = [0]

        async def retrying(conn: asyncpg.Connection, query: str, *args: Any) -> Any:
            while True:
                trips[0] += 1
                try:
                    return await conn.fetchrow(query, *args)
                except asyncpg.PostgresError as exc:
                    if getattr(exc, "sqlstate", "") not in ("40001", "40P01"):
                        raise
                    retries[0] += 1

        def claim_args(name: str, now: int) -> tuple[Any, ...]:
            return (*fast.claim_params([], 1, name, now, lease_us), CHANNEL, "floor")

        def complete_args(chunk: Any) -> tuple[Any, ...]:
            return (chunk[0], chunk[1], chunk[2], now_us(), "", [], [], [], [], CHANNEL, "floor")

        def first_chunk(rows: Any) -> tuple[str, str, str]:
            """(id, job id, lease token) of the first claimed chunk (rows in the store's chunk columns)."""
            row = rows[0]
            return row[ID], row[JOB_ID], row[TOKEN]

        async def claim(conn: asyncpg.Connection, name: str) -> Any:
            """The next chunk, or None when no work is left."""
            while True:
                n_jobs, chunk_rows, _, _ = await retrying(conn, claim_sql, *claim_args(name, now_us()))
                if chunk_rows:
                    return first_chunk(chunk_rows)
                if not n_jobs:
                    return None
                # else: other workers took the work of the jobs this one locked; look again

        async def one_by_one(conn: asyncpg.Connection, name: str) -> None:
            while (chunk := await claim(conn, name)) is not None:
                if await retrying(conn, fast.COMPLETE_ONE, *complete_args(chunk)) is None:
                    raise RuntimeError(f"floor: completion of {chunk[0]} was refused")
                done[0] += 1

        async def complete_and_claim(conn: asyncpg.Connection, name: str) -> None:
            chunk = await claim(conn, name)
            while chunk is not None:
                args = (*complete_args(chunk), *claim_args(name, now_us()))
                row = await retrying(conn, fast.complete_and_claim_statement(0, len(args)), *args)
                if row[0] is None:
                    raise RuntimeError(f"floor: completion of {chunk[0]} was refused")
                done[0] += 1
                _, _, _, (n_jobs, chunk_rows, _), *_ = json.loads(row[0])  # then kind, items
                if chunk_rows:
                    chunk = first_chunk(chunk_rows)
                else:
                    chunk = await claim(conn, name) if n_jobs else None

        worker = one_by_one if key == "floor" else complete_and_claim
        try:
            db0 = postgres_cpu_seconds()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c, f"floor-{i}") for i, c in enumerate(conns)))
            elapsed = time.perf_counter() - t0
            db1 = postgres_cpu_seconds()
            left = await conns[0].fetchval(
                "SELECT count(*) FROM chunks WHERE state <> $1", int(ChunkState.COMPLETED)
            )
        finally:
            for c in conns:
                await c.close()
    if done[0] != n or left:
        raise RuntimeError(f"floor drained {done[0]}/{n} ({left} chunks not completed)")
    return _row(
        FLOOR_ROWS[key],
        n,
        elapsed,
        trips[0],
        db_cpu_us=_per_unit_us(db0, db1, n),
        deadlock_retries=retries[0],
    )


# --- PgQueuer ----------------------------------------------------------------------------------


async def _pgq_setup(dsn: str, n: int) -> None:
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        q = Queries(AsyncpgDriver(conn))
        await q.install()
        for start in range(0, n, 5_000):
            k = min(5_000, n - start)
            await q.enqueue([ENTRYPOINT] * k, [f"{start + i}".encode() for i in range(k)], [0] * k)
    finally:
        await conn.close()


async def _pgq_check(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        ok = await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    finally:
        await conn.close()
    if left or ok != n:
        raise RuntimeError(f"pgqueuer left {left} jobs in the queue, logged {ok}/{n} successful")


async def pgqueuer_managers(n: int, workers: int, batch_size: int) -> dict[str, Any]:
    """W QueueManagers in drain mode, each on its own connection; a no-op entrypoint."""
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async with fresh_database(f"pgqm{batch_size}") as dsn:
        await _pgq_setup(dsn, n)
        handled = 0
        conns = [await asyncpg.connect(dsn) for _ in range(workers)]
        try:
            managers = []
            for conn in conns:
                qm = QueueManager(Queries(AsyncpgDriver(conn)))

                @qm.entrypoint(ENTRYPOINT)
                async def noop(job: Job) -> None:
                    nonlocal handled
                    handled += 1

                managers.append(qm)
            db0 = postgres_cpu_seconds()
            t0 = time.perf_counter()
            await asyncio.gather(
                *(
                    qm.run(
                        dequeue_timeout=timedelta(seconds=0.2),
                        batch_size=batch_size,
                        mode=QueueExecutionMode.drain,
                    )
                    for qm in managers
                )
            )
            elapsed = time.perf_counter() - t0
            db1 = postgres_cpu_seconds()
        finally:
            for conn in conns:
                await conn.close()
        await _pgq_check(dsn, n)
    if handled != n:
        raise RuntimeError(f"pgqueuer handled {handled}/{n}")
    return _row(
        f"pgqueuer, {workers} QueueManager drain, batch_size={batch_size}",
        n,
        elapsed,
        0,
        db_cpu_us=_per_unit_us(db0, db1, n),
    )


async def pgqueuer_loops(n: int, workers: int, batch_size: int) -> dict[str, Any]:
    """W bare loops: Queries.dequeue(batch_size) then Queries.log_jobs for each job, one by one."""
    from pgqueuer import AsyncpgDriver, Queries
    from pgqueuer.ports.repository import EntrypointExecutionParameter
    from pgqueuer.types import QueueManagerId

    async with fresh_database(f"pgql{batch_size}") as dsn:
        await _pgq_setup(dsn, n)
        done = 0
        trips = 0
        conns = [await asyncpg.connect(dsn) for _ in range(workers)]
        entrypoints = {ENTRYPOINT: EntrypointExecutionParameter(concurrency_limit=0)}

        async def worker(conn: asyncpg.Connection) -> None:
            nonlocal done, trips
            q = Queries(AsyncpgDriver(conn))
            me = QueueManagerId(uuid.uuid4())
            while True:
                picked = await q.dequeue(
                    batch_size=batch_size,
                    entrypoints=entrypoints,  # type: ignore[arg-type]
                    queue_manager_id=me,
                    global_concurrency_limit=None,
                    heartbeat_timeout=timedelta(seconds=30),
                )
                trips += 1
                if not picked:
                    return
                for job in picked:
                    await q.log_jobs([(job, "successful", None)])
                    trips += 1
                    done += 1

        try:
            db0 = postgres_cpu_seconds()
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in conns))
            elapsed = time.perf_counter() - t0
            db1 = postgres_cpu_seconds()
        finally:
            for conn in conns:
                await conn.close()
        await _pgq_check(dsn, n)
    if done != n:
        raise RuntimeError(f"pgqueuer loops did {done}/{n}")
    return _row(
        f"pgqueuer, dequeue(batch_size={batch_size}) + log_jobs per job",
        n,
        elapsed,
        trips,
        db_cpu_us=_per_unit_us(db0, db1, n),
    )


# --- run and print -----------------------------------------------------------------------------


def render(rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float, pg: str) -> str:
    m = report.machine_facts()
    lines: list[str] = []
    add = lines.append
    width = 110
    add("=" * width)
    add(
        f"Chunk claim + complete on PostgreSQL: jobpulse next to PgQueuer "
        f"({'quick' if args.quick else 'full'} run, {elapsed:.0f} s)"
    )
    add(
        f"N = {args.n:,} per row, W = {args.workers} asyncio workers, no-op work, a fresh database per row; "
        f"median of {args.rounds} round(s)"
    )
    add(f"machine: nproc {m['nproc']} | Python {m['python']} | {pg} | pgqueuer {_pgq_version()}")
    add(f"         {m['cpu_model']}; load average {report.load_average()}")
    add("-" * width)
    add(
        f"   {'':<52}{'jobs/s':>9}{'seconds':>9}{'round trips':>13}"
        f"{'srv CPU us/job':>16}{'db CPU us/job':>15}"
    )
    for r in rows:
        if r.get("unimplemented"):
            add(f"   {r['name']:<52}{'n/a (server: UNIMPLEMENTED)':>31}")
            continue
        trips = f"{r['round_trips']:,}" if r["round_trips"] else "-"
        note = _note(r)
        add(
            f"   {r['name']:<52}{r['per_second']:>9,.0f}{r['seconds']:>9.2f}{trips:>13}"
            f"{_us(r.get('server_cpu_us')):>16}{_us(r.get('db_cpu_us')):>15}"
            + (f"  ({note})" if note else "")
        )
    add("   srv CPU: the jobpulse server process; db CPU: every PostgreSQL process on this machine")
    add("-" * width)
    by = {r["key"]: r.get("per_second") for r in rows}
    add(
        f"   {'ratio jobs/s jobpulse / pgqueuer':<52}{'vs QueueManager':>18}{'vs dequeue+log_jobs loops':>28}"
    )
    for key, k in (("jp1", 1), ("jpcc", 1), ("floor", 1), ("floorcc", 1), ("jp10", 10), ("jpb10", 10)):
        if key not in by:
            continue
        name = FLOOR_ROWS[key] if key in FLOOR_ROWS else JOBPULSE_ROWS[key][1]
        label = f"{name.removeprefix('jobpulse, ')} / batch {k}"
        add(f"   {label:<52}{_ratio(by[key], by.get(f'qm{k}')):>18}{_ratio(by[key], by.get(f'lp{k}')):>28}")
    add("-" * width)
    add("Targets (PostgreSQL)")
    lines.extend(report.render_goals(goals(rows)))
    add("=" * width)
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _note(row: dict[str, Any]) -> str:
    counts = row.get("counts")
    if counts is None:
        return ""
    mode = work.MODES[JOBPULSE_ROWS[row["key"]][0]]
    if mode.claim_next and not counts["claimed_next"]:
        return "claim_next returned no claims"
    return ""


def goals(rows: list[dict[str, Any]]) -> list[report.Goal]:
    by = {r["key"]: r for r in rows}

    def ratio(a: str, b: str) -> float | None:
        x, y = by.get(a, {}).get("per_second"), by.get(b, {}).get("per_second")
        return x / y if x is not None and y else None

    def note(key: str) -> str:
        row = by.get(key)
        if row is None:
            return "not measured"
        return "server: UNIMPLEMENTED" if row.get("unimplemented") else _note(row)

    out: list[report.Goal] = []
    peers = (("qm", "QueueManager"), ("lp", "dequeue+log_jobs loops"))
    for key, what, floor_key in (("jp1", "one by one", "floor"), ("jpcc", "complete-and-claim", "floorcc")):
        for peer, peer_name in peers:
            floor = ratio(floor_key, f"{peer}1")
            floor_note = f"the same SQL without gRPC: {floor:.2f}" if floor is not None else ""
            out.append(
                report.Goal(
                    f"PostgreSQL {what} / PgQueuer batch 1 ({peer_name})",
                    ratio(key, f"{peer}1"),
                    True,
                    0.5,
                    1.0,
                    note="; ".join(n for n in (note(key), floor_note) if n),
                )
            )
    for peer, peer_name in peers:
        out.append(
            report.Goal(
                f"PostgreSQL batched (CompleteChunks) / PgQueuer batch 10 ({peer_name})",
                ratio("jpb10", f"{peer}10"),
                True,
                1.0,
                2.0,
                note=note("jpb10"),
            )
        )
    for key, what in (
        ("jp1", "one by one"),
        ("jpcc", "complete-and-claim"),
        ("jpb10", "CompleteChunks of 10"),
    ):
        out.append(
            report.Goal(
                f"PostgreSQL server CPU per chunk, {what}",
                by.get(key, {}).get("server_cpu_us"),
                False,
                1500,
                800,
                "us",
                note=note(key),
            )
        )
    return out


def _pgq_version() -> str:
    try:
        return metadata.version("pgqueuer")
    except metadata.PackageNotFoundError:
        return "?"


async def _pg_version() -> str:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        return "PostgreSQL " + str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    n, w = args.n, args.workers
    cases: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    for k, jobpulse_keys in ((1, ("jp1", "jpcc")), (10, ("jp10", "jpb10"))):
        for key in jobpulse_keys:
            cases.append((key, functools.partial(jobpulse_drain, n, w, key)))
        if k == 1 and not args.no_floor:
            for key in FLOOR_ROWS:
                cases.append((key, functools.partial(statements_floor, n, w, key)))
        cases.append((f"qm{k}", functools.partial(pgqueuer_managers, n, w, k)))
        cases.append((f"lp{k}", functools.partial(pgqueuer_loops, n, w, k)))
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):  # rounds interleave the systems, so drift hits all alike
        for key, case in cases:
            row = await case()
            row["key"] = key
            results.setdefault(key, []).append(row)
            rate = "UNIMPLEMENTED" if row.get("unimplemented") else f"{row['per_second']:,.0f}/s"
            print(f"  {row['name']}: {rate}", file=sys.stderr, flush=True)
    out = []
    for key, _ in cases:
        rs = sorted(results[key], key=lambda r: r.get("per_second", 0.0))
        out.append(rs[len(rs) // 2])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 units of work per row, one round")
    p.add_argument("--n", type=int, default=None, help="units of work per row (default 5,000; quick 1,000)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--no-floor", action="store_true", help="skip the rows of jobpulse's SQL without gRPC")
    p.add_argument("--rounds", type=int, default=None, help="rounds per row, median kept (default 1)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 1_000 if args.quick else 5_000
    if args.rounds is None:
        args.rounds = 1
    t0 = time.perf_counter()
    load_before = report.load_average()
    pg = asyncio.run(_pg_version())
    rows = asyncio.run(run(args))
    elapsed = time.perf_counter() - t0
    print(render(rows, args, elapsed, pg), flush=True)
    report.write_json(
        {
            "settings": {
                "mode": "quick" if args.quick else "full",
                "n": args.n,
                "workers": args.workers,
                "rounds": args.rounds,
            },
            "postgres": pg,
            "pgqueuer": _pgq_version(),
            "machine": report.machine_facts(),
            "load_before": load_before,
            "load_after": report.load_average(),
            "elapsed_seconds": elapsed,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rows": rows,
            "targets": [goal.as_dict() for goal in goals(rows)],
        },
        args.json,
    )
    print(f"results written to {args.json}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
