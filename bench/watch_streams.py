"""WatchJob fan-out: change-to-delivery latency and server memory per idle stream, against a bare
grpc.aio fan-out server measured the same way in the same run.

    python -m bench watch            # full run, about 3 minutes
    python -m bench watch --quick    # smoke run, about 30 seconds

Every server runs in a process of its own on 127.0.0.1 (jobpulse on SQLite via ``bench.procs``; the
baseline is ``FanoutServicer`` below). This process opens all the streams (grpc.aio, several channels)
and makes the changes, so sending and arrival times come from one clock. A fresh pair of servers is
started for every stream count, so each memory figure starts from the same point.

* one job, N streams: each round makes one change (jobpulse: ReportChunkProgress; baseline: a unary
  poke) and times its arrival on every stream (the CHANGE carrying a newer revision). Rounds are spaced
  a little more than jobpulse's ``watch_min_interval`` apart, so each change finds its streams free to
  send at once (the pacing only delays changes that follow each other faster than that).
* bursts: ``BURST`` changes back to back, timed until every stream shows the last of them. jobpulse folds
  them (a stream sends at most one CHANGE per ``watch_min_interval``); the baseline sends every one.
* memory: server RSS (/proc/<pid>/status VmRSS) with N streams open and idle, minus RSS before, over N.
  The same is measured, in a fresh server process, for the least a grpc.aio stream can be (a handler
  that writes one message and waits): grpc.aio's own floor, below which no handler can go.
* many jobs: one stream per job, one change per job (a few changes in flight at once).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2
from support.servers import ServerProcess

from bench import figures, procs, report
from bench.bare import SERVER_OPTIONS
from bench.load import percentile
from bench.procs import Child, Serving, pid_cpu_seconds
from jobpulse.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from jobpulse_server.platform import gc_tuning
from jobpulse_server.platform.config import Config

CHANGE = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
STREAMS_PER_CHANNEL = 250
TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=3600)
TARGET_P99_MS = 100.0
TARGET_P99_AT = 1000
TARGET_KIB_PER_STREAM = 20.0
# Seconds to wait for N streams to open (each got its first message).
OPEN_TIMEOUT = 60.0
# Changes per burst, and bursts per stream count.
BURST = 10
BURSTS = 3


def watch_min_interval() -> float:
    """The pacing the jobpulse server under test will use (its JOBPULSE_* environment, or the default)."""
    from jobpulse_server.platform.config import Config

    return Config.from_env(host="127.0.0.1", port=0, database_url="sqlite://").watch_min_interval


@dataclass
class Settings:
    mode: str
    stream_counts: tuple[int, ...]
    rounds: tuple[int, ...]  # rounds per stream count
    many_jobs: int
    many_in_flight: int
    chunks_per_job: int


FULL = Settings("full", (100, 1000, 5000), (30, 20, 8), 1000, 4, 10)
QUICK = Settings("quick", (100, 1000), (10, 6), 200, 4, 10)


def _log(msg: str) -> None:
    print(f"[watch-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the baseline: a bare grpc.aio fan-out -----------------------------------------------------------


class FanoutServicer(job_service_pb2_grpc.JobServiceServicer):
    """WatchJob without a database: a stream gets the registered snapshot, then the latest change of its
    key each time UpdateJob(job_id=key) pokes it. One shared message per change, a wake-up flag per
    stream: the same shape as jobpulse's hub, minus the database read."""

    def __init__(self) -> None:
        self.snapshot = job_service_pb2.WatchJobResponse()
        self.change = job_service_pb2.WatchJobResponse()
        self._latest: dict[str, job_service_pb2.WatchJobResponse] = {}
        self._subs: dict[str, set[asyncio.Event]] = {}

    def set_templates(self, snapshot: bytes, change: bytes) -> None:
        self.snapshot = job_service_pb2.WatchJobResponse.FromString(snapshot)
        self.change = job_service_pb2.WatchJobResponse.FromString(change)

    async def WatchJob(self, request: Any, context: Any) -> Any:
        key = request.job_id
        wake = asyncio.Event()
        self._subs.setdefault(key, set()).add(wake)
        try:
            latest = self._latest.get(key)
            last = latest.revision if latest is not None else 1
            first = job_service_pb2.WatchJobResponse()
            first.CopyFrom(self.snapshot)
            first.revision = last
            yield first
            while True:
                await wake.wait()
                wake.clear()
                msg = self._latest[key]
                if msg.revision > last:
                    last = msg.revision
                    yield msg
        finally:
            self._subs[key].discard(wake)

    async def WatchJobs(self, request: Any, context: Any) -> None:  # type: ignore[override]
        """The floor: what grpc.aio itself keeps per idle server stream. The handler writes one
        message, then waits on a future of its own, the least an idle stream can wait on. (Not one
        future shared by all: a cancelled stream cancels the future its task waits on, which would
        end every other stream.)"""
        await context.write(
            job_service_pb2.WatchJobsResponse(type=job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT)
        )
        await asyncio.get_running_loop().create_future()

    async def UpdateJob(self, request: Any, context: Any) -> Any:
        key = request.job_id
        previous = self._latest.get(key)
        msg = job_service_pb2.WatchJobResponse()
        msg.CopyFrom(self.change)
        msg.revision = (previous.revision if previous is not None else 1) + 1
        self._latest[key] = msg
        for wake in self._subs.get(key, ()):
            wake.set()
        return job_service_pb2.UpdateJobResponse()


