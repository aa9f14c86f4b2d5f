"""Two revisions of the server side by side in one run: the ListJobs latency row of ``make bench``.

    python -m bench.compare_reads --base 62c2ec0                    # this tree against 62c2ec0, SQLite
    python -m bench.compare_reads --base HEAD~1 --database postgresql --rounds 8

bench.compare's method for a read: jobpulse at ``--base`` (A) and at ``--head`` (B, default this working
tree), each in a temporary worktree served with its own code first on PYTHONPATH, and the bare grpc.aio
server, started at once; each jobpulse server gets make bench's read data (bench.seed: ``--jobs``
small jobs beside a 10-chunk and a 1,000-chunk job), then every round times ``--calls`` sequential
ListJobs (``--page-size`` BASIC, the first page: its total counted, every job's encoding kept after the
warm-up) on A and on B, in an order flipped every round, and as many bare GetJobs answering a response
of the same size. At the end: each revision's p50 and p99 against the bare call's, its server CPU a call,
and B against A.
Figures from one run only: run it alone.
"""

from __future__ import annotations

import argparse
import sys

from bench import scenarios, seed
from bench.bare import padded_get_job_response
from bench.compare import print_report, revision_parser, served
from bench.load import percentile, sequential_latencies
from bench.procs import ServerProcess
from jobpulse.v1 import job_pb2, worker_service_pb2_grpc

BARE_KEY = "compare-reads-page"


async def measure(
    args: argparse.Namespace, names: dict[str, str], servers: dict[str, ServerProcess], bare: ServerProcess
) -> str:
    targets = {side: scenarios.Target.open(server) for side, server in servers.items()}
    bare_target = scenarios.Target.open(bare)
    try:
        for t in targets.values():
            await seed.seed_read_data(t.jobs, worker_service_pb2_grpc.WorkerServiceStub(t.channel), args.jobs)
        page = await targets["A"].list_jobs(args.page_size)()
        if len(page.jobs) != args.page_size:
            raise SystemExit(f"A listed {len(page.jobs)} jobs, not {args.page_size}")
        bare.set_response(BARE_KEY, padded_get_job_response(page.ByteSize(), BARE_KEY))
        calls = {side: t.list_jobs(args.page_size) for side, t in targets.items()}
        calls["bare"] = bare_target.get_job(BARE_KEY, job_pb2.JOB_VIEW_BASIC)
        for call in calls.values():
            await sequential_latencies(call, args.warmup)
        samples: dict[str, list[float]] = {side: [] for side in calls}
        cpu = {side: 0.0 for side in servers}
        for r in range(args.rounds):
            order = ["bare", "A", "B"] if r % 2 == 0 else ["B", "A", "bare"]
            for side in order:
                server = servers.get(side)
                before = server.cpu_seconds() if server else None
                samples[side].extend(await sequential_latencies(calls[side], args.calls))
                if server is not None and before is not None:
                    cpu[side] += (server.cpu_seconds() or before) - before
            print(
                f"round {r + 1}/{args.rounds}: p50 so far "
                + ", ".join(f"{s} {percentile(samples[s], 50) * 1e3:.3f} ms" for s in ("bare", "A", "B")),
                flush=True,
            )
    finally:
        for t in [*targets.values(), bare_target]:
            await t.channel.close()
    bare_p50, bare_p99 = percentile(samples["bare"], 50), percentile(samples["bare"], 99)
    out = [
        f"ListJobs {args.page_size} BASIC of {args.jobs:,} jobs, {args.rounds} rounds x {args.calls:,} "
        f"sequential calls a server; bare p50 {bare_p50 * 1e3:.3f} ms, p99 {bare_p99 * 1e3:.3f} ms "
        f"(GetJob answering {page.ByteSize():,} B)"
    ]
    p50 = {}
    for side in ("A", "B"):
        s = samples[side]
        p50[side] = percentile(s, 50)
        out.append(
            f"{side}: {names[side]}: p50 {p50[side] * 1e3:.3f} ms = {p50[side] / bare_p50:.2f}x bare, "
            f"p99 {percentile(s, 99) / bare_p99:.2f}x, server CPU {cpu[side] / len(s) * 1e6:,.0f} us a call"
        )
    out.append(f"B / A p50: {p50['B'] / p50['A']:.3f}")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> str:
    async with served(args, "jobpulse-compare-reads-") as (names, a, b, bare):
        return await measure(args, names, {"A": a, "B": b}, bare)


def main(argv: list[str] | None = None) -> int:
    p = revision_parser("python -m bench.compare_reads", __doc__)
    p.add_argument("--jobs", type=int, default=2_000, help="jobs to list (default 2,000, as make bench)")
    p.add_argument("--page-size", type=int, default=20)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=1_500, help="sequential calls a server and round")
    p.add_argument("--warmup", type=int, default=300)
    args = p.parse_args(argv)
    if min(args.rounds, args.calls, args.page_size) < 1 or args.jobs < args.page_size:
        p.error("--rounds, --calls and --page-size must be at least 1, --jobs at least --page-size")
    return print_report("bench.compare_reads", run(args))


if __name__ == "__main__":
    sys.exit(main())
