"""Machine facts, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    from google.protobuf.internal import api_implementation

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        # The servers run on this interpreter, so they use this sqlite3 module too.
        "sqlite": sqlite3.sqlite_version,
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "protobuf_backend": api_implementation.Type(),
        "sqlalchemy": _version("sqlalchemy"),
        "aiosqlite": _version("aiosqlite"),
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"


def render(results: dict[str, Any]) -> str:
    """The summary table, plain text, 110 columns at most."""
    m = results["machine"]
    s = results["settings"]
    lines: list[str] = []
    add = lines.append
    add("=" * 100)
    add(f"jobpulse benchmarks, {s['mode']} run ({results['elapsed_seconds']:.0f} s)")
    add("every figure beside a bare grpc.aio baseline measured in the same run;")
    add("each server runs in a process of its own, the client (load generator) in another")
    add("-" * 100)
    add(
        f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | grpcio {m['grpcio']} | "
        f"protobuf {m['protobuf']} ({m['protobuf_backend']})"
    )
    add(f"         {m['cpu_model']} | {m['platform']}")
    add(f"         load average before {results['load_before']} after {results['load_after']}")

    r = results["getjob_rate"]
    add("-" * 100)
    add(
        f"1. GetJob BASIC, 10-chunk job ({r['response_bytes']} B response), {r['concurrency']} in flight "
        f"on one channel, {r['rounds']} x {r['seconds_per_round']:.1f} s per server"
    )
    add(f"   {'':<34}{'calls/s':>12}{'server CPU us/call':>22}{'client CPU us/call':>22}")
    for name, label in (("bare", "bare grpc.aio (baseline)"), ("jobpulse", "jobpulse (SQLite)")):
        row = r[name]
        add(
            f"   {label:<34}{row['per_second']:>12,.0f}{_us(row['server_cpu_us_per_call']):>22}"
            f"{_us(row['client_cpu_us_per_call']):>22}"
        )
    spread = r["round_ratios"]
    cpu_ratio = "n/a" if r["server_cpu_ratio"] is None else _x(r["server_cpu_ratio"])
    add(f"   {'ratio jobpulse/bare':<34}{_x(r['ratio']):>12}{cpu_ratio:>22}")
    add(f"   (calls/s ratio per round: {', '.join(f'{x:.3f}' for x in spread)})")

    lat = results["latency"]
    add("-" * 100)
    add(
        f"2. Latency, sequential calls ({s['latency_calls']} per row and server); baseline: bare GetJob "
        "returning a response of the same size"
    )
    add(f"   {'':<44}{'bytes':>8}{'jobpulse p50/p99 ms':>22}{'bare p50/p99 ms':>18}{'ratio p50/p99':>16}")
    labels = {
        "getjob_basic_1000": "GetJob BASIC, 1,000-chunk job",
        "getjob_full_1000": "GetJob FULL, 1,000-chunk job",
        "listjobs_20": f"ListJobs 20 BASIC, {s['list_jobs'] + 2:,} jobs",
    }
    for key, label in labels.items():
        row = lat[key]
        jp, bare = row["jobpulse"], row["bare"]
        add(
            f"   {label:<44}{row['response_bytes']:>8,}"
            f"{_ms(jp['p50']) + ' / ' + _ms(jp['p99']):>22}"
            f"{_ms(bare['p50']) + ' / ' + _ms(bare['p99']):>18}"
            f"{_x(row['ratio_p50']) + ' / ' + _x(row['ratio_p99']):>16}"
        )

    c = results["chunks"]
    base = r["bare"]["per_second"]
    add("-" * 100)
    add(
        f"3. Chunks through ClaimChunks + CompleteChunk on SQLite, {s['chunk_workers']} asyncio workers "
        f"on one channel, {s['chunk_rounds']} x {s['chunk_seconds']:.1f} s per mode"
    )
    add(f"   a fresh job of {s['chunk_backlog']:,} pending chunks per round; baseline: bare GetJob calls/s")
    add(
        f"   {'':<30}{'chunks/s':>10}{'RPCs/s':>10}{'srv CPU us/chunk':>18}"
        f"{'chunks/s / bare':>17}{'RPCs/s / bare':>15}"
    )
    rows = [
        ("one-by-one (max_chunks=1)", c["one_by_one"]),
        ("batched (max_chunks=10)", c["batched"]),
        *((f"one-by-one, backlog {x['backlog']:,}", x) for x in results.get("backlog_sensitivity") or []),
    ]
    for label, row in rows:
        add(
            f"   {label:<30}{row['chunks_per_second']:>10,.0f}{row['rpcs_per_second']:>10,.0f}"
            f"{_us(row['server_cpu_us_per_chunk']):>18}"
            f"{_x(row['chunks_per_second'] / base):>17}{_x(row['rpcs_per_second'] / base):>15}"
            + ("  (ran dry)" if row["ran_dry"] else "")
        )
    bare4 = results["bare_rate_4"]["per_second"]
    add(
        f"   baseline bare GetJob calls/s: {base:,.0f} at {r['concurrency']} in flight, "
        f"{bare4:,.0f} at {s['chunk_workers']} in flight"
    )
    add("=" * 100)
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