async def serve_fanout() -> Serving:
    """The fan-out in a ``bench.procs.Child``: ``("templates", snapshot, change)`` sets its messages."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    servicer = FanoutServicer()  # type: ignore[abstract]
    job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def handle(msg: tuple[Any, ...]) -> tuple[Any, ...]:
        servicer.set_templates(msg[1], msg[2])
        return ("ok",)

    return port, handle, lambda: server.stop(0.0)


class FanoutProcess(Child):
    """The baseline fan-out in a process of its own."""

    def __init__(self) -> None:
        super().__init__(serve_fanout, name="fanout")

    def set_templates(self, snapshot: bytes, change: bytes) -> None:
        assert self.ask("templates", snapshot, change)[0] == "ok"


# --- the client side ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    return procs.status_kib(pid)


class Channels:
    """Enough channels (each its own TCP connection) for ``streams`` streams."""

    def __init__(self, target: str, streams: int) -> None:
        count = max(1, -(-streams // STREAMS_PER_CHANNEL))
        self.channels = [
            grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(count)
        ]
        self.jobs = [job_service_pb2_grpc.JobServiceStub(c) for c in self.channels]
        self.control = self.channels[0]

    def stub(self, i: int) -> Any:
        return self.jobs[i % len(self.jobs)]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


class Streams:
    """N open WatchJob streams; records, per stream, the revision and arrival time of each CHANGE."""

    def __init__(self, channels: Channels, keys: list[str]) -> None:
        self.keys = keys
        self.revision = [0] * len(keys)
        self.arrival = [0.0] * len(keys)
        self.first = 0
        self._first_done = asyncio.Event()
        self._all_target: int | None = None
        self._remaining = 0
        self._all_done = asyncio.Event()
        self._waiting: dict[int, asyncio.Event] = {}  # stream index -> set when it passes _target[i]
        self._target: dict[int, int] = {}
        self.calls = [
            channels.stub(i).WatchJob(job_service_pb2.WatchJobRequest(job_id=key), timeout=3600)
            for i, key in enumerate(keys)
        ]
        self.tasks = [asyncio.ensure_future(self._read(i, call)) for i, call in enumerate(self.calls)]

    async def _read(self, i: int, call: Any) -> None:
        # call.read() in a loop, not `async for`: one generator layer less per message. The client
        # shares the 2 cores with the server under test, so what it spends per message is taken
        # from the server (the same for both servers).
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                previous = self.revision[i]
                if previous == 0:
                    self.first += 1
                    if self.first == len(self.keys):
                        self._first_done.set()
                elif msg.type != CHANGE:
                    continue
                self.revision[i] = msg.revision
                self.arrival[i] = now
                if self._all_target is not None and previous < self._all_target <= msg.revision:
                    self._remaining -= 1
                    if self._remaining == 0:
                        self._all_done.set()
                target = self._target.get(i)
                if target is not None and msg.revision >= target:
                    del self._target[i]
                    self._waiting.pop(i).set()
        except asyncio.CancelledError:
            pass
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise

    async def all_reach(self, revision: int, timeout: float = TIMEOUT) -> None:
        """Waits until every stream got a CHANGE of ``revision`` or newer: one countdown, not an event
        and a task per stream (at 5,000 streams those cost the client more than the messages)."""
        self._all_target = revision
        self._remaining = sum(1 for r in self.revision if r < revision)
        self._all_done = asyncio.Event()
        if self._remaining == 0:
            self._all_done.set()
        try:
            await asyncio.wait_for(self._all_done.wait(), timeout)
        finally:
            self._all_target = None

    async def opened(self, timeout: float = TIMEOUT) -> bool:
        """Waits until every stream got its first message; False if some had not after ``timeout``."""
        try:
            await asyncio.wait_for(self._first_done.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def expect(self, i: int, revision: int) -> asyncio.Event:
        """An event set once stream ``i`` got a CHANGE of ``revision`` or newer."""
        ev = asyncio.Event()
        if self.revision[i] >= revision:
            ev.set()
        else:
            self._waiting[i] = ev
            self._target[i] = revision
        return ev

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Side:
    """One server under test: how to make its jobs and how to change one."""

    name: str
    server: Any

    async def make_jobs(self, channels: Channels, count: int, chunks: int) -> list[str]:
        raise NotImplementedError

    def poke(self, channels: Channels, key: str) -> Callable[[], Awaitable[Any]]:
        raise NotImplementedError


class JobpulseSide(Side):
    def __init__(self, server: ServerProcess) -> None:
        self.name = "jobpulse"
        self.server = server
        self._claims: dict[str, Any] = {}
        self._items: dict[str, int] = {}
        self._prefix = uuid.uuid4().hex[:8]

    async def make_jobs(self, channels: Channels, count: int, chunks: int) -> list[str]:
        jobs = job_service_pb2_grpc.JobServiceStub(channels.control)
        workers = worker_service_pb2_grpc.WorkerServiceStub(channels.control)
        ids: list[str] = []
        sem = asyncio.Semaphore(8)

        async def create(i: int) -> None:
            async with sem:
                req = job_service_pb2.CreateJobRequest(
                    kind="watch-bench",
                    total_items=chunks * 10,
                    chunk_size=10,
                    request_id=f"wb-{self._prefix}-{i}",
                )
                ids.append((await jobs.CreateJob(req, timeout=TIMEOUT)).job.id)

        await asyncio.gather(*(create(i) for i in range(count)))
        # Claim one chunk of every job (highest priority, then oldest: the first chunk of each job in turn
        # is not guaranteed, so claim everything and keep one claim per job).
        while len(self._claims) < count:
            got = await workers.ClaimChunks(
                worker_service_pb2.ClaimChunksRequest(
                    worker_id="bench", kinds=["watch-bench"], max_chunks=100, lease_duration=LEASE
                ),
                timeout=TIMEOUT,
            )
            if not got.claims:
                raise RuntimeError("ran out of chunks to claim")
            for claim in got.claims:
                self._claims.setdefault(claim.job_id, claim)
        return ids

    def poke(self, channels: Channels, key: str) -> Callable[[], Awaitable[Any]]:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channels.control)
        claim = self._claims[key]

        async def call() -> Any:
            self._items[key] = self._items.get(key, 0) + 1
            req = worker_service_pb2.ReportChunkProgressRequest(
                chunk_id=claim.chunk.id,
                lease_token=claim.lease_token,
                items_done=min(self._items[key], claim.chunk.item_count),
                stage=f"round-{self._items[key]}",
            )
            return await workers.ReportChunkProgress(req, timeout=TIMEOUT)

        return call


class FanoutSide(Side):
    def __init__(self, server: FanoutProcess) -> None:
        self.name = "bare fan-out"
        self.server = server

    async def make_jobs(self, channels: Channels, count: int, chunks: int) -> list[str]:
        return [f"job-{i}" for i in range(count)]

    def poke(self, channels: Channels, key: str) -> Callable[[], Awaitable[Any]]:
        jobs = job_service_pb2_grpc.JobServiceStub(channels.control)
        req = job_service_pb2.UpdateJobRequest(job_id=key)
        return lambda: jobs.UpdateJob(req, timeout=TIMEOUT)


async def capture_templates(server: ServerProcess, chunks: int) -> tuple[bytes, bytes]:
    """A real snapshot and a real one-chunk CHANGE, for the baseline to send (same sizes)."""
    side = JobpulseSide(server)
    channels = Channels(server.address, 1)
    try:
        [job_id] = await side.make_jobs(channels, 1, chunks)
        call = channels.stub(0).WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=TIMEOUT)
        snapshot = await call.read()
        await side.poke(channels, job_id)()
        change = await call.read()
        call.cancel()
        return snapshot.SerializeToString(), change.SerializeToString()
    finally:
        await channels.close()


def _latency_stats(samples: list[float]) -> dict[str, Any]:
    return {
        "samples": len(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


async def one_job(side: Side, streams_n: int, rounds: int, chunks: int) -> dict[str, Any]:
    """N streams on one job: memory per idle stream, then ``rounds`` timed changes."""
    channels = Channels(side.server.address, streams_n)
    try:
        [key] = await side.make_jobs(channels, 1, chunks)
        poke = side.poke(channels, key)
        # Warm up: a few streams and a change, so lazy set-up is not counted as per-stream memory.
        warm = Streams(channels, [key] * 10)
        await warm.opened()
        warmed = [warm.expect(i, warm.revision[i] + 1) for i in range(10)]
        await poke()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in warmed)), TIMEOUT)
        await warm.close()
        await asyncio.sleep(0.5)
        before = rss_kib(side.server.proc.pid)
        t0 = time.perf_counter()
        streams = Streams(channels, [key] * streams_n)
        all_open = await streams.opened(OPEN_TIMEOUT)
        open_seconds = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # idle
        after = rss_kib(side.server.proc.pid)
        if not all_open:
            # Seen on grpcio 1.85 here: both servers stop answering new streams at about 3,000 open ones.
            _log(f"{side.name}: only {streams.first:,} of {streams_n:,} streams opened in {OPEN_TIMEOUT:g}s")
            await streams.close()
            return {
                "streams": streams_n,
                "opened": streams.first,
                "stalled": True,
                "rounds": 0,
                "open_seconds": open_seconds,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_stream": (after - before) / max(1, streams.first),
                "latency": None,
            }
        latencies: list[float] = []
        round_max: list[float] = []
        server_cpu = client_cpu = 0.0
        spacing = watch_min_interval() + 0.05
        for _ in range(rounds):
            await asyncio.sleep(spacing)
            base = max(streams.revision)
            cpu0, own0 = pid_cpu_seconds(side.server.proc.pid) or 0.0, time.process_time()
            sent = time.perf_counter()
            await poke()
            await streams.all_reach(base + 1)
            server_cpu += (pid_cpu_seconds(side.server.proc.pid) or 0.0) - cpu0
            client_cpu += time.process_time() - own0
            these = [streams.arrival[i] - sent for i in range(streams_n)]
            latencies += these
            round_max.append(max(these))
        # Bursts: BURST changes back to back; time until every stream shows the last one.
        bursts: list[float] = []
        for _ in range(BURSTS):
            await asyncio.sleep(spacing)
            base = max(streams.revision)
            sent = time.perf_counter()
            for _ in range(BURST):
                await poke()
            await streams.all_reach(base + BURST)
            bursts.append(max(streams.arrival) - sent)
        await streams.close()
        return {
            "streams": streams_n,
            "opened": streams_n,
            "stalled": False,
            "rounds": rounds,
            "open_seconds": open_seconds,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_stream": (after - before) / streams_n,
            "latency": _latency_stats(latencies),
            "round_max_p50": percentile(round_max, 50),
            # CPU seconds per change, from the poke to the last delivery (server: all its threads).
            "server_cpu_per_change": server_cpu / rounds,
            "client_cpu_per_change": client_cpu / rounds,
            "spacing_seconds": spacing,
            "burst_settle_p50": percentile(bursts, 50),
        }
    finally:
        await channels.close()


async def floor_memory(server: FanoutProcess, streams_n: int) -> dict[str, Any]:
    """Server memory per idle stream of the minimal grpc.aio handler (``FanoutServicer.WatchJobs``),
    measured as ``one_job`` measures it, in a server process of its own."""
    channels = Channels(server.address, streams_n)

    async def open_streams(n: int) -> tuple[list[Any], bool]:
        calls = [
            channels.stub(i).WatchJobs(job_service_pb2.WatchJobsRequest(), timeout=3600) for i in range(n)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), OPEN_TIMEOUT)
            return calls, True
        except asyncio.TimeoutError:
            return calls, False

    try:
        warm, _ = await open_streams(10)
        for call in warm:
            call.cancel()
        await asyncio.sleep(0.5)
        before = rss_kib(server.proc.pid or 0)
        calls, all_open = await open_streams(streams_n)
        await asyncio.sleep(1.0)  # idle
        after = rss_kib(server.proc.pid or 0)
        # Every stream must still be open, or the figure is not one of idle streams.
        ended = sum(1 for call in calls if call.done())
        for call in calls:
            call.cancel()
        return {
            "streams": streams_n,
            "opened": all_open,
            "ended": ended,
            "kib_per_stream": (after - before) / streams_n,
        }
    finally:
        await channels.close()


async def many_jobs(side: Side, jobs_n: int, in_flight: int, chunks: int) -> dict[str, Any]:
    """One stream per job, one change per job; up to ``in_flight`` changes under way at once."""
    channels = Channels(side.server.address, jobs_n)
    try:
        t0 = time.perf_counter()
        keys = await side.make_jobs(channels, jobs_n, chunks)
        setup_seconds = time.perf_counter() - t0
        streams = Streams(channels, keys)
        await streams.opened()
        await asyncio.sleep(0.5)
        latencies: list[float] = []
        sem = asyncio.Semaphore(in_flight)

        async def change(i: int) -> None:
            async with sem:
                done = streams.expect(i, streams.revision[i] + 1)
                sent = time.perf_counter()
                await side.poke(channels, keys[i])()
                await asyncio.wait_for(done.wait(), TIMEOUT)
                latencies.append(streams.arrival[i] - sent)

        cpu0 = pid_cpu_seconds(side.server.proc.pid)
        t1 = time.perf_counter()
        await asyncio.gather(*(change(i) for i in range(jobs_n)))
        elapsed = time.perf_counter() - t1
        cpu1 = pid_cpu_seconds(side.server.proc.pid)
        await streams.close()
        return {
            "jobs": jobs_n,
            "in_flight": in_flight,
            "setup_seconds": setup_seconds,
            "changes_per_second": jobs_n / elapsed,
            "latency": _latency_stats(latencies),
            # Server CPU (all threads) per change, from the first poke to the last delivery.
            "server_cpu_us_per_change": (
                (cpu1 - cpu0) / jobs_n * 1e6 if cpu0 is not None and cpu1 is not None else None
            ),
        }
    finally:
        await channels.close()


# --- running and reporting ---------------------------------------------------------------------------


def _start_pair(
    tmp: str, tag: str, templates: tuple[bytes, bytes] | None
) -> tuple[ServerProcess, FanoutProcess]:
    jp = procs.jobpulse(f"sqlite:///{tmp}/{tag}.db")
    bare = FanoutProcess()
    jp.start(timeout=60)
    bare.start()
    if templates is not None:
        bare.set_templates(*templates)
    return jp, bare


async def _ready(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)


def run(settings: Settings, tmp: str) -> dict[str, Any]:
    s = settings
    results: dict[str, Any] = {"one_job": [], "many_jobs": None}
    templates: tuple[bytes, bytes] | None = None
    for n, rounds in zip(s.stream_counts, s.rounds, strict=True):
        _log(f"one job, {n:,} streams, {rounds} changes")
        jp, bare = _start_pair(tmp, f"one-{n}", templates)
        try:

            async def go(
                jp: ServerProcess = jp, bare: FanoutProcess = bare, n: int = n, r: int = rounds
            ) -> Any:
                nonlocal templates
                await asyncio.gather(_ready(jp.address), _ready(bare.address))
                if templates is None:
                    templates = await capture_templates(jp, s.chunks_per_job)
                    bare.set_templates(*templates)
                return {
                    "jobpulse": await one_job(JobpulseSide(jp), n, r, s.chunks_per_job),
                    "bare": await one_job(FanoutSide(bare), n, r, s.chunks_per_job),
                }

            results["one_job"].append(asyncio.run(go()))
        finally:
            jp.close()
            bare.close()
        floor = FanoutProcess()
        try:
            floor.start()

            async def go_floor(floor: FanoutProcess = floor, n: int = n) -> dict[str, Any]:
                await _ready(floor.address)
                return await floor_memory(floor, n)

            results["one_job"][-1]["floor"] = asyncio.run(go_floor())
        finally:
            floor.close()
    _log(f"{s.many_jobs:,} jobs, one stream and one change each")
    jp, bare = _start_pair(tmp, "many", templates)
    try:

        async def go_many() -> Any:
            await asyncio.gather(_ready(jp.address), _ready(bare.address))
            return {
                "jobpulse": await many_jobs(
                    JobpulseSide(jp), s.many_jobs, s.many_in_flight, s.chunks_per_job
                ),
                "bare": await many_jobs(FanoutSide(bare), s.many_jobs, s.many_in_flight, s.chunks_per_job),
            }

        results["many_jobs"] = asyncio.run(go_many())
    finally:
        jp.close()
        bare.close()
    assert templates is not None
    results["message_bytes"] = {"snapshot": len(templates[0]), "change": len(templates[1])}
    return results


def run_many_jobs(tmp: str, jobs_n: int, in_flight: int, chunks: int) -> dict[str, Any]:
    """The many-jobs scenario on its own (a fresh jobpulse and a fresh fan-out server, stopped after):
    jobpulse first, then the bare fan-out, whose messages are the sizes of jobpulse's."""
    jp, bare = _start_pair(tmp, "many-only", None)
    try:

        async def go() -> dict[str, Any]:
            await asyncio.gather(_ready(jp.address), _ready(bare.address))
            templates = await capture_templates(jp, chunks)
            bare.set_templates(*templates)
            return {
                "jobpulse": await many_jobs(JobpulseSide(jp), jobs_n, in_flight, chunks),
                "bare": await many_jobs(FanoutSide(bare), jobs_n, in_flight, chunks),
                "message_bytes": {"snapshot": len(templates[0]), "change": len(templates[1])},
            }

        return asyncio.run(go())
    finally:
        jp.close()
        bare.close()


