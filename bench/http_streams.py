"""The HTTP side's Server-Sent Events (``GET /v1/jobs/{id}/events``) against baselines of the same run:
WatchJob on the same server, a bare Starlette + uvicorn SSE endpoint, and gRPC with the HTTP side off.

    python -m bench http [--quick] [--only latency,memory,grpc]

Sizes: the JOBPULSE_BENCH_HTTP_* variables read in ``Sizes`` (``--quick`` only changes the defaults).
Servers and stream-holding clients run in processes of their own; all read CLOCK_MONOTONIC, so a
client's arrival time minus this process's sending time is a latency.

1. Delivery latency: N raw SSE streams (the client reads only ``id:`` lines, so it costs far less than
   the server) and N WatchJob streams on one job, in blocks alternating SSE, gRPC, gRPC, SSE so drift
   weighs on both alike. A change is a worker's ReportChunkProgress, one with a preview (an artifact of
   the running chunk) or CompleteChunk(claim_next), in turn, timed
   from just before the RPC to the event carrying its revision; changes are spaced past
   ``watch_min_interval`` so pacing never holds one back.
2. Memory per idle SSE stream: server RSS growth over N idle streams (heartbeat an hour), each server
   fresh and warmed; baselines send jobpulse's own first event then wait, on uvicorn with httptools as
   jobpulse's HTTP side runs: Starlette StreamingResponse and sse-starlette (if installed).
3. gRPC unaffected: GetJob (BASIC) calls/s on a server with the HTTP side off (``JOBPULSE_HTTP_PORT=-1``)
   and one with it on and idle SSE streams open; rounds alternate off, on; medians.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import importlib.util
import socket
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any

import grpc
from google.protobuf import duration_pb2

from bench import procs, report, scenarios
from bench.load import closed_loop, shares, summary
from bench.procs import Child, Jobpulse, Serving, cpu_seconds, status_kib
from bench.report import Goal
from bench.watch_streams import OPEN_TIMEOUT, Channels, Streams, create_job, watch_min_interval
from jobpulse.v1 import (
    job_pb2,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

TIMEOUT = 60.0
# Seconds a client process may take to answer a command (opening thousands of streams included).
REPLY_TIMEOUT = OPEN_TIMEOUT + 30.0
# TCP connections a client process has in the making at once (a burst of thousands of SYNs
# overflows the listen backlog: the ones dropped come back after a one-second retransmit).
CONNECT_CONCURRENCY = 100
LEASE = duration_pb2.Duration(seconds=3600)
KIND = "http-bench"
IDLE_HEARTBEAT = 3600.0

TARGET_P99_RATIO = 1.2
# A preview a worker reports reaches 1,000 SSE watchers of its job within this, p99 (issue 54).
TARGET_PREVIEW_P99_MS = 250.0
TARGET_MEMORY_RATIO = 1.2
TARGET_GRPC_RATIO = 0.95

PARTS = ("latency", "memory", "grpc")


_log = functools.partial(report.log, tag="http-bench")


class Sizes:
    """The run's sizes: the defaults (full or quick), each replaced by its JOBPULSE_BENCH_HTTP_* variable."""

    def __init__(self, quick: bool) -> None:
        q, env = quick, report.env_size
        self.mode = "quick" if q else "full"
        self.clients: int = env("JOBPULSE_BENCH_HTTP_CLIENTS", 50 if q else 1000)  # streams on one job
        self.rounds: int = env("JOBPULSE_BENCH_HTTP_ROUNDS", 5 if q else 20)  # timed changes per block
        self.blocks: int = env("JOBPULSE_BENCH_HTTP_BLOCKS", 1 if q else 2)  # blocks of each kind
        self.idle: int = env("JOBPULSE_BENCH_HTTP_IDLE", 100 if q else 2000)  # streams for the memory figure
        self.settle: float = env("JOBPULSE_BENCH_HTTP_SETTLE", 2.0, float)  # idle seconds before RSS
        self.load_streams: int = env("JOBPULSE_BENCH_HTTP_LOAD_STREAMS", 20 if q else 200)  # during GetJob
        self.getjob_seconds: float = env("JOBPULSE_BENCH_HTTP_GETJOB_SECONDS", 1.0 if q else 5.0, float)
        self.getjob_rounds: int = env("JOBPULSE_BENCH_HTTP_GETJOB_ROUNDS", 2 if q else 4)  # per server
        self.getjob_concurrency: int = env("JOBPULSE_BENCH_HTTP_GETJOB_CONCURRENCY", 16)  # calls in flight
        self.client_procs: int = env("JOBPULSE_BENCH_HTTP_CLIENT_PROCS", 1)  # processes holding streams


