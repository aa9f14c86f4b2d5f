"""A job as a row of CSV: the columns ``jobpulse export --format csv`` writes, and the server's JSON face
for ``GET /v1/jobs:export?format=csv``, so both give the same file."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse._convert import job_state_name
from jobpulse.v1 import job_pb2


def iso_timestamp(stamp: Timestamp) -> str:
    """Returns RFC 3339 text ("2024-05-01T12:00:03.250Z"), or "" for an unset timestamp."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    return stamp.ToJsonString()


COLUMNS: tuple[str, ...] = (
    "id",
    "display_name",
    "kind",
    "owner",
    "state",
    "priority",
    "percent",
    "items_done",
    "items_total",
    "chunks_total",
    "chunks_pending",
    "chunks_processing",
    "chunks_completed",
    "chunks_failed",
    "chunks_cancelled",
    "labels",
    "artifact_uris",
    "stage",
    "message",
    "error_reason",
    "create_time",
    "update_time",
    "start_time",
    "end_time",
)


def row(job: job_pb2.Job) -> list[str]:
    """Returns the CSV cells of a job, in :data:`COLUMNS` order: times in RFC 3339 (empty when
    unset), labels as a JSON object and artifact URIs as a JSON array, so that any value survives."""
    s = job.chunks_summary
    return [
        job.id,
        job.display_name,
        job.kind,
        job.owner,
        job_state_name(job.state),
        str(job.priority),
        f"{job.progress.percent:.2f}",
        str(job.progress.items_done),
        str(job.progress.items_total),
        str(s.total),
        str(s.pending),
        str(s.processing),
        str(s.completed),
        str(s.failed),
        str(s.cancelled),
        json.dumps(dict(sorted(job.labels.items())), ensure_ascii=False, separators=(",", ":")),
        json.dumps([a.uri for a in job.artifacts], ensure_ascii=False, separators=(",", ":")),
        job.stage,
        job.message,
        job.error.reason,
        iso_timestamp(job.create_time),
        iso_timestamp(job.update_time),
        iso_timestamp(job.start_time),
        iso_timestamp(job.end_time),
    ]
