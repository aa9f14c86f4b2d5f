"""The ``jobpulse`` command line: run the server, create and inspect jobs, watch them, run sample workers.

Every client command talks to ``--target`` (``$JOBPULSE_TARGET``, default ``127.0.0.1:50051``). An error
is one line on stderr, said once, with what to do where there is something to do:
``error: priority must be between 0 and 10 (got 99) [INVALID_ARGUMENT]`` (the status code, then the
reason when it says more: ``[NOT_FOUND JOB_NOT_FOUND]``); with ``--json`` it is one JSON object on stderr
instead. Never a traceback: ``--debug`` (or ``JOBPULSE_DEBUG=1``) adds it, for bug reports.

Exit codes (``EXIT_CODES``), the same for every command:

====  ==========================================================================================
0     done (``watch``/``demo``: the job COMPLETED)
1     error (the server refused or failed the call, a file could not be read, ...)
2     usage: a bad flag, argument or ``JOBPULSE_*`` variable
3     ``watch``/``demo``: the job FAILED
4     ``watch``/``demo``: the job was CANCELLED
5     the server could not be reached (nothing listening, connection refused or lost)
130   interrupted (Ctrl-C)
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.metadata
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse import _render
from jobpulse import _settings as settings
from jobpulse._client import Client
from jobpulse._convert import job_state, job_state_name, parse_datetime
from jobpulse._sample_worker import sample_handler
from jobpulse._settings import SettingError

# Moved to their own modules; every name stays reachable as jobpulse.cli.<name>, as in the single module.
from jobpulse.cli._errors import (  # noqa: F401 (re-exported)
    API_KEY_ENV,
    DEBUG_ENV,
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    TARGET_ENV,
    TLS_CA_ENV,
    _document,
    error_document,
    error_hint,
    exit_code_for,
    format_error,
    is_unreachable,
)
from jobpulse.cli._output import _print_error, _print_json, _report
from jobpulse.errors import JobpulseError
from jobpulse.v1 import job_pb2
from jobpulse.worker import Worker

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "SettingError",
    "build_parser",
    "error_document",
    "exit_code_for",
    "format_error",
    "main",
]

# ListJobsRequest.order_by: each sortable field, ascending or with " desc" (ties break by id).
ORDER_BY_CHOICES = (
    "create_time desc",
    "create_time",
    "update_time desc",
    "update_time",
    "priority desc",
    "priority",
)
EXPORT_FORMATS = ("csv", "json", "jsonl")


# -- argument types ----------------------------------------------------------------------------------------


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _job_state(text: str) -> job_pb2.JobState.ValueType:
    try:
        return job_state(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2024-05-01T12:00:00Z, got {text!r}"
        ) from None


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("metadata must be a JSON object")
    return value


# argparse names a type function that raises ValueError in its message ("invalid _positive_int value"):
# each type says what it expected in words instead.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


# -- parser ------------------------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The options are accepted before and after the subcommand; the subcommand's copy only overrides
    # when given, hence SUPPRESS there. Each connection option's text, variable and default come from
    # its one declaration in jobpulse._settings, which the SDK reads too.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    # The variables are read when a command runs (``_settings``), not here: a bad value is then a
    # one-line usage error naming the variable instead of a traceback out of the parser's construction.
    parser.add_argument(
        settings.TARGET.flag, default=default(None), metavar="HOST:PORT", help=settings.TARGET.help_text()
    )
    parser.add_argument(
        settings.API_KEY.flag, default=default(None), metavar="KEY", help=settings.API_KEY.help_text()
    )
    parser.add_argument(
        settings.TLS.flag, action="store_true", default=default(None), help=settings.TLS.help_text()
    )
    parser.add_argument(
        settings.TLS_CA.flag, default=default(None), metavar="PEM", help=settings.TLS_CA.help_text()
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print machine-readable JSON (errors too: one JSON object on stderr)",
    )
    parser.add_argument(
        settings.DEBUG.flag, action="store_true", default=default(None), help=settings.DEBUG.help_text()
    )


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` with each option's default: appended where the option's own text does not already
    say it (the connection options say theirs, with their variable)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default in ("", argparse.SUPPRESS)
        ):
            return text
        if isinstance(default, list):
            return text
        shown = str(default).replace("%", "%%")
        return f"{text} (default {shown})" if text else f"default {shown}"


# The commands of the server distribution (jobpulse-server): ``jobpulse serve ...`` runs
# ``jobpulse-server serve ...`` where the server is installed.
SERVER_COMMANDS = {
    "serve": "run the jobpulse server until SIGTERM or Ctrl-C",
    "keys": "manage API keys in the database (create, list, revoke)",
    "migrate": "bring the database schema to the server's version",
}
SERVER_MODULE = "jobpulse_server.cli"


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``jobpulse`` command. The server's commands (``serve``,
    ``keys``, ``migrate``) are listed here and parsed by ``jobpulse-server``'s own parser."""
    parser = argparse.ArgumentParser(
        prog="jobpulse",
        description="jobpulse: job status over gRPC",
        formatter_class=HelpFormatter,
        epilog="exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {sdk_version()}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common], help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        p.set_defaults(func=func)
        return p

    for name, help_text in SERVER_COMMANDS.items():
        p = sub.add_parser(name, help=help_text + " (needs jobpulse-server)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_cmd_server)

    command("usage", _cmd_usage, "calls and rate-limit rejections per API key (admin)")
    command("health", _cmd_health, "database, schema, sweeper, outbox, streams and disk of a server (admin)")

    p = command("create", _cmd_create, "create a job")
    p.add_argument("--kind", type=_non_empty, required=True, help="type of work; workers claim by kind")
    p.add_argument("--items", type=_positive_int, required=True, help="number of items")
    p.add_argument("--chunk-size", type=_positive_int, default=0, help="items per chunk (server default 500)")
    p.add_argument("--priority", type=int, default=None, help="0..10 (server default 5)")
    p.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    p.add_argument(
        "--metadata", type=_json_object, default=None, metavar="JSON", help="JSON object for workers"
    )
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--max-attempts", type=int, default=0, help="claims per chunk (server default 3)")
    p.add_argument("--request-id", default="", help="idempotency key")

    p = command("get", _cmd_get, "show a job and its chunks")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--basic", action="store_true", help="without chunks")

    p = command("list", _cmd_list, "list jobs, newest first")
    _filter_options(p)
    p.add_argument(
        "--order-by", default="", choices=ORDER_BY_CHOICES, help="default create_time desc: newest first"
    )
    p.add_argument("--limit", type=_positive_int, default=20, help="at most this many jobs (default 20)")
    p.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="continue a listing where an earlier one stopped (its next page token, same filters)",
    )

    p = command(
        "watch",
        _cmd_watch,
        "follow a job to the end with a progress bar (with --json: one JSON object per watch message); "
        f"exit {EXIT_OK} completed, {EXIT_FAILED} failed, {EXIT_CANCELLED} cancelled, "
        f"{EXIT_UNREACHABLE} server unreachable",
    )
    p.add_argument("job_id", metavar="ID")

    p = command("cancel", _cmd_cancel, "cancel a job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--reason", default="")

    p = command("retry", _cmd_retry, "retry the failed and cancelled chunks of a job, or one failed chunk")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--chunk", default="", metavar="CHUNK_ID", help="retry only this FAILED chunk")

    p = command("delete", _cmd_delete, "delete a finished job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--force", action="store_true", help="cancel it first if it is still running")

    p = command("stats", _cmd_stats, "job counts, success rate and durations")
    p.add_argument("--kind", default="", help="only jobs of this kind")
    _created_options(p)

    p = command(
        "export",
        _cmd_export,
        "write every matching job as CSV, one JSON array or JSON lines, streamed by one ExportJobs call",
    )
    _filter_options(p)
    p.add_argument(
        "--order-by",
        default="create_time",
        choices=ORDER_BY_CHOICES,
        help="default create_time: oldest first",
    )
    p.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default=None,
        help="default csv, or json with --json (which would otherwise be a flag doing nothing here)",
    )
    p.add_argument("--output", default="-", metavar="FILE", help="where to write (default - : stdout)")

    p = command(
        "events-url",
        _cmd_events_url,
        "print a URL a browser reads a job's events from (Server-Sent Events), with a short-lived "
        "token in place of the API key (with --json: url, token and expireTime)",
    )
    events = p.add_mutually_exclusive_group(required=True)
    events.add_argument("job_id", metavar="ID", nargs="?", default=None, help="the job whose events to read")
    events.add_argument(
        "--feed", action="store_true", help="the URL of every job you may see (/v1/events) instead"
    )
    p.add_argument(
        "--ttl",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long the token stays valid, 1 to 86400 (server default 600: 10 minutes)",
    )
    p.add_argument(settings.HTTP_URL.flag, default=None, metavar="URL", help=settings.HTTP_URL.help_text())

    p = command("worker", _cmd_worker, "run a sample worker that sleeps per item (until Ctrl-C)")
    p.add_argument("--kind", action="append", default=[], help="kinds to claim (repeatable; default any)")
    p.add_argument("--concurrency", type=_positive_int, default=1, help="chunks handled at once (threads)")
    p.add_argument("--item-delay", type=float, default=0.05, metavar="SECONDS", help="seconds per item")
    p.add_argument(
        "--fail-rate", type=_fraction, default=0.0, metavar="P", help="chance a chunk attempt fails"
    )
    p.add_argument("--lease", type=float, default=30.0, metavar="SECONDS", help="lease duration")

    p = command("demo", _cmd_demo, "create a demo job, process it with in-process workers, watch it")
    p.add_argument("--chunks", type=_positive_int, default=10, help="chunks of the demo job")
    p.add_argument("--items-per-chunk", type=_positive_int, default=50, help="items in each chunk")
    p.add_argument("--workers", type=_positive_int, default=3, help="sample workers (threads) to start")
    p.add_argument("--item-delay", type=float, default=0.02, metavar="SECONDS", help="seconds per item")
    p.add_argument(
        "--fail-rate", type=_fraction, default=0.0, metavar="P", help="chance a chunk attempt fails"
    )
    return parser


