"""Text rendering for the CLI: tables, job details, progress bars, statistics, export rows."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import timezone
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from jobpulse._convert import chunk_state_name, is_terminal, job_state_name
from jobpulse._watch import ReconnectInfo, ResumeInfo
from jobpulse.errors import JobpulseError
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
    widths = [max(text_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(pad(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def text_width(text: str) -> int:
    """How many terminal cells ``text`` takes (see :func:`cell_width`): a CJK or emoji name counts
    two cells a character, as a terminal draws it, not one as ``len`` does."""
    return sum(cell_width(c) for c in text)


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal cells: ``str.ljust`` by display width."""
    return text + " " * (width - text_width(text))


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
            job_state_name(job.state)
            + (f" ({_blocked_by(job)})" if job.blocked else "")
            + (" (paused)" if job.paused else ""),
            job.priority,
            f"{job.progress.percent:5.1f}%",
            f"{job.chunks_summary.completed}/{job.chunks_summary.total}",
            format_timestamp(job.create_time),
        )
        for job in jobs
    )
    return table(("ID", "NAME", "KIND", "STATE", "PRI", "PROGRESS", "CHUNKS", "CREATED"), rows)


def kinds_table(kinds: Iterable[job_service_pb2.Kind]) -> str:
    """Returns the table printed by ``jobpulse kinds``."""
    rows = (
        (
            k.kind,
            "yes" if k.paused else "no",
            k.max_running_chunks or "-",
            k.pending_chunks,
            k.running_chunks,
        )
        for k in kinds
    )
    return table(("KIND", "PAUSED", "CAP", "PENDING", "RUNNING"), rows)


def failures_table(groups: Iterable[job_service_pb2.FailureGroup]) -> str:
    """Returns the table printed by ``jobpulse failures``."""
    rows = (
        (g.reason, g.chunks, g.jobs, format_timestamp(g.last_time), _clip(g.sample_message, 60))
        for g in groups
    )
    return table(("REASON", "CHUNKS", "JOBS", "LAST", "LAST MESSAGE"), rows)


def failed_chunks_table(chunks: Iterable[job_pb2.Chunk]) -> str:
    """Returns the table printed by ``jobpulse failures --reason``."""
    rows = (
        (c.job_id, c.index, c.error.reason, format_timestamp(c.end_time), _clip(c.error.message, 60))
        for c in chunks
    )
    return table(("JOB", "CHUNK", "REASON", "FAILED", "MESSAGE"), rows)


