"""The artifact URI rule: an artifact names where its bytes are by an absolute URI of an allowed scheme.

A worker's local path (``/tmp/render/0.png``, ``C:\\out\\0.png``) or a ``file:`` URI means nothing to
the callers and frontends an artifact is shown to, and tells them about the worker's disk; so every path
that takes an artifact refuses one (INVALID_ARGUMENT) unless its uri is ``scheme:...`` with a scheme of
the setting ``artifact_uri_schemes`` (default https, http, s3, gs, az), and, where it has an authority
(``scheme://``), a host or bucket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_SCHEMES = ("https", "http", "s3", "gs", "az")
# RFC 3986's scheme: a letter, then letters, digits, "+", "-" or ".".
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_NOT_IN_A_URI = re.compile(r"[\x00-\x20\x7f\\]")


def schemes_of(setting: str) -> frozenset[str]:
    """The schemes of the setting's comma-separated value, in lower case; ValueError names a bad one."""
    found = [s.strip().lower() for s in setting.split(",") if s.strip()]
    for scheme in found:
        if not SCHEME.fullmatch(scheme):
            raise ValueError(f"{scheme!r} is not a URI scheme (a letter, then letters, digits, + - .)")
    return frozenset(found)


def uri_problem(uri: str, schemes: Iterable[str]) -> str | None:
    """Why ``uri`` is not an artifact's URI under ``schemes``, in words for the caller; None when it is.
    The words never repeat the uri (it may be a path on the worker's disk)."""
    allowed = sorted(schemes)
    head, colon, rest = uri.partition(":")
    if not colon or not SCHEME.fullmatch(head) or len(head) == 1:  # "C:\\..." is a drive, not a scheme
        return f"must be an absolute URI ({', '.join(allowed)}), not a path"
    if head.lower() not in allowed:
        return f"scheme {head.lower()!r} is not allowed: one of {', '.join(allowed)} (artifact_uri_schemes)"
    if _NOT_IN_A_URI.search(uri):
        return "must not hold spaces, control characters or backslashes (percent-encode them)"
    if rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if not authority:
            return "must name a host or bucket after the scheme's //"
    elif not rest:
        return f"must hold more than its scheme {head.lower()}:"
    return None
