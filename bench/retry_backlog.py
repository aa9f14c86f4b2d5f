"""Worker throughput on a job with chunks waiting for a retry against the same job with none: a job whose
first ``--waiting`` chunks failed (FailChunk, retryable) and wait out a long backoff, ahead of its
``--chunks`` fresh ones in claim order, drained by the workers of each mode; beside it, in the same run
and alternating round by round, the same drain of a job with no chunk waiting. The ratio of the two is
printed per mode and database.

    python -m bench.retry_backlog                          # both databases, 3 rounds, 10,000 waiting
    python -m bench.retry_backlog --database sqlite --rounds 1
    python -m bench.retry_backlog --pythonpath /tmp/wt/service:/tmp/wt/client   # another checkout's server

Retries pile up when what the workers call is down: every failed chunk waits (``retry_backoff``, here 300
s so that none comes due in the run) while the workers go on with the job's other chunks. A claim must
not get slower for each chunk that waits. The failures are made before the clock starts; how fast they
were made (FailChunk, retryable, ``--workers`` at a time, after claims of 100) is printed too, per
database: a failure storm's own rate. Run it alone.
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

from bench import work
from bench.procs import ServerProcess
from bench.webhook_jobs import database
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

TIMEOUT = 120.0
LEASE = duration_pb2.Duration(seconds=600)
KIND = "retries"


async def _fail_first(stub: worker_service_pb2_grpc.WorkerServiceStub, n: int, workers: int) -> float:
    """Claims and fails (retryable) the job's first ``n`` chunks: claims of up to 100, one after another,
    each claim's failures ``workers`` at a time. Returns the seconds it took."""
    t0 = time.perf_counter()
    failed = 0
    while failed < n:
        got = await stub.ClaimChunks(
            worker_service_pb2.ClaimChunksRequest(
                worker_id="failer", kinds=[KIND], max_chunks=min(100, n - failed), lease_duration=LEASE
            ),
            timeout=TIMEOUT,
        )
        if not got.claims:
            raise RuntimeError(f"no chunk left to fail after {failed} of {n}")
        claims = list(got.claims)
        for start in range(0, len(claims), workers):
            answers = await asyncio.gather(
                *(
                    stub.FailChunk(
                        worker_service_pb2.FailChunkRequest(
                            chunk_id=c.chunk.id, lease_token=c.lease_token, retryable=True
                        ),
                        timeout=TIMEOUT,
                    )
                    for c in claims[start : start + workers]
                )
            )
            if not all(a.will_retry for a in answers):
                raise RuntimeError("a chunk failed for good, expected a retry")
        failed += len(claims)
    return time.perf_counter() - t0


async def row(db_kind: str, mode: work.Mode, waiting: int, args: argparse.Namespace) -> dict[str, Any]:
    """One drain of ``args.chunks`` fresh chunks behind ``waiting`` chunks waiting for their retry, on a
    fresh database: chunks/s and the server's CPU per chunk."""
    async with database(db_kind, "retries") as db:
        server = ServerProcess(
            "jobpulse", db, pythonpath=args.pythonpath, env={"JOBPULSE_RETRY_BACKOFF": "300"}
        )
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
                await jobs.CreateJob(
                    job_service_pb2.CreateJobRequest(
                        display_name="retries",
                        kind=KIND,
                        total_items=waiting + args.chunks,
                        chunk_size=1,
                        max_attempts=3,
                    ),
                    timeout=TIMEOUT,
                )
                fail_cpu0 = server.cpu_seconds()
                fail_seconds = await _fail_first(stub, waiting, args.workers)
                fail_cpu1 = server.cpu_seconds()
                counts = [work.Counts() for _ in range(args.workers)]
                cpu0 = server.cpu_seconds()
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        work.worker(
                            stub,
                            mode,
                            worker_id=f"retries-{w}",
                            lease=LEASE,
                            keep_going=lambda: True,
                            counts=counts[w],
                            timeout=TIMEOUT,
                            kinds=[KIND],
                        )
                        for w in range(args.workers)
                    )
                )
                elapsed = time.perf_counter() - t0
                cpu1 = server.cpu_seconds()
        finally:
            server.stop()
    done = sum(c.chunks for c in counts)
    if done != args.chunks:
        raise RuntimeError(f"{db_kind}, {mode.key}, {waiting} waiting: drained {done} of {args.chunks}")
    failures: dict[str, Any] = {}
    if waiting:
        failures["failures_per_second"] = waiting / fail_seconds
        if fail_cpu0 is not None and fail_cpu1 is not None:
            failures["failure_server_us"] = (fail_cpu1 - fail_cpu0) * 1e6 / waiting
    return {
        "per_second": done / elapsed,
        "server_us": (cpu1 - cpu0) * 1e6 / done if cpu0 is not None and cpu1 is not None else None,
        **failures,
    }


async def run(args: argparse.Namespace) -> list[str]:
    lines = [
        f"# Worker throughput behind chunks waiting for a retry ({args.chunks:,} fresh chunks, "
        f"{args.workers} workers, {args.rounds} rounds alternating, medians)",
        "",
        "| database | mode | chunks waiting | chunks/s | server CPU us/chunk | / none waiting |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    storms: list[str] = []
    for db_kind in args.database:
        made: list[dict[str, Any]] = []
        for key in args.modes:
            mode = work.MODES[key]
            got: dict[int, list[dict[str, Any]]] = {0: [], args.waiting: []}
            for r in range(args.rounds):
                for waiting in got:
                    one = await row(db_kind, mode, waiting, args)
                    got[waiting].append(one)
                    if waiting:
                        made.append(one)
                    print(
                        f"  {db_kind}, {key}, {waiting:,} waiting, round {r + 1}: "
                        f"{one['per_second']:,.0f} chunks/s",
                        file=sys.stderr,
                    )
            base = statistics.median(x["per_second"] for x in got[0])
            for waiting, rows in got.items():
                rate = statistics.median(x["per_second"] for x in rows)
                server = [x["server_us"] for x in rows if x["server_us"] is not None]
                cpu = f"{statistics.median(server):,.0f}" if server else "-"
                lines.append(
                    f"| {db_kind} | {mode.label} | {waiting:,} | {rate:,.0f} | {cpu} | {rate / base:.2f} |"
                )
        if made:
            rate = statistics.median(x["failures_per_second"] for x in made)
            server = [x["failure_server_us"] for x in made if "failure_server_us" in x]
            cpu = f"{statistics.median(server):,.0f}" if server else "-"
            storms.append(f"| {db_kind} | {len(made)} | {rate:,.0f} | {cpu} |")
    if storms:
        lines += [
            "",
            f"Making the waiting chunks: FailChunk (retryable), {args.workers} at a time, after claims of "
            "100 (medians over the rows)",
            "",
            "| database | runs | failures/s | server CPU us/failure |",
            "| --- | --- | --- | --- |",
            *storms,
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--waiting", type=int, default=10_000, help="chunks waiting (default 10,000)")
    parser.add_argument(
        "--chunks", type=int, default=3_000, help="fresh chunks drained per row (default 3,000)"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=sorted(work.MODES),
        default=["one_by_one", "complete_and_claim", "batched_complete_chunks"],
    )
    parser.add_argument(
        "--pythonpath", default=None, help="serve the code of another checkout (its service/)"
    )
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
