"""Job messages encoded once per (job, revision, view), and chunks once per change, reused by GetJob,
BatchGetJobs and ListJobs.

A job's revision grows with every change to the job or any of its chunks, and each chunk keeps the
revision of its own last change, so:

* the encoded message of a revision never goes stale: a read at a revision already encoded reads
  the job's row and nothing else;
* a FULL read at a newer revision re-encodes only the chunks changed since the revision last
  encoded (read with the ``revision > R`` index) and reuses every other chunk's bytes.

The only parts of a Job that depend on the moment it is sent, ``progress.eta`` and ``blocked``, are
left out of the kept bytes and set on each response. Building a Job with 1,000 chunks from Python objects took
about 15 ms here; parsing kept bytes into the response takes a fraction of a millisecond.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from jobpulse.v1 import job_pb2
from jobpulse_server.domain.model import Chunk, Job, JobHead
from jobpulse_server.domain.retention import Retention
from jobpulse_server.services.jobs import JobPage
from jobpulse_server.wire.convert import chunk_kwargs, duration, job_pb

# The default budget of the cache (``encoded_cache_bytes``): what its entries really cost in memory,
# payloads and Python's own objects together (see ``_cost``), not the payloads' lengths.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
# Seconds an entry may go unread before it is dropped (``encoded_cache_idle_seconds``): the cache keeps
# what callers read again (pollers, dashboards, pages), not every job ever read once. Without it a steady
# load of new jobs filled the budget for as long as it took (on PostgreSQL in the soak, 9 minutes), and
# the server's memory grew all that while.
DEFAULT_IDLE_SECONDS = 60.0
# An OrderedDict's own share of one entry beyond the objects it holds (its hash slot and its node in the
# order list): measured with tracemalloc over 20,000 entries (CPython 3.11, 64-bit).
_SLOT = 80
_REV = sys.getsizeof(2**40)  # a revision (an int of a few bytes)
_ENTRY = sys.getsizeof([0, None, 0.0]) + sys.getsizeof(0.0)  # the [cost, value, last used] list, its time

_CHUNKS_FIELD = job_pb2.Job.DESCRIPTOR.fields_by_name["chunks"].number


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


_CHUNK_TAG = _varint((_CHUNKS_FIELD << 3) | 2)
_BLOCKED = job_pb2.Job(blocked=True).SerializeToString()


def message_fields(number: int, payloads: Iterable[bytes]) -> bytes:
    """Serialized messages as message field ``number`` on the wire: the elements of a repeated
    field, or (one payload) a singular one."""
    tag = _varint((number << 3) | 2)
    return b"".join(tag + _varint(len(p)) + p for p in payloads)


def chunk_field(c: Chunk) -> bytes:
    """One element of Job.chunks as it appears on the wire (tag, length, message)."""
    body = job_pb2.Chunk(**chunk_kwargs(c)).SerializeToString()
    return _CHUNK_TAG + _varint(len(body)) + body


class _Lru:
    """An LRU map whose entries carry their cost against a shared budget and when they were last used:
    ``[cost, value, last used]``, in order of last use."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Any, list[Any]] = OrderedDict()

    def get(self, key: Any, now: float) -> Any:
        found = self.entries.get(key)
        if found is None:
            return None
        found[2] = now
        self.entries.move_to_end(key)
        return found[1]


def _cost(key: Any, value: bytes | tuple[int, list[bytes]]) -> int:
    """What an entry costs in memory: its payload objects, its key (the job id, which the cache may be the
    last to hold, the revision), the (cost, value) pair and the OrderedDict's slot."""
    if isinstance(value, bytes):
        payload = sys.getsizeof(value)
    else:
        _, fields = value
        payload = sys.getsizeof(value) + _REV + sys.getsizeof(fields) + sum(map(sys.getsizeof, fields))
    if isinstance(key, tuple):  # a message: also its line in the index of newest revisions
        job_id, extra = key[0], sys.getsizeof(key[:1] + key[2:]) + _SLOT
    else:
        job_id, extra = key, 0
    return payload + sys.getsizeof(key) + sys.getsizeof(job_id) + _REV + _ENTRY + _SLOT + extra


