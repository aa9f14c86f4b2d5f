"""Fair share between owners (setting fair_share = owner, the default), on SQLite and on PostgreSQL.

Two owners (an API key each) and WORKERS workers (a worker key) that spend HANDLER_MS on each chunk, then
complete it and claim the next in the same call (complete-and-claim).

- **A small job behind a big one.** Owner A has one job of BIG chunks being worked; owner B makes a
  one-chunk job every 50 ms for SECONDS. B's wait: from its CreateJob's answer to the claim of its chunk.
  Baseline: the same B jobs on an idle server (the workers waiting with ``wait``, woken by the commit).
  Target: B's p99 at most one claim cycle above the idle p99 (a cycle: a worker's time from one claim to
  its next, median, under the load).
- **Two busy owners.** A and B each have one job of BIG chunks; the workers run for SECONDS. Target: each
  owner gets 50% +- 5% of the claims.

Sizes: JOBPULSE_BENCH_FAIRNESS_BIG (20,000; --quick 2,000), _SECONDS (10; --quick 2), _WORKERS (4),
_HANDLER_MS (5).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import procs, report
from bench.load import percentile
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc
from jobpulse_server.services.keys import create_key
from jobpulse_server.store.database import SqlStore

KIND = "bench-fair"
SPACING = 0.05  # seconds between two of B's small jobs
TIMEOUT = 30.0
SHARE_TOLERANCE = 0.05


async def _keys(url: str) -> dict[str, str]:
    """Migrates the database and makes the keys: owners a and b, the workers' pool."""
    db = SqlStore(url)
    await db.start()
    try:
        return {
            n: await create_key(db, n, r) for n, r in (("a", "client"), ("b", "client"), ("pool", "worker"))
        }
    finally:
        await db.close()


