"""What every scenario's report shares: the run's frame (machine facts, load, elapsed time), the sizes
taken from the environment, the log line, the targets (``Goal``), tables, and the JSON file; and the
core scenario's own printout and targets."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import textwrap
import time
from dataclasses import dataclass, field
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
    facts = {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
    }
    facts |= {"python": platform.python_version(), "python_implementation": platform.python_implementation()}
    # The servers run on this interpreter, so they use this sqlite3 module too.
    facts |= {"sqlite": sqlite3.sqlite_version, "protobuf_backend": api_implementation.Type()}
    return facts | {dist: _version(dist) for dist in ("grpcio", "protobuf", "sqlalchemy")}


WIDTH = 122


def log(msg: str, tag: str = "bench") -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_size(name: str, default: float, kind: type = int) -> Any:
    """A size from the variable ``name`` (a number above 0), else ``default``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(
            f"{name}={raw!r}: expected {'a whole number' if kind is int else 'a number'}"
        ) from None
    if value <= 0:
        raise SystemExit(f"{name}={raw!r}: must be above 0")
    return value


@dataclass
class Run:
    """The frame of one scenario's run: when it began and the machine's load then; ``stamp`` adds the
    machine's facts, its load now and the time taken to a results dict."""

    t0: float = field(default_factory=time.perf_counter)
    load_before: list[float] | None = field(default_factory=load_average)

    def stamp(self, results: dict[str, Any]) -> dict[str, Any]:
        results["machine"] = machine_facts()
        results["load_before"] = self.load_before
        results["load_after"] = load_average()
        results["elapsed_seconds"] = time.perf_counter() - self.t0
        results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return results


def header(title: str, notes: list[str], results: dict[str, Any], width: int = WIDTH) -> list[str]:
    """A printout's head: its title, what it compares, the machine and its load."""
    return [
        "=" * width,
        title,
        *(line for note in notes for line in textwrap.wrap(note, width)),
        *machine_lines(results),
    ]


