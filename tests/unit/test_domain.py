"""The pure parts: splitting items into chunks, deriving a job's state, page tokens."""

from __future__ import annotations

import os
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobpulse_server.domain import ids
from jobpulse_server.domain.errors import InvalidPageToken
from jobpulse_server.domain.model import (
    TOO_MANY_FAILED_CHUNKS,
    Chunk,
    ChunkState,
    Job,
    JobState,
    Summary,
    derive_state,
    split_items,
)
from jobpulse_server.services import pagination


def test_contract_example_2500_items_of_500() -> None:
    assert split_items(2500, 500) == [(0, 500), (500, 500), (1000, 500), (1500, 500), (2000, 500)]


@given(total=st.integers(1, 10_000), size=st.integers(1, 1_000))
def test_chunks_cover_every_item_once(total: int, size: int) -> None:
    parts = split_items(total, size)
    assert len(parts) == -(-total // size)
    assert sum(count for _, count in parts) == total
    assert all(0 < count <= size for _, count in parts)
    assert [start for start, _ in parts] == [i * size for i in range(len(parts))]


@pytest.mark.parametrize(
    ("summary", "cancel", "started", "expected"),
    [
        (Summary(pending=3), False, False, JobState.PENDING),
        (Summary(pending=2, processing=1), False, True, JobState.PROCESSING),
        (Summary(pending=2, completed=1), False, True, JobState.PROCESSING),
        (Summary(pending=1, failed=1), False, True, JobState.PROCESSING),
        (Summary(completed=3), False, True, JobState.COMPLETED),
        (Summary(completed=2, failed=1), False, True, JobState.FAILED),
        (Summary(processing=1, cancelled=2), True, True, JobState.CANCELLING),
        (Summary(cancelled=3), True, False, JobState.CANCELLED),
        (Summary(completed=1, cancelled=2), True, True, JobState.CANCELLED),
    ],
)
def test_job_state_follows_its_chunks(
    summary: Summary, cancel: bool, started: bool, expected: JobState
) -> None:
    assert derive_state(summary, cancel_requested=cancel, started=started) == expected


def _job_of(n: int, **kw: int) -> tuple[Job, list[Chunk]]:
    job = Job(id="j", owner="o", kind="k", summary=Summary(pending=n), **kw)  # type: ignore[arg-type]
    chunks = [Chunk(f"c{i}", "j", i, ChunkState.PENDING, i, 1) for i in range(n)]
    return job, chunks


def test_the_nth_chunk_failed_for_good_fails_the_job_at_once() -> None:
    job, chunks = _job_of(5, max_failed_chunks=2)
    for c in chunks[:3]:
        job.move_chunk(c, ChunkState.PROCESSING, 10)
    chunks[0].error_reason, chunks[0].error_message = "BAD", "frame 3"
    job.move_chunk(chunks[0], ChunkState.FAILED, 11)
    assert job.state == JobState.PROCESSING and not job.cancel_requested and not job.stopping
    job.move_chunk(chunks[1], ChunkState.FAILED, 12)
    # FAILED with a chunk still running (told to stop: a cancel is asked) and two pending, which the
    # save is to cancel (stopping).
    assert job.state == JobState.FAILED and job.end_time == 12 and job.failed_at_once
    assert job.cancel_requested and job.stopping and job.summary.processing == 1
    assert job.error_reason == TOO_MANY_FAILED_CHUNKS and "chunk 0: BAD: frame 3" in job.error_message
    assert job.error_chunk_index == 0 and job.error_shown()
    # The running chunk ends cancelled; the job stays FAILED.
    job.move_chunk(chunks[2], ChunkState.CANCELLED, 13)
    assert job.state == JobState.FAILED and job.end_time == 12


def test_without_max_failed_chunks_a_job_fails_once_every_chunk_ended() -> None:
    job, chunks = _job_of(2)
    job.move_chunk(chunks[0], ChunkState.PROCESSING, 10)
    job.move_chunk(chunks[0], ChunkState.FAILED, 11)
    assert job.state == JobState.PROCESSING and not job.error_shown()


def test_a_lease_never_runs_past_the_attempt_s_start_plus_its_timeout() -> None:
    job, [chunk] = _job_of(1, attempt_timeout=5_000_000)
    chunk.start_time = 100
    assert job.lease_end(chunk, 100, 60_000_000) == 5_000_100
    assert job.lease_end(chunk, 200, 1_000) == 1_200
    assert job.lease_end(chunk, 4_000_000, 60_000_000) == 5_000_100
    free, [other] = _job_of(1)
    other.start_time = 100
    assert free.lease_end(other, 200, 60_000_000) == 60_000_200


def test_page_token_round_trip_and_rejections() -> None:
    f = pagination.fingerprint({"kind": "a"})
    token = pagination.encode("jobs", f, ["01ABC", 3])
    assert pagination.decode(token, "jobs", f) == ["01ABC", 3]
    with pytest.raises(InvalidPageToken, match="other filters"):
        pagination.decode(token, "jobs", pagination.fingerprint({"kind": "b"}))
    with pytest.raises(InvalidPageToken, match="another listing"):
        pagination.decode(token, "chunks", f)
    for junk in ("garbage!!", "", "e30", token[:-3]):
        with pytest.raises(InvalidPageToken):
            pagination.decode(junk, "jobs", f)


def test_lease_tokens_are_distinct_url_safe_and_not_shared_with_a_forked_child() -> None:
    """Tokens are made a batch at a time; every one is new, 24 URL-safe characters (18 random bytes),
    and a child forked with a batch half used does not hand out the parent's next ones."""
    made = [ids.new_lease_token() for _ in range(1_000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", t) for t in made)
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, to the parent
        os.close(read)
        os.write(write, " ".join(ids.new_lease_token() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [ids.new_lease_token() for _ in range(10)]
    assert len(child) == 10 and not set(child) & set(parent) and not set(child) & set(made)
