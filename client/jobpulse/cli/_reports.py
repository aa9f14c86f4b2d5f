"""The commands that print what a server counts: ``health``, ``usage`` (calls per key), ``stats`` (jobs),
``failures`` (chunks failed for good, by reason)."""

from __future__ import annotations

import argparse
from typing import Any

import jobpulse.cli._connection as _connection
from jobpulse import errors
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


def _cmd_failures(args: argparse.Namespace) -> int:
    """Without --reason: the chunks failed for good by reason (SummarizeFailures). With --reason: those
    chunks, newest job first (ListJobChunks over "-"); with --retry too, each one retried (RetryChunk)."""
    with _connection._client(args) as client:
        if not args.reason:
            groups = client.summarize_failures(args.kind, args.created_after, args.created_before)
            if args.json:
                _print_json({"groups": [_render.to_dict(g) for g in groups]})
            elif not groups:
                print("no chunk has failed for good")
            else:
                print(_render.failures_table(groups))
            return 0
        chunks = client.list_job_chunks("-", ["failed"], kind=args.kind, error_reasons=args.reason)
        shown = [c for _, c in zip(range(args.limit), chunks, strict=False)]
        if not args.retry:
            if args.json:
                _print_json({"chunks": [_render.to_dict(c) for c in shown]})
            elif not shown:
                print("no chunk failed for good with " + " or ".join(args.reason))
            else:
                print(_render.failed_chunks_table(shown))
            return 0
        retried = skipped = 0
        for c in shown:
            try:
                client.retry_chunk(c.job_id, c.id)
                retried += 1
            except errors.FailedPrecondition as exc:  # its job was cancelled or failed at once, or retried
                skipped += 1
                if not args.json:
                    print(f"skipped chunk {c.id}: {exc.message}")
        if args.json:
            _print_json({"retried": retried, "skipped": skipped})
        else:
            print(f"retried {retried} chunk{'s' if retried != 1 else ''}, skipped {skipped}")
        return 0
