"""A soak: a mixed load for a while against a server on default settings, its RSS sampled all along.

    python -m bench soak [--seconds 600] [--databases sqlite,postgresql]

The server runs as users run it (``python -m jobpulse_server``, its own process). The load, over real
channels: jobs created (20 chunks each, held to a steady 2,000 chunks to do), workers completing with
claim_next, GetJob FULL and BASIC, ListJobs in several orders and filters, WatchJob streams following
recent jobs to their end, BatchGetJobs. RSS is sampled every ``--sample`` seconds beside the encoded-job
cache's own byte count (/metrics). Targets per database: RSS growth over the last half (least-squares
slope) <= 3%, peak within start + 1.5 x cache bytes + 32 MiB, no error at all.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench import figures, procs, report
from bench.procs import metric_values
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2
from jobpulse.v1 import worker_service_pb2_grpc as worker_grpc
from jobpulse_server.platform.config import Config

KIND = "soak"
CHUNKS_PER_JOB = 20
BACKLOG = 2_000
MIB = 1024 * 1024
GROWTH_LIMIT = 0.03


def cache_bytes(http_port: int) -> float | None:
    """The encoded-job cache's own count of its bytes, from the server's /metrics (None if unreadable)."""
    found = metric_values(http_port, {"jobpulse_encoded_cache_bytes"})
    return None if found is None else found["jobpulse_encoded_cache_bytes"]


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS), or one of its parts (RssAnon: the heap, not file pages)."""
    return procs.status_kib(pid, field) * 1024


@dataclass
class Load:
    """What the load did, shared by its tasks."""

    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    recent: list[str] = field(default_factory=list)  # ids of the newest jobs, newest last
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Chunks created and not yet completed: the creator waits while there are BACKLOG of them, so the
    # load is a steady one (work done as fast as it comes), not a queue growing for as long as it runs.
    backlog: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, name: str, coro: Awaitable[Any]) -> Any:
        try:
            result = await coro
        except grpc.aio.AioRpcError as exc:
            self.errors[f"{name} {exc.code().name}"] += 1
            return None
        self.ops[name] += 1
        return result

    def remember(self, job_id: str) -> None:
        self.recent.append(job_id)
        del self.recent[:-500]

    def some_job(self, rng: random.Random) -> str | None:
        return rng.choice(self.recent) if self.recent else None


async def _creator(load: Load, jobs: job_service_pb2_grpc.JobServiceStub, rng: random.Random) -> None:
    while not load.stop.is_set():
        name, team = f"soak job {rng.randrange(10**6)}", rng.choice(["a", "b", "c"])
        req = job_service_pb2.CreateJobRequest(kind=KIND, total_items=CHUNKS_PER_JOB, display_name=name)
        req.chunk_size, req.labels["team"], req.priority = 1, team, rng.randrange(11)
        while load.backlog >= BACKLOG and not load.stop.is_set():
            load.room.clear()
            await load.room.wait()
        made = await load.call("CreateJob", jobs.CreateJob(req, timeout=30))
        if made is not None:
            load.remember(made.job.id)
            load.backlog += CHUNKS_PER_JOB
        await asyncio.sleep(0.02)


async def _worker(load: Load, workers: worker_grpc.WorkerServiceStub, name: str) -> None:
    ask = worker_service_pb2.ClaimChunksRequest(worker_id=name, kinds=[KIND], max_chunks=1)
    claims: list[Any] = []
    while not load.stop.is_set():
        if not claims:
            got = await load.call("ClaimChunks", workers.ClaimChunks(ask, timeout=30))
            claims = list(got.claims) if got is not None else []
            if not claims:
                await asyncio.sleep(0.05)
                continue
        claim = claims.pop()
        req = worker_service_pb2.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token)
        req.claim_next.CopyFrom(ask)
        done = await load.call("CompleteChunk", workers.CompleteChunk(req, timeout=30))
        if done is not None:
            claims.extend(done.claims)
            load.backlog -= 1
            if load.backlog < BACKLOG:
                load.room.set()


async def _reader(load: Load, jobs: job_service_pb2_grpc.JobServiceStub, rng: random.Random) -> None:
    orders = ["create_time desc", "update_time desc", "priority desc", "create_time"]
    while not load.stop.is_set():
        job_id = load.some_job(rng)
        if job_id is None:
            await asyncio.sleep(0.05)
            continue
        view = rng.choice([job_pb2.JOB_VIEW_FULL, job_pb2.JOB_VIEW_BASIC])
        get = job_service_pb2.GetJobRequest(job_id=job_id, view=view)
        await load.call("GetJob", jobs.GetJob(get, timeout=30))
        listing = job_service_pb2.ListJobsRequest(page_size=20, order_by=rng.choice(orders))
        if rng.random() < 0.3:
            listing.labels["team"] = rng.choice(["a", "b", "c"])
        page = await load.call("ListJobs", jobs.ListJobs(listing, timeout=30))
        if page is not None and page.next_page_token:
            listing.page_token = page.next_page_token
            await load.call("ListJobs", jobs.ListJobs(listing, timeout=30))
        ids = [j for j in (load.some_job(rng) for _ in range(10)) if j]
        batch = job_service_pb2.BatchGetJobsRequest(job_ids=ids)
        await load.call("BatchGetJobs", jobs.BatchGetJobs(batch, timeout=30))


async def _watcher(load: Load, jobs: job_service_pb2_grpc.JobServiceStub, rng: random.Random) -> None:
    while not load.stop.is_set():
        job_id = load.some_job(rng)
        if job_id is None:
            await asyncio.sleep(0.05)
            continue
        stream = jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=60)
        try:
            async for _ in stream:
                load.ops["WatchJob message"] += 1
                if load.stop.is_set():
                    stream.cancel()
                    break
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                load.errors[f"WatchJob {exc.code().name}"] += 1
        except asyncio.CancelledError:
            stream.cancel()
            raise


