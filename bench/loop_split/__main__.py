"""Where the server's event loop thread spends its CPU time per call, layer by layer and per asyncio
callback, under one worker throughput row (bench.work.MODES).

    python -m bench.loop_split                                   # complete-and-claim on SQLite, 10 s
    python -m bench.loop_split --mode one_by_one --database postgresql

A jobpulse server runs as bench.procs runs it, with ``startup/sitecustomize.py`` loaded at start-up: it
times, on the loop's thread (``time.thread_time``), each asyncio callback, and within each call the
CallGuard as a whole, the servicer and service below it, the store's write transactions and the access
log with the RPC metrics. The counts start afresh (SIGUSR1) a few seconds into the row, once the row's
job has been created, and the server writes them when it stops. Every figure is divided by the calls
the guard saw after the fresh start (the row's closing CancelJob and GetJob are listed on lines of
their own, and add about 10 us to the callbacks' total a call). A bare grpc.aio server's loop costs
about 120 us a call on these machines (bench/README.md, "fifth pass"): the callbacks outside the guard
compare with that. Reading the thread's clock costs about a microsecond, a few times a call, and is in
the figures. The layers add up only where a call runs to its end without yielding to the loop (SQLite
on the loop): on PostgreSQL a call awaits the database while the loop runs other calls, and the thread's
clock counts their CPU too; there, read the callbacks. Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from bench import scenarios, work
from bench.procs import ServerProcess

SITE = Path(__file__).resolve().parent / "startup"


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / "split.json"
    async with _database(args.database, tmp) as url:
        server = ServerProcess(
            "jobpulse", url, pythonpath=str(SITE), env={"JOBPULSE_LOOP_SPLIT_OUT": str(out)}
        )
        try:
            await asyncio.to_thread(server.wait_ready)
            row = asyncio.ensure_future(
                scenarios.chunk_throughput(
                    server,
                    mode=work.MODES[args.mode],
                    workers=args.workers,
                    backlog=args.backlog,
                    seconds=args.seconds,
                )
            )
            await asyncio.sleep(args.settle)
            os.kill(server.pid, signal.SIGUSR1)
            result = await row
        finally:
            server.stop()
    split = json.loads(out.read_text())
    split["row"] = result
    return split


def _database(kind: str, tmp: Path) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def sqlite() -> Any:
        yield f"sqlite:///{tmp}/split.db"

    if kind == "sqlite":
        return sqlite()
    from bench.pg_peer import fresh_database  # asyncpg: the bench extra

    return fresh_database("loop_split")


def render(split: dict[str, Any], args: argparse.Namespace) -> str:
    calls: dict[str, int] = split["calls"]
    n = sum(calls.values())
    if not n:
        return "no guarded call was counted: the row ended before the counts started afresh (--settle)"
    row = split["row"]
    lines = [
        f"{args.database}, {args.mode}, {args.workers} workers: {row['chunks_per_second']:,.0f} chunks/s, "
        f"{row['server_cpu_us_per_chunk']:,.0f} us server CPU per chunk (all threads, whole row)",
        "calls counted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items())),
        "",
        "loop thread CPU per call, by layer (nested: the guard holds the rest)",
    ]
    if args.database != "sqlite":
        lines.append(
            "  (PostgreSQL: a call awaits the database, and the loop runs other calls meanwhile, whose CPU"
            " the layer's clock counts too: only the callbacks below add up)"
        )
    for name, seconds in sorted(split["layers"].items(), key=lambda kv: -kv[1]):
        method = name.split(":", 1)[0]
        per = calls.get(method, 0)
        if per:
            lines.append(f"  {seconds / per * 1e6:9.1f} us  {name}  ({per:,} calls)")
    total = sum(v[0] for v in split["callbacks"].values())
    lines += ["", f"loop thread CPU per call, by asyncio callback: {total / n * 1e6:,.1f} us in all"]
    for name, (seconds, runs) in sorted(split["callbacks"].items(), key=lambda kv: -kv[1][0])[: args.top]:
        lines.append(f"  {seconds / n * 1e6:9.1f} us  {runs / n:5.2f} runs/call  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.loop_split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=sorted(work.MODES), default="complete_and_claim")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="the row's length (default 10)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds into the row the counts restart")
    p.add_argument("--backlog", type=int, default=50_000)
    p.add_argument("--top", type=int, default=12, help="callbacks listed")
    args = p.parse_args(argv)
    if args.settle >= args.seconds:
        p.error("--settle must be shorter than --seconds")
    with tempfile.TemporaryDirectory(prefix="jobpulse-loop-split-") as tmp:
        print(render(asyncio.run(measure(args, Path(tmp))), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
