"""The bulk commands: ``cancel --all``, ``retry --all`` and ``purge`` (a bulk operation over the list
filters: the matching jobs counted, a confirmation asked, then the server's progress followed), and
``wait-operation`` and ``operations`` (the bulk operations, newest first)."""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any

import jobpulse.cli._connection as _connection
from jobpulse._bulk import BulkOperation
from jobpulse._sync.client import Client
from jobpulse.cli._argtypes import _filters
from jobpulse.cli._errors import EXIT_ERROR, EXIT_OK
from jobpulse.cli._output import _print_json
from jobpulse.cli._render import table, to_dict

# How each action reads in the summary line.
_DONE_WORDS = {"cancel": "cancelled", "retry": "retried", "purge": "deleted"}


def _start(client: Client, action: str, args: argparse.Namespace, validate_only: bool) -> BulkOperation:
    filters = _filters(args)
    if action == "cancel":
        return client.cancel_jobs(**filters, reason=args.reason, validate_only=validate_only)
    if action == "retry":
        return client.retry_jobs(**filters, validate_only=validate_only)
    return client.purge_jobs(**filters, force=args.force, validate_only=validate_only)


def _confirmed(count: int, action: str) -> bool:
    """Asks on the terminal; no terminal (or end of input) means no."""
    try:
        answer = input(f"{action} {count} job{'s' if count != 1 else ''}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def run_bulk(args: argparse.Namespace, action: str) -> int:
    """Counts the jobs the filters match, asks (unless ``--yes``), starts the operation and, unless
    ``--no-wait``, follows it to its end with a progress line on stderr."""
    with _connection._client(args) as client:
        counted = _start(client, action, args, validate_only=True)
        noun = "job matches" if counted.matched == 1 else "jobs match"
        if not args.json:
            print(f"{counted.matched} {noun}")
        if counted.matched == 0:
            return EXIT_OK
        if not args.yes and not _confirmed(counted.matched, action):
            print("nothing done (answer y, or pass --yes)", file=sys.stderr)
            return EXIT_ERROR
        op = _start(client, action, args, validate_only=False)
        if args.no_wait:
            if args.json:
                _print_json(op.raw)
            else:
                print(f"started {op.name}: follow it with `jobpulse wait-operation {op.name}`")
            return EXIT_OK
        final = client.wait_bulk_operation(op.name, on_progress=_progress(args))
    if args.json:
        _print_json(final.raw)
        return EXIT_OK
    if sys.stderr.isatty():
        print(file=sys.stderr)
    stopped = " (stopped by cancel-operation)" if final.cancelled else ""
    counts = f"{final.done} of {final.matched}, skipped {final.skipped}"
    print(f"{_DONE_WORDS[action]} {counts}{stopped}: {final.name}")
    return EXIT_OK


def _progress(args: argparse.Namespace) -> Any:
    if args.json or not sys.stderr.isatty():
        return None

    def show(op: BulkOperation) -> None:
        width = 30
        filled = int(op.progress * width)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {op.done + op.skipped}/{op.matched}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def _cmd_purge(args: argparse.Namespace) -> int:
    return run_bulk(args, "purge")


def _cmd_wait_operation(args: argparse.Namespace) -> int:
    """Waits for a long-running operation (a job's ``operations/<id>`` or a bulk one's) and prints it."""
    with _connection._client(args) as client:
        op = client.wait_operation(args.name, args.timeout)
    if args.json:
        _print_json(op)
        return EXIT_OK
    if op.done:
        outcome = f"failed: {op.error.message}" if op.HasField("error") else "done"
    else:
        outcome = f"not done after {args.timeout:g}s"
    print(f"{op.name} {outcome}")
    try:
        bulk = BulkOperation.from_operation(op)
    except ValueError:
        return EXIT_OK if op.done else EXIT_ERROR
    print(f"{bulk.action}: {bulk.done} done, {bulk.skipped} skipped of {bulk.matched} matched")
    return EXIT_OK if op.done else EXIT_ERROR


def _state(op: BulkOperation) -> str:
    if not op.finished:
        return "running"
    return "stopped" if op.cancelled else "done"


def _cmd_operations(args: argparse.Namespace) -> int:
    """Lists the bulk operations (``cancel --all``, ``retry --all``, ``purge``), newest first."""
    running = True if args.running else False if args.ended else None
    with _connection._client(args) as client:
        ops = list(itertools.islice(client.list_bulk_operations(running=running), args.limit))
    if args.json:
        # As ListOperationsResponse reads in JSON (what `wait-operation --json` prints, one each).
        _print_json({"operations": [to_dict(op.raw) for op in ops]})
        return EXIT_OK
    if not ops:
        print("no bulk operations: `jobpulse cancel --all`, `retry --all` and `purge` start them")
        return EXIT_OK
    rows = [
        (
            op.name,
            op.action,
            _state(op),
            f"{op.done + op.skipped}/{op.matched}",
            op.done,
            op.skipped,
            op.create_time.isoformat(timespec="seconds") if op.create_time else "",
        )
        for op in ops
    ]
    print(table(("NAME", "ACTION", "STATE", "HANDLED", "DONE", "SKIPPED", "STARTED"), rows))
    return EXIT_OK
