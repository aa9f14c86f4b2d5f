"""What tracing costs a GetJob: calls/s with tracing off, and on with every call sampled, same run.

    python -m bench.tracing_overhead             # 6 rounds of 3 s per server, about 1.5 minutes
    python -m bench.tracing_overhead --quick     # smoke run, about 10 seconds

Three jobpulse server processes (SQLite, each a database of its own holding one 10-chunk job), driven
in turn, round by round, in a rotating order, by a closed loop of GetJob(BASIC) calls at a fixed
concurrency from this process:

- ``off``: no OTEL_* variables: tracing off.
- ``on``: OTEL_EXPORTER_OTLP_ENDPOINT set and OTEL_TRACES_SAMPLER=always_on: every call makes its server
  span (and the store's span when the call reads), batched and exported over OTLP/gRPC to a receiver
  in a process of its own (tests/support/otlp_receiver.py, counting what it gets).
- ``without``: the build without the instrumentation. With tracing off the server installs nothing of it
  (no interceptor, no middleware, no store hook, no log record factory: app.py), so the same code with
  tracing off *is* that build; a second ``off`` process stands for it, and off / without says what
  tracing costs when it is off (noise between two identical servers, as it should be).

Targets (issue 27): on >= 0.85 x off; off >= 0.98 x without.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.load import Rate, closed_loop
from bench.procs import ServerProcess
from bench.scenarios import Target
from jobpulse.v1 import job_pb2, job_service_pb2

TARGET_ON = 0.85
TARGET_OFF = 0.98


@dataclass
class Settings:
    rounds: int
    seconds: float
    warmup: float
    concurrency: int


FULL = Settings(rounds=6, seconds=3.0, warmup=1.0, concurrency=16)
QUICK = Settings(rounds=1, seconds=1.0, warmup=0.3, concurrency=16)

_RECEIVER = """
import sys
sys.path.insert(0, {tests!r})
from support.otlp_receiver import OtlpReceiver
receiver = OtlpReceiver(keep=False).start()
print(receiver.grpc_port, flush=True)
sys.stdin.read()
print(receiver.count, receiver.requests, flush=True)
receiver.stop()
"""


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _start_receiver() -> tuple[subprocess.Popen[str], int]:
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER.format(tests=tests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _server(name: str, tmp: str, receiver_port: int) -> ServerProcess:
    server = ServerProcess("jobpulse", f"sqlite:///{tmp}/{name}.db")
    command = server._command
    assert command is not None
    for key in list(command.env):
        if key.startswith("OTEL_"):
            del command.env[key]
    if name == "on":
        command.env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SERVICE_NAME": "jobpulse-bench",
            }
        )
    return server


async def _measure(settings: Settings, servers: dict[str, ServerProcess]) -> dict[str, Rate]:
    targets = {name: Target.open(server) for name, server in servers.items()}
    calls = {}
    for name, target in targets.items():
        job = (
            await target.jobs.CreateJob(
                job_service_pb2.CreateJobRequest(kind="bench", total_items=10, chunk_size=1), timeout=30
            )
        ).job
        calls[name] = target.get_job(job.id, job_pb2.JOB_VIEW_BASIC)
    for name in targets:
        await closed_loop(calls[name], concurrency=settings.concurrency, seconds=settings.warmup)
    totals: dict[str, Rate] = {}
    names = list(targets)
    for r in range(settings.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rate = await closed_loop(
                calls[name], concurrency=settings.concurrency, seconds=settings.seconds, server=servers[name]
            )
            totals[name] = totals[name] + rate if name in totals else rate
            _log(f"round {r + 1} {name}: {rate.per_second:,.0f} calls/s")
    for target in targets.values():
        await target.channel.close()
    return totals


def _report(totals: dict[str, Rate], exported: str) -> str:
    lines = ["GetJob(BASIC) calls/s, tracing off / on (every call sampled) / without instrumentation", ""]
    lines.append(f"{'server':<10}{'calls/s':>12}{'server CPU us/call':>22}")
    for name, rate in totals.items():
        cpu = rate.server_cpu_us_per_call
        lines.append(f"{name:<10}{rate.per_second:>12,.0f}{(f'{cpu:,.0f}' if cpu else '-'):>22}")
    on = totals["on"].per_second / totals["off"].per_second
    off = totals["off"].per_second / totals["without"].per_second
    lines += [
        "",
        f"spans received by the OTLP receiver: {exported}",
        "",
        "targets (issue 27):",
        f"  on / off      = {on:.3f}  (>= {TARGET_ON}: {'met' if on >= TARGET_ON else 'NOT met'})",
        f"  off / without = {off:.3f}  (>= {TARGET_OFF}: {'met' if off >= TARGET_OFF else 'NOT met'})",
        "  ('without' is a second server with tracing off: off installs nothing, so it is that build)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracing_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, about 10 seconds")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    receiver, port = _start_receiver()
    try:
        with tempfile.TemporaryDirectory(prefix="jobpulse-bench-tracing-") as tmp:
            servers = {name: _server(name, tmp, port) for name in ("off", "on", "without")}
            try:
                for server in servers.values():
                    server.wait_ready()
                totals = asyncio.run(_measure(settings, servers))
            finally:
                for server in servers.values():
                    server.stop()  # SIGTERM: the traced server exports what it still batches
    finally:
        out, _ = receiver.communicate("", timeout=30)
    count, requests = [*out.split(), "?", "?"][:2]
    print(_report(totals, f"{count} spans in {requests} export requests"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
