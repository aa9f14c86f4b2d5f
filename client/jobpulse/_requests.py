"""Request builders shared by the sync and async clients, so both send exactly the same messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct

from jobpulse import _convert
from jobpulse._convert import ChunkStateLike, JobViewLike, TimeLike
from jobpulse._filters import with_filters
from jobpulse.v1 import job_pb2, job_service_pb2, worker_service_pb2

ArtifactLike = job_pb2.Artifact | Mapping[str, Any]


def create_job(
    kind: str,
    total_items: int,
    *,
    display_name: str,
    chunk_size: int,
    priority: int | None,
    labels: Mapping[str, str] | None,
    metadata: Mapping[str, Any] | Struct | None,
    max_attempts: int,
    request_id: str,
    webhook_url: str = "",
    webhook_progress: bool = False,
    ttl: float | timedelta | None = None,
    schedule_time: _convert.TimeLike | None = None,
    max_running_chunks: int = 0,
    after: Iterable[str] = (),
    after_mode: str | int = 0,
    finalize_kind: str = "",
    max_failed_chunks: int = 0,
    attempt_timeout: float | timedelta | None = None,
    job_timeout: float | timedelta | None = None,
    unique_key: str = "",
) -> job_service_pb2.CreateJobRequest:
    """Builds a CreateJobRequest."""
    request = job_service_pb2.CreateJobRequest(
        kind=kind,
        total_items=total_items,
        display_name=display_name,
        chunk_size=chunk_size,
        labels=dict(labels or {}),
        max_attempts=max_attempts,
        request_id=request_id,
        webhook_url=webhook_url,
        webhook_progress=webhook_progress,
        max_running_chunks=max_running_chunks,
        after=list(after),
        after_mode=_dependency_mode(after_mode),  # type: ignore[arg-type]
        finalize_kind=finalize_kind,
        max_failed_chunks=max_failed_chunks,
        unique_key=unique_key,
    )
    if priority is not None:
        request.priority = priority
    for field, value in (("attempt_timeout", attempt_timeout), ("timeout", job_timeout)):
        limit = _convert.to_duration(value)
        if limit is not None:
            getattr(request, field).CopyFrom(limit)
    keep = _convert.to_duration(ttl)
    if keep is not None:
        request.ttl.CopyFrom(keep)
    at = _convert.to_timestamp(schedule_time)
    if at is not None:
        request.schedule_time.CopyFrom(at)
    struct = _convert.to_struct(metadata)
    if struct is not None:
        request.metadata.CopyFrom(struct)
    return request


_DEPENDENCY_MODES = {
    "": job_pb2.DEPENDENCY_MODE_UNSPECIFIED,
    "all": job_pb2.DEPENDENCY_MODE_ALL,
    "per_chunk": job_pb2.DEPENDENCY_MODE_PER_CHUNK,
    "per-chunk": job_pb2.DEPENDENCY_MODE_PER_CHUNK,
}


def _dependency_mode(mode: str | int) -> int:
    """``"all"``, ``"per_chunk"`` (or ``"per-chunk"``) or a DependencyMode number."""
    if isinstance(mode, int):
        return mode
    key = mode.lower().removeprefix("dependency_mode_")
    if key not in _DEPENDENCY_MODES:
        raise ValueError(f"after_mode must be 'all' or 'per_chunk', not {mode!r}")
    return _DEPENDENCY_MODES[key]


def get_job(job_id: str, view: JobViewLike) -> job_service_pb2.GetJobRequest:
    """Builds a GetJobRequest."""
    return job_service_pb2.GetJobRequest(job_id=job_id, view=_convert.job_view(view))


def list_jobs(
    filters: Mapping[str, Any],
    call: str,
    *,
    order_by: str = "",
    view: JobViewLike = 0,
    page_size: int = 0,
    page_token: str = "",
) -> job_service_pb2.ListJobsRequest:
    """Builds a ListJobsRequest from a JobFilter's keys (``call``: the method they were given to)."""
    request = job_service_pb2.ListJobsRequest(
        page_size=page_size, page_token=page_token, order_by=order_by, view=_convert.job_view(view)
    )
    return with_filters(request, filters, call)


def export_jobs(
    filters: Mapping[str, Any], call: str, *, order_by: str = ""
) -> job_service_pb2.ExportJobsRequest:
    """Builds an ExportJobsRequest (the filters and orders of ListJobs)."""
    return with_filters(job_service_pb2.ExportJobsRequest(order_by=order_by), filters, call)


