"""The three measurements. Each returns plain dicts (seconds, counts) that report.py formats."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import work
from bench.load import Call, Rate, closed_loop, percentile, sequential_latencies
from bench.procs import Served, cpu_seconds
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

TIMEOUT = 30.0
WORK_LEASE = duration_pb2.Duration(seconds=600)
# The throughput rows' job asks for at most this many chunks running at once (0: no limit). Set above
# the workers in flight (JOBPULSE_BENCH_MAX_RUNNING_CHUNKS=1000000), the claim's control is in use and
# never binds: what a bench.compare against a revision without it measures is its cost.
WORK_MAX_RUNNING = int(os.environ.get("JOBPULSE_BENCH_MAX_RUNNING_CHUNKS", "0"))
# Kinds' controls in use (UpdateKind, before each row): "other": another kind paused and a third capped,
# neither the rows' own; "work": the rows' own kind capped far above the workers in flight. Unset: none.
WORK_KIND_CONTROLS = os.environ.get("JOBPULSE_BENCH_KIND_CONTROLS", "")
KIND_CONTROLS = {
    "": [],
    "other": [("bench-paused", True, 0), ("bench-capped", False, 5)],
    "work": [("bench-work", False, 1_000_000)],
}


# A pipeline in use (JOBPULSE_BENCH_PIPELINE=other): before each row, a job of another kind and a
# PER_CHUNK dependant of it, which holds its chunk for the whole row; both kinds are paused, since the
# rows' workers claim any kind (and a server from before dependencies, which ignores the fields, would
# hand out the dependant's chunk). Then the server's completion statements carry the freeing of held
# chunks (store/holds.py) and its claims pass over held ones, none of them the rows' own.
WORK_PIPELINE = os.environ.get("JOBPULSE_BENCH_PIPELINE", "")


async def _pipeline(jobs: job_service_pb2_grpc.JobServiceStub) -> None:
    if WORK_PIPELINE != "other":
        return
    for kind in ("bench-stage1", "bench-stage2"):
        ask = job_service_pb2.UpdateKindRequest(kind=job_service_pb2.Kind(kind=kind, paused=True))
        await jobs.UpdateKind(ask, timeout=TIMEOUT)
    first = job_service_pb2.CreateJobRequest(kind="bench-stage1", total_items=1)
    first_id = (await jobs.CreateJob(first, timeout=TIMEOUT)).job.id
    then = job_service_pb2.CreateJobRequest(kind="bench-stage2", total_items=1, after=[first_id])
    then.after_mode = job_pb2.DEPENDENCY_MODE_PER_CHUNK
    await jobs.CreateJob(then, timeout=TIMEOUT)


async def _kind_controls(jobs: job_service_pb2_grpc.JobServiceStub) -> None:
    """Sets WORK_KIND_CONTROLS' controls; a server from before UpdateKind is left as it is."""
    for kind, paused, cap in KIND_CONTROLS[WORK_KIND_CONTROLS]:
        ask = job_service_pb2.UpdateKindRequest(
            kind=job_service_pb2.Kind(kind=kind, paused=paused, max_running_chunks=cap)
        )
        try:
            await jobs.UpdateKind(ask, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise


@dataclass
class Target:
    """A server under test and a JobService stub on a channel of its own (closed by ``async with``)."""

    server: Served
    channel: grpc.aio.Channel
    jobs: job_service_pb2_grpc.JobServiceStub

    @classmethod
    def open(cls, server: Served) -> Target:
        options = [("grpc.max_receive_message_length", 32 * 1024 * 1024)]
        channel = grpc.aio.insecure_channel(server.address, options=options)
        return cls(server, channel, job_service_pb2_grpc.JobServiceStub(channel))

    async def __aenter__(self) -> Target:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    def get_job(self, job_id: str, view: int) -> Call:
        request = job_service_pb2.GetJobRequest(job_id=job_id, view=view)  # type: ignore[arg-type]
        stub = self.jobs
        return lambda: stub.GetJob(request, timeout=TIMEOUT)

    def list_jobs(self, page_size: int) -> Call:
        request = job_service_pb2.ListJobsRequest(page_size=page_size, view=job_pb2.JOB_VIEW_BASIC)
        stub = self.jobs
        return lambda: stub.ListJobs(request, timeout=TIMEOUT)


# --- 1. GetJob rate ------------------------------------------------------------------


async def getjob_rate(
    jobpulse: Target, bare: Target, keys: tuple[str, str], concurrency: int, timing: tuple[int, float, float]
) -> dict[str, Any]:
    """Closed-loop GetJob(BASIC) of ``keys`` (jobpulse's job, the bare server's key) at ``concurrency`` in
    flight, alternating servers round by round; ``timing``: rounds, seconds a round, seconds of warm-up."""
    rounds, seconds, warmup = timing
    calls = {
        "jobpulse": (jobpulse, jobpulse.get_job(keys[0], job_pb2.JOB_VIEW_BASIC)),
        "bare": (bare, bare.get_job(keys[1], job_pb2.JOB_VIEW_BASIC)),
    }
    for _target, call in calls.values():
        await closed_loop(call, concurrency=concurrency, seconds=warmup)
    totals: dict[str, Rate] = {}
    round_ratios = []
    for r in range(rounds):
        order = ["bare", "jobpulse"] if r % 2 == 0 else ["jobpulse", "bare"]
        this: dict[str, Rate] = {}
        for name in order:
            target, call = calls[name]
            this[name] = await closed_loop(
                call, concurrency=concurrency, seconds=seconds, server=target.server
            )
            totals[name] = totals[name] + this[name] if name in totals else this[name]
        round_ratios.append(this["jobpulse"].per_second / this["bare"].per_second)
    jp, bt = totals["jobpulse"], totals["bare"]
    out: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds, "seconds_per_round": seconds}
    out["round_ratios"] = round_ratios
    out |= {"jobpulse": _rate_dict(jp), "bare": _rate_dict(bt), "ratio": jp.per_second / bt.per_second}
    return out | {"server_cpu_ratio": _cpu_ratio(jp, bt)}