def _filter_options(p: argparse.ArgumentParser) -> None:
    """The job filters of ListJobs, for every command that selects jobs by them (list, export)."""
    p.add_argument(
        "--state", type=_job_state, action="append", default=[], help="only jobs in this state (repeatable)"
    )
    p.add_argument("--kind", default="", help="only jobs of this kind")
    p.add_argument("--search", default="", help="substring of the display name")
    p.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only jobs with this label (repeatable: all of them)",
    )
    p.add_argument(
        "--min-priority", type=int, default=None, metavar="N", help="only priority N (0..10) or more"
    )
    p.add_argument(
        "--max-priority", type=int, default=None, metavar="N", help="only priority N (0..10) or less"
    )
    _created_options(p)


def _created_options(p: argparse.ArgumentParser) -> None:
    """The creation-time window (list, export, stats)."""
    p.add_argument(
        "--created-after",
        type=_time,
        default=None,
        metavar="TIME",
        help="only jobs created at or after (ISO 8601)",
    )
    p.add_argument(
        "--created-before",
        type=_time,
        default=None,
        metavar="TIME",
        help="only jobs created before (ISO 8601)",
    )


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """The SDK keyword arguments of the options ``_filter_options`` declares."""
    return {
        "states": args.state,
        "kind": args.kind,
        "min_priority": args.min_priority,
        "max_priority": args.max_priority,
        "created_after": args.created_after,
        "created_before": args.created_before,
        "search": args.search,
        "labels": dict(args.label),
    }


