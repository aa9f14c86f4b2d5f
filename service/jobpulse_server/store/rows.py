"""Column lists of the hot-path statements and the mapping between their rows and domain objects.

Rows arrive as plain tuples in the order of ``JOB_COLUMNS`` / ``CHUNK_COLUMNS``, the tables' own column
order (sqlite3 and asyncpg both hand out positional rows), so mapping a row is one constructor call with
no per-column name lookup.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any

import jobpulse_server.store.tables as tables
from jobpulse_server.domain.model import (
    Artifact,
    Attempt,
    Chunk,
    ChunkState,
    Job,
    JobHead,
    JobState,
    Kind,
    Summary,
)

# In the tables' own column order (tables.py), which the positional mappings below follow.
JOB_COLUMNS = tuple(c.name for c in tables.jobs.columns)

# Columns only CreateJob writes (so the hot paths' UPDATEs are as they were before they existed).
JOB_CREATED_ONLY = (
    "ttl",
    "trace_parent",
    "schedule_time",
    "max_failed_chunks",
    "attempt_timeout",
    "deadline_time",
    "unique_key",
)
# A job's controls on the claim: CreateJob writes them, then only PauseJob/ResumeJob and UpdateJob
# (statements.SET_JOB_CONTROLS), so the hot paths' UPDATEs leave them out too (each column of a SQLite
# UPDATE costs its share: 4-7% more CPU per chunk with them in, by bench.compare).
JOB_CONTROLS = ("paused", "max_running_chunks")
# Dependencies and the finalize step: CreateJob writes them; afterwards only the statements that hold,
# release and link chunks and jobs (services/pipeline.py) move n_held and pipeline, never a save.
JOB_PIPELINE = ("after_ids", "after_mode", "finalize_kind", "n_held", "pipeline")
# What a save writes: all but the id, which selects the row, change_seq, which the database sets,
# JOB_CREATED_ONLY, JOB_CONTROLS and JOB_PIPELINE.
JOB_SAVED = tuple(
    c for c in JOB_COLUMNS if c not in ("id", "change_seq", *JOB_CREATED_ONLY, *JOB_CONTROLS, *JOB_PIPELINE)
)

# The JOB_SAVED columns that some index of ``jobs`` holds (migrations; a test checks this list against the
# migrated schema). SQLite rewrites the entry of every index a column in an UPDATE's SET list belongs to,
# changed or not, so its save leaves out those of these whose value did not change (``tx.SqlTx.save``).
JOB_INDEXED = (
    "owner",
    "request_id",
    "kind",
    "state",
    "priority",
    "create_time",
    "update_time",
    "end_time",
    "n_pending",
)
# Their positions in a JOB_COLUMNS row.
JOB_INDEXED_IN_ROW = tuple(JOB_COLUMNS.index(c) for c in JOB_INDEXED)

# Every column but retry_at, which is storage only (store/waiting.py): a chunk's fields, in this order.
CHUNK_COLUMNS = tuple(c.name for c in tables.chunks.columns if c.name != "retry_at")
# What a new chunk's row is written with: a chunk of a job scheduled to start later waits out that time.
CHUNK_INSERTED = (*CHUNK_COLUMNS, "retry_at")

# The columns a chunk's change may touch.
CHUNK_SAVED = (
    "state",
    "items_done",
    "attempt",
    "worker_id",
    "external_task_id",
    "error_reason",
    "error_message",
    "error_details",
    "stage",
    "message",
    "lease_token",
    "lease_expire_time",
    "lease_duration",
    "next_attempt_time",
    "revision",
    "priority",
    "start_time",
    "end_time",
    "retry_at",
)

ARTIFACT_COLUMNS = ("chunk_index", "name", "uri", "media_type", "size_bytes", "role")

JOB_SELECT = ", ".join(JOB_COLUMNS)
# A JobHead's fields, which are the jobs table's column names too (checked here, at import).
_HEAD_FIELDS = tuple(f.name for f in dataclasses.fields(JobHead))
if not set(_HEAD_FIELDS) <= set(JOB_COLUMNS):
    raise ImportError("domain.model.JobHead has a field that is no column of jobs: update head_from_row")
JOB_HEAD_SELECT = ", ".join(_HEAD_FIELDS)
CHUNK_SELECT = ", ".join(CHUNK_COLUMNS)
ARTIFACT_SELECT = ", ".join(ARTIFACT_COLUMNS)


@functools.lru_cache(maxsize=4096)
def _decoded(text: str | bytes) -> dict[str, Any]:
    loaded = json.loads(text)
    return loaded if isinstance(loaded, dict) else {}


# Texts longer than this are decoded each time, not kept: the cache holds at most 4,096 x 2 KiB of text
# and their dicts (a few tens of MiB at worst), however large the metadata jobs carry.
_KEPT_TEXT = 2048


def _json(value: Any) -> dict[str, Any]:
    """A JSON column as a dict. Labels and metadata repeat across jobs and reads, so short decoded texts
    are kept (decoding was a quarter of a ListJobs call); each job gets a copy of its own."""
    if value is None:
        return {}
    if isinstance(value, (str, bytes)):
        if len(value) > _KEPT_TEXT:
            loaded = json.loads(value)
            return loaded if isinstance(loaded, dict) else {}
        return dict(_decoded(value))
    return dict(value)


# Job's fields in the order job_from_row passes them (positionally: a dataclass's __init__ takes 3.9 us
# with 37 keywords and 2.4 us with positions, and a ListJobs page maps 21 rows). Checked at import, so a
# change to Job's fields fails loudly here instead of shifting values into the wrong fields.
_JOB_FIELDS = (
    "id", "owner", "kind", "display_name", "state", "stage", "message", "priority", "labels", "metadata",
    "total_items", "chunk_size", "max_attempts", "request_id", "revision", "summary", "items_done",
    "error_reason", "error_message", "error_chunk_index", "cancel_requested", "cancel_reason",
    "cancel_time", "create_time", "update_time", "start_time", "end_time", "artifacts", "change_seq",
    "webhook_url", "webhook_progress", "last_progress_event", "ttl", "trace_parent", "schedule_time",
    "paused", "max_running_chunks", "after", "after_mode", "finalize_kind", "n_held", "pipeline",
    "max_failed_chunks", "attempt_timeout", "deadline_time", "unique_key", "loaded_state",
    "bumped", "stopping",
)  # fmt: skip
if tuple(f.name for f in dataclasses.fields(Job)) != _JOB_FIELDS:
    raise ImportError("domain.model.Job's fields changed: update job_from_row and _JOB_FIELDS")
_JOB_STATES = {int(s): s for s in JobState}


def job_from_row(r: Sequence[Any]) -> Job:
    """A job from a row in JOB_COLUMNS order."""
    state = _JOB_STATES[r[5]]
    return Job(
        r[0],  # id
        r[1],  # owner
        r[4],  # kind
        r[3],  # display_name
        state,
        r[6],  # stage
        r[7],  # message
        r[8],  # priority
        _json(r[9]),  # labels
        _json(r[10]),  # job_metadata
        r[11],  # total_items
        r[12],  # chunk_size
        r[13],  # max_attempts
        r[2],  # request_id
        r[14],  # revision
        Summary(r[15], r[16], r[17], r[18], r[19]),  # n_pending .. n_cancelled
        r[20],  # items_done
        r[21],  # error_reason
        r[22],  # error_message
        r[23],  # error_chunk_index
        bool(r[24]),  # cancel_requested
        r[25],  # cancel_reason
        r[26],  # cancel_time
        r[27],  # create_time
        r[28],  # update_time
        r[29],  # start_time
        r[30],  # end_time
        [],  # artifacts (read apart)
        r[31],  # change_seq
        r[32],  # webhook_url
        bool(r[33]),  # webhook_progress
        r[34],  # last_progress_event
        r[35],  # ttl
        r[36],  # trace_parent
        r[37],  # schedule_time
        bool(r[38]),  # paused
        r[39],  # max_running_chunks
        _ids(r[40]),  # after_ids
        r[41],  # after_mode
        r[42],  # finalize_kind
        r[43],  # n_held
        bool(r[44]),  # pipeline
        r[45],  # max_failed_chunks
        r[46],  # attempt_timeout
        r[47],  # deadline_time
        r[48] or "",  # unique_key
        state,  # loaded_state
        False,  # bumped
        False,  # stopping
    )


def _ids(value: Any) -> list[str]:
    """A JSON list column (after_ids) as a list; NULL: empty."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return list(value)


