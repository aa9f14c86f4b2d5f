"""Exit codes, and what an error is called: its one line, its ``--json`` document and its hint.

Every command exits with one of ``EXIT_CODES``. A failed call is told as
``error: <what> [<CODE> <REASON>]; <what to do>`` or, with ``--json``, as one JSON object; this module
builds both, and ``_output`` prints them.
"""

from __future__ import annotations

from typing import Any

import grpc

from jobpulse import _settings as settings
from jobpulse.errors import JobpulseError
from jobpulse.v1 import job_pb2

# One meaning per code, for every command: a script can tell a failed job from a server it could not reach
# from a typo in its own command line.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # argparse's own code for a bad command line; bad variables join it
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_UNREACHABLE = 5
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT
EXIT_CODES = {
    EXIT_OK: "done (watch/demo: the job COMPLETED)",
    EXIT_ERROR: "error: the server refused or failed the call, or a local failure",
    EXIT_USAGE: "usage: a bad flag, argument or JOBPULSE_* variable",
    EXIT_FAILED: "watch/demo: the job FAILED",
    EXIT_CANCELLED: "watch/demo: the job was CANCELLED",
    EXIT_UNREACHABLE: "the server could not be reached (--target / JOBPULSE_TARGET)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

_EXIT_BY_STATE = {
    job_pb2.JOB_STATE_COMPLETED: EXIT_OK,
    job_pb2.JOB_STATE_FAILED: EXIT_FAILED,
    job_pb2.JOB_STATE_CANCELLED: EXIT_CANCELLED,
}

TARGET_ENV = settings.TARGET.env
API_KEY_ENV = settings.API_KEY.env
TLS_CA_ENV = settings.TLS_CA.env
DEBUG_ENV = settings.DEBUG.env


def is_unreachable(error: JobpulseError) -> bool:
    """Tells whether the call never got an answer from a jobpulse server: UNAVAILABLE without the
    ErrorInfo the server attaches to every status it sends (a refused or lost connection)."""
    return error.code == grpc.StatusCode.UNAVAILABLE and error.domain != "jobpulse"


def error_hint(error: JobpulseError, target: str = "", *, tls: bool = False) -> str:
    """What the user can do about ``error``, or ``""``; the flags and variables to look at."""
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        return f"pass a valid key with --api-key or {API_KEY_ENV}"
    # The words gRPC uses for the two TLS mismatches, as measured: a TLS server closes a plaintext
    # connection ("Socket closed"); a plaintext server fails our handshake ("WRONG_VERSION_NUMBER").
    details = error.message.lower()
    if is_unreachable(error) and tls and "handshake failed" in details:
        if "wrong_version_number" in details:
            return f"the server at {target} does not seem to use TLS: drop --tls / --tls-ca ({TLS_CA_ENV})"
        return f"the server's certificate was not accepted: check --tls-ca ({TLS_CA_ENV})"
    if is_unreachable(error) and not tls and "socket closed" in details:
        return f"the server at {target} may use TLS: add --tls (or --tls-ca PEM)"
    if is_unreachable(error):
        where = f" at {target}" if target else ""
        return f"is the jobpulse server running{where}? (--target / {TARGET_ENV})"
    return ""


def format_error(error: JobpulseError, target: str = "", *, tls: bool = False) -> str:
    """Returns the one line the CLI prints for ``error``: ``error: <what> [<CODE> <REASON>]`` and, where
    there is something to do, ``; <what to do>``."""
    hint = error_hint(error, target, tls=tls)
    return f"error: {error}" + (f"; {hint}" if hint else "")


def error_document(error: JobpulseError, target: str = "", *, tls: bool = False) -> dict[str, Any]:
    """Returns ``error`` as the JSON object ``--json`` prints on stderr: code, reason, message (the
    server's own words), field_violations, and a hint when there is one."""
    document: dict[str, Any] = {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "field_violations": [{"field": f, "description": d} for f, d in error.field_violations],
    }
    hint = error_hint(error, target, tls=tls)
    if hint:
        document["hint"] = hint
    return document


def exit_code_for(state: int) -> int:
    """Returns the exit status for a job's final state: 0 completed, 3 failed, 4 cancelled (1 for a state
    that is not final)."""
    return _EXIT_BY_STATE.get(job_pb2.JobState.ValueType(state), EXIT_ERROR)


def _document(message: str, reason: str) -> dict[str, Any]:
    """The JSON error object of an error that is no gRPC status (``code`` null)."""
    return {"code": None, "reason": reason, "message": message, "field_violations": []}
