"""The current figures, kept as data: ``bench/figures.json``, one row per target, written by the
scenarios that measure them (``record``), and rendered as the table of bench/README.md between its
``figures`` markers (``render``; ``python -m bench figures`` renders the file as it is).

A scenario replaces its own rows only, so the table holds, for each target, the figure of the last
run that measured it, with that run's date and commit. Earlier figures live in git's history of
this file, not in prose.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import Goal, fmt

HERE = Path(__file__).resolve().parent
DATA = HERE / "figures.json"
README = HERE / "README.md"
START = "<!-- figures:start (written by make bench from bench/figures.json: edit neither by hand) -->"
END = "<!-- figures:end -->"


def _commit() -> str:
    describe = ["git", "-C", str(HERE), "describe", "--always", "--dirty", "--abbrev=7"]
    return subprocess.run(describe, capture_output=True, text=True).stdout.strip() or "?"


def load(path: Path = DATA) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())) if path.exists() else []


def record(scenario: str, goals: list[Goal], path: Path = DATA, readme: Path = README) -> None:
    """Replaces ``scenario``'s rows of the figures file with ``goals`` as measured now, then renders
    the README's table. A goal measured as None (a row that did not run) keeps no row."""
    when, commit = time.strftime("%Y-%m-%d"), _commit()
    rows = [r for r in load(path) if r["scenario"] != scenario]
    for goal in goals:
        if goal.measured is None:
            continue
        cells = goal.as_dict()
        row = {"scenario": scenario, "target": cells["path"], "measured": round(goal.measured, 4)}
        row |= {
            "unit": goal.unit,
            "line": cells["target"],
            "met": cells["met"],
            "date": when,
            "commit": commit,
        }
        rows.append(row)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    render(path, readme)


def _cell(row: dict[str, Any]) -> str:
    value, unit = row["measured"], row["unit"]
    shown = fmt(value, unit)
    if unit in ("", "x") and shown in row["line"]:
        shown = f"{value:.3f}{unit}"  # 0.248 against >= 0.25 would read 0.25: one more digit tells the side
    return shown.replace(" us", " µs")


def table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| scenario | target | measured | line | met? | measured on |", "| --- " * 6 + "|"]
    for r in rows:
        met = r["met"].replace("|", "/")
        when = f"{r['date']}, {r['commit']}"
        line = r["line"].replace(" us", " µs")
        out.append(f"| {r['scenario']} | {r['target']} | {_cell(r)} | {line} | {met} | {when} |")
    return out


def render(path: Path = DATA, readme: Path = README) -> None:
    """Writes the table of ``path`` between the markers of ``readme``."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the figures markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text("\n".join([head + START, *table(load(path)), END]) + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    if argv:
        usage = "usage: python -m bench figures   (renders bench/figures.json into bench/README.md)"
        print(usage, file=sys.stderr)
        return 2
    render()
    print(f"{README} rendered from {DATA}")
    return 0
