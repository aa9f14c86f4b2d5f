"""Domain objects -> jobpulse.v1 messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from jobpulse.v1 import job_pb2, job_service_pb2
from jobpulse_server.domain.ids import chunk_id
from jobpulse_server.domain.model import HELD, Artifact, Attempt, Chunk, Job, Kind
from jobpulse_server.domain.reports import FailureGroup
from jobpulse_server.domain.retention import Retention


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def duration_from_us(us: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(us)
    return d


def artifact_pb(a: Artifact) -> job_pb2.Artifact:
    return job_pb2.Artifact(
        name=a.name,
        uri=a.uri,
        media_type=a.media_type,
        size_bytes=a.size_bytes,
        chunk_index=a.chunk_index,
        role=a.role,  # type: ignore[arg-type]
    )


def kind_pb(kind: Kind) -> job_service_pb2.Kind:
    return job_service_pb2.Kind(
        name=KIND_NAME_PREFIX + kind.kind,
        kind=kind.kind,
        paused=kind.paused,
        max_running_chunks=kind.max_running_chunks,
        pending_chunks=kind.pending_chunks,
        running_chunks=kind.running_chunks,
    )


# A Kind's resource name is this and the kind.
KIND_NAME_PREFIX = "kinds/"


def timestamp_kwargs(us: int | None) -> dict[str, int] | None:
    """A Timestamp as constructor keywords (cheaper than building a Timestamp and copying it)."""
    if us is None:
        return None
    return {"seconds": us // 1_000_000, "nanos": (us % 1_000_000) * 1000}


def chunk_kwargs(c: Chunk) -> dict[str, Any]:
    """A Chunk message's fields as constructor keywords: ``repeated.add(**chunk_kwargs(c))`` builds
    1,000 chunks in about half the time of building each Chunk and copying it in."""
    return {
        "id": c.id,
        "job_id": c.job_id,
        "index": c.index,
        "state": int(c.state),
        "item_start": c.item_start,
        "item_count": c.item_count,
        "items_done": c.items_done,
        "attempt": c.attempt,
        "max_attempts": c.max_attempts,
        "worker_id": c.worker_id,
        "external_task_id": c.external_task_id,
        "artifacts": [
            {
                "name": a.name,
                "uri": a.uri,
                "media_type": a.media_type,
                "size_bytes": a.size_bytes,
                "chunk_index": a.chunk_index,
                "role": a.role,
            }
            for a in c.artifacts
        ],
        "revision": c.revision,
        "start_time": timestamp_kwargs(c.start_time),
        "end_time": timestamp_kwargs(c.end_time),
        # A held chunk's (domain.model.HELD) is no time: it waits for another chunk or job.
        "next_attempt_time": timestamp_kwargs(c.next_attempt_time if c.next_attempt_time != HELD else None),
        "finalize": c.finalize,
        "stage": c.stage,
        "message": c.message,
        "error": {"reason": c.error_reason, "message": c.error_message, "details": c.error_details}
        if c.error_reason or c.error_message
        else None,
    }


def chunk_pb(c: Chunk) -> job_pb2.Chunk:
    return job_pb2.Chunk(**chunk_kwargs(c))


def attempt_pb(a: Attempt) -> job_pb2.ChunkAttempt:
    """A ChunkAttempt message (its chunk's id from the job's and the index)."""
    error = None
    if a.error_reason or a.error_message or a.error_details:
        error = job_pb2.ChunkError(reason=a.error_reason, message=a.error_message, details=a.error_details)
    return job_pb2.ChunkAttempt(
        job_id=a.job_id,
        chunk_id=chunk_id(a.job_id, a.chunk_index),
        chunk_index=a.chunk_index,
        attempt=a.attempt,
        worker_id=a.worker_id,
        start_time=timestamp(a.start_time),
        end_time=timestamp(a.end_time),
        outcome=int(a.outcome),  # type: ignore[arg-type]
        error=error,
        items_done=a.items_done,
    )


def failure_group_pb(g: FailureGroup) -> job_service_pb2.FailureGroup:
    return job_service_pb2.FailureGroup(
        reason=g.reason,
        chunks=g.chunks,
        jobs=g.jobs,
        last_time=timestamp(g.last_time),
        sample_message=g.sample_message,
    )


def job_pb(
    job: Job,
    now: int | None,
    chunks: list[Chunk] | None = None,
    chunks_next_page_token: str = "",
    *,
    retention: Retention | None = None,
) -> job_pb2.Job:
    """The Job message; ``now`` None leaves progress.eta and blocked out (for encodings kept across time).
    ``retention``: the server's default ttls, for expire_time (None leaves expire_time out)."""
    s = job.summary
    metadata = struct_pb2.Struct()
    metadata.update(job.metadata)
    msg = job_pb2.Job(
        id=job.id,
        display_name=job.display_name,
        kind=job.kind,
        owner=job.owner,
        state=int(job.state),  # type: ignore[arg-type]
        stage=job.stage,
        message=job.message,
        priority=job.priority,
        labels=job.labels,
        metadata=metadata,
        progress=job_pb2.JobProgress(
            percent=job.percent, items_total=job.total_items, items_done=job.items_done
        ),
        chunks_summary=job_pb2.ChunksSummary(
            total=s.total,
            pending=s.pending,
            processing=s.processing,
            completed=s.completed,
            failed=s.failed,
            cancelled=s.cancelled,
        ),
        chunks_next_page_token=chunks_next_page_token,
        artifacts=[artifact_pb(a) for a in job.artifacts],
        revision=job.revision,
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
        cancel_reason=job.cancel_reason,
        total_items=job.total_items,
        chunk_size=job.chunk_size,
        max_attempts=job.max_attempts,
        webhook_url=job.webhook_url,
        expire_time=timestamp(retention.expire_time(job)) if retention is not None else None,
        schedule_time=timestamp(job.schedule_time),
        blocked=now is not None and job.blocked(now),
        paused=job.paused,
        max_running_chunks=job.max_running_chunks,
        after=job.after,
        after_mode=job.after_mode,  # type: ignore[arg-type]
        finalize_kind=job.finalize_kind,
        result_uri=job.result_uri,
        max_failed_chunks=job.max_failed_chunks,
        deadline_time=timestamp(job.deadline_time),
        unique_key=job.unique_key,
    )
    if job.attempt_timeout:
        msg.attempt_timeout.CopyFrom(duration_from_us(job.attempt_timeout))
    add = msg.chunks.add
    for c in chunks or ():
        add(**chunk_kwargs(c))
    eta = job.eta_seconds(now) if now is not None else None
    if eta is not None:
        msg.progress.eta.CopyFrom(duration(eta))
    if job.error_shown():
        msg.error.reason = job.error_reason
        msg.error.message = job.error_message
        if job.error_chunk_index is not None:  # none for a job cancelled for its dependency
            msg.error.chunk_index = job.error_chunk_index
    return msg


def webhook_job(job: Job, now: int, retention: Retention | None = None) -> dict[str, Any]:
    """The job in a webhook body: the Job message (BASIC view) in the contract's JSON mapping."""
    return json_format.MessageToDict(job_pb(job, now, retention=retention))
