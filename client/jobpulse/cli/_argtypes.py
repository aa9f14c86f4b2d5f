"""The types of the CLI's flag values: each turns a flag's text into its value or refuses it in words; and
the filter flags as the SDK's keyword arguments (``_filters``).

A refusal is an ``argparse.ArgumentTypeError``, which argparse prints as a usage error (exit 2) naming
the flag: ``argument --items: expected a whole number, got 'abc'``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from jobpulse._convert import chunk_state, job_state, parse_datetime
from jobpulse.v1 import job_pb2


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


def _chunk_state(text: str) -> job_pb2.ChunkState.ValueType:
    try:
        return chunk_state(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time like 2024-05-01T12:00:00Z, got {text!r}"
        ) from None


def _start_time(text: str) -> datetime:
    """When a job may start: an ISO 8601 time, or ``+SECONDS`` from now."""
    if text.startswith("+"):
        seconds = _seconds(text[1:])
        if not 0 <= seconds <= MAX_TTL_SECONDS:
            raise argparse.ArgumentTypeError(f"must be at most {MAX_TTL_SECONDS} seconds (3650 days) ahead")
        return datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return _time(text)


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


# The ranges the contract fixes, checked here so that a value the server would refuse is a usage error
# (exit 2) said before any call, like every other bad flag.
PRIORITY_RANGE = (0, 10)
MAX_ATTEMPTS_RANGE = (1, 100)
MAX_TTL_SECONDS = 3650 * 86400


def _whole_number_between(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high} (got {value})")
        return value

    return parse


_priority = _whole_number_between(*PRIORITY_RANGE)
_max_running = _whole_number_between(0, 1_000_000)
_max_attempts = _whole_number_between(*MAX_ATTEMPTS_RANGE)


def _ttl(text: str) -> float:
    """A job's time to live in seconds: 0 keeps it for ever, at most 3650 days."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= MAX_TTL_SECONDS:  # also NaN
        raise argparse.ArgumentTypeError(f"must be between 0 (for ever) and {MAX_TTL_SECONDS} (3650 days)")
    return value


def _time_limit(text: str) -> float:
    """A job's attempt_timeout or timeout in seconds: 0 for none, else 1 to 3650 days."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value == 0 or 1 <= value <= MAX_TTL_SECONDS):  # also NaN
        raise argparse.ArgumentTypeError(
            f"must be 0 (no limit) or between 1 and {MAX_TTL_SECONDS} (3650 days)"
        )
    return value


def _token_ttl(text: str) -> float:
    """An events token's lifetime in seconds: 1 to 86400 (a day)."""
    value = _seconds(text)
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 1 and 86400 seconds (got {text})")
    return value


def _webhook_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL with a host, got {text!r}")
    return text


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