def para(text: str, first: str = "   ") -> list[str]:
    """A paragraph of a printout, wrapped to its width (a heading's first line starts with ``first=""``)."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent="   ")


def ratio_cell(a: float | None, b: float | None) -> str:
    """a / b as a table shows it, or n/a when either is unknown or b is 0 (e.g. CPU under /proc's tick)."""
    return _x(a / b) if a is not None and b else "n/a"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _us(value: float | None, unknown: str = "n/a") -> str:
    return unknown if value is None else f"{value:,.0f}"


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
    moonshot: float | None  # None: no stretch goal
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
            if self.moonshot is not None and self._meets(self.moonshot):
                met = "yes, moonshot too"
            elif self._meets(self.target):
                met = "yes"
            if self.note:
                met += f" ({self.note})"
        moonshot = "-" if self.moonshot is None else self._fmt(self.moonshot)
        return self.path, measured, f"{sign} {self._fmt(self.target)}", moonshot, met

    def as_dict(self) -> dict[str, Any]:
        path, _, target, moonshot, met = self.cells()
        return {"path": path, "measured": self.measured, "target": target, "moonshot": moonshot, "met": met}


def render_goals(goals: list[Goal]) -> list[str]:
    """The targets table: target | measured ratio | target | moonshot | met?"""
    rows = [g.cells() for g in goals]
    w = max([len("target")] + [len(r[0]) for r in rows])
    lines = [f"   {'target':<{w}}  {'measured':>10}  {'target':>11}  {'moonshot':>10}  met?"]
    lines.append("   " + "-" * (w + 2 + 10 + 2 + 11 + 2 + 10 + 2 + 4))
    for path, measured, target, moonshot, met in rows:
        lines.append(f"   {path:<{w}}  {measured:>10}  {target:>11}  {moonshot:>10}  {met}")
    return lines


def goals(results: dict[str, Any]) -> list[Goal]:
    """The targets bench.core measures (SQLite)."""
    r, lat = results["getjob_rate"], results["latency"]
    rev = lat.get("getjob_full_1000_new_revision")
    full = "GetJob FULL 1,000 chunks p50 / bare"
    out = [
        Goal("GetJob BASIC calls/s / bare grpc.aio", r["ratio"], True, 0.6, 0.8),
        Goal("ListJobs (20 BASIC) p50 / bare", lat["listjobs_20"]["ratio_p50"], False, 2.0, 1.3, "x"),
        Goal(f"{full}, new revision each call", rev["ratio_p50"] if rev else None, False, 4.0, 2.0, "x"),
        Goal(f"{full}, same revision", lat["getjob_full_1000"]["ratio_p50"], False, 4.0, 2.0, "x"),
    ]
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
    if watch := results.get("watch"):
        jp, bare = watch["jobpulse"], watch["bare"]
        n = f"{jp['jobs']:,} jobs x 1 watcher"
        p99 = jp["latency"]["p99"] / bare["latency"]["p99"]
        out.append(Goal(f"watch, {n}: p99 / bare", p99, False, 3.0, 1.5, "x"))
        rate = jp["changes_per_second"] / bare["changes_per_second"]
        out.append(Goal(f"watch, {n}: changes/s / bare", rate, True, 0.3, 0.6))
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


def table(headers: list[str], rows: list[list[Any]], indent: str = "   ") -> list[str]:
    """Rows under their headers, each column as wide as its widest cell: the first column left-aligned,
    the others right-aligned (a row may have fewer cells: a note in the last one)."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))

    return [indent + line(r).rstrip() for r in cells]


RULE = "-" * WIDTH
QUANTILES = ("p50", "p99", "max")


def section(title: str, headers: list[str], rows: list[list[Any]], *notes: str) -> list[str]:
    """A printout's section: a rule, its title (wrapped), its table, then each note as a paragraph."""
    return [RULE, *para(title, first=""), *table(headers, rows), *(x for note in notes for x in para(note))]


def spread(summary: dict[str, float]) -> list[str]:
    """A latency summary's p50, p99 and max in ms, as table cells."""
    return [_ms(summary[q]) for q in QUANTILES]


def spread_ratio(a: dict[str, float], b: dict[str, float]) -> list[str]:
    """a / b of two latency summaries' p50, p99 and max, as table cells."""
    return [ratio_cell(a[q], b[q]) for q in QUANTILES]


def targets(title: str, goals: list[Goal]) -> list[str]:
    """A printout's last section: its targets table, and the closing rule."""
    return [RULE, title, *render_goals(goals), "=" * WIDTH]


def machine_lines(results: dict[str, Any]) -> list[str]:
    """The machine and its load, as the printouts show them."""
    m = results["machine"]
    return [
        f"machine: nproc {m['nproc']} | Python {m['python']} | SQLite {m['sqlite']} | grpcio {m['grpcio']} | "
        f"protobuf {m['protobuf']} ({m['protobuf_backend']})",
        f"         {m['cpu_model']} | {m['platform']}",
        f"         load average before {results['load_before']} after {results['load_after']}",
    ]


def render(results: dict[str, Any]) -> str:
    """The core scenario's results as plain text."""
    s, r = results["settings"], results["getjob_rate"]
    title = f"jobpulse benchmarks, {s['mode']} run ({results['elapsed_seconds']:.0f} s)"
    note = "every figure beside a bare grpc.aio baseline measured in the same run, each server in a process"
    lines = header(title, [note + " of its own, the client (load generator) in another"], results)
    rows: list[list[Any]] = [
        [label, f"{q['per_second']:,.0f}", _us(q["server_cpu_us_per_call"]), _us(q["client_cpu_us_per_call"])]
        for q, label in ((r["bare"], "bare grpc.aio (baseline)"), (r["jobpulse"], "jobpulse (SQLite)"))
    ]
    rows.append(["ratio jobpulse / bare", _x(r["ratio"]), ratio_cell(r["server_cpu_ratio"], 1)])
    lines += section(
        f"1. GetJob BASIC, 10-chunk job ({r['response_bytes']} B), {r['concurrency']} in flight on one "
        f"channel, {r['rounds']} x {r['seconds_per_round']:.1f} s per server",
        ["", "calls/s", "server CPU us/call", "client CPU us/call"],
        rows,
        f"(calls/s ratio per round: {', '.join(f'{x:.3f}' for x in r['round_ratios'])})",
    )
    labels = {
        "getjob_basic_1000": "GetJob BASIC, 1,000-chunk job",
        "getjob_full_1000": "GetJob FULL, 1,000-chunk job",
        "getjob_full_1000_new_revision": "GetJob FULL, 1,000-chunk job, new revision each call",
        "listjobs_20": f"ListJobs 20 BASIC, {s['list_jobs'] + 2:,} jobs",
    }
    rows = []
    for key, label in labels.items():
        if (row := results["latency"].get(key)) is not None:
            jp, bare = row["jobpulse"], row["bare"]
            cells = [f"{_ms(q['p50'])} / {_ms(q['p99'])}" for q in (jp, bare)]
            cells.append(f"{_x(row['ratio_p50'])} / {_x(row['ratio_p99'])}")
            cells.append(" / ".join(_us(q.get("server_cpu_us_per_call")) for q in (jp, bare)))
            rows.append([label, f"{row['response_bytes']:,}", *cells])
    rev = results["latency"].get("getjob_full_1000_new_revision")
    lines += section(
        f"2. Latency, sequential calls ({s['latency_calls']} per row and server); baseline: a bare GetJob "
        "answering a response of the same size; ms, and server CPU us a call",
        ["", "bytes", "jobpulse p50/p99", "bare p50/p99", "ratio", "CPU jobpulse/bare"],
        rows,
        *[
            f"new revision each call: an untimed UpdateJob before each GetJob ({rev.get('revisions', 0):,} "
            f"revisions); its own server CPU, {_us(rev.get('prepare_server_cpu_us_per_call'))} us a call, "
            "is taken off the row's"
        ]
        * (rev is not None),
    )
    base, bare4 = r["bare"]["per_second"], results["bare_rate_4"]["per_second"]
    floors, chunks = results.get("chunk_floors") or {}, results["chunks"]
    labelled = (
        [(MODES[key].label, row) for key, row in chunks.items()]
        + [(f"one-by-one, backlog {x['backlog']:,}", x) for x in results.get("backlog_sensitivity") or []]
        + [(f"floor under gRPC: {MODES[key].short}", row) for key, row in floors.items()]
    )
    rows = []
    for label, row in labelled:
        if row.get("unimplemented"):
            rows.append([label, "n/a (server: UNIMPLEMENTED)"])
            continue
        note, rates = _chunk_note(row), (row["chunks_per_second"], row["rpcs_per_second"])
        cpu = _us(row["server_cpu_us_per_chunk"])
        cells = [*(f"{v:,.0f}" for v in rates), cpu, *(_x(v / base) for v in rates)]
        rows.append([label, *cells, note and f"({note})"])
    of_floor = [
        f"{MODES[key].short} {_x(chunks[key]['chunks_per_second'] / row['chunks_per_second'])}"
        for key, row in floors.items()
        if not row.get("unimplemented") and not chunks.get(key, {"unimplemented": True}).get("unimplemented")
    ]
    lines += section(
        f"3. Chunks claimed + completed on SQLite, {s['chunk_workers']} asyncio workers on one channel, "
        f"{s['chunk_rounds']} x {s['chunk_seconds']:.1f} s per mode, a fresh job of {s['chunk_backlog']:,} "
        "chunks each; baseline: bare GetJob calls/s",
        ["", "chunks/s", "RPCs/s", "srv CPU us/chunk", "chunks/s / bare", "RPCs/s / bare", ""],
        rows,
        f"bare GetJob calls/s: {base:,.0f} at {r['concurrency']} in flight (the ratios above), "
        f"{bare4:,.0f} at {s['chunk_workers']} in flight",
        *[
            "floor under gRPC: the same workers against bench.grpc_floor, WorkerService and the store alone "
            "behind bare grpc.aio handlers (no call guard, request checks, access log or HTTP side)",
            "jobpulse / its floor: " + ", ".join(of_floor),
        ]
        * bool(floors),
    )
    if watch := results.get("watch"):
        jp, bare = watch["jobpulse"], watch["bare"]
        rows = []
        for label, w in (("jobpulse", jp), ("bare fan-out", bare)):
            rate, cpu = f"{w['changes_per_second']:,.0f}", _us(w["server_cpu_us_per_change"])
            rows.append([label, *spread(w["latency"]), rate, cpu])
        lines += section(
            f"4. WatchJob, {jp['jobs']:,} jobs x 1 watcher, one change per job, {jp['in_flight']} in flight; "
            "baseline: the bare fan-out of bench.watch_streams",
            ["", "p50 ms", "p99 ms", "max ms", "changes/s", "srv CPU us/change"],
            rows,
        )
    lines += targets("Targets (SQLite; the PostgreSQL ones: make bench-pg)", goals(results))
    return "\n".join(lines)


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The options of ``python -m bench NAME``, its module's docstring as their help."""
    raw = argparse.RawDescriptionHelpFormatter
    return argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc, formatter_class=raw)


def arguments(name: str, doc: str | None, quick: str, json: Path | None = None) -> argparse.ArgumentParser:
    """A scenario's options so far: --quick (``quick`` says what it runs) and --json (the results file)."""
    p = parser(name, doc)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--json", type=Path, default=json, help=f"write the results to this file (default {json})")
    return p


def publish(
    results: dict[str, Any], text: str, path: Path | None, scenario: str = "", goals: Any = ()
) -> int:
    """Prints a scenario's printout, writes its results to ``path`` (if set) and, given ``scenario`` (a
    full run), records its ``goals`` as the current figures."""
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        log(f"results written to {path}")
    if scenario:
        from bench import figures  # figures imports this module

        figures.record(scenario, goals)
    return 0
