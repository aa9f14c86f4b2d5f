"""store/rows.py: a stored row becomes the domain object whose fields hold the values of the columns of the
same names (the mappings are positional, for speed: a value in the wrong field must fail here)."""

from __future__ import annotations

import json
from typing import Any

from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.store.rows import CHUNK_COLUMNS, JOB_COLUMNS, chunk_from_row, job_from_row

# Columns whose field has another name, or lives in the job's summary.
_JOB_FIELD = {"job_metadata": "metadata", "after_ids": "after"}
_SUMMARY = {
    "n_pending": "pending",
    "n_processing": "processing",
    "n_completed": "completed",
    "n_failed": "failed",
    "n_cancelled": "cancelled",
}


def _distinct_job_row() -> tuple[list[Any], dict[str, Any]]:
    """A jobs row in which no two columns hold the same value, and what each column's field must hold."""
    row: list[Any] = []
    want: dict[str, Any] = {}
    for n, column in enumerate(JOB_COLUMNS):
        if column == "state":
            value: Any = int(JobState.CANCELLING)
            expected: Any = JobState.CANCELLING
        elif column in ("labels", "job_metadata"):
            expected = {column: str(n)}
            value = json.dumps(expected)
        elif column == "cancel_requested":
            value, expected = 1, True
        elif column == "webhook_progress":  # the other flag the opposite way: a swap of the two shows
            value, expected = 0, False
        elif column == "paused":  # a third flag, as cancel_requested (a swap of those two is not seen)
            value, expected = 1, True
        elif column == "pipeline":  # a fourth, as webhook_progress
            value, expected = 0, False
        elif column == "after_ids":
            expected = [f"job-{n}"]
            value = json.dumps(expected)
        else:
            value = expected = 1000 + n if n % 2 else f"text-{n}"
        row.append(value)
        want[column] = expected
    return row, want


def test_each_column_of_a_job_row_lands_in_the_field_of_its_name() -> None:
    row, want = _distinct_job_row()
    job = job_from_row(row)
    for column, expected in want.items():
        if column in _SUMMARY:
            got = getattr(job.summary, _SUMMARY[column])
        else:
            got = getattr(job, _JOB_FIELD.get(column, column))
        assert got == expected, f"column {column}: {got!r} != {expected!r}"
    assert job.loaded_state == JobState.CANCELLING
    assert job.artifacts == [] and job.bumped is False


def test_each_column_of_a_chunk_row_lands_in_the_field_of_its_name() -> None:
    row: list[Any] = [
        int(ChunkState.FAILED) if c == "state" else True if c == "finalize" else f"v{n}"
        for n, c in enumerate(CHUNK_COLUMNS)
    ]
    chunk = chunk_from_row(row)
    fields = {"idx": "index"}
    for column, value in zip(CHUNK_COLUMNS, row, strict=True):
        got = getattr(chunk, fields.get(column, column))
        assert got == (ChunkState.FAILED if column == "state" else value), column
