"""Bookkeeping for resumable watch streams, shared by the sync and async clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jobpulse._convert import is_terminal
from jobpulse.v1 import job_pb2, job_service_pb2

#: Without any message (heartbeats included) for this long, a watch stream is presumed dead and resumed.
DEFAULT_IDLE_TIMEOUT = 60.0

#: A watch that has failed to reconnect for this long gives up and raises the last error.
DEFAULT_RECONNECT_TIMEOUT = 120.0

#: A watch whose first stream never delivered a message gives up after this long: nothing to resume, and
#: most likely nothing listening at the target, which the caller should hear about soon (gRPC's own
#: shortest connect timeout is 20 s).
DEFAULT_CONNECT_TIMEOUT = 20.0


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


class IdleWatchdog:
    """Calls ``on_idle`` once if ``kick`` is not called for ``idle_timeout`` seconds (sync streams only)."""

    def __init__(self, idle_timeout: float, on_idle: Callable[[], object]) -> None:
        self._idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._cond = threading.Condition()
        self._deadline = time.monotonic() + idle_timeout
        self._stopped = False
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="jobpulse-watch-watchdog", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Postpones the deadline: a message just arrived."""
        with self._cond:
            self._deadline = time.monotonic() + self._idle_timeout

    def stop(self) -> None:
        """Stops watching without firing."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self.fired = True
                    break
                self._cond.wait(remaining)
        if self.fired:
            self._on_idle()
