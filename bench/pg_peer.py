"""Chunk claim + complete throughput on PostgreSQL: jobpulse next to PgQueuer, same run, same server.

    python -m bench.pg_peer            # 5,000 units of work per row
    python -m bench.pg_peer --quick    # 1,000

jobpulse: a server in a process of its own on a fresh PostgreSQL database; N one-item chunks
(spread over 10 jobs made with CreateJob, not timed) are drained by W asyncio workers on one
channel, each looping ClaimChunks(max_chunks=k) then CompleteChunk per chunk until a claim comes
back empty. PgQueuer (the version installed; asyncpg, no CLI): a fresh database of its own,
``Queries.install()``, N jobs enqueued in one batch (not timed), then drained with a no-op
entrypoint by
  * W QueueManagers, each on its own asyncpg connection, ``run(mode=drain, batch_size=k)``
    (PgQueuer as shipped: completions are buffered and written in batches), and
  * W bare loops over the same Queries API, ``dequeue(batch_size=k)`` then ``log_jobs`` per job
    (the same protocol as the jobpulse workers: one round trip per claim and one per completion).
Every row uses a fresh database; the clock runs from the first claim to the last completion.

PostgreSQL: postgresql://postgres@127.0.0.1:5432 (override with JOBPULSE_BENCH_PG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import metadata
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2

from bench import report
from bench.procs import ServerProcess
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

PG_ADMIN = os.environ.get("JOBPULSE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)
JOBS_PER_RUN = 10
ENTRYPOINT = "noop"


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


async def jobpulse_drain(n: int, workers: int, max_chunks: int) -> dict[str, Any]:
    async with fresh_database(f"jp{max_chunks}") as dsn:
        server = ServerProcess("jobpulse", dsn)
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
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
                done = 0
                rpcs = 0

                async def worker(w: int) -> None:
                    nonlocal done, rpcs
                    request = worker_service_pb2.ClaimChunksRequest(
                        worker_id=f"peer-{w}", max_chunks=max_chunks, lease_duration=LEASE
                    )
                    while True:
                        claims = (await stub.ClaimChunks(request, timeout=TIMEOUT)).claims
                        rpcs += 1
                        if not claims:
                            return
                        for claim in claims:
                            await stub.CompleteChunk(
                                worker_service_pb2.CompleteChunkRequest(
                                    chunk_id=claim.chunk.id, lease_token=claim.lease_token
                                ),
                                timeout=TIMEOUT,
                            )
                            rpcs += 1
                            done += 1

                cpu0 = server.cpu_seconds()
                t0 = time.perf_counter()
                await asyncio.gather(*(worker(w) for w in range(workers)))
                elapsed = time.perf_counter() - t0
                cpu1 = server.cpu_seconds()
                listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=100), timeout=TIMEOUT)
                left = sum(j.chunks_summary.pending + j.chunks_summary.processing for j in listed.jobs)
                completed = sum(j.chunks_summary.completed for j in listed.jobs)
        finally:
            server.stop()
    if done != n or completed != n or left:
        raise RuntimeError(f"jobpulse drained {done}/{n} (completed {completed}, left {left})")
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return _row(
        f"jobpulse, ClaimChunks(max_chunks={max_chunks}) + CompleteChunk",
        n,
        elapsed,
        rpcs,
        server_cpu_us=cpu / n * 1e6 if cpu is not None else None,
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
        finally:
            for conn in conns:
                await conn.close()
        await _pgq_check(dsn, n)
    if handled != n:
        raise RuntimeError(f"pgqueuer handled {handled}/{n}")
    return _row(f"pgqueuer, {workers} QueueManager drain, batch_size={batch_size}", n, elapsed, 0)


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
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in conns))
            elapsed = time.perf_counter() - t0
        finally:
            for conn in conns:
                await conn.close()
        await _pgq_check(dsn, n)
    if done != n:
        raise RuntimeError(f"pgqueuer loops did {done}/{n}")
    return _row(f"pgqueuer, dequeue(batch_size={batch_size}) + log_jobs per job", n, elapsed, trips)


# --- run and print -----------------------------------------------------------------------------


def render(rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float, pg: str) -> str:
    m = report.machine_facts()
    lines: list[str] = []
    add = lines.append
    add("=" * 100)
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
    add("-" * 100)
    add(f"   {'':<56}{'jobs/s':>10}{'seconds':>9}{'round trips':>13}{'srv CPU us/job':>16}")
    for r in rows:
        cpu = r.get("server_cpu_us")
        trips = f"{r['round_trips']:,}" if r["round_trips"] else "-"
        add(
            f"   {r['name']:<56}{r['per_second']:>10,.0f}{r['seconds']:>9.2f}{trips:>13}"
            f"{(f'{cpu:,.0f}' if cpu is not None else '-'):>16}"
        )
    add("-" * 100)
    by = {r["key"]: r["per_second"] for r in rows}
    for k in (1, 10):
        jp = by.get(f"jp{k}")
        qm, lp = by.get(f"qm{k}"), by.get(f"lp{k}")
        if jp is None:
            continue
        parts = []
        if qm:
            parts.append(f"vs QueueManager {jp / qm:.2f}")
        if lp:
            parts.append(f"vs dequeue+log_jobs loops {lp and jp / lp:.2f}")
        add(f"   ratio jobpulse/pgqueuer, batch {k:>2}: " + ", ".join(parts))
    add("=" * 100)
    return "\n".join(lines)


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
    cases: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    for k in (1, 10):
        cases.append((f"jp{k}", lambda k=k: jobpulse_drain(args.n, args.workers, k)))
        cases.append((f"qm{k}", lambda k=k: pgqueuer_managers(args.n, args.workers, k)))
        cases.append((f"lp{k}", lambda k=k: pgqueuer_loops(args.n, args.workers, k)))
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):  # rounds interleave the systems, so drift hits all alike
        for key, case in cases:
            row = await case()
            row["key"] = key
            results.setdefault(key, []).append(row)
            print(f"  {row['name']}: {row['per_second']:,.0f}/s", file=sys.stderr, flush=True)
    out = []
    for key, _ in cases:
        rs = sorted(results[key], key=lambda r: r["per_second"])
        out.append(rs[len(rs) // 2])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 units of work per row, one round")
    p.add_argument("--n", type=int, default=None, help="units of work per row (default 5,000; quick 1,000)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None, help="rounds per row, median kept (default 1)")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 1_000 if args.quick else 5_000
    if args.rounds is None:
        args.rounds = 1
    t0 = time.perf_counter()
    pg = asyncio.run(_pg_version())
    rows = asyncio.run(run(args))
    print(render(rows, args, time.perf_counter() - t0, pg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
