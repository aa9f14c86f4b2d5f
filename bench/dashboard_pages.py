"""The dashboard's server time against the RPCs it stands on, measured in the same run.

    python -m bench.dashboard_pages                 # 1,000,000 jobs on PostgreSQL
    python -m bench.dashboard_pages --jobs 100000    # quicker

1. Jobs page, 20 rows (``GET /?page_size=20``, newest first, with total_size) against ``ListJobs`` of the
   same page over gRPC: p50 of each, requests alternating. Target: <= 2x (moonshot 1.2x).
2. Job page of a 100,000-chunk job (``GET /jobs/{id}``: the job and its first 50 chunks) against
   ``GetJob`` BASIC + one ``ListJobChunks`` page of 50, summed per round; ``GET /jobs/{id}/grid`` (every
   chunk's state, what the page's script fetches) reported beside them. Target: <= 2x.
3. With Debian's chromium + chromium-driver installed: the grid's draw time in the browser (the page's
   own ``performance.now()`` figure). Target: < 500 ms.
4. Live updates: server CPU seconds for 1,000 jobs changing at once (UpdateJob, 100 in flight), with no
   reader, with one raw ``/v1/events`` reader, and with the dashboard's jobs page open in Chromium (which
   reads the same stream), the three in turns so that none is always last. Cost of a reader = CPU with it
   minus CPU without; target: page <= raw. The page's own requests during each burst are counted from
   Chromium's network log (it should send none: rows update from the stream).

The jobs are bulk-loaded as bench.listing_scale loads them (COPY, indexes rebuilt); the server runs in a
process of its own (``python -m jobpulse_server``), as users run it.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import socket
import statistics
import sys
import threading
import time
from typing import Any

import grpc

from bench import report
from bench.http_streams import Jobpulse
from bench.listing_scale import create_backend, drop_backend, load_pg, migrate
from bench.load import percentile
from bench.procs import _cpu_seconds
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


def _get(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - t0
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pages(server: Jobpulse, job_id: str, rounds: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    channel = grpc.insecure_channel(server.target)
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    list_req = job_service_pb2.ListJobsRequest(page_size=20)
    get_req = job_service_pb2.GetJobRequest(job_id=job_id, view=job_pb2.JOB_VIEW_BASIC)
    chunks_req = job_service_pb2.ListJobChunksRequest(job_id=job_id, page_size=50)
    out: dict[str, list[float]] = {
        k: [] for k in ("jobs_page", "list_jobs", "job_page", "get_plus_chunks", "grid")
    }
    for i in range(rounds + 5):  # the first rounds warm both sides up and are dropped
        samples = {
            "jobs_page": _get(conn, "/?page_size=20"),
            "list_jobs": _timed(lambda: stub.ListJobs(list_req)),
            "job_page": _get(conn, f"/jobs/{job_id}"),
            "get_plus_chunks": _timed(lambda: (stub.GetJob(get_req), stub.ListJobChunks(chunks_req))),
            "grid": _get(conn, f"/jobs/{job_id}/grid") if i % 5 == 0 else None,
        }
        if i >= 5:
            for key, value in samples.items():
                if value is not None:
                    out[key].append(value)
    conn.close()
    channel.close()
    return {key: percentile(values, 50) for key, values in out.items()}


def draw_in_browser(server: Jobpulse, job_id: str) -> list[float] | None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        return None
    driver = _browser(chromium, driver_path)
    try:
        found = []
        for _ in range(3):
            driver.get(f"http://127.0.0.1:{server.http_port}/jobs/{job_id}")
            deadline = time.monotonic() + 60
            drawn = None
            while drawn is None and time.monotonic() < deadline:
                drawn = driver.find_element("css selector", '[data-testid="chunk-grid"]').get_attribute(
                    "data-draw-ms"
                )
                if drawn is None:
                    time.sleep(0.05)
            found.append(float(drawn or "nan"))
        return found
    finally:
        driver.quit()


def _browser(chromium: str, driver_path: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the page's own requests
    return webdriver.Chrome(service=Service(driver_path), options=options)


def _network(driver: Any) -> tuple[int, int]:
    """(requests the page sent, SSE events it received) since the last call (Chromium's network log)."""
    methods = [
        json.loads(entry["message"])["message"].get("method") for entry in driver.get_log("performance")
    ]
    return methods.count("Network.requestWillBeSent"), methods.count("Network.eventSourceMessageReceived")


def _idle_rate(pid: int, seconds: float = 2.0) -> float:
    """The server's CPU seconds per second when nothing happens (its loops' own wake-ups)."""
    before, t0 = _cpu_seconds(pid) or 0.0, time.monotonic()
    time.sleep(seconds)
    return ((_cpu_seconds(pid) or 0.0) - before) / (time.monotonic() - t0)


def _settled(pid: int, idle: float) -> tuple[float, float]:
    """Polls until the server is back to idle (two quarter-seconds in a row at most twice its idle rate
    plus 2 %); returns (its CPU seconds, when)."""
    calm = 0
    last, t_last = _cpu_seconds(pid) or 0.0, time.monotonic()
    while calm < 2:
        time.sleep(0.25)
        now, t_now = _cpu_seconds(pid) or 0.0, time.monotonic()
        calm = calm + 1 if (now - last) / (t_now - t_last) <= 2 * idle + 0.02 else 0
        last, t_last = now, t_now
    return last, t_last


async def _burst(target: str, job_ids: list[str], priority: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        gate = asyncio.Semaphore(100)

        async def one(job_id: str) -> None:
            async with gate:
                req = job_service_pb2.UpdateJobRequest(job_id=job_id, priority=priority)
                req.update_mask.paths.append("priority")
                await stub.UpdateJob(req)

        await asyncio.gather(*(one(j) for j in job_ids))


class _RawReader:
    """One plain /v1/events reader that reads (and parses) every event, on a socket of its own: closing
    it ends the stream on the server (an http.client response would keep the socket open after
    ``HTTPConnection.close()``, and the reader with it)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        self.file = self.sock.makefile("rb")
        self.seen = 0
        self.events = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                if line.startswith(b"data:"):
                    self.events += 1
                    self.seen += len(json.loads(line[5:]).get("jobs", []))
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(10)


def live_cost(server: Jobpulse, job_ids: list[str], reps: int) -> dict[str, Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    modes = ["none", "raw"] + (["page"] if chromium and driver_path else [])
    costs: dict[str, list[float]] = {m: [] for m in modes}
    priority = 0
    page_requests = 0  # the most requests the page sent during one burst (beyond its open stream)
    events: dict[str, list[int]] = {"raw": [], "page": []}  # SSE events each reader got per burst
    idle = _idle_rate(server.pid)
    for rep in range(reps):
        for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:  # no mode always last
            reader: Any = None
            if mode == "raw":
                reader = _RawReader(server.http_port)
            elif mode == "page":
                reader = _browser(chromium, driver_path)  # type: ignore[arg-type]
                reader.get(f"http://127.0.0.1:{server.http_port}/?page_size=100")
                deadline = time.monotonic() + 30
                while reader.find_element("id", "live").get_attribute("data-state") != "on":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the jobs page never went live")
                    time.sleep(0.05)
                _network(reader)
            before, t0 = _settled(server.pid, idle)
            priority = (priority + 1) % 11
            asyncio.run(_burst(server.target, job_ids, priority))
            after, t1 = _settled(server.pid, idle)
            costs[mode].append(after - before - idle * (t1 - t0))  # the burst's CPU, idle wake-ups taken out
            if mode == "raw":
                events["raw"].append(reader.events)
                reader.close()
            elif mode == "page":
                sent, got = _network(reader)
                page_requests = max(page_requests, sent)
                events["page"].append(got)
                reader.quit()
    med = {m: statistics.median(v) for m, v in costs.items()}
    return {
        "cpu": med,
        "page_requests": page_requests if "page" in modes else None,
        "events": {m: statistics.median(v) for m, v in events.items() if v},
        "raw_extra": med["raw"] - med["none"],
        "page_extra": med.get("page", 0) - med["none"] if "page" in med else None,
    }


async def _big_job(target: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        made = await stub.CreateJob(
            job_service_pb2.CreateJobRequest(kind="bench-grid", total_items=100_000, chunk_size=1),
            timeout=600,
        )
        return str(made.job.id)


async def _newest(target: str, n: int) -> list[str]:
    """The ids of the ``n`` newest jobs (ListJobs pages hold 100 at most)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        ids: list[str] = []
        token = ""
        while len(ids) < n:
            found = await stub.ListJobs(
                job_service_pb2.ListJobsRequest(
                    page_size=min(100, n - len(ids)), order_by="create_time desc", page_token=token
                )
            )
            ids += [j.id for j in found.jobs]
            token = found.next_page_token
            if not token:
                break
        return ids


async def _setup(n_jobs: int) -> Any:
    backend = await create_backend("postgresql", n_jobs)
    await migrate(backend)
    print(f"loading {n_jobs:,} jobs ...", file=sys.stderr, flush=True)
    await load_pg(backend, time.time_ns() // 1000, 0, 0)
    return backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    backend = asyncio.run(_setup(args.jobs))
    try:
        server = Jobpulse(backend.url, http=True).start()
        try:
            print("creating a 100,000-chunk job ...", file=sys.stderr, flush=True)
            big = asyncio.run(_big_job(server.target))
            print("timing pages ...", file=sys.stderr, flush=True)
            timed = pages(server, big, args.rounds)
            print(f"p50 seconds: {timed}", file=sys.stderr, flush=True)
            drawn = draw_in_browser(server, big)
            print(f"grid drawn in Chromium (ms): {drawn}", file=sys.stderr, flush=True)
            print("live updates ...", file=sys.stderr, flush=True)
            ids = asyncio.run(_newest(server.target, 1000))
            live = live_cost(server, ids, args.bursts)
        finally:
            server.stop()
    finally:
        asyncio.run(drop_backend(backend))
    jobs_ratio = timed["jobs_page"] / timed["list_jobs"]
    job_ratio = timed["job_page"] / timed["get_plus_chunks"]
    ms = {key: f"{value * 1e3:.2f} ms" for key, value in timed.items()}
    lines = [
        f"# Dashboard pages: PostgreSQL, {args.jobs:,} jobs ({time.perf_counter() - started:.0f} s)",
        "",
        json.dumps(report.machine_facts()),
        "",
        "| measure | dashboard | RPC baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| jobs page, 20 rows, p50 | {ms['jobs_page']} | ListJobs {ms['list_jobs']} "
        f"| {jobs_ratio:.2f}x | <= 2x (moonshot 1.2x) |",
        f"| job page, 100,000 chunks, p50 | {timed['job_page'] * 1e3:.2f} ms | GetJob BASIC + ListJobChunks "
        f"{timed['get_plus_chunks'] * 1e3:.2f} ms | {job_ratio:.2f}x | <= 2x |",
        f"| grid data (/grid, 100,000 states), p50 | {ms['grid']} | | | what the page's script fetches |",
    ]
    if drawn is not None:
        lines.append(f"| grid drawn in Chromium | {max(drawn):.1f} ms (max of {len(drawn)}) | | | < 500 ms |")
    else:
        lines.append(
            "| grid drawn in Chromium | not measured: chromium / chromedriver missing | | | < 500 ms |"
        )
    cpu = live["cpu"]
    nan = float("nan")
    page_cpu = cpu.get("page", nan)
    page_extra = live["page_extra"] if live["page_extra"] is not None else nan
    lines.append(
        f"| 1,000 jobs change at once: server CPU, median of {args.bursts} | page open {page_cpu:.3f} s "
        f"| raw /v1/events reader {cpu['raw']:.3f} s; no reader {cpu['none']:.3f} s "
        f"| reader's cost: page {page_extra:.3f} s, raw {live['raw_extra']:.3f} s | page <= raw |"
    )
    if live["page_requests"] is not None:
        lines.append(
            f"| requests the jobs page sent during a burst (beyond its /v1/events stream), most of "
            f"{args.bursts} | {live['page_requests']} | | | 0 |"
        )
    got = live["events"]
    lines.append(
        f"| SSE events a reader got per burst, median | page {got.get('page', nan):.0f} "
        f"| raw {got.get('raw', nan):.0f} | | changes folded into fewer events for a slower reader |"
    )
    per_page = page_extra / got["page"] * 1e3 if got.get("page") else nan
    per_raw = live["raw_extra"] / got["raw"] * 1e3 if got.get("raw") else nan
    lines.append(
        f"| reader's server CPU per event it got | page {per_page:.1f} ms | raw {per_raw:.1f} ms "
        f"| {per_page / per_raw:.2f}x | page <= raw |"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
