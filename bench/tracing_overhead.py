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
- ``without``: the build without the instrumentation: with ``--without-rev REV`` (e.g. the commit before
  tracing came in) the server of that commit, from a git worktree of it; without the flag, a second
  ``off`` process (with tracing off nothing of it is installed: no interceptor, middleware, store hook
  or log record factory, app.py), so off / without is then the noise between two identical servers.
- ``bare`` and ``bare+span``: the floor. The bare grpc.aio GetJob of bench/bare.py answering the same
  bytes with no work, without and with jobpulse's own RPC span (``RpcSpans``) exported the same way:
  what one span per call costs the Python OpenTelemetry SDK where a call costs nothing else.

Then worker throughput, tracing off and on: complete-and-claim (CompleteChunk with ``claim_next``) by 4
asyncio workers on the ``off`` and ``on`` servers in turn (bench.scenarios.chunk_throughput).

Targets (issue 27): GetJob on >= 0.85 x off; off >= 0.98 x without; complete-and-claim on >= 0.85 x off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import scenarios, work
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
    work_rounds: int
    work_seconds: float
    work_backlog: int


FULL = Settings(
    rounds=6, seconds=3.0, warmup=1.0, concurrency=16, work_rounds=3, work_seconds=5.0, work_backlog=30_000
)
QUICK = Settings(
    rounds=1, seconds=1.0, warmup=0.3, concurrency=16, work_rounds=1, work_seconds=1.0, work_backlog=5_000
)
ROOT = Path(__file__).resolve().parent.parent

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


def _otel_env(receiver_port: int) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "jobpulse-bench",
    }


def _server(name: str, tmp: str, receiver_port: int, without: Path | None) -> ServerProcess:
    server = ServerProcess("jobpulse", f"sqlite:///{tmp}/{name}.db")
    command = server._command
    assert command is not None
    for key in list(command.env):
        if key.startswith("OTEL_"):
            del command.env[key]
    if name == "on":
        command.env.update(_otel_env(receiver_port))
    if name == "without" and without is not None:
        # The other commit's packages come first on the path (the venv's are editable installs of this
        # checkout's, found after PYTHONPATH).
        command.env["PYTHONPATH"] = f"{without / 'service'}{os.pathsep}{without / 'client'}"
    return server


def _bare(traced: bool, receiver_port: int) -> ServerProcess:
    """A bare server (a process of its own, spawned with this process's environment at its start)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    for key in saved:
        del os.environ[key]
    if traced:
        os.environ.update(_otel_env(receiver_port))
    try:
        return ServerProcess("bare")
    finally:
        for key in _otel_env(receiver_port):
            os.environ.pop(key, None)
        os.environ.update(saved)


def _worktree(rev: str) -> Path:
    """A git worktree of ``rev`` (made once, kept under the temp directory for later runs)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"jobpulse-without-{sha}"
    if not (path / "service").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha], check=True)
    return path


async def _measure(settings: Settings, servers: dict[str, ServerProcess]) -> dict[str, Rate]:
    targets = {name: Target.open(server) for name, server in servers.items()}
    calls = {}
    read_jobs: dict[str, str] = {}
    payload = b""
    for name, target in targets.items():
        if name.startswith("bare"):
            continue
        job = (
            await target.jobs.CreateJob(
                job_service_pb2.CreateJobRequest(kind="bench", total_items=10, chunk_size=1), timeout=30
            )
        ).job
        calls[name] = target.get_job(job.id, job_pb2.JOB_VIEW_BASIC)
        read_jobs[name] = job.id
        if name == "off":
            payload = (
                await target.jobs.GetJob(
                    job_service_pb2.GetJobRequest(job_id=job.id, view=job_pb2.JOB_VIEW_BASIC), timeout=30
                )
            ).SerializeToString()
    for name in ("bare", "bare+span"):  # the same bytes as jobpulse's answer
        servers[name].set_response("bench-job", payload)
        calls[name] = targets[name].get_job("bench-job", job_pb2.JOB_VIEW_BASIC)
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
    for name, job_id in read_jobs.items():  # its chunks must not be claimed by the worker rows after this
        await targets[name].jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id), timeout=30)
    for target in targets.values():
        await target.channel.close()
    return totals


