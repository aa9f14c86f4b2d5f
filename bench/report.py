"""Machine facts, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.work import MODES


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
    }


WIDTH = 122


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"


# --- the targets -----------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    """A figure as the targets show it."""
    if unit in ("", "x"):
        return f"{value:.2f}{unit}"
    if unit == "%":
        return f"{value:+.1%}"
    return f"{value:,.0f} {unit}" if unit == "us" else f"{value:,.1f} {unit}"


@dataclass
class Goal:
    """One line of the targets table: a measured figure against its target and moonshot.

    ``at_least``: higher is better (the figure must be >= the target); otherwise it must be <=.
    ``unit``: "" (a ratio, e.g. calls/s over bare calls/s), "x" (a ratio shown as 1.3x), "%", or a unit
    written after the figure ("us", "ms", "KiB").
    """

    path: str
    measured: float | None
    at_least: bool
    target: float
    moonshot: float
    unit: str = ""
    note: str = ""

    def _fmt(self, value: float) -> str:
        return fmt(value, self.unit)

    def _meets(self, bound: float) -> bool:
        assert self.measured is not None
        return self.measured >= bound if self.at_least else self.measured <= bound

    def cells(self) -> tuple[str, str, str, str, str]:
        sign = ">=" if self.at_least else "<="
        if self.measured is None:
            measured, met = "n/a", "n/a" + (f" ({self.note})" if self.note else "")
        else:
            measured = self._fmt(self.measured)
            if self.unit in ("", "x") and measured == self._fmt(self.target) and self.measured != self.target:
                # 0.898 against >= 0.9 would print as 0.90, "NO": one more digit shows which side it is on.
                measured = f"{self.measured:.3f}" + ("x" if self.unit == "x" else "")
            met = "NO"
            if self._meets(self.moonshot):
                met = "yes, moonshot too"
            elif self._meets(self.target):
                met = "yes"
            if self.note:
                met += f" ({self.note})"
        return self.path, measured, f"{sign} {self._fmt(self.target)}", self._fmt(self.moonshot), met

    def as_dict(self) -> dict[str, Any]:
        path, _, target, moonshot, met = self.cells()
        return {
            "path": path,
            "measured": self.measured,
            "target": target,
            "moonshot": moonshot,
            "met": met,
        }


def render_goals(goals: list[Goal]) -> list[str]:
    """The targets table: target | measured ratio | target | moonshot | met?"""
    rows = [g.cells() for g in goals]
    w = max([len("target")] + [len(r[0]) for r in rows])
    lines = [f"   {'target':<{w}}  {'measured':>10}  {'target':>11}  {'moonshot':>10}  met?"]
    lines.append("   " + "-" * (w + 2 + 10 + 2 + 11 + 2 + 10 + 2 + 4))
    for path, measured, target, moonshot, met in rows:
        lines.append(f"   {path:<{w}}  {measured:>10}  {target:>11}  {moonshot:>10}  {met}")
    return lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def goals(results: dict[str, Any]) -> list[Goal]:
    """The targets bench.core measures (SQLite)."""
    out: list[Goal] = []
    r = results["getjob_rate"]
    out.append(Goal("GetJob BASIC calls/s / bare grpc.aio", r["ratio"], True, 0.6, 0.8))
    lat = results["latency"]
    out.append(Goal("ListJobs (20 BASIC) p50 / bare", lat["listjobs_20"]["ratio_p50"], False, 2.0, 1.3, "x"))
    rev = lat.get("getjob_full_1000_new_revision")
    out.append(
        Goal(
            "GetJob FULL 1,000 chunks p50 / bare, new revision each call",
            rev["ratio_p50"] if rev else None,
            False,
            4.0,
            2.0,
            "x",
        )
    )
    out.append(
        Goal(
            "GetJob FULL 1,000 chunks p50 / bare, same revision",
            lat["getjob_full_1000"]["ratio_p50"],
            False,
            4.0,
            2.0,
            "x",
        )
    )
    base = r["bare"]["per_second"]
    chunks = results["chunks"]
    # The worker-throughput issue's targets: one by one >= 0.25, complete-and-claim >= 0.4 (moonshot 0.6).
    floors = results.get("chunk_floors") or {}
    for key, path, target, moonshot in (
        ("one_by_one", "SQLite claim + complete one by one, chunks/s / bare calls/s", 0.25, 0.5),
        ("complete_and_claim", "SQLite complete-and-claim, chunks/s / bare calls/s", 0.4, 0.6),
    ):
        row = chunks.get(key)
        notes = [_chunk_note(row)]
        floor = _chunks_per_second(floors.get(key), base)
        if floor is not None:
            notes.append(f"its floor under gRPC: {floor:.2f}")
        note = "; ".join(n for n in notes if n)
        out.append(Goal(path, _chunks_per_second(row, base), True, target, moonshot, note=note))
    for key, path in (
        ("one_by_one", "SQLite server CPU per chunk, one by one"),
        ("complete_and_claim", "SQLite server CPU per chunk, complete-and-claim"),
        ("batched_complete_chunks", "SQLite server CPU per chunk, CompleteChunks of 10"),
    ):
        row = chunks.get(key)
        cpu = None if row is None or row.get("unimplemented") else row["server_cpu_us_per_chunk"]
        out.append(Goal(path, cpu, False, 1500, 800, "us", note=_chunk_note(row)))
    watch = results.get("watch")
    if watch:
        jp, bare = watch["jobpulse"], watch["bare"]
        n = f"{jp['jobs']:,} jobs x 1 watcher"
        out.append(
            Goal(
                f"watch, {n}: p99 / bare", jp["latency"]["p99"] / bare["latency"]["p99"], False, 3.0, 1.5, "x"
            )
        )
        out.append(
            Goal(
                f"watch, {n}: changes/s / bare",
                jp["changes_per_second"] / bare["changes_per_second"],
                True,
                0.3,
                0.6,
            )
        )
    return out


def _chunks_per_second(row: dict[str, Any] | None, base: float) -> float | None:
    if row is None or row.get("unimplemented"):
        return None
    return float(row["chunks_per_second"]) / base


def _chunk_note(row: dict[str, Any] | None) -> str:
    """Why a chunk row's figure is missing or suspect."""
    if row is None:
        return "not measured"
    if row.get("unimplemented"):
        return "server: UNIMPLEMENTED"
    notes = []
    if MODES[row["mode"]].claim_next and not row["claimed_next"]:
        notes.append("claim_next returned no claims")
    if row.get("not_ok"):
        notes.append(f"{row['not_ok']:,} completions not ok")
    if row.get("ran_dry"):
        notes.append("ran dry")
    return "; ".join(notes)


