"""Opaque, keyset-based page tokens bound to the filters they were issued for."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from jobpulse_server.domain.errors import InvalidPageToken

_VERSION = 1
_INT64 = (-(2**63), 2**63 - 1)


def fingerprint(parts: Any) -> str:
    """A short digest of the filters a token belongs to."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def encode(kind: str, filters: str, key: list[Any]) -> str:
    """Makes a token for the page after ``key`` of a listing of ``kind``."""
    body = json.dumps({"v": _VERSION, "t": kind, "f": filters, "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, kind: str, filters: str) -> list[Any]:
    """The key a token continues after; InvalidPageToken if it is not one of ours for these filters."""
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        ok = isinstance(body, dict) and body.get("v") == _VERSION and isinstance(body.get("k"), list)
    except (ValueError, TypeError, UnicodeError):
        ok = False
    if not ok:
        raise InvalidPageToken("page_token is malformed; pass the next_page_token of the previous page")
    if body.get("t") != kind:
        raise InvalidPageToken("page_token belongs to another listing")
    if body.get("f") != filters:
        raise InvalidPageToken(
            "page_token was issued for other filters; repeat the same filters or start over"
        )
    key: list[Any] = body["k"]
    if any(isinstance(v, int) and not _INT64[0] <= v <= _INT64[1] for v in key):
        raise InvalidPageToken("page_token is malformed")
    return key


def decode_text(token: str, kind: str, filters: str, longest: int) -> str:
    """The one text a token of a listing keyed by a name or an id continues after ('' for no token);
    InvalidPageToken unless it is a text of 1 to ``longest`` characters without NUL (a forged one,
    which PostgreSQL text refuses, is no token of ours)."""
    if not token:
        return ""
    key = decode(token, kind, filters)
    if len(key) != 1 or not isinstance(key[0], str) or not 0 < len(key[0]) <= longest or "\x00" in key[0]:
        raise InvalidPageToken("page_token is malformed")
    return key[0]