class EncodedJobs:
    """Kept encodings: (job id, revision, full) -> the Job's bytes without ETA, and per job the wire
    bytes of its shown chunks at the revision they were last read.

    Bounded for real: every entry is counted at what it costs (``_cost``), a job keeps one message per
    view (a newer revision replaces the older one at once, rather than waiting for the LRU to drop it),
    and ``max_bytes`` 0 keeps nothing. An entry unread for ``idle_seconds`` is dropped when the next one
    is kept (0: only the budget drops entries). Counts of hits, misses, evictions (for room) and expiries
    (idle) are kept as plain integers (``metrics`` reads them when scraped: nothing on a call's path but an
    addition)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention: Retention | None = None,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self.clock = clock
        # The server's default ttls, for expire_time: fixed for the server's life, so a job's
        # expire_time is the same at every read of one revision, and kept bytes stay right.
        self.retention = retention
        self._messages = _Lru()
        # (job id, full) -> the revision of its kept message, to drop it when a newer one is kept.
        self._newest: dict[tuple[str, bool], int] = {}
        # job id -> (revision, [chunk field bytes by index])
        self._blocks = _Lru()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expired = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @property
    def entries(self) -> int:
        return len(self._messages.entries) + len(self._blocks.entries)

    def held_revision(self, job: Job | JobHead, full: bool = True) -> int | None:
        """The revision at which this job's FULL chunks are at hand: its own (nothing to read), an
        older one (read only the chunks changed since), or None (read them all). BASIC: the job's own
        revision when its encoding is kept (its artifacts need not be read), else None."""
        if (job.id, job.revision, full) in self._messages.entries:
            return job.revision
        if not full:
            return None
        block = self._blocks.entries.get(job.id)
        if block is not None and block[1][0] < job.revision:
            return int(block[1][0])
        return None

    def job_bytes(self, page: JobPage, full: bool, now: int) -> bytes:
        """The job of ``page`` as a serialized jobpulse.v1.Job, from kept bytes where possible,
        encoding and keeping what is new. The ETA of this moment, if any, follows the kept bytes
        as a second ``progress`` field, which a parser merges into the first. LookupError when
        ``page`` relies on kept bytes that have gone meanwhile (the caller reads again in full)."""
        job = page.job
        key = (job.id, job.revision, full)
        now_s = self.clock()
        data = self._messages.get(key, now_s)
        if data is not None:
            self.hits += 1
            if full:  # the job's chunk block is in use too: its next revision re-encodes only changes
                self._blocks.get(job.id, now_s)
        else:
            self.misses += 1
            if full:
                fields = self._chunk_fields(page)
                head = job_pb(
                    job, None, None, page.chunks_next_page_token, retention=self.retention
                ).SerializeToString()
                data = head + b"".join(fields)
            else:
                if not page.artifacts_read:
                    raise LookupError(f"job {job.id} revision {job.revision} is no longer kept")
                data = job_pb(job, None, retention=self.retention).SerializeToString()
            self._keep_message(key, data)
        return self._of_the_moment(data, job.eta_seconds(now), job.blocked(now))

    def kept_bytes(self, head: JobHead, now: int) -> bytes:
        """The kept BASIC encoding of the job of ``head`` at its revision, with the ETA of this moment
        (as ``job_bytes``). LookupError when that encoding has gone meanwhile (the caller reads the
        job whole)."""
        data = self._messages.get((head.id, head.revision, False), self.clock())
        if data is None:
            raise LookupError(f"job {head.id} revision {head.revision} is no longer kept")
        self.hits += 1
        return self._of_the_moment(data, head.eta_seconds(now), head.blocked(now))

    @staticmethod
    def _of_the_moment(data: bytes, eta: float | None, blocked: bool) -> bytes:
        """The kept bytes with the fields of this moment appended (a message's fields merge)."""
        if eta is not None:
            data += job_pb2.Job(progress=job_pb2.JobProgress(eta=duration(eta))).SerializeToString()
        if blocked:
            data += _BLOCKED
        return data

    def _keep_message(self, key: tuple[str, int, bool], data: bytes) -> None:
        job_id, revision, full = key
        newest = self._newest.get((job_id, full))
        if newest is not None:
            if newest > revision:
                return  # an older revision (read before a change): the newer one stays
            old = self._messages.entries.pop((job_id, newest, full), None)
            if old is not None:
                self._bytes -= old[0]
            del self._newest[(job_id, full)]
        if self._keep(self._messages, key, data):
            self._newest[(job_id, full)] = revision

    def _chunk_fields(self, page: JobPage) -> list[bytes]:
        job = page.job
        if page.chunks is None or page.delta_after == job.revision:
            # Nothing was read for this page (not even the job's artifacts): it relied on the
            # whole message, which has gone meanwhile.
            raise LookupError(f"job {job.id} revision {job.revision} is no longer kept")
        if page.delta_after is None:
            fields = [chunk_field(c) for c in page.chunks]
        else:
            block = self._blocks.get(job.id, self.clock())
            if block is None or block[0] != page.delta_after:
                raise LookupError(f"job {job.id}: chunks at revision {page.delta_after} are no longer kept")
            fields = list(block[1])
            for c in page.chunks:
                fields[c.index] = chunk_field(c)
        self._keep(self._blocks, job.id, (job.revision, fields))
        return fields

    def _keep(self, lru: _Lru, key: Any, value: Any) -> bool:
        """Keeps ``value`` (replacing what ``key`` held) unless it alone would take more than an eighth
        of the budget; evicts the least recently used entries beyond the budget. Whether it was kept."""
        old = lru.entries.pop(key, None)
        if old is not None:
            self._bytes -= old[0]
        size = _cost(key, value)
        if size > self.max_bytes // 8:
            return False
        now = self.clock()
        lru.entries[key] = [size, value, now]
        self._bytes += size
        if self.idle_seconds > 0:
            self._expire(self._messages, now - self.idle_seconds)
            self._expire(self._blocks, now - self.idle_seconds)
        while self._bytes > self.max_bytes:
            # Whole messages go first: they are rebuilt cheaply from the chunk blocks.
            self._drop(self._messages if self._messages.entries else self._blocks)
            self.evictions += 1
        return True

    def _expire(self, lru: _Lru, before: float) -> None:
        """Drops the entries last used before ``before`` (the first ones: the map is in order of use)."""
        entries = lru.entries
        while entries and next(iter(entries.values()))[2] < before:
            self._drop(lru)
            self.expired += 1

    def _drop(self, lru: _Lru) -> None:
        """Drops the least recently used entry of ``lru``."""
        dropped_key, (dropped, _, _) = lru.entries.popitem(last=False)
        self._bytes -= dropped
        if lru is self._messages:
            job_id, _, full = dropped_key
            self._newest.pop((job_id, full), None)