async def bare_rate(bare: Target, bare_key: str, concurrency: int, seconds: float) -> dict[str, Any]:
    call = bare.get_job(bare_key, job_pb2.JOB_VIEW_BASIC)
    return _rate_dict(await closed_loop(call, concurrency=concurrency, seconds=seconds, server=bare.server))


def _cpu_ratio(a: Rate, b: Rate) -> float | None:
    x, y = a.server_cpu_us_per_call, b.server_cpu_us_per_call
    return x / y if x is not None and y else None


def _rate_dict(rate: Rate) -> dict[str, Any]:
    keys = ("calls", "seconds", "per_second", "server_cpu_us_per_call", "client_cpu_us_per_call")
    return {k: getattr(rate, k) for k in keys}


# --- 2. latency ----------------------------------------------------------------------


@dataclass
class LatencyCase:
    """One jobpulse call and the bare GetJob of the same response size that is its baseline.

    ``prepare``, if set, is called (untimed) before each timed jobpulse call, e.g. to give the job a
    new revision. The server CPU of the prepare calls is measured on its own and taken off the row's.
    """

    name: str
    jobpulse: Call
    bare: Call
    response_bytes: int
    jobpulse_server: Served | None = None
    bare_server: Served | None = None
    prepare: Call | None = None


async def _timed_block(
    call: Call, count: int, server: Served | None, prepare: Call | None = None
) -> tuple[list[float], float | None]:
    """Latencies of ``count`` sequential calls, and the server CPU seconds they took (None if unknown)."""
    cpu0 = cpu_seconds(server)
    samples = await sequential_latencies(call, count, prepare=prepare)
    cpu1 = cpu_seconds(server)
    return samples, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)