def _json_text(value: dict[str, Any]) -> str:
    """A JSON column's text; most jobs have no labels (json.dumps of an empty dict takes 1.7 us)."""
    return json.dumps(value) if value else "{}"


def job_saved(job: Job) -> dict[str, Any]:
    """A job's id and JOB_SAVED values by column (a save's parameters, each named as its column); JSON
    columns as text."""
    s = job.summary
    return {
        "id": job.id,
        "owner": job.owner,
        "request_id": job.request_id,
        "display_name": job.display_name,
        "kind": job.kind,
        "state": int(job.state),
        "stage": job.stage,
        "message": job.message,
        "priority": job.priority,
        "labels": _json_text(job.labels),
        "job_metadata": _json_text(job.metadata),
        "total_items": job.total_items,
        "chunk_size": job.chunk_size,
        "max_attempts": job.max_attempts,
        "revision": job.revision,
        "n_pending": s.pending,
        "n_processing": s.processing,
        "n_completed": s.completed,
        "n_failed": s.failed,
        "n_cancelled": s.cancelled,
        "items_done": job.items_done,
        "error_reason": job.error_reason,
        "error_message": job.error_message,
        "error_chunk_index": job.error_chunk_index,
        "cancel_requested": job.cancel_requested,
        "cancel_reason": job.cancel_reason,
        "cancel_time": job.cancel_time,
        "create_time": job.create_time,
        "update_time": job.update_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "webhook_url": job.webhook_url,
        "webhook_progress": job.webhook_progress,
        "last_progress_event": job.last_progress_event,
    }