# -- helpers -----------------------------------------------------------------------------------------------


def sdk_version() -> str:
    """The installed SDK's version, from the package metadata (``__version__`` when run from a tree)."""
    try:
        return importlib.metadata.version("jobpulse")
    except importlib.metadata.PackageNotFoundError:
        from jobpulse import __version__

        return __version__


def _settings(args: argparse.Namespace) -> None:
    """Resolves the connection options: each flag given wins, else its ``JOBPULSE_*`` variable, else its
    default, as the SDK does (``jobpulse._settings``); a bad value raises ``SettingError`` naming the
    flag or variable. Sets ``args.target``, ``args.api_key`` and ``args.connection``."""
    connection = settings.resolve_connection(
        args.target, api_key=args.api_key, secure=args.tls, tls_ca=args.tls_ca
    )
    args.connection = connection
    args.target, args.api_key = connection.target, connection.api_key


def _client(args: argparse.Namespace) -> Client:
    connection: settings.Connection = args.connection
    return Client(
        connection.target,
        api_key=connection.api_key,
        secure=connection.secure,
        root_certificates=connection.root_certificates,
    )


def _all_chunks(client: Client, job: job_pb2.Job) -> job_pb2.Job:
    """Returns the job with every chunk inline, following chunks_next_page_token past the first 1000."""
    if job.chunks_next_page_token:
        job.chunks.extend(client.list_job_chunks(job.id, page_token=job.chunks_next_page_token))
        job.chunks_next_page_token = ""
    return job