def _pair(a: float, b: float, ms: bool = True) -> str:
    f = report._ms if ms else (lambda v: f"{v:.1f}")
    return f"{f(a)} / {f(b)}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    lines: list[str] = []
    add = lines.append
    add("=" * 104)
    add(f"jobpulse WatchJob fan-out, {s['mode']} run ({results['elapsed_seconds']:.0f} s)")
    add(
        "baseline: a bare grpc.aio server-streaming fan-out (no database), measured the same way in the same "
        "run;"
    )
    add("each server in a process of its own (jobpulse on SQLite); all streams in this one client process")
    add(
        f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | grpcio {m['grpcio']} | "
        f"protobuf {m['protobuf']} ({m['protobuf_backend']})"
    )
    add(f"         load average before {results['load_before']} after {results['load_after']}")
    mb = results["message_bytes"]
    add(
        f"         messages: snapshot {mb['snapshot']:,} B ({s['chunks_per_job']} chunks), "
        f"change {mb['change']:,} B"
    )
    add("-" * 104)
    add("1. one job, N streams: change (ReportChunkProgress / bare poke) to arrival on every stream;")
    add("   CPU: server (all threads) / this client process, per change, from the poke to the last arrival")
    add(
        f"   rounds {results['one_job'][0]['jobpulse'].get('spacing_seconds', 0):.2f} s apart. burst: "
        f"{BURST} changes back to back until every stream has the last (p50 of {BURSTS})"
    )
    add(
        f"   {'N':>6} {'rounds':>6} {'':<14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'KiB/idle stream':>17}{'open s':>8}{'burst ms':>10}{'CPU ms srv/cli':>16}"
    )
    stalled = False
    for row in results["one_job"]:
        for name, label in (("jobpulse", "jobpulse"), ("bare", "bare fan-out")):
            r = row[name]
            lat = r["latency"]
            if lat is None:  # the server stopped opening streams
                stalled = True
                note = f"only {r['opened']:,} opened*"
                add(
                    f"   {r['streams']:>6,} {'-':>6} {label:<14}{note:>27}"
                    f"{r['kib_per_stream']:>17.1f}{r['open_seconds']:>8.2f}"
                )
                continue
            add(
                f"   {r['streams']:>6,} {r['rounds']:>6} {label:<14}{report._ms(lat['p50']):>9}"
                f"{report._ms(lat['p99']):>9}{report._ms(lat['max']):>9}{r['kib_per_stream']:>17.1f}"
                f"{r['open_seconds']:>8.2f}{report._ms(r['burst_settle_p50']):>10}"
                f"{_pair(r['server_cpu_per_change'], r['client_cpu_per_change']):>16}"
            )
        jp, bare = row["jobpulse"], row["bare"]
        mem = (
            report._x(jp["kib_per_stream"] / bare["kib_per_stream"]) if bare["kib_per_stream"] > 0 else "n/a"
        )
        if jp["latency"] is None or bare["latency"] is None:
            add(f"   {'':>6} {'':>6} {'ratio':<14}{'':>27}{mem:>17}")
            continue
        add(
            f"   {'':>6} {'':>6} {'ratio':<14}{report._x(jp['latency']['p50'] / bare['latency']['p50']):>9}"
            f"{report._x(jp['latency']['p99'] / bare['latency']['p99']):>9}"
            f"{report._x(jp['latency']['max'] / bare['latency']['max']):>9}{mem:>17}{'':>18}"
            f"{report._x(jp['server_cpu_per_change'] / bare['server_cpu_per_change']):>16}"
        )
    add(
        "   grpc.aio alone (a handler that writes one message, then waits on a future), KiB per "
        "idle stream: "
        + ", ".join(
            f"{row['floor']['kib_per_stream']:.1f} at {row['floor']['streams']:,}"
            + ("" if row["floor"]["opened"] else " (not all opened)")
            + (f" ({row['floor']['ended']:,} ended early)" if row["floor"].get("ended") else "")
            for row in results["one_job"]
            if "floor" in row
        )
    )
    if stalled:
        add(
            f"   * not every stream got its first message within {OPEN_TIMEOUT:g} s: no latency; memory is "
            "per opened stream"
        )
    mj = results["many_jobs"]
    add("-" * 104)
    add(
        f"2. {mj['jobpulse']['jobs']:,} jobs, one stream each, one change per job "
        f"({mj['jobpulse']['in_flight']} changes in flight)"
    )
    add(f"   {'':<14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'changes/s':>11}{'srv CPU us/change':>19}")
    for name, label in (("jobpulse", "jobpulse"), ("bare", "bare fan-out")):
        r = mj[name]
        add(
            f"   {label:<14}{report._ms(r['latency']['p50']):>9}{report._ms(r['latency']['p99']):>9}"
            f"{report._ms(r['latency']['max']):>9}{r['changes_per_second']:>11,.0f}"
            f"{report._us(r.get('server_cpu_us_per_change')):>19}"
        )
    jp, bare = mj["jobpulse"], mj["bare"]
    add(
        f"   {'ratio':<14}{report._x(jp['latency']['p50'] / bare['latency']['p50']):>9}"
        f"{report._x(jp['latency']['p99'] / bare['latency']['p99']):>9}"
        f"{report._x(jp['latency']['max'] / bare['latency']['max']):>9}"
        f"{report._x(jp['changes_per_second'] / bare['changes_per_second']):>11}"
    )
    add("-" * 104)
    add("targets (issue: WatchJob that never loses an event)")
    for line in targets(results):
        add(f"   {line}")
    add("=" * 104)
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    at = [r["jobpulse"] for r in results["one_job"] if r["jobpulse"]["streams"] == TARGET_P99_AT]
    if at and at[0]["latency"] is not None:
        p99 = at[0]["latency"]["p99"] * 1e3
        verdict = "MET" if p99 < TARGET_P99_MS else "NOT MET"
        out.append(
            f"p99 < {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT:,} watchers of one job: "
            f"{p99:.1f} ms -> {verdict}"
        )
    many = results["many_jobs"]["jobpulse"]
    if many["jobs"] == TARGET_P99_AT:
        p99 = many["latency"]["p99"] * 1e3
        verdict = "MET" if p99 < TARGET_P99_MS else "NOT MET"
        out.append(
            f"p99 < {TARGET_P99_MS:.0f} ms at {TARGET_P99_AT:,} watchers of {many['jobs']:,} jobs: "
            f"{p99:.1f} ms -> {verdict}"
        )
    for r in results["one_job"]:
        jp = r["jobpulse"]
        if jp["streams"] >= TARGET_P99_AT:
            kib = jp["kib_per_stream"]
            verdict = "MET" if kib < TARGET_KIB_PER_STREAM else "NOT MET"
            if jp["stalled"]:
                verdict += f" (over the {jp['opened']:,} streams that opened)"
            floor = r.get("floor")
            if floor is not None:
                verdict += f" (grpc.aio alone: {floor['kib_per_stream']:.1f} KiB)"
            out.append(
                f"< {TARGET_KIB_PER_STREAM:.0f} KiB server memory per idle stream at "
                f"{jp['streams']:,} streams: {kib:.1f} KiB -> {verdict}"
            )
    return out


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench watch", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (about 30 s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    _raise_nofile()
    # The client process holds every stream; its collector gets the settings the server uses, so its
    # pauses do not land in the latency of either server.
    gc_tuning.tune(Config.gc_threshold)
    started = time.perf_counter()
    load_before = report.load_average()
    with tempfile.TemporaryDirectory(prefix="jobpulse-watch-bench-") as tmp:
        results = run(settings, tmp)
    results["settings"] = asdict(settings)
    results["machine"] = report.machine_facts()
    results["load_before"] = load_before
    results["load_after"] = report.load_average()
    results["elapsed_seconds"] = time.perf_counter() - started
    print(render(results), flush=True)
    if args.json is not None:
        report.write_json(results, args.json)
    if not args.quick:  # a full run: its figures are the table's current ones
        figures.record("watch", goals(results))
    return 0