def _as(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


class Pool:
    """WORKERS complete-and-claim loops: who got what (job id -> claim times) and each loop's cycles."""

    def __init__(self, channel: grpc.aio.Channel, key: str, workers: int, handler_s: float) -> None:
        self.handler_s = handler_s
        self.stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.meta = _as(key)
        self.claimed: dict[str, list[float]] = {}
        self.cycles: list[float] = []
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._loop(f"w{n}")) for n in range(workers)]

    async def _loop(self, worker_id: str) -> None:
        wait = duration_pb2.Duration(nanos=200_000_000)
        ask = worker_service_pb2.ClaimChunksRequest(
            worker_id=worker_id, kinds=[KIND], max_chunks=1, wait=wait
        )
        claims = list((await self.stub.ClaimChunks(ask, timeout=TIMEOUT, metadata=self.meta)).claims)
        last = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            for c in claims:
                self.claimed.setdefault(c.job_id, []).append(time.time())
                self.cycles.append(now - last)
            last = now
            if not claims:
                claims = list((await self.stub.ClaimChunks(ask, timeout=TIMEOUT, metadata=self.meta)).claims)
                continue
            (c,) = claims
            await asyncio.sleep(self.handler_s)  # the work
            done = worker_service_pb2.CompleteChunkRequest(
                chunk_id=c.chunk.id, lease_token=c.lease_token, claim_next=ask
            )
            claims = list((await self.stub.CompleteChunk(done, timeout=TIMEOUT, metadata=self.meta)).claims)
        # Stopped: what it holds is completed, not left running (an owner's running count till its lease).
        for c in claims:
            done = worker_service_pb2.CompleteChunkRequest(chunk_id=c.chunk.id, lease_token=c.lease_token)
            await self.stub.CompleteChunk(done, timeout=TIMEOUT, metadata=self.meta)

    async def close(self) -> None:
        """Stops the loops; a loop that failed (an error answer) fails the run, named."""
        self.stop.set()
        for outcome in await asyncio.gather(*self.tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise RuntimeError(f"a worker loop failed: {outcome}") from outcome


async def _create(stub: Any, key: str, items: int) -> str:
    new = job_service_pb2.CreateJobRequest(kind=KIND, total_items=items, chunk_size=1)
    return str((await stub.CreateJob(new, timeout=TIMEOUT, metadata=_as(key))).job.id)


async def _small_jobs(stub: Any, keys: dict[str, str], pool: Pool, seconds: float) -> list[float]:
    """B's one-chunk jobs every SPACING for ``seconds``; each one's wait for its claim, in seconds."""
    made: dict[str, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job_id = await _create(stub, keys["b"], 1)
        made[job_id] = time.time()
        await asyncio.sleep(SPACING)
    deadline = time.monotonic() + TIMEOUT
    while not all(j in pool.claimed for j in made):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(j not in pool.claimed for j in made)} of B's jobs were never claimed")
        await asyncio.sleep(0.01)
    return [pool.claimed[j][0] - t for j, t in made.items()]


async def _measure(
    address: str, keys: dict[str, str], big: int, seconds: float, workers: int, handler_s: float
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        pool = Pool(channel, keys["pool"], workers, handler_s)
        try:
            idle = await _small_jobs(stub, keys, pool, seconds)
            first_a = await _create(stub, keys["a"], big)
            await asyncio.sleep(0.5)  # the workers busy on A's job
            before = len(pool.cycles)
            loaded = await _small_jobs(stub, keys, pool, seconds)
            cycle = statistics.median(pool.cycles[before:])
            got = job_service_pb2.GetJobRequest(job_id=first_a)
            left = (await stub.GetJob(got, timeout=TIMEOUT, metadata=_as(keys["a"]))).job.chunks_summary
            if left.pending == 0:
                raise RuntimeError("A's job drained before B's last small job: make it bigger")
        finally:
            await pool.close()
        # Two busy owners: a big job each (A has what is left of its first one too).
        big_a = await _create(stub, keys["a"], big)
        await _create(stub, keys["b"], big)
        pool = Pool(channel, keys["pool"], workers, handler_s)
        try:
            await asyncio.sleep(seconds)
        finally:
            await pool.close()
        # A's claims: of its big job and of what was left of its first one.
        a_n = sum(len(pool.claimed.get(j, [])) for j in (first_a, big_a))
        b_n = sum(len(times) for j, times in pool.claimed.items() if j not in (first_a, big_a))
    return {
        "idle_p99_ms": percentile(idle, 99) * 1e3,
        "loaded_p99_ms": percentile(loaded, 99) * 1e3,
        "cycle_ms": cycle * 1e3,
        "over_idle_in_cycles": (percentile(loaded, 99) - percentile(idle, 99)) / cycle,
        "small_jobs": len(loaded),
        "share_a": a_n / max(1, a_n + b_n),
        "claims": a_n + b_n,
    }


def goals(results: dict[str, Any]) -> list[report.Goal]:
    out = []
    for kind, r in results.items():
        what = (
            f"{kind}: B's small job, claim wait p99 above idle, in claim cycles "
            f"(idle {r['idle_p99_ms']:.1f} ms, loaded {r['loaded_p99_ms']:.1f} ms, "
            f"cycle {r['cycle_ms']:.2f} ms)"
        )
        out.append(report.Goal(what, r["over_idle_in_cycles"], False, 1.0, 0.5, "x"))
        share = f"{kind}: two busy owners, how far A's share of {r['claims']:,} claims is from 50%"
        out.append(report.Goal(share, abs(r["share_a"] - 0.5), False, SHARE_TOLERANCE, 0.01, ""))
    return out


def main(argv: list[str] | None = None) -> int:
    args = report.arguments("fairness", __doc__, "2,000 chunks, 2 s a row; no figures written").parse_args(
        argv
    )
    big = 2_000 if args.quick else report.env_size("JOBPULSE_BENCH_FAIRNESS_BIG", 20_000)
    seconds = 2.0 if args.quick else report.env_size("JOBPULSE_BENCH_FAIRNESS_SECONDS", 10, float)
    workers = report.env_size("JOBPULSE_BENCH_FAIRNESS_WORKERS", 4)
    handler_s = report.env_size("JOBPULSE_BENCH_FAIRNESS_HANDLER_MS", 5, float) / 1e3

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for kind in ("sqlite", "postgresql"):
            async with procs.database(kind, "fairness") as url:
                keys = await _keys(url)
                # Keys make the owners; their rate limits are not what this measures.
                with procs.Jobpulse(url, http=False, rate_limit_client=0, rate_limit_worker=0) as server:
                    report.log(
                        f"{kind}: {big:,}-chunk jobs, {seconds:g} s a row, {workers} workers, "
                        f"{handler_s * 1e3:g} ms a chunk"
                    )
                    results[kind] = await _measure(server.address, keys, big, seconds, workers, handler_s)
        return results

    results = asyncio.run(run())
    lines = [
        f"{kind}: B's small jobs: idle p99 {r['idle_p99_ms']:.1f} ms, "
        f"behind A's job p99 {r['loaded_p99_ms']:.1f} ms, claim cycle {r['cycle_ms']:.2f} ms; "
        f"two busy owners: A {r['share_a']:.1%} of {r['claims']:,} claims"
        for kind, r in results.items()
    ]
    text = "\n".join(lines + report.targets("targets", goals(results)))
    return report.publish(results, text, args.json, "" if args.quick else "fairness", goals(results))
