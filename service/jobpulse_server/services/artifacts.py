"""Job-level artifacts: what a Job message carries besides its chunks' own (see Job.artifacts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from jobpulse_server.domain.model import JOB_ARTIFACT_LIMIT, Artifact, Job


class ReadsArtifacts(Protocol):
    """Any read or write transaction of the store."""

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]: ...


async def load_artifacts(
    tx: ReadsArtifacts, jobs: Iterable[Job], unsaved: dict[str, list[Artifact]] | None = None
) -> None:
    """Sets each job's artifacts: the first JOB_ARTIFACT_LIMIT in chunk order, with ``unsaved`` (those
    of chunks completed in the transaction at hand, not yet written) among them. Only a completed chunk,
    or a running one (its previews), has artifacts, so a job with neither costs no read."""
    jobs = list(jobs)
    want = [job.id for job in jobs if job.summary.completed or job.summary.processing]
    found = await tx.jobs_artifacts(want, JOB_ARTIFACT_LIMIT) if want else {}
    for job in jobs:
        mine = found.get(job.id, [])
        if unsaved and unsaved.get(job.id):
            mine = sorted([*mine, *unsaved[job.id]], key=lambda a: a.chunk_index)[:JOB_ARTIFACT_LIMIT]
        job.artifacts = mine