# --- the printout ----------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    """The results as plain text, WIDTH columns at most."""
    m = results["machine"]
    s = results["settings"]
    lines: list[str] = []
    add = lines.append
    add("=" * WIDTH)
    add(f"jobpulse benchmarks, {s['mode']} run ({results['elapsed_seconds']:.0f} s)")
    add("every figure beside a bare grpc.aio baseline measured in the same run;")
    add("each server runs in a process of its own, the client (load generator) in another")
    add("-" * WIDTH)
    add(
        f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | grpcio {m['grpcio']} | "
        f"protobuf {m['protobuf']} ({m['protobuf_backend']})"
    )
    add(f"         {m['cpu_model']} | {m['platform']}")
    add(f"         load average before {results['load_before']} after {results['load_after']}")

    r = results["getjob_rate"]
    add("-" * WIDTH)
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
    add("-" * WIDTH)
    add(
        f"2. Latency, sequential calls ({s['latency_calls']} per row and server); baseline: bare GetJob "
        "returning a response of the same size"
    )
    add(
        f"   {'':<52}{'bytes':>8}{'jobpulse p50/p99':>18}{'bare p50/p99':>16}{'ratio p50/p99':>15}"
        f"{'srv CPU us/call':>16}"
    )
    add(f"   {'':<52}{'':>8}{'ms':>18}{'ms':>16}{'':>15}{'jobpulse / bare':>16}")
    labels = {
        "getjob_basic_1000": "GetJob BASIC, 1,000-chunk job",
        "getjob_full_1000": "GetJob FULL, 1,000-chunk job",
        "getjob_full_1000_new_revision": "GetJob FULL, 1,000-chunk job, new revision each call",
        "listjobs_20": f"ListJobs 20 BASIC, {s['list_jobs'] + 2:,} jobs",
    }
    for key, label in labels.items():
        row = lat.get(key)
        if row is None:
            continue
        jp, bare = row["jobpulse"], row["bare"]
        add(
            f"   {label:<52}{row['response_bytes']:>8,}"
            f"{_ms(jp['p50']) + ' / ' + _ms(jp['p99']):>18}"
            f"{_ms(bare['p50']) + ' / ' + _ms(bare['p99']):>16}"
            f"{_x(row['ratio_p50']) + ' / ' + _x(row['ratio_p99']):>15}"
            f"{_us(jp.get('server_cpu_us_per_call')) + ' / ' + _us(bare.get('server_cpu_us_per_call')):>16}"
        )
    rev = lat.get("getjob_full_1000_new_revision")
    if rev is not None:
        add(
            "   new revision each call: an untimed UpdateJob (one label, update_mask labels) before each "
            f"timed GetJob ({rev.get('revisions', 0):,} revisions);"
        )
        prep = _us(rev.get("prepare_server_cpu_us_per_call"))
        add(f"   the UpdateJob's server CPU, {prep} us/call measured alone, is taken off the row's")

    c = results["chunks"]
    base = r["bare"]["per_second"]
    bare4 = results["bare_rate_4"]["per_second"]
    add("-" * WIDTH)
    add(
        f"3. Chunks claimed + completed on SQLite, {s['chunk_workers']} asyncio workers on one channel, "
        f"{s['chunk_rounds']} x {s['chunk_seconds']:.1f} s per mode, modes alternating round by round"
    )
    add(f"   a fresh job of {s['chunk_backlog']:,} pending chunks per round; baseline: bare GetJob calls/s")
    add(
        f"   {'':<42}{'chunks/s':>10}{'RPCs/s':>10}{'srv CPU us/chunk':>18}"
        f"{'chunks/s / bare':>17}{'RPCs/s / bare':>15}"
    )
    floors = results.get("chunk_floors") or {}
    rows = (
        [(MODES[key].label, row) for key, row in c.items()]
        + [(f"one-by-one, backlog {x['backlog']:,}", x) for x in results.get("backlog_sensitivity") or []]
        + [(f"floor under gRPC: {MODES[key].short}", row) for key, row in floors.items()]
    )
    for label, row in rows:
        if row.get("unimplemented"):
            add(f"   {label:<42}{'n/a (server: UNIMPLEMENTED)':>37}")
            continue
        note = _chunk_note(row)
        add(
            f"   {label:<42}{row['chunks_per_second']:>10,.0f}{row['rpcs_per_second']:>10,.0f}"
            f"{_us(row['server_cpu_us_per_chunk']):>18}"
            f"{_x(row['chunks_per_second'] / base):>17}{_x(row['rpcs_per_second'] / base):>15}"
            + (f"  ({note})" if note else "")
        )
    add(
        f"   baseline bare GetJob calls/s: {base:,.0f} at {r['concurrency']} in flight (the ratios above), "
        f"{bare4:,.0f} at {s['chunk_workers']} in flight"
    )
    at4 = [
        f"{MODES[key].short} {_x(row['chunks_per_second'] / bare4)}"
        for key, row in c.items()
        if not row.get("unimplemented")
    ]
    add(f"   chunks/s / bare calls/s at {s['chunk_workers']} in flight: " + ", ".join(at4))
    if floors:
        add("   floor under gRPC: the same workers against bench.grpc_floor, WorkerService and the store")
        add("   alone behind bare grpc.aio handlers (no call guard, request checks, access log or HTTP side)")
        of_floor = [
            f"{MODES[key].short} {_x(c[key]['chunks_per_second'] / row['chunks_per_second'])}"
            for key, row in floors.items()
            if not row.get("unimplemented") and key in c and not c[key].get("unimplemented")
        ]
        add("   jobpulse / its floor: " + ", ".join(of_floor))

    watch = results.get("watch")
    if watch:
        jp, bare = watch["jobpulse"], watch["bare"]
        add("-" * WIDTH)
        add(
            f"4. WatchJob, {jp['jobs']:,} jobs x 1 watcher each, one change per job (ReportChunkProgress -> "
            f"CHANGE on its stream), {jp['in_flight']} changes in flight"
        )
        add(
            "   baseline: the bare grpc.aio fan-out of bench.watch_streams (same message sizes); "
            "fresh servers, after the rows above"
        )
        add(f"   {'':<14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'changes/s':>11}{'srv CPU us/change':>19}")
        for name, label in (("jobpulse", "jobpulse"), ("bare", "bare fan-out")):
            w = watch[name]
            add(
                f"   {label:<14}{_ms(w['latency']['p50']):>9}{_ms(w['latency']['p99']):>9}"
                f"{_ms(w['latency']['max']):>9}{w['changes_per_second']:>11,.0f}"
                f"{_us(w.get('server_cpu_us_per_change')):>19}"
            )
        cpu = _ratio(jp.get("server_cpu_us_per_change"), bare.get("server_cpu_us_per_change"))
        add(
            f"   {'ratio':<14}{_x(jp['latency']['p50'] / bare['latency']['p50']):>9}"
            f"{_x(jp['latency']['p99'] / bare['latency']['p99']):>9}"
            f"{_x(jp['latency']['max'] / bare['latency']['max']):>9}"
            f"{_x(jp['changes_per_second'] / bare['changes_per_second']):>11}"
            f"{'n/a' if cpu is None else _x(cpu):>19}"
        )

    add("-" * WIDTH)
    add("Targets (SQLite; the PostgreSQL ones: make bench-pg)")
    lines.extend(render_goals(goals(results)))
    add("=" * WIDTH)
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