def watch_jobs(
    filters: Mapping[str, Any], call: str, *, cursor: str = ""
) -> job_service_pb2.WatchJobsRequest:
    """Builds a WatchJobsRequest (the same filters as ListJobs, plus a cursor)."""
    return with_filters(job_service_pb2.WatchJobsRequest(cursor=cursor), filters, call)


def list_job_chunks(
    job_id: str,
    states: Iterable[ChunkStateLike] | None,
    page_size: int,
    page_token: str,
    kind: str = "",
    error_reasons: Iterable[str] = (),
) -> job_service_pb2.ListJobChunksRequest:
    """Builds a ListJobChunksRequest."""
    return job_service_pb2.ListJobChunksRequest(
        job_id=job_id,
        states=_convert.chunk_states(states),
        page_size=page_size,
        page_token=page_token,
        kind=kind,
        error_reasons=list(error_reasons),
    )


def summarize_failures(
    kind: str, created_after: TimeLike | None, created_before: TimeLike | None
) -> job_service_pb2.SummarizeFailuresRequest:
    """Builds a SummarizeFailuresRequest."""
    request = job_service_pb2.SummarizeFailuresRequest(kind=kind)
    _created_range(request, created_after, created_before)
    return request


def _created_range(request: Any, created_after: TimeLike | None, created_before: TimeLike | None) -> None:
    """Sets a request's created_after and created_before, where given."""
    after = _convert.to_timestamp(created_after)
    if after is not None:
        request.created_after.CopyFrom(after)
    before = _convert.to_timestamp(created_before)
    if before is not None:
        request.created_before.CopyFrom(before)


def batch_get_jobs(job_ids: Iterable[str], view: JobViewLike) -> job_service_pb2.BatchGetJobsRequest:
    """Builds a BatchGetJobsRequest."""
    return job_service_pb2.BatchGetJobsRequest(job_ids=list(job_ids), view=_convert.job_view(view))


def update_job(
    job_id: str,
    *,
    priority: int | None,
    labels: Mapping[str, str] | None,
    display_name: str | None,
    max_running_chunks: int | None = None,
) -> job_service_pb2.UpdateJobRequest:
    """Builds an UpdateJobRequest whose update_mask names exactly the arguments that are not None.

    Raises:
        ValueError: If no field to change was given.
    """
    request = job_service_pb2.UpdateJobRequest(job_id=job_id)
    paths: list[str] = []
    if priority is not None:
        request.priority = priority
        paths.append("priority")
    if labels is not None:
        request.labels.update(labels)
        paths.append("labels")
    if display_name is not None:
        request.display_name = display_name
        paths.append("display_name")
    if max_running_chunks is not None:
        request.max_running_chunks = max_running_chunks
        paths.append("max_running_chunks")
    if not paths:
        raise ValueError(
            "update_job needs at least one of priority, labels, display_name or max_running_chunks"
        )
    request.update_mask.CopyFrom(FieldMask(paths=paths))
    return request


def update_kind(
    kind: str, *, paused: bool | None, max_running_chunks: int | None
) -> job_service_pb2.UpdateKindRequest:
    """Builds an UpdateKindRequest whose update_mask names exactly the arguments that are not None.

    Args:
        kind: The kind, or its resource name ``kinds/{kind}``.

    Raises:
        ValueError: If ``kind`` is empty or no control to change was given.
    """
    if not kind:
        raise ValueError("update_kind needs a kind")
    named = job_service_pb2.Kind(name=kind if kind.startswith("kinds/") else f"kinds/{kind}")
    paths: list[str] = []
    if paused is not None:
        named.paused = paused
        paths.append("paused")
    if max_running_chunks is not None:
        named.max_running_chunks = max_running_chunks
        paths.append("max_running_chunks")
    if not paths:
        raise ValueError("update_kind needs paused or max_running_chunks")
    return job_service_pb2.UpdateKindRequest(kind=named, update_mask=FieldMask(paths=paths))


def get_job_stats(
    created_after: TimeLike | None, created_before: TimeLike | None, kind: str
) -> job_service_pb2.GetJobStatsRequest:
    """Builds a GetJobStatsRequest."""
    request = job_service_pb2.GetJobStatsRequest(kind=kind)
    _created_range(request, created_after, created_before)
    return request


