"""A PER_CHUNK pipeline: three jobs of CHUNKS chunks, the second after the first and the third after the
second chunk by chunk (DEPENDENCY_MODE_PER_CHUNK), the third ending with a finalize chunk, on SQLite and
on PostgreSQL. Sizes: JOBPULSE_BENCH_PIPELINE_CHUNKS (default 100; --quick 20), _WORKERS (10 per stage),
_HANDLER_MS (50).

Each stage's kind has WORKERS workers of its own that claim one chunk at a time (ClaimChunks ``wait``),
hold it for the handler's time, then complete it; one more worker waits for the finalize kind.
Baselines, in the same run: one job of CHUNKS chunks of one stage's kind alone, with its workers, from
CreateJob to the last completion (one stage's time); and the three stages' jobs made at once with no
dependency, every stage's workers busy (the floor of this machine under the pipeline's load: the server,
the database and the 31 workers share two cores). The pipeline is timed from the first CreateJob to
the last regular chunk's completion. Targets: its wall time at most 1.1 x one stage's time plus two
handler times; the finalize chunk claimed at most one claim cycle after the last other chunk completed,
a claim cycle being the median ClaimChunks round trip of the baseline's workers when work was ready.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import procs, report
from bench.load import percentile
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

STAGES = ("bench-stage1", "bench-stage2", "bench-stage3")
FINAL = "bench-final"
TIMEOUT = 60.0


class _Run:
    """What the workers saw: when each regular chunk completed, when the finalize chunk was claimed, and
    the round trips of the claims that got work at once."""

    def __init__(self) -> None:
        self.completed: list[float] = []
        self.final_claimed: float | None = None
        self.claim_rtts: list[float] = []
        self.complete_rtts: list[float] = []
        # (kind, chunk index) -> when its claim came back, and when its completion came back.
        self.claimed_at: dict[tuple[str, int], float] = {}
        self.done_at: dict[tuple[str, int], float] = {}
        self.stop = asyncio.Event()


async def _worker(channel: grpc.aio.Channel, name: str, kind: str, handler_s: float, run: _Run) -> None:
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    ask = worker_service_pb2.ClaimChunksRequest(
        worker_id=name, kinds=[kind], max_chunks=1, wait=duration_pb2.Duration(nanos=500_000_000)
    )
    while not run.stop.is_set():
        sent = time.monotonic()
        claims = (await stub.ClaimChunks(ask, timeout=TIMEOUT)).claims
        for claim in claims:
            run.claimed_at[(kind, claim.chunk.index)] = time.monotonic()
            if claim.chunk.finalize:
                run.final_claimed = time.monotonic()
            elif time.monotonic() - sent < 0.1:  # work was ready: a claim cycle
                run.claim_rtts.append(time.monotonic() - sent)
            await asyncio.sleep(handler_s)
            done = worker_service_pb2.CompleteChunkRequest(
                chunk_id=claim.chunk.id, lease_token=claim.lease_token
            )
            sent = time.monotonic()
            await stub.CompleteChunk(done, timeout=TIMEOUT)
            run.complete_rtts.append(time.monotonic() - sent)
            if not claim.chunk.finalize:
                run.completed.append(time.monotonic())
                run.done_at[(kind, claim.chunk.index)] = run.completed[-1]


async def _workers(
    channel: grpc.aio.Channel, kinds: list[str], n: int, handler_s: float, run: _Run
) -> list[Any]:
    return [
        asyncio.create_task(_worker(channel, f"{kind}-{i}", kind, handler_s, run))
        for kind in kinds
        for i in range(n)
    ]


async def _until_done(stub: job_service_pb2_grpc.JobServiceStub, job_id: str) -> None:
    deadline = time.monotonic() + TIMEOUT * 5
    while True:
        got = (await stub.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=TIMEOUT)).job
        if got.state == job_pb2.JOB_STATE_COMPLETED:
            return
        if (
            got.state in (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
            or time.monotonic() > deadline
        ):
            raise RuntimeError(f"job {job_id} ended {job_pb2.JobState.Name(got.state)}")
        await asyncio.sleep(0.02)


def _jobs(kinds: Sequence[str], chunks: int, pipeline: bool) -> list[job_service_pb2.CreateJobRequest]:
    """A job of ``chunks`` chunks of each kind; with ``pipeline``, each after the one before it chunk by
    chunk, the last ending with a finalize chunk."""
    asks = [job_service_pb2.CreateJobRequest(kind=k, total_items=chunks, chunk_size=1) for k in kinds]
    if pipeline:
        asks[-1].finalize_kind = FINAL
    return asks


async def _timed(
    channel: grpc.aio.Channel,
    kinds: Sequence[str],
    asks: list[job_service_pb2.CreateJobRequest],
    n: int,
    handler_s: float,
) -> tuple[_Run, float]:
    """``n`` workers of each of ``kinds`` (and one of the finalize kind) work the jobs ``asks`` make (a
    job in ``after`` is each one's predecessor when its after_mode is set); the run and its seconds from
    the first CreateJob to the last regular chunk's completion."""
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    run = _Run()
    tasks = await _workers(channel, list(kinds), n, handler_s, run)
    tasks += await _workers(channel, [FINAL], 1, handler_s, run)
    started = time.monotonic()
    made: list[str] = []
    for ask in asks:
        if ask.after_mode and made:
            ask.after.append(made[-1])
        made.append((await stub.CreateJob(ask, timeout=TIMEOUT)).job.id)
    for job_id in made:
        await _until_done(stub, job_id)
    took = max(run.completed) - started
    run.stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return run, took


async def _measure(address: str, chunks: int, workers: int, handler_s: float) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        # Baseline: one stage alone.
        base, stage_s = await _timed(
            channel, STAGES[:1], _jobs(STAGES[:1], chunks, False), workers, handler_s
        )
        # The machine's floor: the three stages' jobs at once with no dependency, the same workers busy.
        together, together_s = await _timed(channel, STAGES, _jobs(STAGES, chunks, False), workers, handler_s)
        asks = _jobs(STAGES, chunks, True)
        for ask in asks[1:]:
            ask.after_mode = job_pb2.DEPENDENCY_MODE_PER_CHUNK
        run, wall_s = await _timed(channel, STAGES, asks, workers, handler_s)
    if run.final_claimed is None:
        raise RuntimeError("the finalize chunk was never claimed")
    cycle_s = statistics.median(base.claim_rtts)
    # Each dependant chunk's claim after its predecessor's completion came back (the hop a dependency
    # adds), over stages 2 and 3.
    hops = [
        run.claimed_at[(kind, i)] - run.done_at[(before, i)]
        for before, kind in itertools.pairwise(STAGES)
        for i in range(chunks)
        if (kind, i) in run.claimed_at and (before, i) in run.done_at
    ]
    return {
        "chunks": chunks,
        "workers_per_stage": workers,
        "handler_ms": handler_s * 1e3,
        "stage_ms": stage_s * 1e3,
        "together_ms": together_s * 1e3,
        "pipeline_ms": wall_s * 1e3,
        "limit_ms": (1.1 * stage_s + 2 * handler_s) * 1e3,
        "finalize_after_ms": (run.final_claimed - max(run.completed)) * 1e3,
        "claim_cycle_ms": cycle_s * 1e3,
        # CompleteChunk round trips, p50 and p99, of the three stages at once and of the pipeline.
        "complete_together_ms": [percentile(together.complete_rtts, p) * 1e3 for p in (50, 99)],
        "complete_pipeline_ms": [percentile(run.complete_rtts, p) * 1e3 for p in (50, 99)],
        "hop_ms": [percentile(hops, p) * 1e3 for p in (10, 50, 90, 99)],
    }


def goals(results: dict[str, Any]) -> list[report.Goal]:
    out = []
    for kind, r in results.items():
        what = f"{kind}: 3-stage PER_CHUNK pipeline wall time (one stage {r['stage_ms']:.0f} ms)"
        out.append(report.Goal(what, r["pipeline_ms"], False, r["limit_ms"], r["stage_ms"], "ms"))
        cycle = r["claim_cycle_ms"]
        what = f"{kind}: finalize claimed after the last chunk completed (claim cycle {cycle:.1f} ms)"
        out.append(
            report.Goal(
                what, r["finalize_after_ms"], False, r["claim_cycle_ms"], r["claim_cycle_ms"] / 2, "ms"
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = report.arguments("pipeline", __doc__, "20 chunks a stage; no figures written").parse_args(argv)
    chunks = 20 if args.quick else report.env_size("JOBPULSE_BENCH_PIPELINE_CHUNKS", 100)
    workers = report.env_size("JOBPULSE_BENCH_PIPELINE_WORKERS", 10)
    handler_s = report.env_size("JOBPULSE_BENCH_PIPELINE_HANDLER_MS", 50) / 1e3

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for kind in ("sqlite", "postgresql"):
            async with procs.database(kind, "pipeline") as url:
                with procs.Jobpulse(url, http=False) as server:
                    report.log(f"{kind}: {chunks} chunks a stage, {workers} workers a stage")
                    results[kind] = await _measure(server.address, chunks, workers, handler_s)
        return results

    results = asyncio.run(run())
    lines = [
        f"{kind}: one stage {r['stage_ms']:.0f} ms; the three stages at once, no dependency "
        f"{r['together_ms']:.0f} ms; pipeline {r['pipeline_ms']:.0f} ms (limit "
        f"{r['limit_ms']:.0f} ms); finalize claimed {r['finalize_after_ms']:.1f} ms after the last chunk "
        f"(claim cycle {r['claim_cycle_ms']:.1f} ms); a dependant chunk claimed after its predecessor "
        f"completed: p10/p50/p90/p99 {' / '.join(f'{x:.1f}' for x in r['hop_ms'])} ms"
        for kind, r in results.items()
    ]
    text = "\n".join(lines + report.targets("targets", goals(results)))
    return report.publish(results, text, args.json, "" if args.quick else "pipeline", goals(results))