# --- the client processes: streams held away from the servers' loops ---------------------------------


class SseClient(asyncio.Protocol):
    """One SSE stream over a raw connection: the status line, then only the ``id:`` lines of complete
    events (an event ends at a blank line). HTTP/1.1 chunked framing sits between events, never inside
    one (the server writes each event as one chunk), so it needs no decoding here."""

    __slots__ = ("_buf", "_request", "_status", "closing", "i", "tracker", "transport")

    def __init__(self, tracker: Streams, i: int, request: bytes) -> None:
        self.tracker, self.i, self._request = tracker, i, request
        self._buf, self._status, self.closing = b"", 0, False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self._buf + data if self._buf else data
        if not self._status:
            if len(buf) < 12:
                self._buf = buf
                return
            self._status = int(buf[9:12])  # b"HTTP/1.1 200 OK"
            if self._status != 200:
                self.tracker.failed += 1
                self.tracker.check_open()
                self.closing = True
                assert self.transport is not None
                self.transport.close()
                return
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return
        self._buf = buf[end + 2 :]
        at = buf.rfind(b"\nid: ", 0, end)
        if at >= 0:
            stop = buf.find(b"\n", at + 5)
            self.tracker.seen(self.i, int(buf[at + 5 : stop]), now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.tracker.ended += 1
            self.tracker.check_open()


class Holder:
    """What one client process holds: streams of one kind at a time, and the commands it obeys."""

    def __init__(self) -> None:
        self.streams, self.cpu0 = Streams(), 0.0
        self.sse: list[SseClient] = []
        self.channels: Channels | None = None

    async def handle(self, msg: tuple[Any, ...]) -> tuple[Any, ...]:
        op, t = msg[0], self.streams
        if op in ("sse", "grpc"):
            started = time.monotonic()
            await (self.open_sse if op == "sse" else self.open_grpc)(*msg[1:])
            await t.opened()
            return ("opened", t.first, t.failed, t.ended, time.monotonic() - started)
        if op == "arm":
            self.cpu0 = time.process_time()
            return ("armed", t.arm())
        if op == "collect":  # every stream has the armed revision: the latencies from ``sent``
            sent, timeout = msg[1:]
            target = t.target
            await t.reach(timeout)
            got = [a - sent for r, a in zip(t.revision, t.arrival, strict=True) if r >= (target or 0)]
            return ("collected", got, len(t.revision) - len(got), time.process_time() - self.cpu0)
        if op == "state":
            return ("state", len(t.revision), t.first, t.failed, t.ended)
        if op == "close":
            await self.close()
            return ("closed",)
        raise ValueError(f"unknown command {op!r}")

    async def open_sse(self, host: str, port: int, path: str, n: int) -> None:
        loop = asyncio.get_running_loop()
        request = (
            f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\naccept: text/event-stream\r\n"
            "cache-control: no-cache\r\n\r\n"
        ).encode()
        sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
        streams = self.streams
        streams.expect(n)

        async def one() -> None:
            i = streams.add()
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: SseClient(streams, i, request), host, port
                    )
                except OSError:
                    streams.failed += 1
                    return
                self.sse.append(proto)  # type: ignore[arg-type]

        await asyncio.gather(*(one() for _ in range(n)))

    async def open_grpc(self, target: str, job_id: str, n: int) -> None:
        self.channels = Channels(target, n)
        self.streams.watch(self.channels, [job_id] * n)

    async def close(self) -> None:
        for proto in self.sse:
            proto.closing = True
            if proto.transport is not None:
                proto.transport.close()
        await self.streams.close()
        if self.channels is not None:
            await self.channels.close()
        await asyncio.sleep(0.1)  # the closes go out
        self.sse, self.channels, self.streams = [], None, Streams()


