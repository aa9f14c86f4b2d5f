"""Waiting for a job to end (google.longrunning WaitOperation): the job once it is terminal, or as it
stands when the time given is up.

A wait holds no connection and polls nothing: it reads the job, then sleeps on the change hub's flag
for that job (set by every commit that touches it, in this replica or, through the PostgreSQL
listener, in another) and reads again only when woken.
"""

from __future__ import annotations

import asyncio

from jobpulse_server.domain.principal import Principal
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.services.jobs import JobPage, JobService
from jobpulse_server.services.watch import wait_for_change

# A Waker's timeout may end up to an eighth late (it shares timers, events/hub.py): asking for
# 1/1.125 of what is left ends the wait in time; below this many seconds left it is not worth a turn.
_OVERRUN = 1.125
_LAST_MOMENT = 0.005


class JobWaiter:
    """Waits on jobs with the JobService's reads (so ownership is checked the same way)."""

    def __init__(self, jobs: JobService, hub: ChangeHub) -> None:
        self.jobs = jobs
        self.hub = hub

    async def wait(self, who: Principal, job_id: str, timeout: float) -> JobPage:
        """The job (BASIC, with its artifacts) once terminal, or after ``timeout`` seconds as it is then.

        Raises JobNotFound for a job the caller cannot see (or one deleted meanwhile), ShuttingDown
        when the server closes during the wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Subscribed before the first read, so a change committed between the read and the wait wakes it.
        with self.hub.subscribe(job_id) as changed:
            while True:
                changed.clear()
                page = await self.jobs.get_job(who, job_id, full=False)
                if page.job.state.terminal:
                    return page
                woke = False
                while not woke:
                    left = deadline - loop.time()
                    if left <= _LAST_MOMENT:
                        # Not woken since the read: the page is still the job as it stands.
                        return page
                    woke = await wait_for_change(self.hub, changed, left / _OVERRUN)
