"""Workers that report progress: each chunk claimed, reported on ``--reports`` times
(ReportChunkProgress, as a worker showing its items does) and completed, against the same work with no
reports, alternating round by round in one run. The ratio compares calls/s (every RPC counted), so it
reads 1.0 when a report costs what a claim or a completion does.

    python -m bench.progress_reports                           # PostgreSQL, 3 rounds, 2 reports a chunk
    python -m bench.progress_reports --database sqlite --rounds 1
    python -m bench.progress_reports --pythonpath /tmp/wt/service:/tmp/wt/client   # another checkout's server

One job of ``--chunks`` chunks of 10 items, ``--workers`` workers claiming one chunk at a time. Run it
alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench.pg_peer import postgres_cpu_seconds
from bench.procs import ServerProcess
from bench.webhook_jobs import database
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)


async def row(reports: int, args: argparse.Namespace) -> dict[str, Any]:
    """One drain on a fresh database: chunks/s, calls/s and the CPU per call of the server (and
    PostgreSQL)."""
    async with database(args.database, "reports") as db:
        server = ServerProcess("jobpulse", db, pythonpath=args.pythonpath)
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
                await jobs.CreateJob(
                    job_service_pb2.CreateJobRequest(
                        display_name="reports", kind="reports", total_items=args.chunks * 10, chunk_size=10
                    ),
                    timeout=TIMEOUT,
                )
                chunks = [0]

                async def worker(n: int) -> None:
                    ask = worker_service_pb2.ClaimChunksRequest(
                        worker_id=f"reports-{n}", max_chunks=1, lease_duration=LEASE
                    )
                    while True:
                        got = await stub.ClaimChunks(ask, timeout=TIMEOUT)
                        if not got.claims:
                            return
                        claim = got.claims[0]
                        for k in range(reports):
                            await stub.ReportChunkProgress(
                                worker_service_pb2.ReportChunkProgressRequest(
                                    chunk_id=claim.chunk.id, lease_token=claim.lease_token, items_done=k + 1
                                ),
                                timeout=TIMEOUT,
                            )
                        await stub.CompleteChunk(
                            worker_service_pb2.CompleteChunkRequest(
                                chunk_id=claim.chunk.id, lease_token=claim.lease_token
                            ),
                            timeout=TIMEOUT,
                        )
                        chunks[0] += 1

                pg = args.database == "postgresql"
                cpu0, db0 = server.cpu_seconds(), postgres_cpu_seconds() if pg else None
                t0 = time.perf_counter()
                await asyncio.gather(*(worker(n) for n in range(args.workers)))
                elapsed = time.perf_counter() - t0
                cpu1, db1 = server.cpu_seconds(), postgres_cpu_seconds() if pg else None
        finally:
            server.stop()
    if chunks[0] != args.chunks:
        raise RuntimeError(f"{reports} reports a chunk: completed {chunks[0]} of {args.chunks} chunks")
    calls = chunks[0] * (2 + reports) + args.workers  # and each worker's last, empty claim
    return {
        "chunks_per_second": chunks[0] / elapsed,
        "calls_per_second": calls / elapsed,
        "server_us": (cpu1 - cpu0) * 1e6 / calls if cpu0 is not None and cpu1 is not None else None,
        "db_us": (db1 - db0) * 1e6 / calls if db0 is not None and db1 is not None else None,
    }


def _us(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):,.0f}" if known else "-"


async def run(args: argparse.Namespace) -> list[str]:
    got: dict[int, list[dict[str, Any]]] = {0: [], args.reports: []}
    for r in range(args.rounds):
        for reports in got:
            one = await row(reports, args)
            got[reports].append(one)
            print(
                f"  {reports} reports a chunk, round {r + 1}: {one['calls_per_second']:,.0f} calls/s",
                file=sys.stderr,
            )
    base = statistics.median(x["calls_per_second"] for x in got[0])
    lines = [
        f"# Workers reporting progress ({args.database}; {args.chunks:,} chunks of one job, "
        f"{args.workers} workers, {args.rounds} rounds alternating, medians)",
        "",
        "| reports a chunk | chunks/s | calls/s | server CPU us/call | PostgreSQL CPU us/call "
        "| calls/s / no reports |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for reports, rows in got.items():
        rate = statistics.median(x["calls_per_second"] for x in rows)
        lines.append(
            f"| {reports} | {statistics.median(x['chunks_per_second'] for x in rows):,.0f} | {rate:,.0f} | "
            f"{_us([x['server_us'] for x in rows])} | {_us([x['db_us'] for x in rows])} | {rate / base:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--chunks", type=int, default=1_500, help="chunks of 10 items (default 1,500)")
    parser.add_argument("--reports", type=int, default=2, help="progress reports a chunk (default 2)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pythonpath",
        default=None,
        help="serve the code of another checkout: its service/ and client/ (DIR/service:DIR/client)",
    )
    args = parser.parse_args(argv)
    if args.reports < 1:
        parser.error("--reports must be at least 1 (the baseline is 0)")
    print("\n".join(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