def _clip(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (an ellipsis where it was cut)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def job_details(job: job_pb2.Job) -> str:
    """Returns the key/value block printed by ``jobpulse get``."""
    progress = job.progress
    fields: list[tuple[str, str]] = [
        ("id", job.id),
        ("name", job.display_name),
        ("kind", job.kind),
        ("owner", job.owner),
        ("state", job_state_name(job.state)),
        ("starts", _starts(job)),
        ("paused", "yes: no chunk is claimed until it is resumed" if job.paused else ""),
        ("max running", str(job.max_running_chunks) if job.max_running_chunks else ""),
        ("after", _after(job)),
        ("finalize", f"a last chunk of kind {job.finalize_kind}" if job.finalize_kind else ""),
        ("fails fast", _fails_fast(job)),
        ("attempt timeout", _seconds_of(job.attempt_timeout) if job.HasField("attempt_timeout") else ""),
        ("deadline", format_timestamp(job.deadline_time) if job.HasField("deadline_time") else ""),
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
        where = f" (chunk {job.error.chunk_index})" if job.error.reason != "DEPENDENCY_FAILED" else ""
        fields.append(("error", f"{job.error.reason}: {job.error.message}{where}"))
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
    if job.result_uri:
        fields.append(("result", job.result_uri))
    shown = [(k, v) for k, v in fields if v != ""]
    width = max(text_width(k) for k, _ in shown)
    return "\n".join(f"{pad(k, width)}  {v}".rstrip() for k, v in shown)


def chunks_table(chunks: Iterable[job_pb2.Chunk]) -> str:
    """Returns the chunk table printed by ``jobpulse get``; the finalize chunk's number says so."""
    rows = (
        (
            f"{chunk.index} (finalize)" if chunk.finalize else chunk.index,
            chunk_state_name(chunk.state),
            f"{chunk.item_start}+{chunk.item_count}",
            f"{chunk.items_done}/{chunk.item_count}",
            f"{chunk.attempt}/{chunk.max_attempts}",
            chunk.worker_id,
            chunk.stage,
            f"{chunk.error.reason}: {chunk.error.message}" if chunk.error.reason else "",
        )
        for chunk in chunks
    )
    return table(("#", "STATE", "ITEMS", "DONE", "ATTEMPT", "WORKER", "STAGE", "ERROR"), rows)


def attempts_table(attempts: Iterable[job_pb2.ChunkAttempt]) -> str:
    """Returns the table printed by ``jobpulse attempts``: one row per attempt, by chunk then attempt."""
    rows = []
    for a in attempts:
        outcome = job_pb2.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
        took = ""
        if a.HasField("end_time") and a.HasField("start_time"):
            took = format_seconds((a.end_time.ToMicroseconds() - a.start_time.ToMicroseconds()) / 1e6)
        error = f"{a.error.reason}: {a.error.message}" if a.error.message else a.error.reason
        rows.append(
            (
                a.chunk_index,
                a.attempt,
                outcome,
                a.worker_id,
                format_timestamp(a.start_time),
                took,
                a.items_done,
                error,
            )
        )
    return table(("CHUNK", "ATTEMPT", "OUTCOME", "WORKER", "STARTED", "TOOK", "ITEMS", "ERROR"), rows)


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


def _filled(percent: float, width: int) -> int:
    return min(width, max(0, round(width * percent / 100)))


def progress_bar(percent: float, width: int, unicode: bool = True) -> str:
    """Returns a bar of ``width`` cells filled to ``percent`` (0..100)."""
    filled = _filled(percent, width)
    full, empty = ("█", "░") if unicode else ("#", "-")
    return full * filled + empty * (width - filled)


# A line of the live display, as (text, SGR parameters) pieces: the parameters ("32" for green) are used
# only when color is on, so the same pieces give the plain line and the colored one.
Segments = list[tuple[str, str]]

_STATE_COLORS = {
    job_pb2.JOB_STATE_COMPLETED: "32",  # green
    job_pb2.JOB_STATE_FAILED: "31",  # red
    job_pb2.JOB_STATE_CANCELLED: "33",  # yellow
    job_pb2.JOB_STATE_CANCELLING: "33",
}
_RUNNING_COLOR = "36"  # cyan
_NOTICE_COLOR = "33"


def printable(text: str) -> str:
    """Returns ``text`` with control characters (newlines, tabs, escapes) turned into spaces, so text
    from a worker (a stage, a message) can neither break a line nor send the terminal commands."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)


def cell_width(char: str) -> int:
    """Returns how many terminal cells ``char`` takes: 0 for combining marks and invisible format
    characters (a zero-width joiner, a variation selector), 2 for wide (East Asian full-width and wide:
    CJK, most emoji) characters, else 1."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit(segments: Segments, width: int, *, color: bool = False, ellipsis: str = "") -> str:
    """Joins ``segments`` into one line of at most ``width`` cells, cutting (and ending with
    ``ellipsis``) what does not fit; with ``color`` each piece is wrapped in its SGR sequence."""
    total = sum(cell_width(c) for text, _ in segments for c in text)
    budget = width if total <= width else max(0, width - len(ellipsis))
    out: list[str] = []
    used = 0
    for text, sgr in segments:
        kept: list[str] = []
        for char in text:
            w = cell_width(char)
            if used + w > budget:
                break
            kept.append(char)
            used += w
        piece = "".join(kept)
        if piece:
            out.append(f"\x1b[{sgr}m{piece}\x1b[0m" if color and sgr else piece)
        if len(kept) < len(text):
            out.append(ellipsis)
            break
    return "".join(out)


def progress_segments(job: job_pb2.Job, *, bar_width: int = 24, unicode: bool = True) -> Segments:
    """Returns the pieces of :func:`progress_line`, the bar and a final state marked for color."""
    progress = job.progress
    color = _STATE_COLORS.get(job.state, _RUNNING_COLOR)
    bar = progress_bar(progress.percent, bar_width, unicode)
    filled = _filled(progress.percent, bar_width)
    segments: Segments = [
        (bar[:filled], color),
        (bar[filled:], ""),
        (f" {progress.percent:5.1f}% | {progress.items_done}/{progress.items_total} items", ""),
        (f" | chunks {summary_text(job.chunks_summary)}", ""),
    ]
    if is_terminal(job.state) or job.state == job_pb2.JOB_STATE_CANCELLING:
        segments += [(" | ", ""), (job_state_name(job.state), color)]
    elif progress.HasField("eta"):
        segments.append((f" | ETA {format_duration(progress.eta)}", ""))
    if job.stage:
        segments.append((f" | stage: {printable(job.stage)}", ""))
    return segments


def progress_line(job: job_pb2.Job, *, bar_width: int = 24, unicode: bool = True) -> str:
    """Returns the one-line live status of a job: bar, percent, items, chunk counts, ETA, stage."""
    return "".join(text for text, _ in progress_segments(job, bar_width=bar_width, unicode=unicode))


def event_line(event: job_service_pb2.WatchJobResponse, changed_chunks: int | None = None) -> str:
    """Returns one plain line for a watch message (for output that is not a terminal); ``changed_chunks``
    counts the chunks of a revision sent over several messages (default: this message's)."""
    kind = job_service_pb2.WatchEventType.Name(event.type).removeprefix("WATCH_EVENT_TYPE_")
    text = f"rev {event.revision} {kind.lower()} {job_status(event.job)}"
    changed = len(event.chunks) if changed_chunks is None else changed_chunks
    if changed:
        text += f" changed_chunks={changed}"
    return text


def _blocked_by(job: job_pb2.Job) -> str:
    """What a blocked job waits for, in a word."""
    return "waiting for its jobs" if job.after and not job.HasField("schedule_time") else "scheduled"


def _after(job: job_pb2.Job) -> str:
    """The jobs a job waits for, and how."""
    if not job.after:
        return ""
    how = "chunk by chunk" if job.after_mode == job_pb2.DEPENDENCY_MODE_PER_CHUNK else "all of them"
    return f"{', '.join(job.after)} ({how}){' - waiting' if job.blocked else ''}"


def _fails_fast(job: job_pb2.Job) -> str:
    """The job's max_failed_chunks, in words (empty when it has none)."""
    n = job.max_failed_chunks
    if not n:
        return ""
    return f"after {n} chunk{'s' if n != 1 else ''} failed for good"


def _seconds_of(d: Any) -> str:
    """A Duration as seconds, e.g. "90 s"."""
    return f"{d.seconds + d.nanos / 1e9:g} s"


def _starts(job: job_pb2.Job) -> str:
    """When a job scheduled to start later does (empty for one that started at once)."""
    if not job.HasField("schedule_time"):
        return ""
    return format_timestamp(job.schedule_time) + (" (waiting for it)" if job.blocked else "")


def job_status(job: job_pb2.Job) -> str:
    """The job's part of a plain watch line: state, progress, chunk counts and stage."""
    text = (
        f"state={job_state_name(job.state)} "
        f"{job.progress.percent:.1f}% items={job.progress.items_done}/{job.progress.items_total} "
        f"chunks={summary_text(job.chunks_summary)}"
    )
    if job.stage:
        text += f" stage={printable(job.stage)}"
    return text


def error_text(error: JobpulseError, *, brief: bool = False) -> str:
    """Returns ``"UNAVAILABLE: failed to connect ..."``: the status, then what went wrong, on one line;
    ``brief`` keeps only the message's first clause (gRPC's and the server's go on after a ``;``)."""
    text = error.text.split(";")[0].strip() if brief else error.text
    return printable(f"{error.tag}: {text}" if text else error.tag)


def reconnect_notice(info: ReconnectInfo, target: str) -> str:
    """Returns the line a plain (non-terminal) watch prints on stderr when its stream is lost."""
    if info.connected:
        return f"watch: connection to {target} lost ({error_text(info.error)}); reconnecting"
    return f"watch: cannot connect to {target} ({error_text(info.error)}); retrying"


def resume_notice(info: ResumeInfo, target: str) -> str:
    """Returns the line a plain watch prints on stderr once a new stream delivers messages again."""
    if info.connected:
        return f"watch: resumed after revision {info.after_revision}"
    return f"watch: connected to {target}"


def reconnect_document(info: ReconnectInfo, target: str) -> dict[str, Any]:
    """Returns the JSON object ``watch --json`` prints on stderr when its stream is lost."""
    return {
        "event": "reconnecting" if info.connected else "connecting",
        "target": target,
        "attempt": info.attempt,
        "code": info.error.code.name,
        "reason": info.error.reason,
        "message": info.error.message,
        "delay": round(info.delay, 3),
        "after_revision": info.after_revision,
    }


def resume_document(info: ResumeInfo, target: str) -> dict[str, Any]:
    """Returns the JSON object ``watch --json`` prints on stderr once the stream works again."""
    return {
        "event": "resumed" if info.connected else "connected",
        "target": target,
        "attempts": info.attempts,
        "downtime": round(info.downtime, 3),
        "after_revision": info.after_revision,
    }


class JsonNotices:
    """Says a watch's connection changes as JSON objects, one a line (``watch --json`` on stderr): one
    when the stream is lost (:func:`reconnect_document`), one when it is back (:func:`resume_document`).

    Args:
        stream: Where to write.
        target: The server's address, named in each object.
    """

    def __init__(self, stream: TextIO, target: str) -> None:
        self._stream = stream
        self._target = target

    def reconnecting(self, info: ReconnectInfo) -> None:
        """Writes the first attempt of each outage (``on_reconnect`` of ``watch_job``)."""
        if info.attempt == 1:
            self._write(reconnect_document(info, self._target))

    def resumed(self, info: ResumeInfo) -> None:
        """Writes that the stream is back (``on_resume``)."""
        self._write(resume_document(info, self._target))

    def _write(self, document: dict[str, Any]) -> None:
        self._stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        self._stream.flush()


def color_wanted(stream: TextIO) -> bool:
    """Tells whether to color output to ``stream``: only on a terminal, never with ``NO_COLOR`` set to
    anything but ``""`` (https://no-color.org) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def terminal_columns(stream: TextIO) -> int:
    """Returns the width of the terminal ``stream`` writes to (asked each time: windows get resized),
    falling back to ``$COLUMNS`` or 100."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 100
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return shutil.get_terminal_size((100, 20)).columns


class ProgressDisplay:
    """Shows a watched job: a single rewritten line on a terminal, one line per change otherwise.

    The live line never wraps (it is cut to the terminal's width, asked at every redraw), and is colored
    only when :func:`color_wanted` says so. A lost connection shows on the live line in place of the bar
    (``reconnecting to HOST:PORT (attempt 2, UNAVAILABLE: ...)``) until the stream is back; without a
    live line it is one line on ``notices`` when lost, and one when resumed.

    Args:
        stream: Where to write.
        live: Rewrite one line in place (for terminals) instead of appending lines.
        color: Color the live line; ``None``: when live and :func:`color_wanted`.
        notices: Where the plain display writes its connection notices (``None``: stderr).
        target: The server's address, named in the connection notices.
    """

    def __init__(
        self,
        stream: TextIO,
        live: bool,
        *,
        color: bool | None = None,
        notices: TextIO | None = None,
        target: str = "",
    ) -> None:
        self._stream = stream
        self._live = live
        self._color = live and (color_wanted(stream) if color is None else color)
        self._notices = notices
        self._target = target or "the server"
        encoding = (getattr(stream, "encoding", None) or "").lower()
        self._unicode = "utf" in encoding
        self._shown = False
        self._printed = ""  # the job's part of the last plain line
        self._parts = 0  # chunks of the revision being received, over its messages so far

    def _draw(self, segments: Segments) -> None:
        # One cell short of the width: writing the last column leaves some terminals in a pending wrap.
        width = max(1, terminal_columns(self._stream) - 1)
        line = fit(segments, width, color=self._color, ellipsis="…" if self._unicode else "")
        self._stream.write("\r\x1b[2K" + line)
        self._shown = True

    def update(self, event: job_service_pb2.WatchJobResponse, job: job_pb2.Job) -> None:
        """Shows the job as of ``event`` (heartbeats only refresh the live line)."""
        if self._live:
            columns = terminal_columns(self._stream)
            # A narrow terminal gets a shorter bar, so the numbers after it still show.
            bar_width = 24 if columns >= 80 else max(6, (columns - 1) // 4)
            self._draw(progress_segments(job, bar_width=bar_width, unicode=self._unicode))
        elif event.type != job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT:
            # One line per change of what the line shows: a revision sent over several messages (a
            # snapshot of more than 1000 chunks) is one line, once its last part is in, and a message
            # that changes nothing the line shows (a chunk's own progress) prints nothing.
            self._parts += len(event.chunks)
            if event.more:
                return
            status = job_status(job)
            if status != self._printed:
                self._stream.write(event_line(event, self._parts) + "\n")
                self._printed = status
            self._parts = 0
        self._stream.flush()

    def reconnecting(self, info: ReconnectInfo) -> None:
        """Shows that the stream is lost and the watch tries again (``on_reconnect`` of ``watch_job``)."""
        if self._live:
            verb = "reconnecting" if info.connected else "connecting"
            text = f"{verb} to {self._target} (attempt {info.attempt}, {error_text(info.error, brief=True)})"
            self._draw([(text, _NOTICE_COLOR)])
            self._stream.flush()
        elif info.attempt == 1:
            self._notice(reconnect_notice(info, self._target))

    def resumed(self, info: ResumeInfo) -> None:
        """Shows that the stream is back (``on_resume``); the live line shows the job again at once."""
        if not self._live:
            self._notice(resume_notice(info, self._target))

    def _notice(self, line: str) -> None:
        notices = self._notices or sys.stderr
        notices.write(line + "\n")
        notices.flush()

    def finish(self) -> None:
        """Ends the live line so that following output starts on a fresh line."""
        if self._live and self._shown:
            self._stream.write("\n")
            self._stream.flush()
