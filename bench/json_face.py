"""The JSON face (every RPC over HTTP/JSON on the HTTP port) against gRPC on the same server, same run.

    python -m bench json [--quick]

One jobpulse server on SQLite. Closed loops (JOBPULSE_BENCH_JSON_CONCURRENCY calls in flight, default
8) of GetJob (BASIC view) and ListJobs (20 jobs a page, BASIC), each over gRPC (a grpc.aio stub) and as
JSON (``GET /v1/jobs/{id}?view=JOB_VIEW_BASIC``, ``GET /v1/jobs?pageSize=20&view=JOB_VIEW_BASIC``, from
keep-alive HTTP/1.1 connections, one a lane, written and read by hand so the client costs little), in
rounds alternating the two (JOBPULSE_BENCH_JSON_ROUNDS rounds of JOBPULSE_BENCH_JSON_SECONDS seconds);
medians of the rounds, and the server's CPU per call beside them. Then the idle cost: gRPC GetJob on
this tree's server (the JSON routes loaded) against the same server of a revision without the JSON face
(``--without REV``, default the last one before it, checked out in a temporary worktree as bench.compare
does), and one with the HTTP side off, alternating.

Targets: JSON calls/s at least 0.77 of gRPC's (a JSON call costs at most 1.3x a gRPC call), GetJob and
ListJobs; gRPC GetJob with the JSON routes loaded at least 0.98 of without.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench import compare, report, scenarios
from bench.load import Call, Rate, closed_loop
from bench.procs import Jobpulse
from bench.report import Goal
from bench.watch_streams import create_job
from jobpulse.v1 import job_pb2

TARGET = 0.77
IDLE_TARGET = 0.98
# The last revision before the JSON face (its HTTP side serves SSE, the dashboard and probes only).
WITHOUT = "eda2d45"


class HttpLanes:
    """Keep-alive HTTP/1.1 connections to one port, one per lane in flight; ``get(path)`` makes a call
    that takes a free connection, sends the request and reads the response (status 200 or raises)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.all: list[asyncio.StreamWriter] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A free connection, or a new one (the flag)."""
        if self.free:
            return (*self.free.pop(), False)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.all.append(writer)
        return reader, writer, True

    def get(self, path: str) -> Call:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode()

        async def call() -> bytes:
            while True:
                reader, writer, fresh = await self._connection()
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The server closes a connection idle for its keep-alive time (5 s), as while the
                    # other side of a pair runs its round: a new one, unless this one was new.
                    writer.close()
                    if fresh:
                        raise
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            self.free.append((reader, writer))
            return body

        return call

    async def close(self) -> None:
        for writer in self.all:
            writer.close()


def _rate(rates: list[Rate]) -> dict[str, Any]:
    per_round = [r.per_second for r in rates]
    cpu = [x for r in rates if (x := r.server_cpu_us_per_call) is not None]
    return {
        "per_round": per_round,
        "median": statistics.median(per_round),
        "server_cpu_us_per_call": statistics.median(cpu) if cpu else None,
    }


async def _pairs(calls: dict[str, Call], server: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """Rounds alternating the calls' order; each call's rates, and the first's over the second's."""
    names = list(calls)
    for name in names:  # warm-up
        await closed_loop(calls[name], concurrency=sizes["concurrency"], seconds=1.0)
    rates: dict[str, list[Rate]] = {n: [] for n in names}
    for r in range(sizes["rounds"]):
        for name in names if r % 2 == 0 else names[::-1]:
            rates[name].append(
                await closed_loop(
                    calls[name], concurrency=sizes["concurrency"], seconds=sizes["seconds"], server=server
                )
            )
    out: dict[str, Any] = {n: _rate(rs) for n, rs in rates.items()}
    a, b = names
    out["ratio"] = out[a]["median"] / out[b]["median"]
    out["pair_ratios"] = [x.per_second / y.per_second for x, y in zip(rates[a], rates[b], strict=True)]
    return out


async def _json_vs_grpc(tmp: str, sizes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        server = stack.enter_context(Jobpulse(f"sqlite:///{tmp}/json.db"))
        target = await stack.enter_async_context(scenarios.Target.open(server))
        job_id = await create_job(target.channel, 10, "json-bench")
        for _ in range(30):
            await create_job(target.channel, 1, "json-bench")
        lanes = HttpLanes(server.http_port)
        stack.push_async_callback(lanes.close)
        report.log("GetJob (BASIC): JSON vs gRPC")
        out["GetJob"] = await _pairs(
            {
                "json": lanes.get(f"/v1/jobs/{job_id}?view=JOB_VIEW_BASIC"),
                "grpc": target.get_job(job_id, job_pb2.JOB_VIEW_BASIC),
            },
            server,
            sizes,
        )
        report.log("ListJobs (20, BASIC): JSON vs gRPC")
        out["ListJobs"] = await _pairs(
            {"json": lanes.get("/v1/jobs?pageSize=20&view=JOB_VIEW_BASIC"), "grpc": target.list_jobs(20)},
            server,
            sizes,
        )
    return out


async def _idle_cost(tmp: str, sizes: dict[str, Any], without: str) -> dict[str, Any]:
    """gRPC GetJob on this tree's server (HTTP side on: the JSON routes loaded) against the same server
    of revision ``without`` (HTTP side on, no JSON face), and one with the HTTP side off, alternating."""
    report.log(f"gRPC GetJob: JSON routes loaded vs {without} (no JSON face) vs HTTP side off")
    async with AsyncExitStack() as stack:
        tree, name = stack.enter_context(compare.checkout(without, Path(tmp), "without"))
        report.log(f"without the JSON face: {name}")
        calls, servers = {}, {}
        for side, settings in (
            ("on", {}),
            ("without", {"pythonpath": compare.pythonpath(tree)}),
            ("off", {"http": False}),
        ):
            server = stack.enter_context(Jobpulse(f"sqlite:///{tmp}/idle-{side}.db", **settings))
            target = await stack.enter_async_context(scenarios.Target.open(server))
            job_id = await create_job(target.channel, 10, "json-idle")
            calls[side] = target.get_job(job_id, job_pb2.JOB_VIEW_BASIC)
            servers[side] = server
        sides = list(calls)
        for side in sides:
            await closed_loop(calls[side], concurrency=sizes["concurrency"], seconds=1.0)
        rates: dict[str, list[Rate]] = {side: [] for side in sides}
        for r in range(sizes["rounds"]):
            for side in sides if r % 2 == 0 else sides[::-1]:
                rates[side].append(
                    await closed_loop(
                        calls[side],
                        concurrency=sizes["concurrency"],
                        seconds=sizes["seconds"],
                        server=servers[side],
                    )
                )
    out: dict[str, Any] = {side: _rate(rs) for side, rs in rates.items()}
    out["without_rev"] = name
    out["ratio"] = out["on"]["median"] / out["without"]["median"]
    out["ratio_off"] = out["on"]["median"] / out["off"]["median"]
    return out


def goals(results: dict[str, Any]) -> list[Goal]:
    out = []
    for rpc in ("GetJob", "ListJobs"):
        row = results["calls"][rpc]
        cpu = row["json"]["server_cpu_us_per_call"], row["grpc"]["server_cpu_us_per_call"]
        note = f"server CPU per call {cpu[0]:.0f} us JSON, {cpu[1]:.0f} us gRPC" if None not in cpu else ""
        out.append(Goal(f"{rpc} as JSON: calls/s / gRPC's", row["ratio"], True, TARGET, 1.0, "", note))
    idle = results["idle"]
    out.append(
        Goal(
            "gRPC GetJob with the JSON routes loaded: calls/s / without them",
            idle["ratio"],
            True,
            IDLE_TARGET,
            1.0,
            "",
            f"{idle['without_rev']}; HTTP side off: {idle['ratio_off']:.2f}",
        )
    )
    return out


def render(results: dict[str, Any]) -> str:
    lines = [f"jobpulse JSON face against gRPC, same server (SQLite), {results['sizes']}"]
    for rpc, row in results["calls"].items():
        for name in ("json", "grpc"):
            r = row[name]
            rounds = ", ".join(f"{x:,.0f}" for x in r["per_round"])
            cpu = r["server_cpu_us_per_call"]
            lines.append(
                f"   {rpc} {name:>4}: {r['median']:,.0f} calls/s (rounds {rounds}), server CPU {cpu:.0f} us"
            )
        pairs = ", ".join(f"{x:.2f}" for x in row["pair_ratios"])
        lines.append(f"   {rpc} JSON / gRPC: {row['ratio']:.2f} (rounds {pairs})")
    idle = results["idle"]
    on, without, off = (idle[side]["median"] for side in ("on", "without", "off"))
    lines.append(
        f"   gRPC GetJob, JSON routes loaded {on:,.0f} / without them ({idle['without_rev']}) {without:,.0f}"
        f" calls/s: {idle['ratio']:.2f}; HTTP side off {off:,.0f}: {idle['ratio_off']:.2f}"
    )
    return "\n".join(lines + report.targets("targets", goals(results)))


def main(argv: list[str] | None = None) -> int:
    parser = report.arguments("json", __doc__, "short rounds; no figures written")
    parser.add_argument(
        "--without",
        default=WITHOUT,
        help=f"a revision without the JSON face, served beside this tree (default {WITHOUT})",
    )
    args = parser.parse_args(argv)
    sizes = {
        "concurrency": report.env_size("JOBPULSE_BENCH_JSON_CONCURRENCY", 8),
        "rounds": report.env_size("JOBPULSE_BENCH_JSON_ROUNDS", 2 if args.quick else 6),
        "seconds": report.env_size("JOBPULSE_BENCH_JSON_SECONDS", 1 if args.quick else 4, float),
    }

    async def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            return {
                "sizes": sizes,
                "calls": await _json_vs_grpc(tmp, sizes),
                "idle": await _idle_cost(tmp, sizes, args.without),
            }

    results = asyncio.run(run())
    return report.publish(results, render(results), args.json, "" if args.quick else "json", goals(results))
