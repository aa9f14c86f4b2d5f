"""ExportJobs: every job matching ListJobs filters, in order, one batch at a time.

A batch is a ListJobs page (``JobService.list_jobs``, BASIC view, the same owner scoping) read in a
read transaction of its own and continued from the last job's sort key by its keyset page token.
Nothing is held between batches: a long export neither pins a snapshot on PostgreSQL nor keeps
SQLite from checkpointing its WAL, and memory holds one batch whatever the number of jobs. As when
paging ListJobs, a job that changes while the export runs is exported as the batch that reads it
finds it, and in update_time order a job updated mid-export jumps to the newest end: in
"update_time desc" it may be left out, ascending it may come twice. No single snapshot for the whole
export is the price of holding none for its length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services.jobs import JobPage, JobService

# Jobs per batch (the contract says at most 500): large enough that the per-read and per-message
# costs vanish, small enough that a batch is a short read and a small message.
EXPORT_BATCH = 500


async def export_jobs(
    jobs: JobService,
    who: Principal,
    f: JobFilter,
    order_by: str,
    batch_size: int | None = None,
) -> AsyncIterator[list[JobPage]]:
    """Yields the matching jobs, batch by batch (``EXPORT_BATCH`` jobs unless ``batch_size``). The
    next batch is read only when the caller asks for it, so a caller that stops iterating (a
    cancelled stream) stops the reads."""
    # EXPORT_BATCH is read per call, so tests can make batches small without thousands of jobs.
    size = batch_size or EXPORT_BATCH
    token = ""
    while True:
        pages, token, _, _ = await jobs.list_jobs(
            who,
            f,
            order_by=order_by,
            page_size=size,
            page_token=token,
            full=False,
            count=False,  # nobody reads the total of an export
        )
        if pages:
            yield pages
        if not token:
            return
