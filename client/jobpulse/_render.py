"""Text rendering for the CLI: tables, job details, progress bars, statistics, export rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from datetime import timezone
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse._convert import chunk_state_name, is_terminal, job_state_name
from jobpulse.v1 import job_pb2, job_service_pb2


def to_dict(message: Message) -> dict[str, Any]:
    """Returns a message as a JSON-ready dict (proto3 JSON mapping, enum names). Every field is there,
    zero values too (``"failed": 0``, ``"nextPageToken": ""``): a script reads ``doc["count"]`` without
    guessing whether a missing key means zero. Unset message fields (a job without ``end_time``) and
    unset ``optional`` fields stay out: absence means "not set" there."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def to_json(value: Message | Sequence[Message] | dict[str, Any]) -> str:
    """Returns a message, a list of messages or a dict as one JSON document."""
    if isinstance(value, Message):
        return json.dumps(to_dict(value), indent=2, sort_keys=False)
    if isinstance(value, dict):
        return json.dumps(value, indent=2)
    return json.dumps([to_dict(m) for m in value], indent=2)


def format_timestamp(stamp: Timestamp) -> str:
    """Returns "2024-05-01 12:00:03Z", or "" for an unset timestamp."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    return stamp.ToDatetime(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def iso_timestamp(stamp: Timestamp) -> str:
    """Returns RFC 3339 text ("2024-05-01T12:00:03.250Z"), or "" for an unset timestamp."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return ""
    return stamp.ToJsonString()


