"""The entry point: parses the command line, runs the command, and turns whatever goes wrong into an exit
code (``EXIT_CODES``) and one line, or with ``--json`` one JSON object, on stderr; never a traceback
unless ``--debug`` asks for it."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from jobpulse import _settings as settings
from jobpulse._settings import SettingError
from jobpulse.cli._connection import _settings
from jobpulse.cli._errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    _document,
    error_document,
    format_error,
    is_unreachable,
)
from jobpulse.cli._output import _print_error, _report
from jobpulse.cli._parser import USAGE_HINT, build_parser
from jobpulse.cli._server import SERVER_COMMANDS, _server_command
from jobpulse.errors import JobpulseError


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
        prog, _, message = text.strip().splitlines()[-1].partition(": error: ")
        message = message.removesuffix(USAGE_HINT.format(prog=prog)) or text.strip()
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
