"""A slow watcher never gets an unbounded backlog: changes fold into few messages, and it still ends on
the exact final state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.polling import eventually
from support.watch import Recorder, assert_matches_final, check_stream, final_state

import jobpulse
from jobpulse.v1 import job_pb2

KIND = "watch-slow"
# Seconds the consumer dawdles after each message: it reads at most ~7 messages a second.
CONSUMER_DELAY = 0.15
# Seconds after the last change by which the slow watcher must have seen the final state.
FINAL_STATE_WITHIN = 5.0


@pytest.fixture
def sizes(database_url: str) -> tuple[int, int]:
    """(chunks, short-lease claim rounds): smaller on PostgreSQL, whose writes are slower here."""
    return (1000, 4) if database_url.startswith("sqlite") else (400, 4)


def test_slow_watcher_gets_folded_changes_and_the_final_state(
    make_server: Callable[..., Any], sizes: tuple[int, int]
) -> None:
    chunks, rounds = sizes
    # Short leases expire within a sweep or two and come back PENDING at once: two chunk updates per
    # claim without a call per chunk.
    srv = make_server(sweep_interval=0.02, retry_backoff=0.001, retry_backoff_max=0.01)
    with jobpulse.Client(srv.address, timeout=30) as driver, jobpulse.Client(srv.address) as reader:
        job = driver.create_job(KIND, chunks, chunk_size=1, max_attempts=100)
        rec = Recorder(reader, job.id, delay=CONSUMER_DELAY, timeout=120).start()
        rec.wait_for(lambda events: bool(events), what="the snapshot")

        updates = 0  # chunk updates the test caused (each claim, expiry, progress report, completion)
        changes = 0  # calls that each committed a change of their own (a lower bound on revisions)
        short = 0
        while short < rounds * chunks:
            got = driver.claim_chunks("slow", [KIND], max_chunks=100, lease_duration=0.05, wait=2.0)
            short += len(got)
            changes += bool(got)
        updates += 2 * short  # every short claim also expires
        held: dict[str, Any] = {}
        while len(held) < chunks:
            got = driver.claim_chunks("slow", [KIND], max_chunks=100, lease_duration=300, wait=2.0)
            held.update((c.chunk.id, c) for c in got)
            changes += bool(got)
        updates += chunks
        for i, claim in enumerate(held.values()):
            if i % 4 == 0:
                driver.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=0, stage="busy")
                updates += 1
                changes += 1
        for claim in held.values():
            driver.complete_chunk(claim.chunk.id, claim.lease_token)
        updates += chunks
        changes += chunks
        assert updates >= 10_000 or chunks < 1000

        # A watcher that gets folded changes is at most a message or two behind: it sees the end promptly.
        # One that gets every change separately would still be reading its backlog.
        events = rec.join(FINAL_STATE_WITHIN)
        job_final, chunks_final = final_state(driver, job.id)
        assert job_final.state == job_pb2.JOB_STATE_COMPLETED
        assert job_final.chunks_summary.completed == chunks

    last = events[-1]
    assert last.job.state == job_pb2.JOB_STATE_COMPLETED
    assert last.job.chunks_summary.completed == chunks
    assert last.job.chunks_summary.total == chunks
    assert last.revision == job_final.revision
    check = check_stream(events)
    assert_matches_final(check, events, chunks_final)
    # Bounded: far fewer messages than updates, and than separately committed changes.
    assert len(events) < updates / 5, (len(events), updates)
    assert len(events) < changes / 5, (len(events), changes)
    eventually(lambda: srv.call(_open_streams(srv)) == 0, what="the stream to be released")


async def _open_streams(srv: Any) -> int:
    return int(srv.app.hub.open_streams)