@dataclass
class Result:
    database: str
    seconds: float
    samples: list[tuple[float, int]]
    ops: Counter[str]
    errors: Counter[str]
    start: int
    peak: int
    growth: float
    peak_limit: int
    # The growth of RSS less the encoded-job cache's own bytes: what is left once the cache, which fills
    # to its budget by design, is set aside (None if /metrics could not be read at every sample).
    growth_besides_cache: float | None = None


def _growth(samples: list[tuple[float, int]]) -> float:
    """RSS growth over the last half: the least-squares slope there, times its length, over its start."""
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    if len(half) < 2:
        return 0.0
    slope = statistics.linear_regression([t for t, _ in half], [r for _, r in half]).slope
    return slope * (half[-1][0] - half[0][0]) / half[0][1]


async def soak(database: str, seconds: float, sample: float, say: Callable[[str], None]) -> Result:
    rng = random.Random(7)
    async with procs.database(database, "soak") as url:
        with procs.Jobpulse(url) as server:
            http_port, pid = server.http_port, server.pid
            start = rss_bytes(pid)
            load = Load()
            async with grpc.aio.insecure_channel(server.address) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                workers = worker_grpc.WorkerServiceStub(channel)
                loads = [_worker(load, workers, f"w{i}") for i in range(4)]
                for role, n in ((_creator, 1), (_reader, 2), (_watcher, 20)):
                    loads += [role(load, jobs, random.Random(rng.random())) for _ in range(n)]
                tasks = [asyncio.create_task(coro) for coro in loads]
                t0 = time.monotonic()
                samples = [(0.0, start)]
                besides: list[tuple[float, int]] | None = [(0.0, start)]
                head = ["t (s)", "RSS MiB", "anon MiB", "cache MiB", "ops", "errors"]
                say("  " + " ".join(h.rjust(w) for h, w in zip(head, (6, 9, 9, 9, 9, 7), strict=True)))
                anon = rss_bytes(pid, "RssAnon")
                say(f"  {0:>6.0f} {start / MIB:>9.1f} {anon / MIB:>9.1f} {0:>9.1f} {0:>9,} {0:>7}")
                while (elapsed := time.monotonic() - t0) < seconds:
                    await asyncio.sleep(min(sample, seconds - elapsed))
                    t = time.monotonic() - t0
                    rss, anon = rss_bytes(pid), rss_bytes(pid, "RssAnon")
                    samples.append((t, rss))
                    ops, errors = sum(load.ops.values()), sum(load.errors.values())
                    cached = await asyncio.to_thread(cache_bytes, http_port)
                    shown = f"{cached / MIB:>9.1f}" if cached is not None else f"{'?':>9}"
                    if besides is not None:
                        besides = None if cached is None else [*besides, (t, rss - int(cached))]
                    say(f"  {t:>6.0f} {rss / MIB:>9.1f} {anon / MIB:>9.1f} {shown} {ops:>9,} {errors:>7}")
                load.stop.set()
                load.room.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    limit, peak = start + int(1.5 * Config().encoded_cache_bytes) + 32 * MIB, max(r for _, r in samples)
    rest = _growth(besides) if besides is not None else None
    growth = _growth(samples)
    return Result(database, seconds, samples, load.ops, load.errors, start, peak, growth, limit, rest)


def main(argv: list[str] | None = None) -> int:
    p = report.parser("soak", __doc__)
    p.add_argument("--seconds", type=float, default=600.0, help="how long each database is soaked (600)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples (10)")
    p.add_argument("--databases", default="sqlite,postgresql", help="which, comma-separated")
    args = p.parse_args(argv)

    say = functools.partial(print, flush=True)
    say(f"soak: {args.seconds:.0f} s per database, RSS every {args.sample:.0f} s; {report.machine_facts()}")
    results = []
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        say(f"{database}:")
        results.append(asyncio.run(soak(database, args.seconds, args.sample, say)))
    verdicts = [r.growth <= GROWTH_LIMIT and r.peak <= r.peak_limit and not r.errors for r in results]
    for r in results:
        rate = sum(r.ops.values()) / r.seconds
        besides = r.growth_besides_cache
        rest = "" if besides is None else f"; RSS less the encoded-job cache: {besides:+.1%}"
        say(
            f"{r.database}: {rate:,.0f} ops/s ({', '.join(f'{k} {v:,}' for k, v in r.ops.most_common())}); "
            f"RSS {r.start / MIB:.1f} -> peak {r.peak / MIB:.1f} MiB (limit {r.peak_limit / MIB:.1f}); "
            f"growth over the last half {r.growth:+.1%} (limit {GROWTH_LIMIT:.0%}{rest}); "
            f"errors: {dict(r.errors) or 'none'}"
        )
    each = "; ".join(
        f"{r.database} {'ok' if ok else 'over'}" for r, ok in zip(results, verdicts, strict=True)
    )
    say(f"verdict: {'PASS' if all(verdicts) else 'FAIL'} ({each})")
    if args.seconds >= 600 and args.sample <= 10:  # a full soak: its figures are the table's current ones
        figures.record("soak", [soak_goal(r) for r in results])
    return 0 if all(verdicts) else 1


def soak_goal(r: Result) -> report.Goal:
    note = f"peak {r.peak / MIB:.0f} MiB, limit {r.peak_limit / MIB:.0f}"
    note += f"; errors {sum(r.errors.values())}" if r.errors else ""
    what = f"{r.database}: RSS growth over the last half"
    return report.Goal(what, r.growth, False, GROWTH_LIMIT, 0.0, "%", note=note)
