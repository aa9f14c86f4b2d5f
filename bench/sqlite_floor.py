"""What a SQLite complete-and-claim costs below gRPC: the service and the store alone, in this process.

    python -m bench.sqlite_floor              # 3 rounds of 5 s
    python -m bench.sqlite_floor --seconds 2 --rounds 1

``workers`` coroutines on one event loop drive ``WorkerService`` as the servicer does (one
ClaimChunks, then CompleteChunk with claim_next, one chunk at a time), on a SQLite file, wired as
``app.create_server`` wires it (change hub, outbox, metrics), with no server, no channel and no
access log. Beside it, in the same run and process, a bare grpc.aio server answering a fixed GetJob
response to the same number of callers (``bench.scenarios``' bare server is in a process of its own;
here both are in this one, so the CPU figures add up). The floor of a complete-and-claim through
the server is about the two costs added: the store and service's CPU per chunk plus the bare call's.
The ratio it allows against bare calls/s is printed beside the issue's target (0.4).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench import scenarios
from bench.procs import ServerProcess
from bench.run_all import BARE_SMALL_BASIC
from jobpulse.v1 import job_pb2
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import ClaimRequest, Completion
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.database import SqlStore

KIND = "floor"
LEASE_US = 3_600 * 1_000_000


def _cpu() -> float:
    return time.process_time()


async def store_floor(path: Path, workers: int, seconds: float, backlog: int) -> tuple[float, float]:
    """(chunks/s, CPU us per chunk) of complete-and-claim on the service and store alone."""
    config = Config(database_url=f"sqlite:///{path}")
    hub = ChangeHub()
    store = SqlStore(config.database_url, on_commit=hub.publish)
    await store.start()
    try:
        outbox = Outbox(lambda *_: b"", 0)
        metrics = Metrics()
        service = WorkerService(store, hub, outbox, config, metrics=metrics)
        jobs = JobService(store, outbox, config)
        await jobs.create_job(
            ANONYMOUS,
            NewJob(kind=KIND, total_items=backlog, chunk_size=1, max_attempts=3, priority=5),
        )
        done = 0
        deadline = 0.0

        async def worker(n: int) -> None:
            nonlocal done
            ask = ClaimRequest(f"floor-{n}", [KIND], 1, LEASE_US)
            claims = await service.claim(ask)
            while claims and time.perf_counter() < deadline:
                claim = claims[0]
                _, claims = await service.complete(Completion(claim.chunk.id, claim.lease_token, []), ask)
                done += 1
                # A SQLite call never suspends on the loop: without this turn the driver's log
                # truncation (a task, at WAL_LIMIT) never ran and the write-ahead log grew for the
                # whole round (760 MB in 5 s), which no server does. (The CPU per chunk was the same.)
                await asyncio.sleep(0)

        cpu0, t0 = _cpu(), time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(worker(n) for n in range(workers)))
        elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
        return done / elapsed, cpu / done * 1e6
    finally:
        await store.close()


async def bare_server(workers: int, seconds: float) -> tuple[float, float]:
    """(calls/s, server CPU us per call) of the bare grpc.aio GetJob server (``bench.bare``, a process of
    its own, as ``make bench`` runs it), ``workers`` callers."""
    bare = ServerProcess("bare")
    bare.wait_ready()
    try:
        target = scenarios.Target.open(bare)
        try:
            bare.set_response(BARE_SMALL_BASIC, job_pb2.Job(id="x" * 26, kind=KIND).SerializeToString())
            rate = await scenarios.bare_rate(
                target, bare_key=BARE_SMALL_BASIC, concurrency=workers, seconds=seconds
            )
        finally:
            await target.channel.close()
    finally:
        bare.stop()
    return rate["per_second"], rate["server_cpu_us_per_call"] or 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    rows: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="jobpulse-floor-") as tmp:
        for r in range(args.rounds):
            backlog = int(args.seconds * 4_000) + 1_000
            store_rate, store_cpu = asyncio.run(
                store_floor(Path(tmp) / f"r{r}.db", args.workers, args.seconds, backlog)
            )
            bare_rate, bare_cpu = asyncio.run(bare_server(args.workers, args.seconds))
            rows.append((store_rate, store_cpu, bare_rate, bare_cpu))
            print(
                f"round {r + 1}: service+store {store_rate:,.0f} chunks/s, {store_cpu:,.0f} us CPU a chunk; "
                f"bare grpc.aio server {bare_rate:,.0f} calls/s, {bare_cpu:,.0f} us server CPU per call",
                flush=True,
            )
    store_cpu = sorted(r[1] for r in rows)[len(rows) // 2]
    bare_rate = sorted(r[2] for r in rows)[len(rows) // 2]
    bare_cpu = sorted(r[3] for r in rows)[len(rows) // 2]
    ceiling = bare_cpu / (bare_cpu + store_cpu)
    print(
        f"median: service+store {store_cpu:,.0f} us CPU per chunk; bare server {bare_cpu:,.0f} us per call "
        f"({bare_rate:,.0f} calls/s)\n"
        f"a server doing both on its one loop: at most {ceiling:.2f} of bare calls/s (target 0.4)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
