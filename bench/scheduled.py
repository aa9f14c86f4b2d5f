"""Scheduled start: how long after a job's schedule_time a claimer that waits (ClaimChunks ``wait``) gets
its chunk, beside how long after CreateJob a waiting claimer gets a job made to start at once (the wake of
new work, the baseline), on SQLite and on PostgreSQL. Sizes: JOBPULSE_BENCH_SCHEDULED_JOBS (default
200; --quick 20), _CLAIMERS (4).

Each database gets a server of its own and CLAIMERS claimers that wait on the kind and complete what
they get. Baseline: jobs of one chunk made one after the other, each once the previous was claimed,
timed from the CreateJob call to the claim's answer. Scheduled: the same number of one-chunk jobs made
ahead, their schedule_time spread 50 ms apart from a second on, timed from schedule_time to the claim's
answer (wall clocks of one machine). Target: p99 at most 100 ms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from bench import procs, report
from bench.load import percentile
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

KIND = "bench-scheduled"
TARGET_P99_MS = 100.0
SPACING = 0.05  # seconds between two scheduled jobs' times
LEAD = 1.0  # seconds from the last CreateJob to the first schedule_time
TIMEOUT = 30.0


async def _claimer(
    channel: grpc.aio.Channel, worker_id: str, claimed: dict[str, float], stop: asyncio.Event
) -> None:
    """Waits for a chunk, notes when it came (by job), completes it; until ``stop``."""
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    ask = worker_service_pb2.ClaimChunksRequest(
        worker_id=worker_id, kinds=[KIND], max_chunks=1, wait=duration_pb2.Duration(seconds=2)
    )
    while not stop.is_set():
        for claim in (await stub.ClaimChunks(ask, timeout=TIMEOUT)).claims:
            claimed[claim.job_id] = time.time()
            done = worker_service_pb2.CompleteChunkRequest(
                chunk_id=claim.chunk.id, lease_token=claim.lease_token
            )
            await stub.CompleteChunk(done, timeout=TIMEOUT)


async def _until(claimed: dict[str, float], job_ids: list[str], deadline: float) -> None:
    while not all(j in claimed for j in job_ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(j not in claimed for j in job_ids)} jobs were never claimed")
        await asyncio.sleep(0.005)


async def _measure(address: str, jobs: int, claimers: int) -> dict[str, Any]:
    claimed: dict[str, float] = {}
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        waiting = [asyncio.create_task(_claimer(channel, f"w{n}", claimed, stop)) for n in range(claimers)]
        try:
            now_lat: list[float] = []
            for _ in range(jobs):
                sent = time.time()
                new = job_service_pb2.CreateJobRequest(kind=KIND, total_items=1)
                job = (await stub.CreateJob(new, timeout=TIMEOUT)).job
                await _until(claimed, [job.id], time.monotonic() + TIMEOUT)
                now_lat.append(claimed[job.id] - sent)

            first = time.time() + LEAD + jobs * 0.01  # after the CreateJob calls below
            at: dict[str, float] = {}
            for i in range(jobs):
                when = first + i * SPACING
                stamp = timestamp_pb2.Timestamp()
                stamp.FromNanoseconds(int(when * 1e9))
                new = job_service_pb2.CreateJobRequest(kind=KIND, total_items=1, schedule_time=stamp)
                at[(await stub.CreateJob(new, timeout=TIMEOUT)).job.id] = when
            if time.time() >= first:
                raise RuntimeError("the scheduled jobs were not all made before the first one's time")
            await _until(claimed, list(at), time.monotonic() + LEAD + jobs * SPACING + TIMEOUT)
            later_lat = [claimed[j] - when for j, when in at.items()]
        finally:
            stop.set()
            await asyncio.gather(*waiting, return_exceptions=True)
    return {"jobs": jobs, "claimers": claimers, "at_once": _stats(now_lat), "scheduled": _stats(later_lat)}


def _stats(seconds: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(seconds, 50) * 1e3, "p99_ms": percentile(seconds, 99) * 1e3}


def goals(results: dict[str, Any]) -> list[report.Goal]:
    out = []
    for kind, row in results.items():
        what = f"{kind}: first claim after schedule_time, p99 (at once: {row['at_once']['p99_ms']:.1f} ms)"
        out.append(report.Goal(what, row["scheduled"]["p99_ms"], False, TARGET_P99_MS, 50.0, "ms"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = report.arguments("scheduled", __doc__, "20 jobs a database; no figures written").parse_args(argv)
    jobs = 20 if args.quick else report.env_size("JOBPULSE_BENCH_SCHEDULED_JOBS", 200)
    claimers = report.env_size("JOBPULSE_BENCH_SCHEDULED_CLAIMERS", 4)

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for kind in ("sqlite", "postgresql"):
            async with procs.database(kind, "scheduled") as url:
                with procs.Jobpulse(url, http=False) as server:
                    report.log(f"{kind}: {jobs} jobs at once, then {jobs} scheduled, {claimers} claimers")
                    results[kind] = await _measure(server.address, jobs, claimers)
        return results

    results = asyncio.run(run())
    lines = [
        f"{kind}: at once p50 {r['at_once']['p50_ms']:.1f} ms p99 {r['at_once']['p99_ms']:.1f} ms; "
        f"scheduled p50 {r['scheduled']['p50_ms']:.1f} ms p99 {r['scheduled']['p99_ms']:.1f} ms"
        for kind, r in results.items()
    ]
    text = "\n".join(lines + report.targets("targets", goals(results)))
    return report.publish(results, text, args.json, "" if args.quick else "scheduled", goals(results))