def chunk_from_row(r: Sequence[Any]) -> Chunk:
    """A chunk from a row in CHUNK_COLUMNS order (Chunk's fields are in that order too)."""
    # mypy cannot count a slice: r[4:22] is the 18 fields from item_start to end_time.
    return Chunk(
        r[0],
        r[1],
        r[2],
        ChunkState(r[3]),
        *r[4:22],
        finalize=bool(r[22]),
        error_details=r[23] or "",
        stage=r[24] or "",
        message=r[25] or "",
    )  # type: ignore[misc]


def chunk_saved(c: Chunk) -> dict[str, Any]:
    """A chunk's id and CHUNK_SAVED values by column (a save's parameters, each named as its column)."""
    return {
        "id": c.id,
        "state": int(c.state),
        "items_done": c.items_done,
        "attempt": c.attempt,
        "worker_id": c.worker_id,
        "external_task_id": c.external_task_id,
        "error_reason": c.error_reason,
        "error_message": c.error_message,
        "error_details": c.error_details,
        "stage": c.stage,
        "message": c.message,
        "lease_token": c.lease_token,
        "lease_expire_time": c.lease_expire_time,
        "lease_duration": c.lease_duration,
        "next_attempt_time": c.next_attempt_time,
        "revision": c.revision,
        "priority": c.priority,
        "start_time": c.start_time,
        "end_time": c.end_time,
        # Waiting out a retry backoff until next_attempt_time (store/waiting.py); only a pending chunk.
        "retry_at": c.next_attempt_time if c.state == ChunkState.PENDING else None,
    }


def artifact_from_row(r: Sequence[Any]) -> Artifact:
    """An artifact from a row in ARTIFACT_COLUMNS order."""
    return Artifact(name=r[1], uri=r[2], media_type=r[3], size_bytes=r[4], chunk_index=r[0], role=r[5])


def head_from_row(r: Sequence[Any]) -> JobHead:
    """A JobHead from a row in JOB_HEAD_SELECT order."""
    return JobHead(r[0], r[1], _JOB_STATES[r[2]], *r[3:12])


def kind_from_row(r: Sequence[Any]) -> Kind:
    """A row of statements.KIND_SELECT (the kind's controls; NULLs for a kind without a row), then its
    pending and running chunks if the row has them."""
    return Kind(
        kind=r[0],
        paused=bool(r[1]),
        max_running_chunks=int(r[2] or 0),
        update_time=None if r[3] is None else int(r[3]),
        pending_chunks=int(r[4]) if len(r) > 4 else 0,
        running_chunks=int(r[5]) if len(r) > 5 else 0,
    )


def attempt_row(a: Attempt) -> dict[str, Any]:
    """An ended attempt's chunk_attempts row by column (an insert's parameters)."""
    return {
        "job_id": a.job_id,
        "chunk_index": a.chunk_index,
        "attempt": a.attempt,
        "worker_id": a.worker_id,
        "start_time": a.start_time,
        "end_time": a.end_time,
        "outcome": int(a.outcome),
        "items_done": a.items_done,
        "error_reason": a.error_reason,
        "error_message": a.error_message,
        "error_details": a.error_details,
    }