async def _work(settings: Settings, servers: dict[str, ServerProcess]) -> dict[str, dict[str, float]]:
    """Complete-and-claim chunks/s and server CPU per chunk, tracing off and on, alternating by round."""
    mode = work.MODES["complete_and_claim"]
    sums: dict[str, dict[str, float]] = {}
    for r in range(settings.work_rounds):
        for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
            row = await scenarios.chunk_throughput(
                servers[name],
                mode=mode,
                workers=4,
                backlog=settings.work_backlog,
                seconds=settings.work_seconds,
            )
            got = sums.setdefault(name, {"chunks": 0.0, "seconds": 0.0, "cpu_us": 0.0})
            got["chunks"] += row["chunks"]
            got["seconds"] += row["seconds"]
            got["cpu_us"] += (row.get("server_cpu_us_per_chunk") or 0.0) * row["chunks"]
            _log(f"work round {r + 1} {name}: {row['chunks_per_second']:,.0f} chunks/s")
    return {
        name: {"per_second": v["chunks"] / v["seconds"], "cpu_us": v["cpu_us"] / max(v["chunks"], 1)}
        for name, v in sums.items()
    }


def _report(totals: dict[str, Rate], chunks: dict[str, dict[str, float]], exported: str, without: str) -> str:
    lines = ["GetJob(BASIC) calls/s, same run, rounds interleaved", ""]
    lines.append(f"{'server':<12}{'calls/s':>12}{'server CPU us/call':>22}")
    for name, rate in totals.items():
        cpu = rate.server_cpu_us_per_call
        lines.append(f"{name:<12}{rate.per_second:>12,.0f}{(f'{cpu:,.0f}' if cpu else '-'):>22}")
    on = totals["on"].per_second / totals["off"].per_second
    off = totals["off"].per_second / totals["without"].per_second
    floor = totals["bare+span"].per_second / totals["bare"].per_second
    lines += ["", "complete-and-claim, 4 workers, chunks/s, same run", ""]
    lines.append(f"{'server':<12}{'chunks/s':>12}{'server CPU us/chunk':>22}")
    for name, row in chunks.items():
        lines.append(f"{name:<12}{row['per_second']:>12,.0f}{row['cpu_us']:>22,.0f}")
    work_on = chunks["on"]["per_second"] / chunks["off"]["per_second"]

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "NOT met"

    lines += [
        "",
        f"spans received by the OTLP receiver: {exported}",
        "",
        "targets (issue 27):",
        f"  GetJob on / off              = {on:.3f}  (>= {TARGET_ON}: {verdict(on, TARGET_ON)}; the floor, "
        f"bare+span / bare: {floor:.3f})",
        f"  GetJob off / without         = {off:.3f}  (>= {TARGET_OFF}: {verdict(off, TARGET_OFF)}; "
        f"without: {without})",
        f"  complete-and-claim on / off  = {work_on:.3f}  (>= {TARGET_ON}: {verdict(work_on, TARGET_ON)})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracing_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, about 20 seconds")
    parser.add_argument(
        "--without-rev",
        default=None,
        help="the commit whose server is 'without' (a git worktree of it is made under the temp directory); "
        "default: a second server of this checkout with tracing off",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    without = _worktree(args.without_rev) if args.without_rev else None
    described = f"the server of {args.without_rev}" if without else "a second server with tracing off"
    receiver, port = _start_receiver()
    try:
        with tempfile.TemporaryDirectory(prefix="jobpulse-bench-tracing-") as tmp:
            servers = {name: _server(name, tmp, port, without) for name in ("off", "on", "without")}
            servers["bare"] = _bare(False, port)
            servers["bare+span"] = _bare(True, port)
            try:
                for server in servers.values():
                    server.wait_ready()
                totals = asyncio.run(_measure(settings, servers))
                chunks = asyncio.run(_work(settings, servers))
            finally:
                for server in servers.values():
                    server.stop()  # SIGTERM: the traced server exports what it still batches
    finally:
        out, _ = receiver.communicate("", timeout=30)
    count, requests = [*out.split(), "?", "?"][:2]
    print(_report(totals, chunks, f"{count} spans in {requests} export requests", described), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
