"""Identifiers: job ids that sort by creation, chunk ids, lease tokens."""

from __future__ import annotations

import secrets
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _MonotonicUlid:
    """Makes 26-character ULIDs that never go backwards within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = secrets.randbits(80)
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | (rand & ((1 << 80) - 1))
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))


_ulids = _MonotonicUlid()


def new_job_id() -> str:
    """A new job id; ids made later sort after ids made earlier."""
    return _ulids.new()


def chunk_id(job_id: str, index: int) -> str:
    """The id of chunk ``index`` of job ``job_id``."""
    return f"{job_id}-{index}"


def new_lease_token() -> str:
    """An unguessable fencing token for one claim of one chunk."""
    return secrets.token_urlsafe(18)


def chunk_job_id(chunk_id: str) -> str:
    """The job part of a chunk id (``<job id>-<index>``); "" for ids of another shape."""
    job_id, sep, index = chunk_id.rpartition("-")
    return job_id if sep and index.isdigit() else ""