def create_events_token(
    job_id: str, ttl: float | timedelta | None
) -> job_service_pb2.CreateEventsTokenRequest:
    """Builds a CreateEventsTokenRequest; ``ttl`` None is left unset (the server's default, 10 minutes)."""
    request = job_service_pb2.CreateEventsTokenRequest(job_id=job_id)
    lasting = _convert.to_duration(ttl)
    if lasting is not None:
        request.ttl.CopyFrom(lasting)
    return request


def claim_chunks(
    worker_id: str,
    kinds: Iterable[str] | None,
    max_chunks: int,
    lease_duration: float | timedelta | None,
    wait: float | timedelta | None,
) -> worker_service_pb2.ClaimChunksRequest:
    """Builds a ClaimChunksRequest; a zero ``wait`` is left unset (answer at once)."""
    request = worker_service_pb2.ClaimChunksRequest(
        worker_id=worker_id, kinds=list(kinds or ()), max_chunks=max_chunks
    )
    lease = _convert.to_duration(lease_duration)
    if lease is not None:
        request.lease_duration.CopyFrom(lease)
    if wait:
        waiting = _convert.to_duration(wait)
        assert waiting is not None
        request.wait.CopyFrom(waiting)
    return request


def report_chunk_progress(
    chunk_id: str,
    lease_token: str,
    *,
    items_done: int,
    stage: str,
    message: str,
    external_task_id: str,
    lease_duration: float | timedelta | None,
    artifacts: Iterable[ArtifactLike] | None = None,
) -> worker_service_pb2.ReportChunkProgressRequest:
    """Builds a ReportChunkProgressRequest."""
    request = worker_service_pb2.ReportChunkProgressRequest(
        chunk_id=chunk_id,
        lease_token=lease_token,
        items_done=items_done,
        stage=stage,
        message=message,
        external_task_id=external_task_id,
        artifacts=[artifact(a) for a in artifacts or ()],
    )
    lease = _convert.to_duration(lease_duration)
    if lease is not None:
        request.lease_duration.CopyFrom(lease)
    return request


def artifact(value: ArtifactLike) -> job_pb2.Artifact:
    """Returns an Artifact message from a message or a dict of its fields."""
    if isinstance(value, job_pb2.Artifact):
        return value
    return job_pb2.Artifact(**dict(value))


def complete_chunk(
    chunk_id: str,
    lease_token: str,
    artifacts: Iterable[ArtifactLike] | None,
    external_task_id: str,
    claim_next: worker_service_pb2.ClaimChunksRequest | None = None,
) -> worker_service_pb2.CompleteChunkRequest:
    """Builds a CompleteChunkRequest."""
    return worker_service_pb2.CompleteChunkRequest(
        chunk_id=chunk_id,
        lease_token=lease_token,
        artifacts=[artifact(a) for a in artifacts or ()],
        external_task_id=external_task_id,
        claim_next=claim_next,
    )


# One item of complete_chunks: a ChunkCompletion, or (chunk_id, lease_token[, artifacts]).
CompletionLike = Any


def complete_chunks(
    completions: Iterable[CompletionLike], claim_next: worker_service_pb2.ClaimChunksRequest | None
) -> worker_service_pb2.CompleteChunksRequest:
    """Builds a CompleteChunksRequest."""
    items = []
    for c in completions:
        if isinstance(c, worker_service_pb2.ChunkCompletion):
            items.append(c)
        elif isinstance(c, Mapping):
            # A dict of ChunkCompletion's fields; unpacking it as a tuple would take its keys.
            fields = dict(c)
            fields["artifacts"] = [artifact(a) for a in fields.get("artifacts") or ()]
            items.append(worker_service_pb2.ChunkCompletion(**fields))
        else:
            chunk_id, lease_token, *rest = c
            items.append(
                worker_service_pb2.ChunkCompletion(
                    chunk_id=chunk_id,
                    lease_token=lease_token,
                    artifacts=[artifact(a) for a in (rest[0] if rest else None) or ()],
                )
            )
    return worker_service_pb2.CompleteChunksRequest(completions=items, claim_next=claim_next)


def fail_chunk(
    chunk_id: str, lease_token: str, reason: str, message: str, retryable: bool, details: str = ""
) -> worker_service_pb2.FailChunkRequest:
    """Builds a FailChunkRequest."""
    return worker_service_pb2.FailChunkRequest(
        chunk_id=chunk_id,
        lease_token=lease_token,
        error=job_pb2.ChunkError(reason=reason, message=message, details=details),
        retryable=retryable,
    )