def goals(results: dict[str, Any]) -> list[report.Goal]:
    """The watch targets: delivery p99 at 1,000 watchers (of one job, of 1,000 jobs) and the server's
    memory per idle stream, beside grpc.aio's own."""
    out = []
    for row in results["one_job"]:
        jp = row["jobpulse"]
        if jp["streams"] == TARGET_P99_AT and jp["latency"] is not None:
            what = f"p99 at {TARGET_P99_AT:,} watchers of one job"
            out.append(report.Goal(what, jp["latency"]["p99"] * 1e3, False, TARGET_P99_MS, 50.0, "ms"))
        if jp["streams"] >= TARGET_P99_AT:
            floor = row.get("floor")
            note = f"grpc.aio alone: {floor['kib_per_stream']:.1f} KiB" if floor else ""
            what = f"server memory per idle stream at {jp['streams']:,} streams"
            kib = TARGET_KIB_PER_STREAM
            out.append(report.Goal(what, jp["kib_per_stream"], False, kib, kib / 2, "KiB", note=note))
    many = results["many_jobs"]["jobpulse"]
    what = f"p99 at {many['jobs']:,} watchers of {many['jobs']:,} jobs"
    out.append(report.Goal(what, many["latency"]["p99"] * 1e3, False, TARGET_P99_MS, 50.0, "ms"))
    return out


if __name__ == "__main__":
    sys.exit(main())