def watch_with_display(client: Client, job_id: str, *, json_lines: bool, stream: TextIO) -> job_pb2.Job:
    """Follows a job to its end, showing progress on ``stream``, and returns the final job.

    A lost connection is said, never silent: on a terminal in place of the progress line (attempt and
    error) until the stream is back; otherwise one line on stderr when lost and one when resumed, or with
    ``json_lines`` one JSON object each on stderr (``{"event": "reconnecting", ...}``, ``"resumed"``), so
    ``stream`` keeps the watch messages only.

    Args:
        client: The client to watch with.
        job_id: The job to follow.
        json_lines: Print each watch message as one JSON line instead of a progress display.
        stream: Where to write.
    """
    display = _render.ProgressDisplay(stream, live=stream.isatty() and not json_lines, target=client.target)
    notices = _render.JsonNotices(sys.stderr, client.target) if json_lines else display
    job = job_pb2.Job()
    try:
        for event in client.watch_job(job_id, on_reconnect=notices.reconnecting, on_resume=notices.resumed):
            if event.HasField("job"):
                job = event.job
            if json_lines:
                stream.write(json.dumps(_render.to_dict(event), separators=(",", ":")) + "\n")
                stream.flush()
            else:
                display.update(event, job)
    finally:
        display.finish()
    return job


# -- commands ----------------------------------------------------------------------------------------------


def _server_command(argv: Sequence[str]) -> int:
    """Hands a server subcommand to ``jobpulse-server``'s own parser. The server is looked up by name,
    so the SDK neither depends on it nor imports it unless a server command is asked for."""
    try:
        server_cli = importlib.import_module(SERVER_MODULE)
    except ImportError as exc:
        print(
            f"error: the jobpulse server is not installed ({exc}); pip install jobpulse-server",
            file=sys.stderr,
        )
        return 1
    return int(server_cli.main(list(argv), prog="jobpulse"))


def _cmd_server(args: argparse.Namespace) -> int:
    return _server_command([args.command, *args.rest])