async def latencies(cases: list[LatencyCase], *, calls: int, blocks: int, warmup: int) -> dict[str, Any]:
    """``calls`` sequential calls per case and server, in ``blocks`` interleaved blocks."""
    samples: dict[str, dict[str, list[float]]] = {c.name: {"jobpulse": [], "bare": []} for c in cases}
    cpu: dict[str, dict[str, float | None]] = {c.name: {"jobpulse": 0.0, "bare": 0.0} for c in cases}
    for case in cases:
        await sequential_latencies(case.jobpulse, warmup, prepare=case.prepare)
        await sequential_latencies(case.bare, warmup)
    per_block = max(1, calls // blocks)
    for b in range(blocks):
        for case in cases:
            pair = [
                ("bare", case.bare, case.bare_server, None),
                ("jobpulse", case.jobpulse, case.jobpulse_server, case.prepare),
            ]
            for name, call, server, prepare in pair if b % 2 == 0 else reversed(pair):
                got, used = await _timed_block(call, per_block, server, prepare)
                samples[case.name][name].extend(got)
                so_far = cpu[case.name][name]
                cpu[case.name][name] = so_far + used if so_far is not None and used is not None else None
    out: dict[str, Any] = {}
    for case in cases:
        row: dict[str, Any] = {"response_bytes": case.response_bytes}
        if case.prepare is not None and cpu[case.name]["jobpulse"] is not None:
            # The prepare calls alone, as many as the timed ones, for their share of the server CPU.
            n = len(samples[case.name]["jobpulse"])
            _, prep = await _timed_block(case.prepare, n, case.jobpulse_server)
            row["prepare_server_cpu_us_per_call"] = prep / n * 1e6 if prep is not None else None
            used = cpu[case.name]["jobpulse"]
            cpu[case.name]["jobpulse"] = used - prep if used is not None and prep is not None else None
        for name in ("jobpulse", "bare"):
            s = samples[case.name][name]
            used = cpu[case.name][name]
            row[name] = {"calls": len(s), "p50": percentile(s, 50), "p99": percentile(s, 99)}
            row[name]["server_cpu_us_per_call"] = used / len(s) * 1e6 if used is not None else None
        row["ratio_p50"] = row["jobpulse"]["p50"] / row["bare"]["p50"]
        row["ratio_p99"] = row["jobpulse"]["p99"] / row["bare"]["p99"]
        out[case.name] = row
    return out


# --- 3. chunk throughput -------------------------------------------------------------


async def chunk_throughput(
    target: Served, *, mode: work.Mode, workers: int, backlog: int, seconds: float
) -> dict[str, Any]:
    """``workers`` claim and complete chunks of a fresh job of ``backlog`` as ``mode`` says for ``seconds``
    (the clock runs until the last has finished what it holds); what is left is cancelled so it does not
    weigh on the next row, and the job's COMPLETED count must equal the completions counted."""
    async with grpc.aio.insecure_channel(target.address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        row: dict[str, Any] = {"mode": mode.key, "max_chunks": mode.max_chunks, "workers": workers}
        row["backlog"] = backlog
        if not await work.supported(stub, mode, TIMEOUT):
            return {**row, "unimplemented": True}
        await _kind_controls(jobs)
        await _pipeline(jobs)
        new = job_service_pb2.CreateJobRequest(kind="bench-work", total_items=backlog, chunk_size=1)
        new.max_running_chunks = WORK_MAX_RUNNING  # a server from before the field ignores it
        new.display_name = f"bench work {mode.key}"
        job = (await jobs.CreateJob(new, timeout=TIMEOUT)).job
        counts = work.Counts()
        deadline = 0.0

        def keep_going() -> bool:
            return time.perf_counter() < deadline

        cpu0 = cpu_seconds(target)
        start = time.perf_counter()
        deadline = start + seconds
        one = functools.partial(
            work.worker, stub, mode, lease=WORK_LEASE, keep_going=keep_going, timeout=TIMEOUT
        )
        await asyncio.gather(*(one(worker_id=f"bench-worker-{n}", counts=counts) for n in range(workers)))
        elapsed = time.perf_counter() - start
        cpu1 = cpu_seconds(target)
        after = await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job.id), timeout=TIMEOUT)
        # A job whose chunks are all done is COMPLETED and cannot be cancelled: its state says so, where
        # ran_dry missed the one whose last chunk completed just as the time ran out.
        if after.job.state not in (job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED):
            cancel = job_service_pb2.CancelJobRequest(job_id=job.id, reason="bench done")
            await jobs.CancelJob(cancel, timeout=TIMEOUT)
    summary = after.job.chunks_summary
    if summary.completed != counts.chunks or summary.processing:
        raise RuntimeError(
            f"{mode.key}: counted {counts.chunks} completions, the job shows {summary.completed} "
            f"COMPLETED and {summary.processing} PROCESSING"
        )
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    chunks = counts.chunks
    row |= {**counts.as_dict(), "seconds": elapsed, "chunks_per_second": chunks / elapsed}
    row["rpcs_per_second"] = counts.rpcs / elapsed
    return row | {"server_cpu_us_per_chunk": cpu / chunks * 1e6 if cpu is not None and chunks else None}
