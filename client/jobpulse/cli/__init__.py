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
#   _main         main and run: parse, dispatch, errors to exit codes (``python -m``: __main__)
#   _parser       build_parser: the commands, their flags and help texts
#   _argtypes     the flags' value types, and the filter flags as SDK arguments
#   _errors       exit codes; an error's one line, JSON document and hint
#   _output       printing: results as JSON on stdout, errors on stderr
#   _connection   the connection flags and JOBPULSE_* variables, and a Client on them
#   _jobs         create, get, list, cancel, retry, delete
#   _watch        watch, and the progress display demo shows too
#   _export       export
#   _reports      health, usage, stats
#   _events_url   events-url
#   _worker       worker, demo (their sample handler is jobpulse._sample_worker)
#   _server       serve, keys, migrate: handed to jobpulse-server
#
# This file exports ``__all__`` and keeps the single module's other public names, and the private ones
# tests use, reachable as ``jobpulse.cli.<name>``. To replace the client or a command in a test, replace
# it in its module (``_connection._client``, ``_jobs._cmd_get``): the commands and the parser look them
# up there when they run.

from __future__ import annotations

from jobpulse._settings import SettingError
from jobpulse.cli._argtypes import _filters  # noqa: F401 (re-exported)
from jobpulse.cli._connection import _client, _settings  # noqa: F401 (re-exported)
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
    error_document,
    error_hint,
    exit_code_for,
    format_error,
    is_unreachable,
)
from jobpulse.cli._events_url import _cmd_events_url  # noqa: F401 (re-exported)
from jobpulse.cli._export import _cmd_export  # noqa: F401 (re-exported)
from jobpulse.cli._jobs import (  # noqa: F401 (re-exported)
    _cmd_cancel,
    _cmd_create,
    _cmd_delete,
    _cmd_get,
    _cmd_list,
    _cmd_retry,
)
from jobpulse.cli._main import main, run  # noqa: F401 (re-exported)
from jobpulse.cli._parser import (  # noqa: F401 (re-exported)
    EXPORT_FORMATS,
    ORDER_BY_CHOICES,
    HelpFormatter,
    build_parser,
    sdk_version,
)
from jobpulse.cli._reports import _cmd_health, _cmd_stats, _cmd_usage  # noqa: F401 (re-exported)
from jobpulse.cli._server import (  # noqa: F401 (re-exported)
    SERVER_COMMANDS,
    SERVER_MODULE,
    _cmd_server,
)
from jobpulse.cli._watch import _cmd_watch, watch_with_display  # noqa: F401 (re-exported)
from jobpulse.cli._worker import _cmd_demo, _cmd_worker  # noqa: F401 (re-exported)

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
