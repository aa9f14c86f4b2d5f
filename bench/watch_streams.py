"""WatchJob fan-out: change-to-delivery latency and server memory per idle stream, against a bare
grpc.aio fan-out server measured the same way in the same run (``python -m bench watch [--quick]``).

Each server runs in a process of its own (a fresh pair per stream count, so each memory figure starts
from the same point); this process opens every stream and makes the changes, so sending and arrival
times come from one clock.

* one job, N streams: one change per round (jobpulse: ReportChunkProgress; baseline: a unary poke) timed
  to its arrival on every stream; rounds spaced past ``watch_min_interval`` so pacing never delays one.
* bursts: ``BURST`` changes back to back until every stream shows the last (jobpulse folds them).
* memory: server RSS growth over N idle streams, over N; also for grpc.aio's own floor (a handler that
  writes one message and waits), below which no handler can go.
* many jobs: one stream per job, one change per job (a few in flight at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import procs, report
from bench.bare import SERVER_OPTIONS
from bench.load import percentile, summary
from bench.procs import Child, Jobpulse, Serving, pid_cpu_seconds, status_kib
from bench.report import Goal
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

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


_log = functools.partial(report.log, tag="watch-bench")


# --- the baseline: a bare grpc.aio fan-out -----------------------------------------------------------


class FanoutServicer(job_service_pb2_grpc.JobServiceServicer):
    """WatchJob without a database: a stream gets the registered snapshot, then the latest change of its
    key each time UpdateJob(job_id=key) pokes it. One shared message per change, a wake-up flag per
    stream: the same shape as jobpulse's hub, minus the database read."""

    def __init__(self) -> None:
        self.snapshot = self.change = job_service_pb2.WatchJobResponse()  # until set_templates
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
        heartbeat = job_service_pb2.WatchJobsResponse(type=job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT)
        await context.write(heartbeat)
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


