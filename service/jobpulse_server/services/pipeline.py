"""Pipelines: dependencies between jobs (CreateJobRequest.after) and a job's finalize chunk.

A chunk that may not run yet is *held*: PENDING with next_attempt_time ``HELD``, out of the claim index
as a retry waiting out its backoff is, at a time that never comes (``jobs.n_held`` counts them). What
lets one go is always another chunk's or job's change, and it is let go in that change's transaction,
before the save (``follow``), so no claim anywhere can see the one without the other:

- a chunk COMPLETED frees chunk i of each PER_CHUNK dependant;
- a job COMPLETED frees every chunk of each ALL dependant whose other dependencies have completed;
- a job ended FAILED or CANCELLED (or deleted before it completed) cancels each dependant not yet ended
  (``DEPENDENCY_FAILED``), and so on down the chain;
- once every other chunk of a job with a finalize chunk has ended, the finalize chunk is freed if they
  all COMPLETED, and cancelled otherwise (the job then ends as its other chunks say).

Lock order: a dependant is locked after the job it depends on, and a job is only ever made after its
dependencies, so every transaction takes them in the same order along the chain. Jobs marked
``pipeline`` (with dependants or a finalize chunk) have their completions written here, in the
transaction path: PostgreSQL's batch declines them (store/batch/sql.py).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from jobpulse_server.domain import ids
from jobpulse_server.domain.model import (
    AFTER_PER_CHUNK,
    DEPENDENCY_FAILED,
    HELD,
    Chunk,
    ChunkState,
    Job,
    JobState,
)
from jobpulse_server.store import Tx


async def follow(tx: Tx, jobs: MutableMapping[str, Job], changed: Sequence[Chunk], now: int) -> None:
    """What the changes about to be saved (``jobs``, with their ``changed`` chunks) free or cancel,
    written in ``tx``: dependants changed are added to ``jobs``, which the caller saves. Nothing is read
    unless a job in ``jobs`` is a pipeline job; each one's dependants are read once."""
    if not any(j.pipeline for j in jobs.values()):
        return
    done: dict[str, list[int]] = {}  # pipeline job -> the indexes of its regular chunks completed here
    for c in changed:
        if c.state == ChunkState.COMPLETED and not c.finalize and jobs[c.job_id].pipeline:
            done.setdefault(c.job_id, []).append(c.index)
    seen: set[str] = set()
    todo = [j for j in list(jobs.values()) if j.pipeline]
    while todo:
        job = todo.pop(0)
        if job.finalize_kind:
            await settle_finalize(tx, job, now)
        if (
            job.id in seen
            or not job.state.terminal
            or (job.loaded_state is not None and job.loaded_state.terminal)
        ):
            continue
        seen.add(job.id)
        todo += await _ended(tx, jobs, job, now)
    for job_id, indexes in done.items():
        for dep_id, mode in await tx.dependants(job_id):
            if mode != AFTER_PER_CHUNK:
                continue
            dependant = await _locked(tx, jobs, dep_id)
            if dependant is not None and not dependant.state.terminal and not dependant.cancel_requested:
                await tx.release_held(dependant, indexes, now)


async def _ended(tx: Tx, jobs: MutableMapping[str, Job], job: Job, now: int) -> list[Job]:
    """A job has just ended: frees or cancels its dependants; returns those cancelled (they end too)."""
    cancelled: list[Job] = []
    for dep_id, mode in await tx.dependants(job.id):
        dependant = await _locked(tx, jobs, dep_id)
        if dependant is None or dependant.state.terminal or dependant.cancel_requested:
            continue
        if job.state == JobState.COMPLETED:
            if mode != AFTER_PER_CHUNK and not await _unfinished(tx, jobs, dependant.id):
                await tx.release_held(dependant, None, now)
            continue
        await cancel_for(tx, dependant, job.id, job.state.name, now)
        cancelled.append(dependant)
    return cancelled


async def _unfinished(tx: Tx, jobs: MutableMapping[str, Job], job_id: str) -> list[str]:
    """The jobs ``job_id`` waits for that have not COMPLETED, counting this transaction's changes (a job
    it completed is not saved yet)."""
    stored = await tx.unfinished_dependencies(job_id)
    return [i for i in stored if not (i in jobs and jobs[i].state == JobState.COMPLETED)]


