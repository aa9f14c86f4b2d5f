"""Identifiers: job ids that sort by creation, chunk ids, lease tokens."""

from __future__ import annotations

import base64
import os
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


# Lease tokens made ahead, a batch from one read of the system's random source: a claim made one with a
# read of its own (``secrets.token_urlsafe``, a getrandom system call each): 3% of the service and store's
# time in the SQLite floor of ``python -m bench core`` when it was measured.
# The same bytes, 18 of them a token, as unguessable; list.pop and extend are atomic, so threads never
# share a token, and a forked child starts with none of its parent's.
_TOKEN_BYTES = 18
_TOKEN_BATCH = 64
_tokens: list[str] = []
os.register_at_fork(after_in_child=_tokens.clear)


def new_lease_token() -> str:
    """An unguessable fencing token for one claim of one chunk (24 URL-safe characters)."""
    try:
        return _tokens.pop()
    except IndexError:
        raw = os.urandom(_TOKEN_BYTES * _TOKEN_BATCH)
        _tokens.extend(
            base64.urlsafe_b64encode(raw[i : i + _TOKEN_BYTES]).decode("ascii")
            for i in range(0, len(raw), _TOKEN_BYTES)
        )
        return _tokens.pop()


def chunk_job_id(chunk_id: str) -> str:
    """The job part of a chunk id (``<job id>-<index>``); "" for ids of another shape."""
    job_id, sep, index = chunk_id.rpartition("-")
    return job_id if sep and index.isdigit() else ""
