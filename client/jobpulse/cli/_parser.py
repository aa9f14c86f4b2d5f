"""The ``jobpulse`` argument parser: every command, its flags and help texts, and the ``--help`` format.

Each command's handler is looked up in its module when the parser is built (``jobpulse`` builds it on every
run), so that a test replacing ``jobpulse.cli._jobs._cmd_get`` replaces what ``jobpulse get`` runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable
from typing import NoReturn

import jobpulse.cli._bulk as bulk
import jobpulse.cli._events_url as events_url
import jobpulse.cli._export as export
import jobpulse.cli._jobs as jobs
import jobpulse.cli._kinds as kinds
import jobpulse.cli._reports as reports
import jobpulse.cli._schedules as schedules
import jobpulse.cli._server as server
import jobpulse.cli._watch as watch
import jobpulse.cli._worker as worker
from jobpulse import _settings as settings
from jobpulse.cli._argtypes import (
    _chunk_state,
    _fraction,
    _job_state,
    _json_object,
    _label,
    _max_attempts,
    _max_running,
    _non_empty,
    _positive_int,
    _priority,
    _start_time,
    _time,
    _time_limit,
    _token_ttl,
    _ttl,
    _webhook_url,
)
from jobpulse.cli._errors import (
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from jobpulse.cli._server import SERVER_COMMANDS

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
GET_CHUNKS = 50  # chunks `get` shows by default: a screenful, not 10,000 lines


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


USAGE_HINT = "; `{prog} --help` lists the flags"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with a usage error said in one line, like every other error of the command:
    ``jobpulse create: error: argument --priority: must be between 0 and 10 (got 99)``, and where to
    read the flags, instead of the whole usage text first. Exit 2, as argparse."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{USAGE_HINT.format(prog=self.prog)}\n")


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


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``jobpulse`` command. The server's commands (``serve``,
    ``keys``, ``migrate``) are listed here and parsed by ``jobpulse-server``'s own parser."""
    parser = ArgumentParser(
        prog="jobpulse",
        description="jobpulse: job status over gRPC",
        formatter_class=HelpFormatter,
        epilog="exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {sdk_version()}")
    _global_options(parser, suppress=False)
    common = ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each handler is looked up in its module now, so that a test replacing one there is heard.

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common], help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        p.set_defaults(func=func)
        return p

    for name, help_text in SERVER_COMMANDS.items():
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text + " (needs jobpulse-server)", add_help=False
        )
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=server._cmd_server)

    command(
        "usage",
        reports._cmd_usage,
        "calls and rate-limit rejections per API key (an admin key: every key's; other keys: their own)",
    )
    command(
        "health",
        reports._cmd_health,
        "database, schema, sweeper, outbox, streams and disk of a server (admin)",
    )

    p = command("create", jobs._cmd_create, "create a job")
    p.add_argument("--kind", type=_non_empty, required=True, help="type of work; workers claim by kind")
    p.add_argument("--items", type=_positive_int, required=True, help="number of items")
    p.add_argument("--chunk-size", type=_positive_int, default=0, help="items per chunk (server default 500)")
    p.add_argument("--priority", type=_priority, default=None, help="0..10 (server default 5)")
    p.add_argument(
        "--label", type=_label, action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    p.add_argument(
        "--metadata", type=_json_object, default=None, metavar="JSON", help="JSON object for workers"
    )
    p.add_argument("--name", default="", help="display name")
    p.add_argument(
        "--max-attempts", type=_max_attempts, default=0, help="claims per chunk, 1..100 (server default 3)"
    )
    p.add_argument("--request-id", default="", help="idempotency key")
    p.add_argument(
        "--webhook-url",
        type=_webhook_url,
        default=None,
        metavar="URL",
        help="where the server POSTs the job's events (default: the API key's webhook, if any)",
    )
    p.add_argument("--webhook-progress", action="store_true", help="also POST throttled job.progress events")
    p.add_argument(
        "--ttl",
        type=_ttl,
        default=None,
        metavar="SECONDS",
        help="how long the server keeps the job once it has ended, then deletes it; 0: for ever "
        "(default: the server's, by the state it ends in)",
    )
    p.add_argument(
        "--max-running-chunks",
        type=_max_running,
        default=0,
        metavar="N",
        help="at most N of its chunks processing at once, across every worker (default 0: no limit)",
    )
    p.add_argument(
        "--schedule-time",
        type=_start_time,
        default=None,
        metavar="TIME",
        help="when the job may start: ISO 8601 (2024-05-01T12:00:00Z) or +SECONDS from now; "
        "no chunk is claimed before (default: at once)",
    )
    p.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="a job this one waits for (repeat for several, at most 20); if it fails or is cancelled, "
        "this job is cancelled",
    )
    p.add_argument(
        "--after-mode",
        choices=("all", "per-chunk"),
        default="all",
        help="all: start once every --after job has completed (default); per-chunk: chunk i starts once "
        "chunk i of the one --after job has completed",
    )
    p.add_argument(
        "--finalize-kind",
        default="",
        metavar="KIND",
        help="end the job with one more chunk of this kind, claimed once every other chunk has completed",
    )
    p.add_argument(
        "--max-failed-chunks",
        type=_max_running,
        default=0,
        metavar="N",
        help="fail the job at once when N chunks have failed for good, cancelling the rest "
        "(default 0: no limit)",
    )
    p.add_argument(
        "--attempt-timeout",
        type=_time_limit,
        default=0,
        metavar="SECONDS",
        help="the longest one attempt of a chunk may run, heartbeats or not; then it is retried "
        "(default 0: no limit)",
    )
    p.add_argument(
        "--timeout",
        type=_time_limit,
        default=0,
        metavar="SECONDS",
        help="fail the job if it has not ended this long after it may start (default 0: no limit)",
    )
    p.add_argument(
        "--unique-key",
        default="",
        metavar="KEY",
        help="refuse to create the job while one of yours with the same kind and key has not ended "
        "(exit 1, naming that job)",
    )

    p = command("get", jobs._cmd_get, "show a job and its chunks")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--basic", action="store_true", help="without chunks")
    p.add_argument(
        "--chunk-state",
        type=_chunk_state,
        action="append",
        default=[],
        metavar="STATE",
        help="only chunks in this state (repeatable): pending, processing, completed, failed, cancelled",
    )
    p.add_argument(
        "--chunks",
        type=_positive_int,
        default=GET_CHUNKS,
        metavar="N",
        help=f"show at most N chunks, in index order, and say how many more there are (default {GET_CHUNKS}; "
        "--json prints every chunk)",
    )

    p = command(
        "attempts",
        jobs._cmd_attempts,
        "every attempt of a job's chunks: who ran it, when, how it ended and why it failed",
    )
    p.add_argument("job_id", metavar="ID")
    p.add_argument("chunk", nargs="?", default="", metavar="CHUNK", help="one chunk: its id or its index")
    p.add_argument(
        "--details",
        action="store_true",
        help="also print each failure's details (e.g. the handler's traceback)",
    )

    p = command("list", jobs._cmd_list, "list jobs, newest first")
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
        watch._cmd_watch,
        "follow a job to the end with a progress bar (with --json: one JSON object per watch message); "
        f"exit {EXIT_OK} completed, {EXIT_FAILED} failed, {EXIT_CANCELLED} cancelled, "
        f"{EXIT_UNREACHABLE} server unreachable",
    )
    p.add_argument("job_id", metavar="ID")

    p = command(
        "cancel",
        jobs._cmd_cancel,
        "cancel a job, or with --all every job matching the filters (counted and confirmed first)",
    )
    p.add_argument("job_id", metavar="ID", nargs="?")
    p.add_argument("--reason", default="")
    _bulk_options(p)

    p = command("pause", jobs._cmd_pause, "hold a job: none of its chunks is claimed until resume")
    p.add_argument("job_id", metavar="ID")
    p = command("resume", jobs._cmd_resume, "let a paused job's chunks be claimed again")
    p.add_argument("job_id", metavar="ID")

    p = command("update", jobs._cmd_update, "change a job's priority, name, labels or max running chunks")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--priority", type=_priority, default=None, help="0..10")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument(
        "--label",
        type=_label,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="repeatable; replaces every label",
    )
    p.add_argument(
        "--max-running-chunks",
        type=_max_running,
        default=None,
        metavar="N",
        help="at most N of its chunks processing at once; 0: no limit",
    )

    p = command(
        "retry", jobs._cmd_retry, "retry the failed and cancelled chunks of a job, or one failed chunk"
    )
    p.add_argument("job_id", metavar="ID", nargs="?")
    p.add_argument("--chunk", default="", metavar="CHUNK_ID", help="retry only this FAILED chunk")
    _bulk_options(p)

    p = command(
        "purge",
        bulk._cmd_purge,
        "delete every ended job matching the filters (--force: running ones too), counted and confirmed "
        "first",
    )
    _filter_options(p)
    p.add_argument("--force", action="store_true", help="delete jobs that have not ended too")
    _bulk_flags(p)

    p = command(
        "wait-operation",
        bulk._cmd_wait_operation,
        "wait for a long-running operation (operations/<job id> or operations/bulk-<id>) and print it; "
        "exit 1 if it is not done in time",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait, at most 300 (default 60)",
    )

    p = command(
        "operations",
        bulk._cmd_operations,
        "list the bulk operations (cancel --all, retry --all, purge), newest first, with how far each got",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--running", action="store_true", help="only those still running")
    which.add_argument("--ended", action="store_true", help="only those that have ended")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="at most N (default 20)")

    p = command(
        "kinds",
        kinds._cmd_list,
        "list the kinds of work with their controls and chunks pending and running; "
        "`kinds pause|resume|cap` change a kind's controls (an admin key)",
    )
    actions = p.add_subparsers(dest="kinds_action", metavar="[ACTION]")

    def kind_action(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        a = actions.add_parser(
            name, parents=[common], help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        a.set_defaults(func=func)
        a.add_argument("kind", metavar="KIND")
        return a

    kind_action(
        "pause", kinds._cmd_pause, "hold a kind: none of its chunks is claimed, whoever owns the job (admin)"
    )
    kind_action("resume", kinds._cmd_resume, "let a paused kind's chunks be claimed again (admin)")
    a = kind_action(
        "cap", kinds._cmd_cap, "at most N of a kind's chunks processing at once; 0 removes the cap (admin)"
    )
    a.add_argument("max_running_chunks", type=_max_running, metavar="N")

    _schedule_commands(command, common)

    p = command("delete", jobs._cmd_delete, "delete a finished job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--force", action="store_true", help="cancel it first if it is still running")

    p = command("stats", reports._cmd_stats, "job counts, success rate and durations")
    p.add_argument("--kind", default="", help="only jobs of this kind")
    _created_options(p)

    p = command(
        "failures",
        reports._cmd_failures,
        "chunks failed for good across jobs, by reason; with --reason, those chunks "
        "(and --retry retries them)",
    )
    p.add_argument("--kind", default="", help="only chunks of this kind")
    p.add_argument(
        "--reason",
        action="append",
        default=[],
        metavar="REASON",
        help="list the chunks failed for good with this error reason (repeatable), newest job first",
    )
    p.add_argument(
        "--limit", type=_positive_int, default=100, metavar="N", help="with --reason: at most N chunks (100)"
    )
    p.add_argument(
        "--retry",
        action="store_true",
        help="with --reason: retry each chunk listed (RetryChunk); chunks of cancelled jobs are skipped",
    )
    _created_options(p)

    p = command(
        "export",
        export._cmd_export,
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
        events_url._cmd_events_url,
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
        type=_token_ttl,
        default=None,
        metavar="SECONDS",
        help="how long the token stays valid, 1 to 86400 (server default 600: 10 minutes)",
    )
    p.add_argument(settings.HTTP_URL.flag, default=None, metavar="URL", help=settings.HTTP_URL.help_text())

    p = command("worker", worker._cmd_worker, "run a sample worker that sleeps per item (until Ctrl-C)")
    p.add_argument(
        "--kind",
        action="append",
        default=[],
        help="kind to claim (repeatable; required: the sample handler does fake work, so it names the jobs "
        "it may take)",
    )
    p.add_argument("--concurrency", type=_positive_int, default=1, help="chunks handled at once (threads)")
    p.add_argument("--item-delay", type=float, default=0.05, metavar="SECONDS", help="seconds per item")
    p.add_argument(
        "--fail-rate", type=_fraction, default=0.0, metavar="P", help="chance a chunk attempt fails"
    )
    p.add_argument("--lease", type=float, default=30.0, metavar="SECONDS", help="lease duration")

    p = command("demo", worker._cmd_demo, "create a demo job, process it with in-process workers, watch it")
    p.add_argument("--chunks", type=_positive_int, default=10, help="chunks of the demo job")
    p.add_argument("--items-per-chunk", type=_positive_int, default=50, help="items in each chunk")
    p.add_argument("--workers", type=_positive_int, default=3, help="sample workers (threads) to start")
    p.add_argument("--item-delay", type=float, default=0.02, metavar="SECONDS", help="seconds per item")
    p.add_argument(
        "--fail-rate", type=_fraction, default=0.0, metavar="P", help="chance a chunk attempt fails"
    )
    return parser


def _bulk_options(p: argparse.ArgumentParser) -> None:
    """``--all`` and the filters of a command that acts on one job by default (cancel, retry)."""
    p.add_argument(
        "--all",
        action="store_true",
        help="act on every job matching the filters below instead of one ID (a bulk operation)",
    )
    _filter_options(p)
    _bulk_flags(p)


def _bulk_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true", help="do not ask before acting on the matching jobs")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="start the operation and print its name instead of following it",
    )


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
        "--min-priority", type=_priority, default=None, metavar="N", help="only priority N (0..10) or more"
    )
    p.add_argument(
        "--max-priority", type=_priority, default=None, metavar="N", help="only priority N (0..10) or less"
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


def _schedule_commands(
    command: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """``jobpulse schedules`` (the list) and its actions: create, list, get, update, pause, resume,
    delete, trigger."""
    p = command(
        "schedules",
        schedules._cmd_list,
        "list the schedules that make jobs on a cron schedule; "
        "`schedules create|get|update|pause|resume|delete|trigger` manage them",
    )
    actions = p.add_subparsers(dest="schedules_action", metavar="[ACTION]")

    def action(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        a = actions.add_parser(
            name, parents=[common], help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        a.set_defaults(func=func)
        if name not in ("create", "list"):
            a.add_argument("schedule", metavar="ID", help="the schedule's id (or name, schedules/ID)")
        return a

    def options(a: argparse.ArgumentParser, *, create: bool) -> None:
        a.add_argument(
            "--cron",
            type=_non_empty,
            required=create,
            default=None,
            help="5-field cron expression (minute hour day-of-month month day-of-week): '0 3 * * mon-fri'",
        )
        a.add_argument(
            "--time-zone", default="" if create else None, metavar="ZONE", help="IANA time zone (default UTC)"
        )
        a.add_argument("--name", default="" if create else None, help="the schedule's display name")
        a.add_argument(
            "--misfire",
            choices=("run_once", "skip"),
            default="run_once" if create else None,
            help="ticks missed while no server ran: one job for all of them, or none",
        )
        a.add_argument(
            "--overlap",
            choices=("allow", "skip"),
            default="allow" if create else None,
            help="skip: no job at a tick while the schedule's last job has not ended",
        )
        job = "each tick's job: " if create else "change each tick's job: "
        a.add_argument("--kind", type=_non_empty, required=create, default=None, help=job + "its kind")
        a.add_argument("--items", type=_positive_int, required=create, default=None, help=job + "its items")
        a.add_argument("--chunk-size", type=_positive_int, default=None, help=job + "items per chunk")
        a.add_argument("--priority", type=_priority, default=None, help=job + "priority 0..10")
        a.add_argument(
            "--label", type=_label, action="append", default=None, metavar="KEY=VALUE", help=job + "a label"
        )
        a.add_argument("--metadata", type=_json_object, default=None, metavar="JSON", help=job + "metadata")
        a.add_argument("--max-attempts", type=_max_attempts, default=None, help=job + "claims per chunk")
        a.add_argument("--job-name", default=None, metavar="NAME", help=job + "display name")
        a.add_argument("--unique-key", default=None, metavar="KEY", help=job + "unique key")

    created = action("create", schedules._cmd_create, "create a schedule: a job at every tick of a cron")
    options(created, create=True)
    created.add_argument("--paused", action="store_true", help="create it paused")
    action("list", schedules._cmd_list, "list the schedules (oldest first)")
    action("get", schedules._cmd_get, "show a schedule: its cron, next and last run, policies and job")
    updated = action("update", schedules._cmd_update, "change a schedule (a new cron counts from now)")
    options(updated, create=False)
    action("pause", schedules._cmd_pause, "pause a schedule: no jobs until it is resumed")
    action("resume", schedules._cmd_resume, "resume a schedule: its next tick counts from now")
    action("delete", schedules._cmd_delete, "delete a schedule (the jobs it made are kept)")
    action("trigger", schedules._cmd_trigger, "make one job from a schedule's template now")


def sdk_version() -> str:
    """The installed SDK's version, from the package metadata (``__version__`` when run from a tree)."""
    try:
        return importlib.metadata.version("jobpulse")
    except importlib.metadata.PackageNotFoundError:
        from jobpulse import __version__

        return __version__
