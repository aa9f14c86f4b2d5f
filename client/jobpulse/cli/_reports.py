"""The commands that print what a server counts: ``health``, ``usage`` (calls per key), ``stats`` (jobs)."""

from __future__ import annotations

import argparse
from typing import Any

import jobpulse.cli._connection as _connection
from jobpulse.cli import _render
from jobpulse.cli._output import _print_json


def _cmd_health(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        report = client.get_server_health()
    if args.json:
        _print_json(report)
    else:

        def secs(d: Any) -> str:
            return f"{d.seconds + d.nanos / 1e9:.3f}s"

        rows = [
            ["serving", "yes" if report.serving else "NO"],
            [
                "database",
                f"{report.database_kind}, {'reachable' if report.database_reachable else 'UNREACHABLE'}",
            ],
            ["database latency", secs(report.database_latency)],
            ["schema version", report.schema_version or "?"],
            ["sweeper lag", secs(report.sweeper_lag)],
            ["outbox", f"{report.outbox_pending} pending, oldest due {secs(report.outbox_lag)} ago"],
            ["open streams", str(report.open_streams)],
        ]
        if report.database_kind == "sqlite":
            rows.append(["free disk", f"{report.free_disk_bytes / 2**30:.1f} GiB"])
        for name, value in rows:
            print(f"{name:<18}{value}")
    return 0 if report.serving and report.database_reachable else 1


def _cmd_usage(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        usage = client.get_usage().usage
    if args.json:
        _print_json(list(usage))
        return 0
    rows = [[u.key_name, u.role, str(u.calls), str(u.rejected)] for u in usage]
    print(_render.table(["KEY", "ROLE", "CALLS", "REJECTED"], rows))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    with _connection._client(args) as client:
        stats = client.get_job_stats(args.created_after, args.created_before, args.kind)
    if args.json:
        _print_json(stats)
    else:
        print(_render.stats_text(stats))
    return 0