class Channels:
    """Enough channels (each its own TCP connection) for ``streams`` streams; ``async with`` closes them."""

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

    async def __aenter__(self) -> Channels:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Streams:
    """Streams of one kind, each with the newest revision it got and when (``time.monotonic``: one clock
    across processes); counts of the streams that opened, were refused or ended on their own; one
    countdown over all streams to an armed revision (not an event and a task per stream: at 5,000 streams
    those cost the client more than the messages); and waits on one stream's revision."""

    def __init__(self) -> None:
        self.revision: list[int] = []
        self.arrival: list[float] = []
        self.first = self.failed = self.ended = self.expected = self.remaining = 0
        self._opened, self.done = asyncio.Event(), asyncio.Event()
        self.target: int | None = None
        self._waits: dict[int, tuple[int, asyncio.Event]] = {}
        self.calls: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    def add(self) -> int:
        self.revision.append(0)
        self.arrival.append(0.0)
        return len(self.revision) - 1

    def seen(self, i: int, revision: int, now: float) -> None:
        old = self.revision[i]
        if revision <= old:
            return
        self.revision[i], self.arrival[i] = revision, now
        if old == 0:
            self.first += 1
            self.check_open()
        if self.target is not None and old < self.target <= revision:
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()
        if (wait := self._waits.get(i)) is not None and revision >= wait[0]:
            del self._waits[i]
            wait[1].set()

    def check_open(self) -> None:
        if self.first + self.failed + self.ended >= self.expected:
            self._opened.set()

    def expect(self, n: int) -> None:
        """``n`` more streams to open; said before the first starts, or one whose first event came in
        before the count was raised would find the count already reached."""
        self.expected = len(self.revision) + n
        self._opened.clear()

    async def opened(self, timeout: float = OPEN_TIMEOUT) -> bool:
        """Waits until every stream expected got its first message (or failed); False if some had not."""
        self.check_open()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._opened.wait(), timeout)
        return self.first == self.expected

    def arm(self, ahead: int = 1) -> int:
        """Counts down to ``ahead`` past the newest revision any stream has; returns that newest."""
        base = max(self.revision, default=0)
        self.target = base + ahead
        self.remaining = sum(1 for r in self.revision if r < self.target)
        self.done = asyncio.Event()
        if self.remaining == 0:
            self.done.set()
        return base

    async def reach(self, timeout: float = TIMEOUT) -> bool:
        """Waits until every stream has the armed revision (False if not within ``timeout``); disarms."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self.target = None
        return True

    def wait_for(self, i: int, revision: int) -> asyncio.Event:
        """An event set once stream ``i`` has ``revision`` or newer."""
        ev = asyncio.Event()
        if self.revision[i] >= revision:
            ev.set()
        else:
            self._waits[i] = (revision, ev)
        return ev

    def watch(self, channels: Channels, keys: list[str]) -> Streams:
        """Opens a WatchJob stream on each job of ``keys``."""
        self.expect(len(keys))
        for key in keys:
            i = self.add()
            call = channels.stub(i).WatchJob(job_service_pb2.WatchJobRequest(job_id=key), timeout=3600)
            self.calls.append(call)
            self.tasks.append(asyncio.ensure_future(self._read(i, call)))
        return self

    async def _read(self, i: int, call: Any) -> None:
        # call.read() in a loop, not `async for`: one generator layer less per message (the client shares
        # the cores with the server under test). A message split in parts (``more``) counts when its last
        # part is in: the SSE form gives the revision (the event id) only to the last part too.
        try:
            while (msg := await call.read()) is not grpc.aio.EOF:
                if not msg.more:
                    self.seen(i, msg.revision, time.monotonic())
        except asyncio.CancelledError:
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
        self.ended += 1
        self.check_open()

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def create_job(channel: grpc.aio.Channel, chunks: int, kind: str, request_id: str = "") -> str:
    """A job of ``chunks`` chunks of 10 items; its id."""
    request = job_service_pb2.CreateJobRequest(kind=kind, total_items=chunks * 10, chunk_size=10)
    request.request_id = request_id or f"bench-{uuid.uuid4().hex}"
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    return str((await jobs.CreateJob(request, timeout=TIMEOUT)).job.id)


class JobpulseSide:
    """jobpulse under test: jobs made by CreateJob, one chunk of each claimed; a change is its progress."""

    def __init__(self, server: Jobpulse) -> None:
        self.name, self._prefix = "jobpulse", uuid.uuid4().hex[:8]
        self.server: Any = server
        self._claims: dict[str, Any] = {}
        self._items: dict[str, int] = {}

    async def make_jobs(self, channels: Channels, count: int, chunks: int) -> list[str]:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channels.control)
        ids: list[str] = []
        sem = asyncio.Semaphore(8)

        async def create(i: int) -> None:
            async with sem:
                name = f"wb-{self._prefix}-{i}"
                ids.append(await create_job(channels.control, chunks, "watch-bench", name))

        await asyncio.gather(*(create(i) for i in range(count)))
        # Claim one chunk of every job (highest priority, then oldest: the first chunk of each job in turn
        # is not guaranteed, so claim everything and keep one claim per job).
        ask = worker_service_pb2.ClaimChunksRequest(worker_id="bench", kinds=["watch-bench"], max_chunks=100)
        ask.lease_duration.CopyFrom(LEASE)
        while len(self._claims) < count:
            got = await workers.ClaimChunks(ask, timeout=TIMEOUT)
            if not got.claims:
                raise RuntimeError("ran out of chunks to claim")
            for claim in got.claims:
                self._claims.setdefault(claim.job_id, claim)
        return ids

    def poke(self, channels: Channels, key: str) -> Callable[[], Awaitable[Any]]:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channels.control)
        claim = self._claims[key]

        async def call() -> Any:
            n = self._items[key] = self._items.get(key, 0) + 1
            req = worker_service_pb2.ReportChunkProgressRequest(
                chunk_id=claim.chunk.id, lease_token=claim.lease_token
            )
            req.items_done, req.stage = min(n, claim.chunk.item_count), f"round-{n}"
            return await workers.ReportChunkProgress(req, timeout=TIMEOUT)

        return call


class FanoutSide:
    """The fan-out under test: any key is a job; a change is UpdateJob(job_id=key)."""

    def __init__(self, server: FanoutProcess) -> None:
        self.name = "bare fan-out"
        self.server: Any = server

    async def make_jobs(self, channels: Channels, count: int, chunks: int) -> list[str]:
        return [f"job-{i}" for i in range(count)]

    def poke(self, channels: Channels, key: str) -> Callable[[], Awaitable[Any]]:
        jobs = job_service_pb2_grpc.JobServiceStub(channels.control)
        req = job_service_pb2.UpdateJobRequest(job_id=key)
        return lambda: jobs.UpdateJob(req, timeout=TIMEOUT)


async def capture_templates(server: Jobpulse, chunks: int) -> tuple[bytes, bytes]:
    """A real snapshot and a real one-chunk CHANGE, for the baseline to send (same sizes)."""
    side = JobpulseSide(server)
    async with Channels(server.address, 1) as channels:
        [job_id] = await side.make_jobs(channels, 1, chunks)
        call = channels.stub(0).WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=TIMEOUT)
        snapshot = await call.read()
        await side.poke(channels, job_id)()
        change = await call.read()
        call.cancel()
        return snapshot.SerializeToString(), change.SerializeToString()


async def _change(
    streams: Streams, poke: Callable[[], Awaitable[Any]], pid: int, count: int = 1
) -> tuple[list[float], float, float]:
    """``count`` changes back to back, waited for on every stream: each stream's seconds from the first
    poke to the last change, and the CPU seconds the server (all its threads) and this process used."""
    streams.arm(count)
    cpu0, own0 = pid_cpu_seconds(pid) or 0.0, time.process_time()
    sent = time.monotonic()
    for _ in range(count):
        await poke()
    if not await streams.reach():
        raise TimeoutError(f"{streams.remaining:,} streams did not get the change within {TIMEOUT:g} s")
    cpu = (pid_cpu_seconds(pid) or 0.0) - cpu0
    return [a - sent for a in streams.arrival], cpu, time.process_time() - own0


async def one_job(side: Side, streams_n: int, rounds: int, chunks: int) -> dict[str, Any]:
    """N streams on one job: memory per idle stream, then ``rounds`` timed changes."""
    async with Channels(side.server.address, streams_n) as channels:
        [key] = await side.make_jobs(channels, 1, chunks)
        poke, pid = side.poke(channels, key), side.server.proc.pid
        # Warm up: a few streams and a change, so lazy set-up is not counted as per-stream memory.
        warm = Streams().watch(channels, [key] * 10)
        await warm.opened()
        await _change(warm, poke, pid)
        await warm.close()
        await asyncio.sleep(0.5)
        before = status_kib(pid)
        t0 = time.monotonic()
        streams = Streams().watch(channels, [key] * streams_n)
        all_open = await streams.opened()
        open_seconds = time.monotonic() - t0
        await asyncio.sleep(1.0)  # idle
        after = status_kib(pid)
        row: dict[str, Any] = {"streams": streams_n, "opened": streams.first, "stalled": not all_open}
        row |= {"open_seconds": open_seconds, "rss_before_kib": before, "rss_after_kib": after}
        row["kib_per_stream"] = (after - before) / max(1, streams.first)
        if not all_open:
            # Seen on grpcio 1.85 here: both servers stop answering new streams at about 3,000 open ones.
            _log(f"{side.name}: only {streams.first:,} of {streams_n:,} streams opened in {OPEN_TIMEOUT:g}s")
            await streams.close()
            return {**row, "rounds": 0, "latency": None}
        latencies: list[float] = []
        round_max: list[float] = []
        server_cpu = client_cpu = 0.0
        spacing = watch_min_interval() + 0.05
        for _ in range(rounds):
            await asyncio.sleep(spacing)
            these, server, client = await _change(streams, poke, pid)
            latencies += these
            round_max.append(max(these))
            server_cpu, client_cpu = server_cpu + server, client_cpu + client
        # Bursts: BURST changes back to back; time until every stream shows the last one.
        bursts: list[float] = []
        for _ in range(BURSTS):
            await asyncio.sleep(spacing)
            bursts.append(max((await _change(streams, poke, pid, BURST))[0]))
        await streams.close()
        row |= {"rounds": rounds, "latency": summary(latencies), "round_max_p50": percentile(round_max, 50)}
        # CPU seconds per change, from the poke to the last delivery (server: all its threads).
        row |= {"server_cpu_per_change": server_cpu / rounds, "client_cpu_per_change": client_cpu / rounds}
        return row | {"spacing_seconds": spacing, "burst_settle_p50": percentile(bursts, 50)}


async def floor_memory(server: FanoutProcess, streams_n: int) -> dict[str, Any]:
    """Server memory per idle stream of the minimal grpc.aio handler (``FanoutServicer.WatchJobs``),
    measured as ``one_job`` measures it, in a server process of its own."""

    async def open_streams(n: int) -> tuple[list[Any], bool]:
        request = job_service_pb2.WatchJobsRequest()
        calls = [channels.stub(i).WatchJobs(request, timeout=3600) for i in range(n)]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), OPEN_TIMEOUT)
            return calls, True
        except asyncio.TimeoutError:
            return calls, False

    async with Channels(server.address, streams_n) as channels:
        warm, _ = await open_streams(10)
        for call in warm:
            call.cancel()
        await asyncio.sleep(0.5)
        before = status_kib(server.proc.pid or 0)
        calls, all_open = await open_streams(streams_n)
        await asyncio.sleep(1.0)  # idle
        after = status_kib(server.proc.pid or 0)
        # Every stream must still be open, or the figure is not one of idle streams.
        ended = sum(1 for call in calls if call.done())
        for call in calls:
            call.cancel()
        out = {"streams": streams_n, "opened": all_open, "ended": ended}
        return out | {"kib_per_stream": (after - before) / streams_n}


async def many_jobs(side: Side, jobs_n: int, in_flight: int, chunks: int) -> dict[str, Any]:
    """One stream per job, one change per job; up to ``in_flight`` changes under way at once."""
    async with Channels(side.server.address, jobs_n) as channels:
        t0 = time.perf_counter()
        keys = await side.make_jobs(channels, jobs_n, chunks)
        setup_seconds = time.perf_counter() - t0
        streams = Streams().watch(channels, keys)
        await streams.opened()
        await asyncio.sleep(0.5)
        latencies: list[float] = []
        sem = asyncio.Semaphore(in_flight)

        async def change(i: int) -> None:
            async with sem:
                done = streams.wait_for(i, streams.revision[i] + 1)
                sent = time.monotonic()
                await side.poke(channels, keys[i])()
                await asyncio.wait_for(done.wait(), TIMEOUT)
                latencies.append(streams.arrival[i] - sent)

        cpu0 = pid_cpu_seconds(side.server.proc.pid)
        t1 = time.perf_counter()
        await asyncio.gather(*(change(i) for i in range(jobs_n)))
        elapsed = time.perf_counter() - t1
        cpu1 = pid_cpu_seconds(side.server.proc.pid)
        await streams.close()
        # Server CPU (all threads) per change, from the first poke to the last delivery.
        cpu = (cpu1 - cpu0) / jobs_n * 1e6 if cpu0 is not None and cpu1 is not None else None
        out = {
            "jobs": jobs_n,
            "in_flight": in_flight,
            "setup_seconds": setup_seconds,
            "latency": summary(latencies),
        }
        return out | {"changes_per_second": jobs_n / elapsed, "server_cpu_us_per_change": cpu}


# --- running and reporting ---------------------------------------------------------------------------

Side = JobpulseSide | FanoutSide  # one server under test: how to make its jobs and how to change one


def _with_pair(tmp: str, tag: str, chunks: int, measure: Callable[[Side], Awaitable[Any]]) -> dict[str, Any]:
    """A fresh jobpulse and a fresh fan-out, whose messages are the sizes of jobpulse's (a real snapshot of
    a job of ``chunks`` chunks and a real change), each measured by ``measure`` and stopped after."""
    with Jobpulse(f"sqlite:///{tmp}/{tag}.db") as jp, FanoutProcess() as bare:

        async def go() -> dict[str, Any]:
            templates = await capture_templates(jp, chunks)
            bare.set_templates(*templates)
            out = {"jobpulse": await measure(JobpulseSide(jp)), "bare": await measure(FanoutSide(bare))}
            return {**out, "message_bytes": {"snapshot": len(templates[0]), "change": len(templates[1])}}

        return asyncio.run(go())


def run(settings: Settings, tmp: str) -> dict[str, Any]:
    s = settings
    rows = []
    for n, rounds in zip(s.stream_counts, s.rounds, strict=True):
        _log(f"one job, {n:,} streams, {rounds} changes")
        one = functools.partial(one_job, streams_n=n, rounds=rounds, chunks=s.chunks_per_job)
        row = _with_pair(tmp, f"one-{n}", s.chunks_per_job, one)
        with FanoutProcess() as floor:
            row["floor"] = asyncio.run(floor_memory(floor, n))
        rows.append(row)
    _log(f"{s.many_jobs:,} jobs, one stream and one change each")
    many = run_many_jobs(tmp, s.many_jobs, s.many_in_flight, s.chunks_per_job)
    return {"one_job": rows, "many_jobs": many, "message_bytes": rows[0]["message_bytes"]}


def run_many_jobs(tmp: str, jobs_n: int, in_flight: int, chunks: int) -> dict[str, Any]:
    """The many-jobs scenario on its own: jobpulse first, then the bare fan-out."""
    measure = functools.partial(many_jobs, jobs_n=jobs_n, in_flight=in_flight, chunks=chunks)
    return _with_pair(tmp, "many", chunks, measure)


def render(results: dict[str, Any]) -> str:
    s, mb, ms, ratio = results["settings"], results["message_bytes"], report._ms, report.ratio_cell
    notes = [
        "baseline: a bare grpc.aio server-streaming fan-out (no database), measured the same way in the same "
        "run; each server in a process of its own (jobpulse on SQLite); all streams in this client process",
        f"messages: snapshot {mb['snapshot']:,} B ({s['chunks_per_job']} chunks), change {mb['change']:,} B",
    ]
    title = f"jobpulse WatchJob fan-out, {s['mode']} run ({results['elapsed_seconds']:.0f} s)"
    lines = report.header(title, notes, results)
    rows: list[list[Any]] = []
    for row in results["one_job"]:
        jp, bare = row["jobpulse"], row["bare"]
        for r, label in ((jp, "jobpulse"), (bare, "bare fan-out")):
            kib, opened = f"{r['kib_per_stream']:.1f}", f"{r['open_seconds']:.2f}"
            if r["latency"] is None:  # the server stopped opening streams
                opened_only = f"only {r['opened']:,} opened*"
                rows.append([f"{r['streams']:,}", label, opened_only, "", "", kib, opened])
                continue
            cpu = f"{ms(r['server_cpu_per_change'])} / {ms(r['client_cpu_per_change'])}"
            more = [*report.spread(r["latency"]), kib, opened, ms(r["burst_settle_p50"]), cpu]
            rows.append([f"{r['streams']:,}", label, *more])
        mem = ratio(jp["kib_per_stream"], bare["kib_per_stream"])
        if jp["latency"] is None or bare["latency"] is None:
            rows.append(["", "ratio", "", "", "", mem])
        else:
            srv = ratio(jp["server_cpu_per_change"], bare["server_cpu_per_change"])
            rows.append(["", "ratio", *report.spread_ratio(jp["latency"], bare["latency"]), mem, "", "", srv])
    floors = [row["floor"] for row in results["one_job"] if row.get("floor")]
    stalled = any(row[k]["latency"] is None for row in results["one_job"] for k in ("jobpulse", "bare"))
    star = f"* not every stream got its first message within {OPEN_TIMEOUT:g} s: no latency; memory is"
    star += " per opened stream"
    lines += report.section(
        "1. one job, N streams: change (ReportChunkProgress / bare poke) to arrival on every stream; CPU: "
        "server (all threads) / this client process, per change, from the poke to the last arrival; rounds "
        f"{results['one_job'][0]['jobpulse'].get('spacing_seconds', 0):.2f} s apart. burst: {BURST} changes "
        f"back to back until every stream has the last (p50 of {BURSTS})",
        ["N", "", "p50 ms", "p99 ms", "max ms", "KiB/idle stream", "open s", "burst ms", "CPU ms srv/cli"],
        rows,
        "grpc.aio alone (a handler that writes one message, then waits on a future), KiB per idle stream: "
        + ", ".join(
            f"{f['kib_per_stream']:.1f} at {f['streams']:,}"
            + ("" if f["opened"] else " (not all opened)")
            + (f" ({f['ended']:,} ended early)" if f.get("ended") else "")
            for f in floors
        ),
        *[star] * stalled,
    )
    jp, bare = results["many_jobs"]["jobpulse"], results["many_jobs"]["bare"]
    rows = []
    for r, label in ((jp, "jobpulse"), (bare, "bare fan-out")):
        rate, cpu = f"{r['changes_per_second']:,.0f}", report._us(r["server_cpu_us_per_change"])
        rows.append([label, *report.spread(r["latency"]), rate, cpu])
    rate = ratio(jp["changes_per_second"], bare["changes_per_second"])
    lines += report.section(
        f"2. {jp['jobs']:,} jobs, one stream each, one change per job ({jp['in_flight']} in flight)",
        ["", "p50 ms", "p99 ms", "max ms", "changes/s", "srv CPU us/change"],
        [*rows, ["ratio", *report.spread_ratio(jp["latency"], bare["latency"]), rate]],
    )
    lines += report.targets("targets (WatchJob that never loses an event)", goals(results))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = report.arguments("watch", __doc__, "short smoke run (about 30 s)").parse_args(argv)
    settings = QUICK if args.quick else FULL
    procs.raise_nofile()
    procs.tune_gc()  # this process holds every stream
    run_ = report.Run()
    with tempfile.TemporaryDirectory(prefix="jobpulse-watch-bench-") as tmp:
        results = run_.stamp(run(settings, tmp))
    results["settings"] = asdict(settings)
    # A full run's figures are the table's current ones.
    return report.publish(results, render(results), args.json, "" if args.quick else "watch", goals(results))


def goals(results: dict[str, Any]) -> list[Goal]:
    """The watch targets: delivery p99 at 1,000 watchers (of one job, of 1,000 jobs) and the server's
    memory per idle stream, beside grpc.aio's own."""
    out = []
    for row in results["one_job"]:
        jp = row["jobpulse"]
        if jp["streams"] == TARGET_P99_AT and jp["latency"] is not None:
            what = f"p99 at {TARGET_P99_AT:,} watchers of one job"
            out.append(Goal(what, jp["latency"]["p99"] * 1e3, False, TARGET_P99_MS, 50.0, "ms"))
        if jp["streams"] >= TARGET_P99_AT:
            notes = [f"over the {jp['opened']:,} streams that opened"] if jp["stalled"] else []
            if floor := row.get("floor"):
                notes.append(f"grpc.aio alone: {floor['kib_per_stream']:.1f} KiB")
            what = f"server memory per idle stream at {jp['streams']:,} streams"
            kib = TARGET_KIB_PER_STREAM
            out.append(Goal(what, jp["kib_per_stream"], False, kib, kib / 2, "KiB", note="; ".join(notes)))
    many = results["many_jobs"]["jobpulse"]
    what = f"p99 at {many['jobs']:,} watchers of {many['jobs']:,} jobs"
    out.append(Goal(what, many["latency"]["p99"] * 1e3, False, TARGET_P99_MS, 50.0, "ms"))
    return out
