"""How the dashboard shows numbers, times and states to people: the Jinja2 filters of its templates.
The page's script (static/dashboard.js) formats live updates by the same rules."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from jobpulse_server.domain.model import Chunk, ChunkState, Job, JobState, eta_seconds

# A started job with no chunk running and no change for this long shows its ETA as "stalled": the
# rate-based estimate (domain/model.py) only grows while nothing runs, so a number would mislead.
STALL_US = 60 * 1_000_000

# Each state has a word, a colour (CSS class) and a symbol: the symbol and word carry the meaning for
# readers who cannot tell the colours apart.
JOB_STATES: dict[JobState, tuple[str, str]] = {
    JobState.PENDING: ("Pending", "\u25cb"),  # white circle
    JobState.PROCESSING: ("Processing", "\u25d4"),  # circle with a quarter filled
    JobState.CANCELLING: ("Cancelling", "\u25cc"),  # dotted circle
    JobState.COMPLETED: ("Completed", "\u2713"),  # check mark
    JobState.FAILED: ("Failed", "\u2715"),  # multiplication x
    JobState.CANCELLED: ("Cancelled", "\u2298"),  # circled slash
}
CHUNK_STATES: dict[ChunkState, tuple[str, str]] = {
    ChunkState.PENDING: ("Pending", "\u25cb"),
    ChunkState.PROCESSING: ("Processing", "\u25d4"),
    ChunkState.COMPLETED: ("Completed", "\u2713"),
    ChunkState.FAILED: ("Failed", "\u2715"),
    ChunkState.CANCELLED: ("Cancelled", "\u2298"),
}


def state_word(state: JobState | ChunkState) -> str:
    table: dict[Any, tuple[str, str]] = JOB_STATES if isinstance(state, JobState) else CHUNK_STATES
    return table[state][0]


def state_symbol(state: JobState | ChunkState) -> str:
    table: dict[Any, tuple[str, str]] = JOB_STATES if isinstance(state, JobState) else CHUNK_STATES
    return table[state][1]


def state_class(state: JobState | ChunkState) -> str:
    return "s-" + state.name.lower()


def number(n: int | float | None) -> str:
    """1234567 -> '1,234,567' (whole numbers), 0.5 -> '0.5'."""
    if n is None:
        return "\u2014"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}"
    return f"{int(n):,}"


def percent(p: float) -> str:
    """Never '100%' before the end: 99.96 reads '99.9%', not a rounded-up promise."""
    if p >= 100.0:
        return "100%"
    return f"{int(p * 10) / 10:.1f}%"


def duration(seconds: float | None) -> str:
    """A span as people say it: '45 s', '12 min', '3 h 5 min', '2 d 4 h'."""
    if seconds is None:
        return "\u2014"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min {s % 60} s" if m < 10 and s % 60 else f"{m} min"
    h = m // 60
    if h < 48:
        return f"{h} h {m % 60} min" if m % 60 else f"{h} h"
    return f"{h // 24} d {h % 24} h" if h % 24 else f"{h // 24} d"


def duration_us(us: int | None) -> str:
    return duration(None if us is None else us / 1e6)


def eta(job: Job, now: int) -> str:
    """A job's ETA as the pages show it: the server's estimate at ``now`` (time left at the average rate
    since the first claim), "stalled" when it started but no chunk runs and nothing changed for
    ``STALL_US``, and a dash when there is nothing to estimate (not started, or over). The page's
    script recomputes it by the same rules as time passes, so it never stays frozen."""
    if job.state.terminal:
        return "\u2014"
    if job.start_time is not None and job.summary.processing == 0 and now - job.update_time >= STALL_US:
        return "stalled"
    return duration(eta_seconds(job.state, job.start_time, job.items_done, job.total_items, now))


def attempts(chunk: Chunk, job: Job) -> str:
    """A chunk's attempts against the job's budget, the one number the job page also shows ("up to N
    attempts"): a retry gives a failed chunk the job's max_attempts again, so after one the count
    restarts and the attempts before it are told apart."""
    before = max(0, chunk.max_attempts - job.max_attempts)
    text = f"{chunk.attempt - before} of {job.max_attempts}"
    if before:
        text += f" since the last retry ({chunk.attempt} in all)"
    return text


def iso(us: int | None) -> str:
    """The exact UTC time, machine-readable (a <time datetime> and what the script reads)."""
    if us is None:
        return ""
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).isoformat(timespec="milliseconds")


def exact(us: int | None) -> str:
    """The exact time for a tooltip."""
    if us is None:
        return ""
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(us: int | None, now: int) -> str:
    """'just now', '5 min ago', 'in 3 h' (the page's script keeps these current)."""
    if us is None:
        return "\u2014"
    delta = (now - us) / 1e6
    if abs(delta) < 5:
        return "just now"
    text = duration(abs(delta)).split(" ")
    span = " ".join(text[:2])
    return f"{span} ago" if delta > 0 else f"in {span}"


def size(n: int) -> str:
    if n <= 0:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def preview_kind(media_type: str, uri: str) -> str:
    """How an artifact can be shown in the page: 'image', 'audio', 'video', or '' (a link only). Only
    http(s) URIs: the browser fetches them itself."""
    if not uri.lower().startswith(("https://", "http://")):
        return ""
    top = media_type.split("/", 1)[0].lower()
    return top if top in ("image", "audio", "video") else ""


def linkable(uri: str) -> bool:
    """Whether a URI may be an <a href>: never javascript: or data: ones a worker could report."""
    return uri.lower().startswith(("https://", "http://"))


FILTERS = {
    "state_word": state_word,
    "state_symbol": state_symbol,
    "state_class": state_class,
    "number": number,
    "percent": percent,
    "duration": duration,
    "duration_us": duration_us,
    "iso": iso,
    "attempts_text": attempts,
    "exact": exact,
    "size": size,
    "pretty_json": pretty_json,
    "preview_kind": preview_kind,
    "linkable": linkable,
}
