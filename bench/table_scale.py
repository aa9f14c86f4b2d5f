"""Worker throughput on PostgreSQL as the tables grow: each worker row on a database holding only its
work, and again on one that also holds many finished jobs, with the work spread over many jobs; the two
alternate round by round in one run, and the ratio is printed per row.

    python -m bench.table_scale                                   # 3 rounds; 50,000 finished jobs
    python -m bench.table_scale --finished 200000 --rounds 1 --modes complete_and_claim

A service keeps its finished jobs (their ``ttl``) and runs many jobs at once, so the worker path must
cost what a flush touches, not what the tables hold. Small: one job of ``--jobs`` x ``--chunks`` one-item
chunks. Large: ``--finished`` finished jobs first (bench.listing_scale's synthetic jobs, COPYed in and
analyzed), then ``--jobs`` jobs of ``--chunks`` chunks each, made by CreateJob as a caller would (the
server analyzes chunks after them, while all are pending). ``--workers`` workers claim any kind for
``--seconds``. A ratio near 1.0 means the tables' size costs nothing; the PostgreSQL CPU column counts
every PostgreSQL process (autovacuum too). Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2

from bench import work
from bench.listing_scale import JOB_COLUMNS, job_rows
from bench.pg_peer import PG_ADMIN, fresh_database, postgres_cpu_seconds
from bench.procs import ServerProcess
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)


async def _copy_finished(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for rows in job_rows(n, time.time_ns() // 1000):
            await conn.copy_records_to_table("jobs", records=rows, columns=JOB_COLUMNS)
        await conn.execute("VACUUM ANALYZE jobs")
    finally:
        await conn.close()


async def row(mode: work.Mode, large: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement on a fresh database: chunks/s and the CPU per chunk of the server and of
    PostgreSQL."""
    async with fresh_database(f"scale_{'l' if large else 's'}") as dsn:
        server = ServerProcess("jobpulse", dsn)
        try:
            server.wait_ready()  # the server has migrated the database
            if large and args.finished:
                await _copy_finished(dsn, args.finished)
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
                shape = [args.chunks] * args.jobs if large else [args.chunks * args.jobs]
                for n, items in enumerate(shape):
                    await jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(
                            display_name=f"scale {n}", kind="scale", total_items=items, chunk_size=1
                        ),
                        timeout=TIMEOUT,
                    )
                counts = work.Counts()
                end = time.perf_counter() + args.seconds
                cpu0, db0 = server.cpu_seconds(), postgres_cpu_seconds()
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        work.worker(
                            stub,
                            mode,
                            worker_id=f"scale-{w}",
                            lease=LEASE,
                            keep_going=lambda: time.perf_counter() < end,
                            counts=counts,
                            timeout=TIMEOUT,
                        )
                        for w in range(args.workers)
                    )
                )
                elapsed = time.perf_counter() - t0
                cpu1, db1 = server.cpu_seconds(), postgres_cpu_seconds()
        finally:
            server.stop()
    if counts.ran_dry:
        raise RuntimeError(f"{mode.key}: the work ran out before the time did; give it more chunks")
    n = counts.chunks

    def per_chunk(a: float | None, b: float | None) -> float | None:
        return (b - a) / n * 1e6 if a is not None and b is not None and n else None

    return {
        "chunks_per_second": n / elapsed,
        "server_us": per_chunk(cpu0, cpu1),
        "db_us": per_chunk(db0, db1),
    }


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} us"


async def run(args: argparse.Namespace) -> list[str]:
    modes = [work.MODES[m] for m in args.modes]
    got: dict[tuple[str, bool], list[dict[str, Any]]] = {
        (m.key, big): [] for m in modes for big in (False, True)
    }
    for r in range(args.rounds):
        for mode in modes:
            # Small and large alternate, flipped every round, so drift hits both.
            for large in (False, True) if r % 2 == 0 else (True, False):
                one = await row(mode, large, args)
                got[(mode.key, large)].append(one)
                print(
                    f"round {r + 1}/{args.rounds} {mode.key} {'large' if large else 'small'}: "
                    f"{one['chunks_per_second']:,.0f} chunks/s, server {_us(one['server_us'])}, "
                    f"PostgreSQL {_us(one['db_us'])} a chunk",
                    file=sys.stderr,
                    flush=True,
                )
    lines = [
        f"PostgreSQL ({PG_ADMIN}), {args.workers} workers, {args.seconds:g} s a row, medians of "
        f"{args.rounds} round(s). small: 1 job of {args.jobs * args.chunks:,} chunks; "
        f"large: {args.finished:,} finished jobs + {args.jobs} jobs of {args.chunks:,} chunks",
        f"{'mode':<26}{'small chunks/s':>16}{'large chunks/s':>16}{'large / small':>15}"
        f"{'server CPU s / l':>22}{'PostgreSQL CPU s / l':>26}",
    ]
    for mode in modes:
        small, large = got[(mode.key, False)], got[(mode.key, True)]

        def med(rows: list[dict[str, Any]], key: str) -> float | None:
            values = [x[key] for x in rows if x[key] is not None]
            return statistics.median(values) if values else None

        s, l_ = med(small, "chunks_per_second"), med(large, "chunks_per_second")
        ratio = l_ / s if s and l_ is not None else None
        lines.append(
            f"{mode.key:<26}{s or 0:>16,.0f}{l_ or 0:>16,.0f}{'-' if ratio is None else f'{ratio:.2f}':>15}"
            f"{_us(med(small, 'server_us')) + ' / ' + _us(med(large, 'server_us')):>22}"
            f"{_us(med(small, 'db_us')) + ' / ' + _us(med(large, 'db_us')):>26}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.table_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["complete_and_claim", "one_by_one", "batched_complete_chunks"],
        help=f"comma-separated, of: {', '.join(work.MODES)}",
    )
    p.add_argument("--finished", type=int, default=50_000, help="finished jobs in the large database")
    p.add_argument("--jobs", type=int, default=100, help="jobs with pending work in the large database")
    p.add_argument("--chunks", type=int, default=500, help="one-item chunks per job")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    unknown = [m for m in args.modes if m not in work.MODES]
    if unknown:
        p.error(f"unknown mode(s): {', '.join(unknown)}")
    print("\n".join(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
