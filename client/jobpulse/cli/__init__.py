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
from typing import Any, TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse import _render
from jobpulse import _settings as settings
from jobpulse._convert import job_state_name
from jobpulse._sample_worker import sample_handler
from jobpulse._settings import SettingError

# Moved to their own modules; every name stays reachable as jobpulse.cli.<name>, as in the single module.
from jobpulse.cli._connection import (
    _client,
    _settings,
)
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
from jobpulse.cli._jobs import (  # noqa: F401 (re-exported)
    _all_chunks,
    _cmd_cancel,
    _cmd_create,
    _cmd_delete,
    _cmd_get,
    _cmd_list,
    _cmd_retry,
)
from jobpulse.cli._output import _print_error, _print_json, _report
from jobpulse.cli._parser import (  # noqa: F401 (re-exported)
    EXPORT_FORMATS,
    ORDER_BY_CHOICES,
    HelpFormatter,
    _filters,
    build_parser,
    sdk_version,
)
from jobpulse.cli._server import (  # noqa: F401 (re-exported)
    SERVER_COMMANDS,
    SERVER_MODULE,
    _cmd_server,
    _server_command,
)
from jobpulse.cli._watch import (  # noqa: F401 (re-exported)
    _cmd_watch,
    watch_with_display,
)
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


# -- argument types ----------------------------------------------------------------------------------------


# -- parser ------------------------------------------------------------------------------------------------


# -- helpers -----------------------------------------------------------------------------------------------


# -- commands ----------------------------------------------------------------------------------------------


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