def format_seconds(seconds: float) -> str:
    """Returns a compact duration: "45s", "3m05s", "2h07m"."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_duration(duration: Duration) -> str:
    """Returns a Duration as :func:`format_seconds` does."""
    return format_seconds(duration.ToTimedelta().total_seconds())


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Returns rows as a left-aligned text table with a header line; columns are as wide as their content."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def summary_text(summary: job_pb2.ChunksSummary) -> str:
    """Returns "3/10 done, 2 running, 5 pending" plus failed/cancelled counts when there are any."""
    parts = [
        f"{summary.completed}/{summary.total} done",
        f"{summary.processing} running",
        f"{summary.pending} pending",
    ]
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    if summary.cancelled:
        parts.append(f"{summary.cancelled} cancelled")
    return ", ".join(parts)


def jobs_table(jobs: Iterable[job_pb2.Job]) -> str:
    """Returns the table printed by ``jobpulse list``."""
    rows = (
        (
            job.id,
            job.display_name,
            job.kind,
            job_state_name(job.state),
            job.priority,
            f"{job.progress.percent:5.1f}%",
            f"{job.chunks_summary.completed}/{job.chunks_summary.total}",
            format_timestamp(job.create_time),
        )
        for job in jobs
    )
    return table(("ID", "NAME", "KIND", "STATE", "PRI", "PROGRESS", "CHUNKS", "CREATED"), rows)


def job_details(job: job_pb2.Job) -> str:
    """Returns the key/value block printed by ``jobpulse get``."""
    progress = job.progress
    fields: list[tuple[str, str]] = [
        ("id", job.id),
        ("name", job.display_name),
        ("kind", job.kind),
        ("owner", job.owner),
        ("state", job_state_name(job.state)),
        ("priority", str(job.priority)),
        ("progress", f"{progress.percent:.1f}% ({progress.items_done}/{progress.items_total} items)"),
        ("chunks", summary_text(job.chunks_summary)),
    ]
    if progress.HasField("eta"):
        fields.append(("eta", format_duration(progress.eta)))
    fields += [("stage", job.stage), ("message", job.message)]
    if job.labels:
        fields.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(job.labels.items()))))
    if job.metadata.fields:
        fields.append(("metadata", json.dumps(json_format.MessageToDict(job.metadata), sort_keys=True)))
    if job.error.reason or job.error.message:
        fields.append(("error", f"{job.error.reason}: {job.error.message} (chunk {job.error.chunk_index})"))
    if job.cancel_reason:
        fields.append(("cancel reason", job.cancel_reason))
    fields += [
        ("revision", str(job.revision)),
        ("created", format_timestamp(job.create_time)),
        ("started", format_timestamp(job.start_time)),
        ("ended", format_timestamp(job.end_time)),
    ]
    if job.artifacts:
        fields.append(("artifacts", str(len(job.artifacts))))
    width = max(len(k) for k, _ in fields)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in fields if v != "")


def chunks_table(chunks: Iterable[job_pb2.Chunk]) -> str:
    """Returns the chunk table printed by ``jobpulse get``."""
    rows = (
        (
            chunk.index,
            chunk_state_name(chunk.state),
            f"{chunk.item_start}+{chunk.item_count}",
            f"{chunk.items_done}/{chunk.item_count}",
            f"{chunk.attempt}/{chunk.max_attempts}",
            chunk.worker_id,
            f"{chunk.error.reason}: {chunk.error.message}" if chunk.error.reason else "",
        )
        for chunk in chunks
    )
    return table(("#", "STATE", "ITEMS", "DONE", "ATTEMPT", "WORKER", "ERROR"), rows)


def stats_text(response: job_service_pb2.GetJobStatsResponse) -> str:
    """Returns the report printed by ``jobpulse stats``: overall numbers, then one row per kind."""
    stats = response.stats
    lines = [
        f"jobs          {stats.total_jobs}",
        f"success rate  {stats.success_rate * 100:.1f}%",
        f"items done    {stats.items_done}",
        "duration      "
        f"p50 {format_duration(stats.duration_p50)}  p95 {format_duration(stats.duration_p95)}  "
        f"p99 {format_duration(stats.duration_p99)}  max {format_duration(stats.duration_max)}",
        f"processing    {stats.processed_jobs} finished jobs that started: "
        f"total {format_duration(stats.processing_time_total)}, "
        f"average {format_duration(stats.processing_time_avg)}",
        "",
        table(("STATE", "JOBS"), ((job_state_name(c.state), c.count) for c in stats.state_counts)),
    ]
    if response.kinds:
        lines += [
            "",
            table(
                ("KIND", "JOBS", "SUCCESS", "P50", "P95", "MAX", "PROCESSING AVG"),
                (
                    (
                        k.kind,
                        k.total_jobs,
                        f"{k.success_rate * 100:.1f}%",
                        format_duration(k.duration_p50),
                        format_duration(k.duration_p95),
                        format_duration(k.duration_max),
                        format_duration(k.processing_time_avg),
                    )
                    for k in response.kinds
                ),
            ),
        ]
    return "\n".join(lines)


def progress_bar(percent: float, width: int, unicode: bool = True) -> str:
    """Returns a bar of ``width`` cells filled to ``percent`` (0..100)."""
    filled = min(width, max(0, round(width * percent / 100)))
    full, empty = ("█", "░") if unicode else ("#", "-")
    return full * filled + empty * (width - filled)


def progress_line(job: job_pb2.Job, *, bar_width: int = 24, unicode: bool = True) -> str:
    """Returns the one-line live status of a job: bar, percent, items, chunk counts, ETA, stage."""
    progress = job.progress
    parts = [
        f"{progress_bar(progress.percent, bar_width, unicode)} {progress.percent:5.1f}%",
        f"{progress.items_done}/{progress.items_total} items",
        f"chunks {summary_text(job.chunks_summary)}",
    ]
    if is_terminal(job.state) or job.state == job_pb2.JOB_STATE_CANCELLING:
        parts.append(job_state_name(job.state))
    elif progress.HasField("eta"):
        parts.append(f"ETA {format_duration(progress.eta)}")
    if job.stage:
        parts.append(f"stage: {job.stage}")
    return " | ".join(parts)


def event_line(event: job_service_pb2.WatchJobResponse) -> str:
    """Returns one plain line for a watch message (for output that is not a terminal)."""
    kind = job_service_pb2.WatchEventType.Name(event.type).removeprefix("WATCH_EVENT_TYPE_")
    job = event.job
    text = (
        f"rev {event.revision} {kind.lower()} state={job_state_name(job.state)} "
        f"{job.progress.percent:.1f}% items={job.progress.items_done}/{job.progress.items_total} "
        f"chunks={summary_text(job.chunks_summary)}"
    )
    if job.stage:
        text += f" stage={job.stage}"
    if event.chunks:
        text += f" changed_chunks={len(event.chunks)}"
    return text


class ProgressDisplay:
    """Shows a watched job: a single rewritten line on a terminal, one line per change otherwise.

    Args:
        stream: Where to write.
        live: Rewrite one line in place (for terminals) instead of appending lines.
    """

    def __init__(self, stream: TextIO, live: bool) -> None:
        self._stream = stream
        self._live = live
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self._unicode = "utf" in encoding
        self._shown = False

    def update(self, event: job_service_pb2.WatchJobResponse, job: job_pb2.Job) -> None:
        """Shows the job as of ``event`` (heartbeats only refresh the live line)."""
        if self._live:
            columns = shutil.get_terminal_size((100, 20)).columns
            line = progress_line(job, unicode=self._unicode)[: max(20, columns - 1)]
            self._stream.write("\r\x1b[2K" + line)
            self._shown = True
        elif event.type != job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT:
            self._stream.write(event_line(event) + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """Ends the live line so that following output starts on a fresh line."""
        if self._live and self._shown:
            self._stream.write("\n")
            self._stream.flush()


EXPORT_COLUMNS: tuple[str, ...] = (
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


def export_row(job: job_pb2.Job) -> list[str]:
    """Returns the CSV cells of a job, in :data:`EXPORT_COLUMNS` order: times in RFC 3339 (empty when
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
