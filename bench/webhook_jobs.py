"""Worker throughput on jobs with webhooks against the same work on jobs without: each worker row drains
one set of jobs three ways (no webhook; a webhook; a webhook with job.progress events), alternating
round by round in one run, and the ratio to the jobs without webhooks is printed per row.

    python -m bench.webhook_jobs                          # PostgreSQL, 3 rounds of 4,000 chunks a row
    python -m bench.webhook_jobs --database sqlite --rounds 1
    python -m bench.webhook_jobs --pythonpath /tmp/wt/service:/tmp/wt/client   # another checkout's server

Webhooks are how a job's owner hears that it ended, so a job with one must not work slower. The jobs
(``--jobs`` of them, ``--chunks`` one-item chunks in all) post to a receiver in this process that
answers 204; a job's end makes one event, and with progress events one more every
``webhook_progress_interval`` (the server's default, 5 s) while it runs. ``--workers`` workers drain
them (bench.work's modes, claiming any kind). Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import work
from bench.pg_peer import fresh_database, postgres_cpu_seconds
from bench.procs import ServerProcess
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)
SECRET = "whsec_" + "YmVuY2ggd2ViaG9va3Mgc2lnbmluZyBrZXkhIQ=="
# (name, webhook, progress events)
HOOKS = (("no webhook", False, False), ("webhook", True, False), ("webhook + progress", True, True))


@contextmanager
def receiver() -> Iterator[tuple[str, list[int]]]:
    """An HTTP receiver on 127.0.0.1 that answers every POST 204: its URL and a one-item list counting
    the posts."""
    posts = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts[0] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", posts
    finally:
        httpd.shutdown()
        httpd.server_close()


@asynccontextmanager
async def database(kind: str, tag: str) -> AsyncIterator[str]:
    if kind == "postgresql":
        async with fresh_database(tag) as dsn:
            yield dsn
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'jobpulse.db'}"


async def row(
    mode: work.Mode, hook: tuple[str, bool, bool], url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One drain on a fresh database: chunks/s and the CPU per chunk of the server (and PostgreSQL)."""
    name, webhook, progress = hook
    async with database(args.database, "hooks") as db:
        server = ServerProcess(
            "jobpulse", db, pythonpath=args.pythonpath, env={"JOBPULSE_WEBHOOK_SECRET": SECRET}
        )
        try:
            server.wait_ready()
            async with grpc.aio.insecure_channel(server.target) as channel:
                jobs = job_service_pb2_grpc.JobServiceStub(channel)
                stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
                for n in range(args.jobs):
                    await jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(
                            display_name=f"hooks {n}",
                            kind="hooks",
                            total_items=args.chunks // args.jobs,
                            chunk_size=1,
                            webhook_url=url if webhook else "",
                            webhook_progress=progress,
                        ),
                        timeout=TIMEOUT,
                    )
                counts = [work.Counts() for _ in range(args.workers)]
                pg = args.database == "postgresql"
                cpu0, db0 = server.cpu_seconds(), postgres_cpu_seconds() if pg else None
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(
                        work.worker(
                            stub,
                            mode,
                            worker_id=f"hooks-{w}",
                            lease=LEASE,
                            keep_going=lambda: True,
                            counts=counts[w],
                            timeout=TIMEOUT,
                        )
                        for w in range(args.workers)
                    )
                )
                elapsed = time.perf_counter() - t0
                cpu1, db1 = server.cpu_seconds(), postgres_cpu_seconds() if pg else None
        finally:
            server.stop()
    done = sum(c.chunks for c in counts)
    expected = (args.chunks // args.jobs) * args.jobs
    if done != expected:
        raise RuntimeError(f"{mode.key}, {name}: drained {done} of {expected} chunks")
    return {
        "per_second": done / elapsed,
        "server_us": (cpu1 - cpu0) * 1e6 / done if cpu0 is not None and cpu1 is not None else None,
        "db_us": (db1 - db0) * 1e6 / done if db0 is not None and db1 is not None else None,
    }


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


async def run(args: argparse.Namespace) -> list[str]:
    lines = [
        f"# Worker throughput, jobs with webhooks / without ({args.database}; {args.chunks:,} chunks in "
        f"{args.jobs} jobs, {args.workers} workers, {args.rounds} rounds alternating, medians)",
        "",
        "| mode | jobs | chunks/s | server CPU us/chunk | PostgreSQL CPU us/chunk | / no webhook |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with receiver() as (url, posts):
        for key in args.modes:
            mode = work.MODES[key]
            got: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in HOOKS}
            for r in range(args.rounds):
                for hook in HOOKS:
                    one = await row(mode, hook, url, args)
                    got[hook[0]].append(one)
                    print(
                        f"  {key}, {hook[0]}, round {r + 1}: {one['per_second']:,.0f} chunks/s",
                        file=sys.stderr,
                    )
            base = statistics.median(x["per_second"] for x in got[HOOKS[0][0]])
            for name, _, _ in HOOKS:
                rows = got[name]
                rate = statistics.median(x["per_second"] for x in rows)
                server = [x["server_us"] for x in rows if x["server_us"] is not None]
                db = [x["db_us"] for x in rows if x["db_us"] is not None]
                lines.append(
                    f"| {mode.label} | {name} | {rate:,.0f} | "
                    f"{_us(statistics.median(server) if server else None)} | "
                    f"{_us(statistics.median(db) if db else None)} | {rate / base:.2f} |"
                )
        lines += ["", f"The receiver took {posts[0]:,} posts."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--chunks", type=int, default=4_000, help="one-item chunks per row (default 4,000)")
    parser.add_argument("--jobs", type=int, default=10, help="jobs they are split over (default 10)")
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
