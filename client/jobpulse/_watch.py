"""Bookkeeping for resumable watch streams, shared by the sync and async clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from jobpulse._convert import is_terminal
from jobpulse.errors import JobpulseError
from jobpulse.v1 import job_pb2, job_service_pb2

#: Without any message (heartbeats included) for this long, a watch stream is presumed dead and resumed.
DEFAULT_IDLE_TIMEOUT = 60.0

#: A watch that has failed to reconnect for this long gives up and raises the last error.
DEFAULT_RECONNECT_TIMEOUT = 120.0

#: A watch whose first stream never delivered a message gives up after this long: nothing to resume, and
#: most likely nothing listening at the target, which the caller should hear about soon (gRPC's own
#: shortest connect timeout is 20 s).
DEFAULT_CONNECT_TIMEOUT = 20.0


@dataclass(frozen=True)
class ReconnectInfo:
    """What a watch tells its ``on_reconnect`` callback before it tries again to open a stream.

    Attributes:
        attempt: Which attempt comes next: 1 right after a stream broke (or the first one failed), 2 after
            that attempt failed too, and so on; back to 1 after a stream delivered a message.
        error: What broke the stream or failed the last attempt (usually ``Unavailable``).
        delay: Seconds the watch waits before that attempt.
        connected: True when a stream of this watch has delivered messages before, so the next one
            resumes it; False while the watch has never had a message (still trying to connect).
        after_revision: ``watch_job``: the next stream continues after this revision (0: starts with a
            snapshot); always 0 for ``watch_jobs``.
        cursor: ``watch_jobs``: the next stream continues from this cursor (``""``: from now); always
            ``""`` for ``watch_job``.
        elapsed: Seconds since the stream broke (or since the first attempt failed).
    """

    attempt: int
    error: JobpulseError
    delay: float
    connected: bool
    after_revision: int = 0
    cursor: str = ""
    elapsed: float = 0.0


@dataclass(frozen=True)
class ResumeInfo:
    """What a watch tells its ``on_resume`` callback when a stream works again after failed attempts.

    Called when the new stream delivers its first message, before that message is yielded.

    Attributes:
        attempts: How many attempts failed before this one (at least 1).
        downtime: Seconds from the break (or the first failed attempt) to this first message.
        connected: True when the watch had messages before the break (a resume), False when this is the
            first stream of the watch that works.
        after_revision: ``watch_job``: the revision the stream continued after; 0 for ``watch_jobs``.
        cursor: ``watch_jobs``: the cursor the stream continued from; ``""`` for ``watch_job``.
    """

    attempts: int
    downtime: float
    connected: bool
    after_revision: int = 0
    cursor: str = ""


#: The type of ``on_reconnect`` callbacks of ``watch_job`` and ``watch_jobs``.
OnReconnect = Callable[[ReconnectInfo], object]
#: The type of ``on_resume`` callbacks of ``watch_job`` and ``watch_jobs``.
OnResume = Callable[[ResumeInfo], object]


def resume_point(request: object) -> tuple[int, str]:
    """Returns where a watch request continues: ``(after_revision, "")`` or ``(0, cursor)``."""
    if isinstance(request, job_service_pb2.WatchJobRequest):
        return request.after_revision, ""
    if isinstance(request, job_service_pb2.WatchJobsRequest):
        return 0, request.cursor
    return 0, ""


class Outage:
    """Tracks the failed attempts of a resumable stream and tells the caller's callbacks about them.

    The stream loop calls :meth:`broke` when a stream fails, :meth:`failed` before it waits to try again,
    and :meth:`delivered` for every message. The callbacks run on the caller's thread (or task), so an
    exception they raise ends the watch.
    """

    def __init__(self, on_reconnect: OnReconnect | None, on_resume: OnResume | None) -> None:
        self._on_reconnect = on_reconnect
        self._on_resume = on_resume
        self.connected = False
        self.since: float | None = None  # when the current run of failures began
        self.attempts = 0  # failed attempts in the current run

    def broke(self) -> float:
        """Records that a stream broke or an attempt failed; returns the seconds since the run began."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return now - self.since

    def failed(self, error: JobpulseError, delay: float, request: object) -> None:
        """Announces the next attempt, after ``error``, ``delay`` seconds from now, with ``request``."""
        self.attempts += 1
        if self._on_reconnect is None:
            return
        revision, cursor = resume_point(request)
        elapsed = 0.0 if self.since is None else time.monotonic() - self.since
        self._on_reconnect(
            ReconnectInfo(
                attempt=self.attempts,
                error=error,
                delay=delay,
                connected=self.connected,
                after_revision=revision,
                cursor=cursor,
                elapsed=elapsed,
            )
        )

    def delivered(self, request: object) -> None:
        """Records a message on the stream opened with ``request``; ends a run of failures."""
        if self.since is None:
            self.connected = True
            return
        downtime = time.monotonic() - self.since
        attempts, connected = self.attempts, self.connected
        self.since, self.attempts, self.connected = None, 0, True
        if self._on_resume is not None and attempts:
            revision, cursor = resume_point(request)
            self._on_resume(
                ResumeInfo(
                    attempts=attempts,
                    downtime=downtime,
                    connected=connected,
                    after_revision=revision,
                    cursor=cursor,
                )
            )


class WatchCursor:
    """Remembers where a watch is, so a new stream resumes exactly after the last complete revision seen.

    A large snapshot or change spans several messages of one revision, all but the last with ``more`` set.
    The resume point only moves once the last of them arrived, so a stream lost in the middle of such a
    revision is resumed from the revision before it (and its messages are sent again).
    """

    def __init__(self, job_id: str, after_revision: int) -> None:
        self.job_id = job_id
        self.revision = after_revision
        self.last_job: job_pb2.Job | None = None
        self.finished = False

    def request(self) -> job_service_pb2.WatchJobRequest:
        """Returns the request that continues after the last complete revision seen."""
        return job_service_pb2.WatchJobRequest(job_id=self.job_id, after_revision=self.revision)

    def observe(self, event: job_service_pb2.WatchJobResponse) -> None:
        """Records one received message; sets ``finished`` after the last message of a terminal revision."""
        if event.HasField("job"):
            self.last_job = event.job
        if event.more:
            return
        self.revision = max(self.revision, event.revision)
        if self.last_job is not None and is_terminal(self.last_job.state):
            self.finished = True


class StreamIdle(Exception):
    """Raised by a stream reader when no message arrived within the stream's idle timeout."""
