"""The ``export`` command: every matching job, streamed by one ExportJobs call, as CSV, JSON or JSON lines.

Each job is written as it arrives (``_ExportWriter``), so memory stays flat whatever the number of jobs;
on a terminal, stderr shows how far it got.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import TextIO

import jobpulse.cli._connection as _connection
from jobpulse import export_csv
from jobpulse.cli import _render
from jobpulse.cli._argtypes import _filters
from jobpulse.v1 import job_pb2


def _cmd_export(args: argparse.Namespace) -> int:
    if args.output == "-":
        return _export(args, sys.stdout)
    # newline="": the csv module writes its own line ends.
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        return _export(args, out)


def _export(args: argparse.Namespace, out: TextIO) -> int:
    show_progress = sys.stderr.isatty()
    done = 0
    with _connection._client(args) as client:
        total = client.list_jobs_page(page_size=1, **_filters(args)).total_size if show_progress else 0
        writer = _ExportWriter(out, args.format or ("json" if args.json else "csv"))
        # One ExportJobs stream; the SDK holds one batch at a time, and each job is written as it
        # comes, so memory stays flat whatever the number of jobs.
        for job in client.export_jobs(order_by=args.order_by, **_filters(args)):
            writer.write(job)
            done += 1
            if show_progress and done % 500 == 0:
                _export_progress(done, total)
        writer.close()
    if show_progress:
        _export_progress(done, max(total, done))
        sys.stderr.write("\n")
    out.flush()
    return 0


def _export_progress(done: int, total: int) -> None:
    if total:
        percent = min(100.0, 100.0 * done / total)
        bar = _render.progress_bar(percent, 24)
        sys.stderr.write(f"\r{bar} {percent:5.1f}% | {done}/{total} jobs exported")
    else:
        sys.stderr.write(f"\r{done} jobs exported")
    sys.stderr.flush()


class _ExportWriter:
    """Writes exported jobs one by one: CSV rows under a header, the items of one JSON array, or
    JSON lines. The JSON array is written as it goes, never built in memory."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.format = fmt
        self.count = 0
        self._csv = csv.writer(out) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(export_csv.COLUMNS)
        elif fmt == "json":
            out.write("[")

    def write(self, job: job_pb2.Job) -> None:
        if self._csv is not None:
            self._csv.writerow(export_csv.row(job))
        else:
            text = json.dumps(_render.to_dict(job), separators=(",", ":"), ensure_ascii=False)
            if self.format == "json":
                self.out.write(("\n" if self.count == 0 else ",\n") + text)
            else:
                self.out.write(text + "\n")
        self.count += 1

    def close(self) -> None:
        if self.format == "json":
            self.out.write("\n]\n" if self.count else "]\n")
