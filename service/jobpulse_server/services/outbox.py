"""Saving a job, and the webhook events its change makes, in one transaction.

Every service saves jobs through ``save_job``: the job row, the change
notification for watchers, and any webhook events (a terminal transition, or a
throttled progress event) are written together, so a crash right after the
commit loses no event and a rolled-back change sends none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from jobpulse_server.domain import ids
from jobpulse_server.domain.model import Chunk, Job, JobState
from jobpulse_server.domain.webhooks import PENDING
from jobpulse_server.services import pipeline
from jobpulse_server.services.artifacts import load_artifacts
from jobpulse_server.store import Tx

# A job as webhook receivers see it (a JSON object), at a given time. The api layer gives it, so
# the body follows the contract's JSON mapping while this module knows nothing of protobuf.
RenderJob = Callable[[Job, int], dict[str, Any]]

_TERMINAL_EVENTS = {
    JobState.COMPLETED: "job.completed",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}


def ends(job: Job) -> bool:
    """Whether saving ``job`` now writes its terminal event (job.completed, .failed, .cancelled)."""
    return bool(job.webhook_url) and job.state != job.loaded_state and job.state in _TERMINAL_EVENTS


def events_for(job: Job, now: int, progress_interval_us: int) -> list[str]:
    """The webhook events this save of ``job`` makes (pure; updates last_progress_event)."""
    if not job.webhook_url:
        return []
    if ends(job):
        return [_TERMINAL_EVENTS[job.state]]
    if (
        job.webhook_progress
        and job.state == JobState.PROCESSING
        and (job.last_progress_event is None or now - job.last_progress_event >= progress_interval_us)
    ):
        job.last_progress_event = now
        return ["job.progress"]
    return []


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class Outbox:
    """Turns a job's save into the webhook events it makes, written in the same transaction."""

    def __init__(self, render_job: RenderJob, progress_interval_us: int) -> None:
        self.render_job = render_job
        self.progress_interval_us = progress_interval_us

    def event_body(self, delivery_id: str, event_type: str, job: Job, now: int) -> str:
        """The JSON body a receiver gets: event id (for dedupe), type, time, and the job (BASIC view)."""
        body: dict[str, Any] = {
            "id": delivery_id,
            "type": event_type,
            "created": _iso(now),
            "job": self.render_job(job, now),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    def rows_for(self, job: Job, now: int) -> list[dict[str, Any]]:
        """The outbox rows (webhook_deliveries) this save of ``job`` makes; updates last_progress_event."""
        rows = []
        for event_type in events_for(job, now, self.progress_interval_us):
            delivery_id = ids.new_job_id()
            rows.append(
                {
                    "id": delivery_id,
                    "job_id": job.id,
                    "owner": job.owner,
                    "event_type": event_type,
                    "url": job.webhook_url,
                    "payload": self.event_body(delivery_id, event_type, job, now),
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_time": now,
                    "last_status": None,
                    "last_error": "",
                    "create_time": now,
                    "delivered_time": None,
                }
            )
        return rows

    async def save_job(self, tx: Tx, job: Job, now: int, chunks: Sequence[Chunk] = ()) -> None:
        """Writes the job (and ``chunks`` of it) with its webhook events, and marks it changed for
        watchers. A terminal event carries the job's artifacts, so its receiver needs no second call to
        find the results."""
        await self.save_jobs(tx, [job], now, chunks)

    async def save_jobs(self, tx: Tx, saved: Sequence[Job], now: int, chunks: Sequence[Chunk] = ()) -> None:
        """``save_job`` of several jobs, in one write (CancelJobs' batches)."""
        jobs = {job.id: job for job in saved}
        # What the change frees or cancels in pipelines (dependants, a finalize chunk), in this transaction.
        await pipeline.follow(tx, jobs, chunks, now)
        ending = [j for j in jobs.values() if ends(j)]
        if ending:
            await load_artifacts(tx, ending)
        for j in jobs.values():
            tx.add_outbox(self.rows_for(j, now))
        await tx.save(list(jobs.values()), chunks)
        for j in jobs.values():
            j.loaded_state = j.state