async def serve_client() -> Serving:
    """A client process holding streams for this one (a ``bench.procs.Child``): port 0, the Holder's
    commands."""
    procs.raise_nofile()
    procs.tune_gc()
    holder = Holder()
    return 0, holder.handle, holder.close


class ClientPool:
    """The client processes; every command goes to each, with its share of the streams."""

    def __init__(self, processes: int) -> None:
        self.children = [Child(serve_client, name=f"http-bench-client-{k}") for k in range(processes)]
        for child in self.children:
            child.start()
        self.conns = [child.conn for child in self.children]

    def _ask(self, msgs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        for conn, msg in zip(self.conns, msgs, strict=True):
            conn.send(msg)
        replies = []
        for k, conn in enumerate(self.conns):
            if not conn.poll(REPLY_TIMEOUT):
                raise RuntimeError(f"client process {k} did not answer {msgs[k][0]!r}")
            reply = conn.recv()
            if reply[0] == "error":
                raise RuntimeError(f"client process {k}, {msgs[k][0]!r}:\n{reply[1]}")
            replies.append(reply)
        return replies

    async def ask(self, msgs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._ask, msgs)

    async def all(self, *msg: Any) -> list[tuple[Any, ...]]:
        return await self.ask([msg] * len(self.conns))

    async def open(self, n: int, kind: str, *where: Any) -> dict[str, Any]:
        """``n`` streams over the processes: ``kind`` "sse" at (host, port, path), "grpc" at (target, job)."""
        replies = await self.ask([(kind, *where, share) for share in shares(n, len(self.conns))])
        out = {key: sum(r[k + 1] for r in replies) for k, key in enumerate(("opened", "failed", "ended"))}
        out |= {"streams": n, "seconds": max(r[4] for r in replies)}
        if out["opened"] != n:
            raise RuntimeError(
                f"only {out['opened']:,} of {n:,} streams opened within {OPEN_TIMEOUT:g} s "
                f"({out['failed']:,} refused, {out['ended']:,} ended)"
            )
        return out

    async def state(self) -> dict[str, int]:
        replies = await self.all("state")
        keys = ("streams", "opened", "failed", "ended")
        return {key: sum(r[k + 1] for r in replies) for k, key in enumerate(keys)}

    async def close(self) -> None:
        await self.all("close")

    def stop(self) -> None:
        for child in self.children:
            child.close()


# --- the servers under test --------------------------------------------------------------------------


def _bare_app(style: str, first: bytes) -> Any:
    """A Starlette app whose events path sends ``first``, then waits for ever (until the client goes)."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def body(event: Any) -> Any:
        yield event
        # A future of its own per stream (one shared future would be cancelled with the first stream).
        await asyncio.get_running_loop().create_future()

    if style == "streaming":
        headers = {"cache-control": "no-cache, no-store"}

        async def endpoint(request: Any) -> Any:
            return StreamingResponse(body(first), media_type="text/event-stream", headers=headers)

    else:
        from sse_starlette import EventSourceResponse, ServerSentEvent

        f = _event_fields(first)
        event = ServerSentEvent(data=f["data"], event=f["event"], id=f["id"], retry=2000, sep="\n")

        async def endpoint(request: Any) -> Any:
            # Its ping (a comment per interval) as long as jobpulse's heartbeat here; "\n" line ends,
            # as jobpulse writes them (the client looks for "\n\n").
            return EventSourceResponse(body(event), ping=int(IDLE_HEARTBEAT), sep="\n")

    return Starlette(routes=[Route("/v1/jobs/{job_id}/events", endpoint, methods=["GET"])])


async def serve_bare_sse(style: str, first: bytes) -> Serving:
    """A bare Starlette + uvicorn SSE server (``style``: "streaming" or "sse-starlette") in a
    ``bench.procs.Child``; no commands."""
    import uvicorn

    procs.raise_nofile()
    options: dict[str, Any] = {"http": "httptools", "ws": "none", "lifespan": "off", "access_log": False}
    options |= {"log_config": None, "server_header": False, "timeout_keep_alive": 5}
    options["timeout_graceful_shutdown"] = 1
    server = uvicorn.Server(uvicorn.Config(_bare_app(style, first), **options))
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.02)
    procs.tune_gc()  # as jobpulse's server does once it serves

    async def stop() -> None:
        server.should_exit = True
        await serving

    return sock.getsockname()[1], lambda msg: ("error", f"unknown command {msg[0]!r}"), stop


def _event_fields(first: bytes) -> dict[str, str]:
    """The event, id and data of the last event in ``first`` (SSE text)."""
    fields = {"event": "message", "id": "", "data": ""}
    last = first.strip(b"\n").split(b"\n\n")[-1]
    for line in last.decode().split("\n"):
        name, _, value = line.partition(": ")
        if name in fields:
            fields[name] = value
    return fields


def capture_first(port: int, path: str) -> bytes:
    """What jobpulse writes first on a new stream (the retry line and the snapshot), decoded."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"accept": "text/event-stream"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {response.read()[:300]!r}")
        body = b""
        while not (b"\nid: " in body and body.endswith(b"\n\n")):
            part = response.read1(65536)
            if not part:
                raise RuntimeError(f"GET {path}: the stream ended before its first event")
            body += part
        return body
    finally:
        conn.close()


