"""The ``jobpulse`` command line: run the server, create and inspect jobs, watch them, run sample workers.

Every client command talks to ``--target`` (``$JOBPULSE_TARGET``, default ``127.0.0.1:50051``). An error
is one line on stderr, said once, with what to do where there is something to do:
``error: job 'nope' not found [NOT_FOUND JOB_NOT_FOUND]`` (the status code, then the reason when it
says more than the code); a bad flag, a value out of its range included, is one line too (exit 2);
with ``--json`` it is one JSON object on stderr instead. Never a traceback: ``--debug`` (or
``JOBPULSE_DEBUG=1``) adds it, for bug reports.

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

# One module per job:
#
#   _entry        the console script: quiets gRPC's log, then runs main
#   _main         main and run: parse, dispatch, errors to exit codes (``python -m``: __main__)
#   _parser       build_parser: the commands, their flags and help texts
#   _argtypes     the flags' value types, and the filter flags as SDK arguments
#   _errors       exit codes; an error's one line, JSON document and hint
#   _output       printing: results as JSON on stdout, errors on stderr
#   _render       text: tables, job details, progress bars and lines, statistics, export rows
#   _connection   the connection flags and JOBPULSE_* variables, and a Client on them
#   _jobs         create, get, list, cancel, retry, delete
#   _watch        watch, and the progress display demo shows too
#   _export       export
#   _reports      health, usage, stats
#   _events_url   events-url
#   _worker       worker, demo
#   _sample_worker  their sample handler, which sleeps per item and fails on request
#   _server       serve, keys, migrate: handed to jobpulse-server
#
# This file exports ``__all__`` and keeps the single module's other public names, and the private ones
# tests use, reachable as ``jobpulse.cli.<name>``. To replace the client or a command in a test, replace
# it in its module (``_connection._client``, ``_jobs._cmd_get``): the commands and the parser look them
# up there when they run.
#
# The names are loaded on first use, not when the package is imported: the console script
# (``jobpulse.cli._entry``) sets gRPC's log level before anything imports gRPC, and importing it imports
# this package first.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobpulse._settings import SettingError
    from jobpulse.cli._errors import (
        EXIT_CANCELLED,
        EXIT_CODES,
        EXIT_ERROR,
        EXIT_FAILED,
        EXIT_OK,
        EXIT_UNREACHABLE,
        EXIT_USAGE,
        error_document,
        exit_code_for,
        format_error,
    )
    from jobpulse.cli._main import main
    from jobpulse.cli._parser import build_parser

# Each name reachable here and the module it comes from.
_NAMES = {
    "SettingError": "jobpulse._settings",
    "_filters": "jobpulse.cli._argtypes",
    "_client": "jobpulse.cli._connection",
    "_settings": "jobpulse.cli._connection",
    **dict.fromkeys(
        (
            "API_KEY_ENV",
            "DEBUG_ENV",
            "EXIT_CANCELLED",
            "EXIT_CODES",
            "EXIT_ERROR",
            "EXIT_FAILED",
            "EXIT_INTERRUPTED",
            "EXIT_OK",
            "EXIT_UNREACHABLE",
            "EXIT_USAGE",
            "TARGET_ENV",
            "TLS_CA_ENV",
            "error_document",
            "error_hint",
            "exit_code_for",
            "format_error",
            "is_unreachable",
        ),
        "jobpulse.cli._errors",
    ),
    "_cmd_events_url": "jobpulse.cli._events_url",
    "_cmd_export": "jobpulse.cli._export",
    **dict.fromkeys(
        ("_cmd_cancel", "_cmd_create", "_cmd_delete", "_cmd_get", "_cmd_list", "_cmd_retry"),
        "jobpulse.cli._jobs",
    ),
    "main": "jobpulse.cli._main",
    "run": "jobpulse.cli._main",
    **dict.fromkeys(
        ("EXPORT_FORMATS", "ORDER_BY_CHOICES", "HelpFormatter", "build_parser", "sdk_version"),
        "jobpulse.cli._parser",
    ),
    **dict.fromkeys(("_cmd_health", "_cmd_stats", "_cmd_usage"), "jobpulse.cli._reports"),
    **dict.fromkeys(("SERVER_COMMANDS", "SERVER_MODULE", "_cmd_server"), "jobpulse.cli._server"),
    **dict.fromkeys(("_cmd_watch", "watch_with_display"), "jobpulse.cli._watch"),
    **dict.fromkeys(("_cmd_demo", "_cmd_worker"), "jobpulse.cli._worker"),
}

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


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name.startswith("_") and not name.startswith("__"):
        try:  # a module of the package (``cli._connection``), for tests that replace a name in it
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_NAMES})
