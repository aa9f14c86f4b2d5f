"""Schedules on two replicas of one PostgreSQL database: 100 schedules every minute for 5 minutes.

    python -m bench schedules [--quick]    # quick: 20 schedules for 2 minutes, no figures written

Sizes: JOBPULSE_BENCH_SCHEDULES (default 100), JOBPULSE_BENCH_SCHEDULE_MINUTES (default 5). Two jobpulse
servers share a database of their own; the schedules (cron ``* * * * *``, a one-chunk job each) are made
on the first. On each server two claimers wait for the schedules' kind (ClaimChunks ``wait``) and
complete what they get, noting when each job's chunk came. After the last minute, in SQL: the jobs of
every (schedule, tick) from the first full minute on, by their request_id (``schedules/<id>/<tick>``).
Figures: the (schedule, tick) pairs without exactly one job (target 0), and how long after its tick each
job's chunk was first claimed, p99 and the largest (target at most 1 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2
from support import sql

from bench import procs, report
from bench.load import percentile
from bench.report import Goal
from jobpulse.v1 import (
    job_service_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

KIND = "bench-tick"
TARGET_S = 1.0
CLAIMERS = 2  # per server
TIMEOUT = 30.0


async def _claimer(address: str, worker_id: str, claimed: dict[str, float], stop: asyncio.Event) -> None:
    """Waits for chunks of KIND, notes when each job's first came, completes them; until ``stop``."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        ask = worker_service_pb2.ClaimChunksRequest(
            worker_id=worker_id, kinds=[KIND], max_chunks=50, wait=duration_pb2.Duration(seconds=2)
        )
        while not stop.is_set():
            claims = (await stub.ClaimChunks(ask, timeout=TIMEOUT)).claims
            got = time.time()
            for claim in claims:
                claimed.setdefault(claim.job_id, got)
            if claims:
                done = worker_service_pb2.CompleteChunksRequest(
                    completions=[
                        worker_service_pb2.ChunkCompletion(chunk_id=c.chunk.id, lease_token=c.lease_token)
                        for c in claims
                    ]
                )
                await stub.CompleteChunks(done, timeout=TIMEOUT)


def _tick_of(request_id: str) -> tuple[str, float] | None:
    """(schedule id, tick as a Unix time) of a tick's request_id; None for a trigger's."""
    parts = request_id.split("/")
    if len(parts) != 3 or parts[0] != "schedules":
        return None
    return parts[1], datetime.fromisoformat(parts[2].replace("Z", "+00:00")).timestamp()


async def _measure(url: str, schedules: int, minutes: int) -> dict[str, Any]:
    with (
        procs.Jobpulse(url, http=False, rate_limit_client=0).start(120) as a,
        procs.Jobpulse(url, http=False, rate_limit_client=0).start(120) as b,
    ):
        with grpc.insecure_channel(a.address) as channel:
            stub = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
            template = job_service_pb2.CreateJobRequest(kind=KIND, total_items=1)
            made = time.time()
            ids = [
                stub.CreateSchedule(
                    schedule_service_pb2.CreateScheduleRequest(
                        schedule=schedule_service_pb2.Schedule(
                            cron="* * * * *", job=template, display_name=f"bench {i}"
                        )
                    ),
                    timeout=TIMEOUT,
                ).schedule.name.removeprefix("schedules/")
                for i in range(schedules)
            ]
        # The ticks measured: the first full minute after the schedules were all made, and the next ones.
        first = (int(time.time()) // 60 + 1) * 60
        last = first + (minutes - 1) * 60
        report.log(
            f"{schedules} schedules made in {time.time() - made:.1f} s; ticks {minutes} minutes from "
            f"{datetime.fromtimestamp(first).strftime('%H:%M')}"
        )
        claimed: dict[str, float] = {}
        stop = asyncio.Event()
        claimers = [
            asyncio.create_task(_claimer(server.address, f"{tag}{n}", claimed, stop))
            for server, tag in ((a, "a"), (b, "b"))
            for n in range(CLAIMERS)
        ]
        try:
            # The last tick and its claims, with room: the run's length, not a wait for a state.
            await asyncio.sleep(max(0.0, last + 15 - time.time()))
        finally:
            stop.set()
            await asyncio.gather(*claimers, return_exceptions=True)
    rows = await asyncio.to_thread(sql.fetch, url, "SELECT id, request_id FROM jobs WHERE kind = $1", (KIND,))
    per_tick: Counter[tuple[str, float]] = Counter()
    latencies: list[float] = []
    for job_id, request_id in rows:
        tick = _tick_of(request_id or "")
        if tick is None or not first <= tick[1] <= last:
            continue
        per_tick[tick] += 1
        if job_id in claimed:
            latencies.append(claimed[job_id] - tick[1])
    expected = {(s, float(t)) for s in ids for t in range(first, last + 1, 60)}
    wrong = sum(1 for key in expected if per_tick.get(key, 0) != 1) + sum(
        1 for key in per_tick if key not in expected
    )
    unclaimed = sum(per_tick.values()) - len(latencies)
    return {
        "schedules": schedules,
        "minutes": minutes,
        "ticks_expected": len(expected),
        "jobs": sum(per_tick.values()),
        "wrong_ticks": wrong,
        "unclaimed": unclaimed,
        "claim_p50_s": percentile(latencies, 50) if latencies else None,
        "claim_p99_s": percentile(latencies, 99) if latencies else None,
        "claim_max_s": max(latencies) if latencies else None,
    }


def goals(results: dict[str, Any]) -> list[Goal]:
    r = results
    return [
        Goal(
            f"schedules: (schedule, tick) pairs without one job, {r['schedules']} x {r['minutes']} min",
            r["wrong_ticks"],
            False,
            0,
            None,
            "",
            f"{r['jobs']:,} jobs for {r['ticks_expected']:,} ticks, 2 replicas",
        ),
        Goal(
            "schedules: first claim after the tick, the largest",
            r["claim_max_s"],
            False,
            TARGET_S,
            0.5,
            "s",
            f"p50 {r['claim_p50_s']:.3f} s, p99 {r['claim_p99_s']:.3f} s",
        ),
    ]


def render(results: dict[str, Any]) -> str:
    r = results
    lines = [
        f"jobpulse schedules on 2 replicas (PostgreSQL): {r['schedules']} schedules, {r['minutes']} minutes",
        f"   {r['jobs']:,} jobs for {r['ticks_expected']:,} (schedule, tick) pairs; {r['wrong_ticks']} pairs "
        f"without exactly one job; {r['unclaimed']} jobs never claimed",
        f"   first claim after the tick: p50 {r['claim_p50_s']:.3f} s, p99 {r['claim_p99_s']:.3f} s, "
        f"largest {r['claim_max_s']:.3f} s",
    ]
    return "\n".join(lines + report.targets("targets", goals(results)))


def main(argv: list[str] | None = None) -> int:
    args = report.arguments(
        "schedules", __doc__, "20 schedules for 2 minutes; no figures written"
    ).parse_args(argv)
    schedules = 20 if args.quick else report.env_size("JOBPULSE_BENCH_SCHEDULES", 100)
    minutes = 2 if args.quick else report.env_size("JOBPULSE_BENCH_SCHEDULE_MINUTES", 5)

    async def run() -> dict[str, Any]:
        async with procs.database("postgresql", "schedules") as url:
            await procs.migrate(url)
            return await _measure(url, schedules, minutes)

    results = asyncio.run(run())
    status = report.publish(
        results, render(results), args.json, "" if args.quick else "schedules", goals(results)
    )
    return status or (0 if results["wrong_ticks"] == 0 else 1)
