"""SQLite on the event loop's thread against SQLite on the driver's dedicated thread, in the same run.

    python -m bench.sqlite_driver            # about 2 minutes
    python -m bench.sqlite_driver --quick    # about 40 seconds

Two jobpulse servers, identical but for ``JOBPULSE_SQLITE_ON_LOOP``, each in a process of its own on a
SQLite file of its own. Rounds alternate between them. It also times the hand-off the thread mode pays
on every call (an asyncio future resolved from a worker thread), which is what the on-loop mode saves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench import report
from bench.load import Rate, closed_loop, percentile
from bench.procs import ServerProcess
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

TIMEOUT = 30.0
MODES = ("on-loop", "worker-thread")


def _log(msg: str) -> None:
    print(f"[sqlite-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def thread_hop_us(count: int = 3000) -> float:
    """Median microseconds for an asyncio task to have a worker thread resolve its future."""

    async def run() -> float:
        loop = asyncio.get_running_loop()
        inbox: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()

        def worker() -> None:
            while (fut := inbox.get()) is not None:
                loop.call_soon_threadsafe(fut.set_result, None)

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        samples = []
        for _ in range(count):
            fut = loop.create_future()
            start = time.perf_counter()
            inbox.put(fut)
            await fut
            samples.append(time.perf_counter() - start)
        inbox.put(None)
        t.join()
        return percentile(samples, 50) * 1e6

    return asyncio.run(run())


def _start(mode: str, path: str) -> ServerProcess:
    old = os.environ.get("JOBPULSE_SQLITE_ON_LOOP")
    os.environ["JOBPULSE_SQLITE_ON_LOOP"] = "true" if mode == "on-loop" else "false"
    try:  # the child reads its JOBPULSE_* environment when it starts
        server = ServerProcess("jobpulse", f"sqlite:///{path}")
    finally:
        if old is None:
            del os.environ["JOBPULSE_SQLITE_ON_LOOP"]
        else:
            os.environ["JOBPULSE_SQLITE_ON_LOOP"] = old
    server.wait_ready()
    return server


class Side:
    """One server: a job to read, and calls to measure."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(server.target)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.job_id = ""
        self.claim: Any = None
        self._n = 0

    async def seed(self) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), TIMEOUT)
        req = job_service_pb2.CreateJobRequest(kind="read", total_items=10, chunk_size=1)
        self.job_id = (await self.jobs.CreateJob(req, timeout=TIMEOUT)).job.id
        got = await self.workers.ClaimChunks(
            worker_service_pb2.ClaimChunksRequest(worker_id="b", kinds=["read"], max_chunks=1),
            timeout=TIMEOUT,
        )
        self.claim = got.claims[0]

    def get_job(self) -> Callable[[], Any]:
        req = job_service_pb2.GetJobRequest(job_id=self.job_id, view=job_pb2.JOB_VIEW_BASIC)
        return lambda: self.jobs.GetJob(req, timeout=TIMEOUT)

    def report(self) -> Callable[[], Any]:
        async def call() -> Any:
            self._n += 1
            req = worker_service_pb2.ReportChunkProgressRequest(
                chunk_id=self.claim.chunk.id, lease_token=self.claim.lease_token, stage=f"s{self._n}"
            )
            return await self.workers.ReportChunkProgress(req, timeout=TIMEOUT)

        return call

    async def claim_complete(self, workers: int, seconds: float) -> Rate:
        job = await self.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(kind="work", total_items=20_000, chunk_size=1), timeout=TIMEOUT
        )
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal done
            req = worker_service_pb2.ClaimChunksRequest(worker_id=f"w{n}", kinds=["work"], max_chunks=1)
            while time.perf_counter() < deadline:
                for claim in (await self.workers.ClaimChunks(req, timeout=TIMEOUT)).claims:
                    await self.workers.CompleteChunk(
                        worker_service_pb2.CompleteChunkRequest(
                            chunk_id=claim.chunk.id, lease_token=claim.lease_token
                        ),
                        timeout=TIMEOUT,
                    )
                    done += 1

        cpu0 = self.server.cpu_seconds()
        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(workers)))
        elapsed = time.perf_counter() - start
        cpu1 = self.server.cpu_seconds()
        await self.jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job.job.id), timeout=TIMEOUT)
        cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        return Rate(done, elapsed, cpu, 0.0)


async def measure(sides: dict[str, Side], rounds: int, seconds: float) -> dict[str, dict[str, Rate]]:
    for side in sides.values():
        await side.seed()
        await closed_loop(side.get_job(), concurrency=16, seconds=1.0)  # warm-up
    totals: dict[str, dict[str, Rate]] = {name: {} for name in sides}

    def add(name: str, what: str, rate: Rate) -> None:
        have = totals[name].get(what)
        totals[name][what] = rate if have is None else have + rate

    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            side = sides[name]
            _log(f"round {r + 1}/{rounds}: {name}")
            add(
                name,
                "getjob",
                await closed_loop(side.get_job(), concurrency=16, seconds=seconds, server=side.server),
            )
            add(
                name,
                "report",
                await closed_loop(side.report(), concurrency=4, seconds=seconds, server=side.server),
            )
            add(name, "claim_complete", await side.claim_complete(4, seconds))
    return totals


LABELS = {
    "getjob": "GetJob BASIC, 16 in flight, calls/s",
    "report": "ReportChunkProgress, 4 in flight, calls/s",
    "claim_complete": "claim + complete, 4 workers, chunks/s",
}


def render(totals: dict[str, dict[str, Rate]], hop_us: float, elapsed: float) -> str:
    m = report.machine_facts()
    lines = [
        "=" * 100,
        f"jobpulse on SQLite: statements on the event loop vs on a dedicated thread ({elapsed:.0f} s)",
        f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | grpcio {m['grpcio']}",
        f"load average {report.load_average()}",
        f"thread hand-off (asyncio future resolved from a worker thread), median: {hop_us:.0f} us",
        "-" * 100,
        f"{'measure':<44}{'on-loop':>12}{'worker-thread':>15}{'ratio':>9}   server CPU us/op (loop / thread)",
    ]
    for what, label in LABELS.items():
        a, b = totals["on-loop"][what], totals["worker-thread"][what]
        ca, cb = a.server_cpu_us_per_call, b.server_cpu_us_per_call
        cpu = f"{ca:,.0f} / {cb:,.0f}" if ca is not None and cb is not None else "n/a"
        lines.append(
            f"{label:<44}{a.per_second:>12,.0f}{b.per_second:>15,.0f}"
            f"{report._x(a.per_second / b.per_second):>9}   {cpu}"
        )
    lines.append("=" * 100)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sqlite_driver", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    args = parser.parse_args(argv)
    rounds, seconds = (2, 2.0) if args.quick else (4, 4.0)
    started = time.perf_counter()
    hop = thread_hop_us()
    with tempfile.TemporaryDirectory(prefix="jobpulse-sqlite-bench-") as tmp:
        servers = {mode: _start(mode, f"{tmp}/{mode}.db") for mode in MODES}
        try:

            async def go() -> dict[str, dict[str, Rate]]:
                sides = {name: Side(server) for name, server in servers.items()}
                try:
                    return await measure(sides, rounds, seconds)
                finally:
                    for side in sides.values():
                        await side.channel.close()

            totals = asyncio.run(go())
        finally:
            for server in servers.values():
                server.stop()
    print(render(totals, hop, time.perf_counter() - started), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