# --- jobs and changes ------------------------------------------------------------------------------


class Changer:
    """A worker on the bench job: ReportChunkProgress, ReportChunkProgress with a preview (an image
    artifact of the running chunk, replacing the last) and CompleteChunk (claiming the next chunk in the
    same transaction) in turn, each one change of the job."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.claim_request = worker_service_pb2.ClaimChunksRequest(
            worker_id="http-bench", kinds=[KIND], max_chunks=1, lease_duration=LEASE
        )
        self.claim: Any = None
        self.count = 0

    async def start(self) -> None:
        got = await self.workers.ClaimChunks(self.claim_request, timeout=TIMEOUT)
        if not got.claims:
            raise RuntimeError("no chunk to claim")
        self.claim = got.claims[0]

    async def change(self) -> str:
        self.count += 1
        claim = self.claim
        held = {"chunk_id": claim.chunk.id, "lease_token": claim.lease_token}
        if self.count % 3 == 1:
            items, stage = min(5, claim.chunk.item_count), f"round-{self.count}"
            progress = worker_service_pb2.ReportChunkProgressRequest(**held, items_done=items, stage=stage)
            await self.workers.ReportChunkProgress(progress, timeout=TIMEOUT)
            return "progress"
        if self.count % 3 == 2:
            progress = worker_service_pb2.ReportChunkProgressRequest(**held)
            progress.artifacts.add(
                name="frame",
                uri=f"https://cdn.example/bench/frame-{self.count}.jpg",
                media_type="image/jpeg",
                role=job_pb2.ARTIFACT_ROLE_PREVIEW,
            )
            await self.workers.ReportChunkProgress(progress, timeout=TIMEOUT)
            return "preview"
        complete = worker_service_pb2.CompleteChunkRequest(**held, claim_next=self.claim_request)
        done = await self.workers.CompleteChunk(complete, timeout=TIMEOUT)
        if not done.claims:
            raise RuntimeError("the bench job ran out of chunks")
        self.claim = done.claims[0]
        return "complete"


# --- 1. delivery latency -----------------------------------------------------------------------------


async def _timed_change(pool: ClientPool, server: Jobpulse, changer: Changer) -> dict[str, Any]:
    await pool.all("arm")
    cpu0 = cpu_seconds(server) or 0.0
    sent = time.monotonic()
    kind = await changer.change()
    returned = time.monotonic()
    replies = await pool.all("collect", sent, TIMEOUT)
    server_cpu = (cpu_seconds(server) or 0.0) - cpu0
    missing = sum(r[2] for r in replies)
    if missing:
        raise RuntimeError(f"{missing:,} streams did not get the change within {TIMEOUT:g} s")
    out = {"kind": kind, "latencies": [x for r in replies for x in r[1]], "rpc": returned - sent}
    return out | {"server_cpu": server_cpu, "client_cpu": sum(r[3] for r in replies)}


async def _latency_block(
    pool: ClientPool, server: Jobpulse, changer: Changer, job_id: str, kind: str, n: int, rounds: int
) -> dict[str, Any]:
    if kind == "sse":
        opened = await pool.open(n, "sse", "127.0.0.1", server.http_port, f"/v1/jobs/{job_id}/events")
    else:
        opened = await pool.open(n, "grpc", server.address, job_id)
    spacing = watch_min_interval() + 0.05
    try:
        await asyncio.sleep(0.5)
        await _timed_change(pool, server, changer)  # warm-up, untimed
        rows = []
        for _ in range(rounds):
            await asyncio.sleep(spacing)
            rows.append(await _timed_change(pool, server, changer))
        state = await pool.state()
    finally:
        await pool.close()
    samples: dict[str, list[float]] = {"progress": [], "preview": [], "complete": []}
    for r in rows:
        samples[r["kind"]] += r["latencies"]
    out = {"kind": kind, "open_seconds": opened["seconds"], "rounds": rounds, "spacing_seconds": spacing}
    out |= {"latency": summary(samples["progress"] + samples["complete"]), "samples": samples}
    out |= {key: [r[key] for r in rows] for key in ("rpc", "server_cpu", "client_cpu")}
    return out | {"ended_early": state["ended"]}


async def latency(sizes: Sizes, pool: ClientPool, tmp: str) -> dict[str, Any]:
    n = sizes.clients
    order = []
    for b in range(sizes.blocks):
        order += ["sse", "grpc"] if b % 2 == 0 else ["grpc", "sse"]
    changes = len(order) * (sizes.rounds + 1)
    chunks = changes // 2 + 3
    with Jobpulse(f"sqlite:///{tmp}/latency.db") as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            job_id = await create_job(channel, chunks, KIND)
            changer = Changer(channel)
            await changer.start()
            blocks: list[dict[str, Any]] = []
            for kind in order:
                _log(f"1. latency: {n:,} {kind} streams, {sizes.rounds} changes")
                blocks.append(await _latency_block(pool, server, changer, job_id, kind, n, sizes.rounds))
                await asyncio.sleep(1.0)  # the closed streams go away on the server
    out: dict[str, Any] = {"streams": n, "order": order, "chunks": chunks}
    for kind in ("sse", "grpc"):
        mine = [b for b in blocks if b["kind"] == kind]
        rounds = sum(b["rounds"] for b in mine)
        by_change = {
            c: [x for b in mine for x in b["samples"][c]] for c in ("progress", "preview", "complete")
        }
        got = out[kind] = {"latency": summary([x for v in by_change.values() for x in v])}
        got["by_change"] = {c: summary(v) for c, v in by_change.items() if v}
        got["open_seconds"] = statistics.median(b["open_seconds"] for b in mine)
        got["rpc_p50"] = statistics.median(x for b in mine for x in b["rpc"])
        for k in ("server_cpu", "client_cpu"):
            got[f"{k}_per_change"] = sum(sum(b[k]) for b in mine) / rounds
        got["ended_early"] = sum(b["ended_early"] for b in mine)
    for block in blocks:
        del block["samples"]
    out["blocks"] = blocks
    out["p50_ratio"] = out["sse"]["latency"]["p50"] / out["grpc"]["latency"]["p50"]
    out["p99_ratio"] = out["sse"]["latency"]["p99"] / out["grpc"]["latency"]["p99"]
    return out


# --- 2. memory per idle SSE stream -------------------------------------------------------------------


async def _idle_memory(
    pool: ClientPool, pid: int, port: int, path: str, n: int, settle: float
) -> dict[str, Any]:
    """Server RSS growth over ``n`` idle SSE streams, after 10 streams opened and closed (warm-up)."""
    await pool.open(10, "sse", "127.0.0.1", port, path)
    await pool.close()
    await asyncio.sleep(0.5)
    before = status_kib(pid)
    opened = await pool.open(n, "sse", "127.0.0.1", port, path)
    await asyncio.sleep(settle)
    after = status_kib(pid)
    state = await pool.state()  # every stream must still be open: the figure is one of idle streams
    await pool.close()
    out = {"streams": n, "open_seconds": opened["seconds"], "rss_before_kib": before, "rss_after_kib": after}
    return out | {"kib_per_stream": (after - before) / n, "ended_early": state["ended"]}


async def memory(sizes: Sizes, pool: ClientPool, tmp: str) -> dict[str, Any]:
    n = sizes.idle
    out: dict[str, Any] = {"streams": n, "settle_seconds": sizes.settle}
    _log(f"2. memory: {n:,} idle SSE streams, jobpulse")
    with Jobpulse(f"sqlite:///{tmp}/memory.db", heartbeat_interval=IDLE_HEARTBEAT) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            job_id = await create_job(channel, 10, KIND)
        path = f"/v1/jobs/{job_id}/events"
        first = await asyncio.to_thread(capture_first, server.http_port, path)
        out["first_event_bytes"] = len(first)
        out["jobpulse"] = await _idle_memory(pool, server.pid, server.http_port, path, n, sizes.settle)
    styles = ["streaming"] + (["sse-starlette"] if importlib.util.find_spec("sse_starlette") else [])
    for style in styles:
        _log(f"2. memory: {n:,} idle SSE streams, bare {style}")
        with Child(serve_bare_sse, style, first, name=f"bare-{style}") as bare:
            out[style] = await _idle_memory(pool, bare.proc.pid or 0, bare.port, path, n, sizes.settle)
    jp = out["jobpulse"]["kib_per_stream"]
    for style in styles:
        base = out[style]["kib_per_stream"]
        out[style]["ratio"] = jp / base if base > 0 else None
    return out


# --- 3. gRPC with the HTTP side on ---------------------------------------------------------------------


async def grpc_unaffected(sizes: Sizes, pool: ClientPool, tmp: str) -> dict[str, Any]:
    s = sizes
    each = f"{s.getjob_rounds} x {s.getjob_seconds:g} s each"
    _log(f"3. GetJob: HTTP side off vs on with {s.load_streams:,} idle SSE streams, {each}")
    servers = {
        "off": Jobpulse(f"sqlite:///{tmp}/grpc-off.db", http=False),
        "on": Jobpulse(f"sqlite:///{tmp}/grpc-on.db"),
    }
    targets: dict[str, scenarios.Target] = {}
    async with AsyncExitStack() as stack:  # each server started, then its channel; closed in reverse
        calls = {}
        for name, server in servers.items():
            target = scenarios.Target.open(stack.enter_context(server))
            targets[name] = await stack.enter_async_context(target)
            calls[name] = target.get_job(await create_job(target.channel, 10, KIND), job_pb2.JOB_VIEW_BASIC)
        on = servers["on"]
        idle_job = await create_job(targets["on"].channel, 10, kind="http-bench-idle")
        idle_path = f"/v1/jobs/{idle_job}/events"
        opened = await pool.open(s.load_streams, "sse", "127.0.0.1", on.http_port, idle_path)
        rates: dict[str, list[Any]] = {"off": [], "on": []}
        run = functools.partial(closed_loop, concurrency=s.getjob_concurrency)
        for name in ("off", "on"):  # warm-up
            await run(calls[name], seconds=1.0)
        for _ in range(s.getjob_rounds):
            for name, server in servers.items():
                rates[name].append(await run(calls[name], seconds=s.getjob_seconds, server=server))
        state = await pool.state()
        await pool.close()
    out: dict[str, Any] = {"idle_streams": s.load_streams, "idle_open_seconds": opened["seconds"]}
    out["idle_ended_early"] = state["ended"]
    for name, rows in rates.items():
        cpu = statistics.median(x for r in rows if (x := r.server_cpu_us_per_call) is not None)
        per_round = [r.per_second for r in rows]
        out[name] = {"per_round": per_round, "median": statistics.median(per_round)}
        out[name]["server_cpu_us_per_call"] = cpu
    out["pair_ratios"] = [a / b for a, b in zip(out["on"]["per_round"], out["off"]["per_round"], strict=True)]
    out["ratio"] = out["on"]["median"] / out["off"]["median"]
    return out


# --- running and reporting ---------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    s, ms, x, ratio = results["sizes"], report._ms, report._x, report.ratio_cell
    title = f"jobpulse HTTP side (Server-Sent Events), {s['mode']} run ({results['elapsed_seconds']:.0f} s)"
    note = "every figure beside a baseline measured in the same run; servers in processes of their own"
    note += f" (jobpulse on SQLite), every stream held by {s['client_procs']} client process(es), changes"
    note += " and GetJob from another"
    lines = report.header(title, [note], results)
    if lat := results.get("latency"):
        sse, grpc_, b0 = lat["sse"], lat["grpc"], lat["blocks"][0]
        rows: list[list[Any]] = []
        for r, label in ((sse, "SSE (raw client)"), (grpc_, "WatchJob (grpc.aio)")):
            cpu = f"{ms(r['server_cpu_per_change'])} / {ms(r['client_cpu_per_change'])}"
            opened = f"{r['open_seconds']:.2f}"
            rows.append([label, *report.spread(r["latency"]), opened, ms(r["rpc_p50"]), cpu])
        cpu = ratio(sse["server_cpu_per_change"], grpc_["server_cpu_per_change"])
        rows.append(["ratio SSE / gRPC", *report.spread_ratio(sse["latency"], grpc_["latency"]), "", "", cpu])
        by_change = {
            kind: ", ".join(
                f"{c} {ms(v['p50'])} / {ms(v['p99'])} ms" for c, v in lat[kind]["by_change"].items()
            )
            for kind in ("sse", "grpc")
        }
        ended = sse["ended_early"] + grpc_["ended_early"]
        lines += report.section(
            f"1. delivery, {lat['streams']:,} streams on one job: a worker's RPC (ReportChunkProgress, one "
            f"with a preview, CompleteChunk with claim_next, in turn) to the event of its revision on every "
            "stream; blocks "
            f"{', '.join(lat['order'])}, {b0['rounds']} changes each, {b0['spacing_seconds']:.2f} s apart; "
            "CPU per change from the RPC to the last arrival",
            ["", "p50 ms", "p99 ms", "max ms", "open s", "RPC p50 ms", "CPU ms srv / cli"],
            rows,
            "p99 by block: "
            + ", ".join(f"{b['kind']} {ms(b['latency']['p99'])}" for b in lat["blocks"])
            + " ms",
            f"p50 / p99 by change: SSE {by_change['sse']}; gRPC {by_change['grpc']}",
            "the clients share the cores with the server: a grpc.aio reader costs more per message than the "
            "raw SSE one (cli column); if it nears the p99, JOBPULSE_BENCH_HTTP_CLIENT_PROCS=2 spreads the "
            "streams over two processes",
            *[f"! {ended:,} streams ended on their own during the rounds"] * bool(ended),
        )
    if mem := results.get("memory"):
        labels = {"jobpulse": "jobpulse", "streaming": "bare Starlette StreamingResponse"}
        if "sse-starlette" in mem:
            labels["sse-starlette"] = "bare sse-starlette EventSourceResponse"
        rows = []
        for k, label in labels.items():
            r = mem[k]
            mib = [f"{r[f'rss_{w}_kib'] / 1024:.1f}" for w in ("before", "after")]
            cell = "" if k == "jobpulse" else ("n/a" if r["ratio"] is None else x(r["ratio"]))
            rows.append([label, f"{r['kib_per_stream']:.1f}", *mib, f"{r['open_seconds']:.2f}", cell])
        ended_early = ", ".join(k for k in labels if mem[k]["ended_early"])
        lines += report.section(
            f"2. memory per idle SSE stream: server RSS growth over {mem['streams']:,} streams on one job, "
            f"read {mem['settle_seconds']:g} s after they opened (heartbeat / ping every "
            f"{IDLE_HEARTBEAT:g} s; the bare servers send jobpulse's first event, "
            f"{mem['first_event_bytes']:,} B, then wait)",
            ["", "KiB/stream", "RSS before MiB", "after MiB", "open s", "ratio"],
            rows,
            "ratio: jobpulse / that baseline",
            *["(sse-starlette not installed: make bench-http installs it with the bench extra)"]
            * ("sse-starlette" not in mem),
            *[f"! streams ended before RSS was read: {ended_early}"] * bool(ended_early),
        )
    if g := results.get("grpc"):
        on_label = f"HTTP side on, {g['idle_streams']:,} idle SSE streams"
        rows = []
        for k, label in (("off", "HTTP side off (JOBPULSE_HTTP_PORT=-1)"), ("on", on_label)):
            per_round = ", ".join(f"{v:,.0f}" for v in g[k]["per_round"])
            cpu = report._us(g[k]["server_cpu_us_per_call"])
            rows.append([label, f"{g[k]['median']:,.0f}", cpu, per_round])
        cpu = ratio(g["on"]["server_cpu_us_per_call"], g["off"]["server_cpu_us_per_call"])
        pairs = "by pair: " + ", ".join(f"{v:.3f}" for v in g["pair_ratios"])
        rows.append(["ratio on / off (medians)", x(g["ratio"]), cpu, pairs])
        lines += report.section(
            f"3. GetJob BASIC (10-chunk job), {s['getjob_concurrency']} in flight on one channel, "
            f"{s['getjob_rounds']} x {s['getjob_seconds']:g} s per server, rounds off, on, off, on, ...",
            ["", "median calls/s", "srv CPU us/call", "per round"],
            rows,
            *[f"! {g['idle_ended_early']:,} idle SSE streams ended during the rounds"]
            * bool(g["idle_ended_early"]),
        )
    lines += report.targets("targets", goals(results))
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[Goal]:
    out: list[Goal] = []
    if lat := results.get("latency"):
        what = f"SSE p99 / WatchJob p99 at {lat['streams']:,} streams"
        out.append(Goal(what, lat["p99_ratio"], False, TARGET_P99_RATIO, None, "x"))
        if preview := lat["sse"]["by_change"].get("preview"):
            what = f"a preview reaching {lat['streams']:,} SSE watchers of its job, p99"
            out.append(Goal(what, preview["p99"] * 1e3, False, TARGET_PREVIEW_P99_MS, None, "ms"))
    for key, label in (("streaming", "StreamingResponse"), ("sse-starlette", "sse-starlette")):
        if (ratio := results.get("memory", {}).get(key, {}).get("ratio")) is not None:
            what = f"memory per idle SSE stream, jobpulse / bare {label}"
            out.append(Goal(what, ratio, False, TARGET_MEMORY_RATIO, None, "x"))
    if g := results.get("grpc"):
        what = f"GetJob calls/s, HTTP side on ({g['idle_streams']:,} idle SSE streams) / off"
        out.append(Goal(what, g["ratio"], True, TARGET_GRPC_RATIO, None))
    return out


async def _run(parts: list[str], sizes: Sizes, tmp: str) -> dict[str, Any]:
    pool = ClientPool(sizes.client_procs)
    try:
        steps = {"latency": latency, "memory": memory, "grpc": grpc_unaffected}
        return {part: await steps[part](sizes, pool, tmp) for part in PARTS if part in parts}
    finally:
        await asyncio.to_thread(pool.stop)


def main(argv: list[str] | None = None) -> int:
    parser = report.arguments("http", __doc__, "small sizes (a smoke run); variables still win")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if [p for p in parts if p not in PARTS] or not parts:
        parser.error(f"--only: unknown part(s) in {args.only!r}; choose from {', '.join(PARTS)}")
    sizes = Sizes(args.quick)
    procs.raise_nofile()
    run = report.Run()
    with tempfile.TemporaryDirectory(prefix="jobpulse-http-bench-") as tmp:
        results = run.stamp(asyncio.run(_run(parts, sizes, tmp)))
    results["sizes"] = dict(vars(sizes))
    return report.publish(results, render(results), args.json)
