"""The pure parts: splitting items into chunks, deriving a job's state, page tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobpulse_server.domain.errors import InvalidPageToken
from jobpulse_server.domain.model import JobState, Summary, derive_state, split_items
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