async def cancel_for(tx: Tx, job: Job, after_id: str, how: str, now: int) -> None:
    """Cancels ``job`` (as CancelJob does) because the job ``after_id`` it waits for ended ``how``."""
    rev = job.touch(now)
    job.cancel_requested = True
    job.cancel_reason = f"dependency {after_id} ended {how}"
    job.cancel_time = now
    job.error_reason = DEPENDENCY_FAILED
    job.error_message = job.cancel_reason
    await _cancel_pending(tx, job, rev, now)


async def _cancel_pending(tx: Tx, job: Job, rev: int, now: int) -> None:
    """The job's pending chunks (held ones too) CANCELLED at ``rev``, its counts and state moved."""
    moved = await tx.cancel_pending_chunks(job.id, rev, now)
    job.summary.pending -= moved
    job.summary.cancelled += moved
    await tx.clear_held(job)
    job.refresh_state(now)


async def stop_pending(tx: Tx, job: Job, changed: Sequence[Chunk], now: int) -> None:
    """``job`` was failed at once (Job.fail_now): its pending chunks CANCELLED, as CancelJob's are, both
    those stored and those this transaction put back to PENDING (``changed``, not saved yet: a retry, in
    the sweep that failed it)."""
    for chunk in changed:
        if chunk.job_id == job.id and chunk.state == ChunkState.PENDING:
            chunk.next_attempt_time = None
            job.move_chunk(chunk, ChunkState.CANCELLED, now)
    await _cancel_pending(tx, job, job.touch(now), now)
    job.stopping = False


async def dependency_gone(tx: Tx, jobs: MutableMapping[str, Job], job: Job, now: int) -> None:
    """``job`` is being deleted before it COMPLETED: its dependants are cancelled (added to ``jobs``;
    the saves of those cancel theirs in turn)."""
    for dep_id, _ in await tx.dependants(job.id):
        dependant = await _locked(tx, jobs, dep_id)
        if dependant is not None and not dependant.state.terminal and not dependant.cancel_requested:
            await cancel_for(tx, dependant, job.id, "deleted", now)


async def _locked(tx: Tx, jobs: MutableMapping[str, Job], job_id: str) -> Job | None:
    """The job as this transaction has it: the copy it changed already, else read and locked."""
    if job_id in jobs:
        return jobs[job_id]
    found = (await tx.lock_jobs([job_id])).get(job_id)
    if found is not None:
        jobs[job_id] = found
    return found


async def settle_finalize(tx: Tx, job: Job, now: int) -> None:
    """Once every other chunk of a job has ended, frees its finalize chunk when all COMPLETED, else
    cancels it (both by statement: nothing for the caller to save but the job)."""
    s = job.summary
    if job.n_held == 1 and s.pending + s.processing == 1:
        # Every other chunk has ended (a held chunk is the finalize one once the others are done: a
        # dependency's hold on chunk i goes with chunk i).
        if s.failed or s.cancelled or job.cancel_requested:
            await _cancel_pending(tx, job, job.touch(now), now)
        else:
            await tx.release_held(job, [s.total - 1], now)


async def rehold_finalize(tx: Tx, job: Job, now: int) -> list[Chunk]:
    """After a retry put chunks back: the finalize chunk, if it ended otherwise than COMPLETED or a
    retry made it ready, held again while the job's other chunks have not all completed."""
    if not job.finalize_kind:
        return []
    chunk = await tx.get_chunk(job.id, ids.chunk_id(job.id, job.summary.total - 1))
    if chunk is None or chunk.state in (ChunkState.COMPLETED, ChunkState.PROCESSING):
        return []
    others_left = job.summary.total - 1 - job.summary.completed
    if not others_left:
        return []
    if chunk.state != ChunkState.PENDING:
        chunk.next_attempt_time = HELD
        job.move_chunk(chunk, ChunkState.PENDING, now, items_done=0)
        await tx.move_held(job, 1)
        return [chunk]
    await tx.hold_pending(job, [chunk.index], now)
    return []