def _cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
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
    with _client(args) as client:
        usage = client.get_usage().usage
    if args.json:
        _print_json(list(usage))
        return 0
    rows = [[u.key_name, u.role, str(u.calls), str(u.rejected)] for u in usage]
    print(_render.table(["KEY", "ROLE", "CALLS", "REJECTED"], rows))
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.create_job(
            args.kind,
            args.items,
            display_name=args.name,
            chunk_size=args.chunk_size,
            priority=args.priority,
            labels=dict(args.label),
            metadata=args.metadata,
            max_attempts=args.max_attempts,
            request_id=args.request_id,
        )
    if args.json:
        _print_json(job)
    else:
        chunks = job.chunks_summary.total
        plural = "s" if chunks != 1 else ""
        print(f"created job {job.id} ({chunks} chunk{plural} of up to {job.chunk_size} items)")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get_job(args.job_id, view="basic" if args.basic else "full")
        if not args.basic:
            job = _all_chunks(client, job)
    if args.json:
        _print_json(job)
        return 0
    print(_render.job_details(job))
    if job.chunks:
        print()
        print(_render.chunks_table(job.chunks))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    jobs: list[job_pb2.Job] = []
    total = 0
    token = args.page_token
    cursor = ""
    with _client(args) as client:
        while len(jobs) < args.limit:
            # Pages never overshoot the limit, so the last page's token continues exactly after it.
            page = client.list_jobs_page(
                page_size=min(100, args.limit - len(jobs)),
                page_token=token,
                order_by=args.order_by,
                **_filters(args),
            )
            total = page.total_size
            cursor = cursor or page.watch_cursor
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                break
    if args.json:
        _print_json(
            {
                "jobs": [_render.to_dict(j) for j in jobs],
                "totalSize": str(total),
                "nextPageToken": token,
                "watchCursor": cursor,
            }
        )
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(_render.jobs_table(jobs))
    if token:
        print(f"({len(jobs)} of {total}; the next ones: --page-token {token})")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = watch_with_display(client, args.job_id, json_lines=args.json, stream=sys.stdout)
    if not args.json:
        print(f"job {job.id} {job_state_name(job.state)}")
    return exit_code_for(job.state)


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job_id, args.reason)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)}")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.retry_chunk(args.job_id, args.chunk) if args.chunk else client.retry_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job.id} {job_state_name(job.state)} ({_render.summary_text(job.chunks_summary)})")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_job(args.job_id, force=args.force)
    if args.json:
        _print_json({"deleted": args.job_id})
    else:
        print(f"deleted job {args.job_id}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        stats = client.get_job_stats(args.created_after, args.created_before, args.kind)
    if args.json:
        _print_json(stats)
    else:
        print(_render.stats_text(stats))
    return 0


def _cmd_events_url(args: argparse.Namespace) -> int:
    http_url = settings.resolve_http_url(args.http_url, args.connection)  # a bad one fails before the call
    with _client(args) as client:
        token = client.create_events_token("" if args.feed else args.job_id, ttl=args.ttl)
    url = token.url(http_url)
    if args.json:
        expire_time = Timestamp()
        expire_time.FromDatetime(token.expire_time)
        _print_json({"url": url, "token": token.token, "expireTime": expire_time.ToJsonString()})
    else:
        print(url)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.output == "-":
        return _export(args, sys.stdout)
    # newline="": the csv module writes its own line ends.
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        return _export(args, out)


def _export(args: argparse.Namespace, out: TextIO) -> int:
    show_progress = sys.stderr.isatty()
    done = 0
    with _client(args) as client:
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
            self._csv.writerow(_render.EXPORT_COLUMNS)
        elif fmt == "json":
            out.write("[")

    def write(self, job: job_pb2.Job) -> None:
        if self._csv is not None:
            self._csv.writerow(_render.export_row(job))
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


def _log_to_stderr(level: int) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextlib.contextmanager
def _event_on_signal(signum: int, event: threading.Event) -> Iterator[None]:
    """Sets ``event`` when ``signum`` arrives, for as long as the block runs.

    The handler itself only writes a byte to a pipe; a thread reads it and sets the event. Setting a
    ``threading.Event`` in the handler would take the event's lock on the main thread, between any two
    bytecodes: a second signal arriving while the first handler (or the main thread's own
    ``event.wait``) holds that lock would deadlock the process (seen: ``kill`` twice in a row left the
    worker hung for ever).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    received = False

    def on_signal(signum: int, frame: object) -> None:
        # The first one asks to stop; later ones (a burst, or a second kill while we wind down) return
        # at once: a handler that does next to nothing cannot nest deeply in itself, and switching to
        # SIG_IGN here would make Python print "Signal 15 ignored due to race condition" for a signal
        # already on its way.
        nonlocal received
        if received:
            return
        received = True
        with contextlib.suppress(OSError):
            os.write(write_end, b"\0")

    def relay() -> None:
        while os.read(read_end, 64):
            event.set()

    relay_thread = threading.Thread(target=relay, name="jobpulse-signal-relay", daemon=True)
    relay_thread.start()
    previous = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        if not received:  # as it was before; once received, the handler stays (it only returns now)
            signal.signal(signum, previous)
        os.close(write_end)  # the relay reads end-of-file and returns
        relay_thread.join(timeout=5.0)
        os.close(read_end)


def _cmd_worker(args: argparse.Namespace) -> int:
    _log_to_stderr(logging.INFO)
    with _client(args) as client:
        worker = Worker(
            client,
            kinds=args.kind,
            concurrency=args.concurrency,
            lease_duration=args.lease,
            poll_wait=5.0,
        )
        kinds = ", ".join(args.kind) or "any kind"
        stop = threading.Event()
        # SIGTERM stops as gracefully as a first Ctrl-C: no new claims, chunks in hand are finished.
        with _event_on_signal(signal.SIGTERM, stop):
            print(
                f"worker {worker.worker_id} on {args.target} ({kinds}, {args.concurrency} threads); "
                "Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            handled = worker.run(sample_handler(args.item_delay, args.fail_rate), stop_event=stop)
    print(f"worker stopped after {handled} chunks", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _log_to_stderr(logging.ERROR)  # worker chatter would tear the progress line
    total = args.chunks * args.items_per_chunk
    stop = threading.Event()
    failures: list[BaseException] = []
    with _client(args) as client:
        job = client.create_job(
            "demo",
            total,
            display_name=f"demo {args.chunks}x{args.items_per_chunk}",
            chunk_size=args.items_per_chunk,
            labels={"source": "jobpulse-demo"},
        )
        print(
            f"created job {job.id}: {total} items in {args.chunks} chunks; starting {args.workers} workers",
            file=sys.stderr,
        )
        handler = sample_handler(args.item_delay, args.fail_rate)

        def run_worker(n: int) -> None:
            worker = Worker(
                client,
                kinds=["demo"],
                worker_id=f"demo-worker-{n}-{os.getpid()}",
                lease_duration=10.0,
                poll_wait=1.0,
            )
            try:
                worker.run(handler, stop_event=stop)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=run_worker, args=(n,), daemon=True) for n in range(1, args.workers + 1)
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            if args.json:
                final = client.wait(job.id)
            else:
                final = watch_with_display(client, job.id, json_lines=False, stream=sys.stdout)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=5.0)
        elapsed = time.monotonic() - started
        full = _all_chunks(client, client.get_job(job.id, view="full"))
    for failure in failures:
        if isinstance(failure, JobpulseError):
            print(format_error(failure, args.target), file=sys.stderr)
    if args.json:
        _print_json(full)
    else:
        _print_demo_summary(full, elapsed)
    return exit_code_for(final.state)


def _print_demo_summary(job: job_pb2.Job, elapsed: float) -> None:
    attempts = sum(c.attempt for c in job.chunks)
    per_worker = Counter(c.worker_id for c in job.chunks if c.state == job_pb2.CHUNK_STATE_COMPLETED)
    print(
        f"job {job.id} {job_state_name(job.state)} in {_render.format_seconds(elapsed)}: "
        f"{job.progress.items_done}/{job.progress.items_total} items, "
        f"{_render.summary_text(job.chunks_summary)}, {attempts} attempts, {len(job.artifacts)} artifacts"
    )
    if per_worker:
        print(_render.table(("WORKER", "CHUNKS"), sorted(per_worker.items())))


# -- entry point -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jobpulse`` command and returns its exit status.

    Args:
        argv: The arguments, without the program name; ``None`` means ``sys.argv[1:]``.

    Returns:
        One of ``EXIT_CODES``: 0 done, 1 error, 2 usage, 3/4 a watched job FAILED/CANCELLED, 5 server
        unreachable, 130 after Ctrl-C. Errors are one line on stderr, never a traceback (unless
        ``--debug`` or ``JOBPULSE_DEBUG``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    try:
        debug = "--debug" in argv or bool(settings.DEBUG.from_env())
    except SettingError as exc:
        _print_error(as_json, f"error: {exc}", _document(str(exc), "BAD_SETTING"))
        return EXIT_USAGE
    try:
        if _first_command(argv) in SERVER_COMMANDS:
            return _server_command(argv)
        args = _parse(argv, as_json)
        args.debug = debug
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # Whatever escaped the commands' own handling is a bug of ours: one line saying what, and how to
        # get the traceback for a report. SystemExit (argparse, --help, --version) is no Exception.
        if debug:
            traceback.print_exc()
        what = f"unexpected {type(exc).__name__}: {exc}"
        hint = "" if debug else " (run with --debug for the traceback)"
        document = _document(what, "UNEXPECTED")
        if hint:
            document["hint"] = "run with --debug for the traceback"
        _print_error(as_json, f"error: {what}{hint}", document)
        return EXIT_ERROR


def _parse(argv: Sequence[str], as_json: bool) -> argparse.Namespace:
    """Parses ``argv``; argparse prints a usage error as text and exits 2, and under ``--json`` that text
    becomes the same JSON object as every other error, so a script reads one format."""
    if not as_json:
        return build_parser().parse_args(argv)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return build_parser().parse_args(argv)
    except SystemExit as exit_:
        text = captured.getvalue()
        if exit_.code != EXIT_USAGE or not text.strip():
            sys.stderr.write(text)
            raise
        message = text.strip().splitlines()[-1].partition(": error: ")[2] or text.strip()
        _print_error(True, "", _document(message, "USAGE"))
        raise


def _first_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is neither an option nor its value)."""
    words = iter(argv)
    for arg in words:
        if not arg.startswith("-"):
            return arg
        if arg in ("--target", "--api-key", "--tls-ca"):
            next(words, None)  # that option's value
    return None


def run(args: argparse.Namespace) -> int:
    """Runs a parsed command (see ``main``) and returns its exit status."""
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if "target" in args:  # a client command (the server's commands read their own settings)
            _settings(args)
        return func(args)
    except SettingError as exc:
        _report(args, None, f"error: {exc}", _document(str(exc), "BAD_SETTING"))
        return EXIT_USAGE
    except JobpulseError as exc:
        target = getattr(args, "target", "") or ""
        connection = getattr(args, "connection", None)
        tls = bool(connection.secure) if connection is not None else bool(getattr(args, "tls", False))
        _report(args, exc, format_error(exc, target, tls=tls), error_document(exc, target, tls=tls))
        return EXIT_UNREACHABLE if is_unreachable(exc) else EXIT_ERROR
    except ValueError as exc:
        _report(args, exc, f"error: {exc}", _document(str(exc), ""))
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (e.g. `jobpulse export | head`): not an error worth a message.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        # A local file the command was asked to read or write (export --output, ...).
        where = f"{exc.filename}: " if exc.filename else ""
        what = f"{where}{exc.strerror or exc}"
        _report(args, exc, f"error: {what}", _document(what, "OS_ERROR"))
        return EXIT_ERROR
