"""End-to-end: WatchJob streams (snapshot, changes until the end, resume after a revision, heartbeats,
errors)."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from support.e2e import BackgroundThread, chunks_by_index, claim_one, run_all

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2

SNAPSHOT = job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT
CHANGE = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT
TERMINAL = {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def _work_through(client: jobpulse.Client, kind: str, go: threading.Event, n: int) -> None:
    """Waits for ``go``, then claims, reports half and completes ``n`` chunks one by one."""
    assert go.wait(10), "the watcher never saw its first message"
    for _ in range(n):
        claim = claim_one(client, kind, worker="watch-worker")
        half = claim.chunk.item_count // 2
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=half, stage="working")
        client.complete_chunk(claim.chunk.id, claim.lease_token)


def _check_revisions(events: list[Any]) -> None:
    """Revisions never go back, and a CHANGE only carries chunks changed after the previous message."""
    previous = 0
    for event in events:
        assert event.revision >= previous, "revision went backwards along the stream"
        for chunk in event.chunks:
            assert chunk.revision <= event.revision
            if event.type == CHANGE:
                assert chunk.revision > previous, "a chunk was sent again without a new change"
        if not event.more:
            previous = event.revision


def test_first_message_is_a_snapshot_with_every_chunk(client: jobpulse.Client) -> None:
    job = client.create_job("k", 50, chunk_size=10)
    claim = claim_one(client, "k")
    client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=3)
    current = client.get_job(job.id)

    stream = client.watch_job(job.id)
    first = next(stream)
    stream.close()

    assert first.type == SNAPSHOT
    assert first.revision == current.revision
    assert [c.index for c in first.chunks] == [0, 1, 2, 3, 4]
    assert first.chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING
    assert first.chunks[0].items_done == 3
    assert first.job.id == job.id
    assert first.job.state == job_pb2.JOB_STATE_PROCESSING
    assert first.job.chunks_summary.total == 5
    assert first.job.chunks_summary.processing == 1
    assert first.job.progress.items_done == 3
    assert not first.more


def test_watch_follows_a_job_to_completion_and_ends(client: jobpulse.Client) -> None:
    job = client.create_job("k", 40, chunk_size=10)
    go = threading.Event()
    worker = BackgroundThread(lambda: _work_through(client, "k", go, 4))

    events = []
    latest: dict[str, Any] = {}
    for event in client.watch_job(job.id, timeout=30):
        events.append(event)
        for chunk in event.chunks:
            latest[chunk.id] = chunk
        go.set()
    worker.join()

    assert events[0].type == SNAPSHOT
    assert len(events) >= 2
    assert events[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    assert [e.job.state in TERMINAL for e in events if e.HasField("job")].count(True) == 1
    assert events[-1].revision == client.get_job(job.id).revision
    assert events[-1].job.progress.percent == 100
    _check_revisions(events)
    assert {c.index: c.state for c in latest.values()} == {i: job_pb2.CHUNK_STATE_COMPLETED for i in range(4)}
    assert any(e.job.stage == "working" for e in events if e.HasField("job"))


def test_server_ends_the_stream_with_ok_after_the_terminal_message(
    client: jobpulse.Client, job_stub: Any
) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    go = threading.Event()
    worker = BackgroundThread(lambda: _work_through(client, "k", go, 3))

    events = []
    call = job_stub.WatchJob(job_service_pb2.WatchJobRequest(job_id=job.id), timeout=30)
    for event in call:  # ends without raising only if the server closes the stream with OK
        events.append(event)
        go.set()
    worker.join()

    assert call.code() == grpc.StatusCode.OK
    assert events[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    assert all(e.job.state not in TERMINAL for e in events[:-1] if e.HasField("job"))

    again = list(job_stub.WatchJob(job_service_pb2.WatchJobRequest(job_id=job.id), timeout=10))
    assert len(again) == 1
    assert again[0].type == SNAPSHOT
    assert again[0].job.state == job_pb2.JOB_STATE_COMPLETED
    assert len(again[0].chunks) == 3


def test_resume_after_a_revision_yields_exactly_what_changed_since(client: jobpulse.Client) -> None:
    job = client.create_job("k", 60, chunk_size=10)
    claims = {c.chunk.index: c for c in client.claim_chunks("w1", kinds=["k"], max_chunks=5)}
    client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
    client.complete_chunk(claims[1].chunk.id, claims[1].lease_token)
    mark = client.get_job(job.id).revision

    client.complete_chunk(claims[2].chunk.id, claims[2].lease_token)
    client.report_chunk_progress(claims[4].chunk.id, claims[4].lease_token, items_done=7)
    client.fail_chunk(claims[3].chunk.id, claims[3].lease_token, "OOPS", "", retryable=True)
    now = client.get_job(job.id)

    stream = client.watch_job(job.id, after_revision=mark)
    first = next(stream)
    stream.close()

    expected = {c.id: c for c in client.list_job_chunks(job.id) if c.revision > mark}
    assert first.type == CHANGE
    assert first.revision == now.revision
    assert {c.index for c in first.chunks} == {2, 3, 4}
    assert {c.id: c for c in first.chunks} == expected
    assert first.job.chunks_summary == now.chunks_summary
    assert first.job.progress.items_done == now.progress.items_done


def test_reconnecting_with_the_last_revision_misses_nothing_and_repeats_nothing(
    client: jobpulse.Client,
) -> None:
    job = client.create_job("k", 6, chunk_size=1)
    go = threading.Event()
    resume = threading.Event()

    def work() -> None:
        assert go.wait(10)
        for n in range(6):
            if n == 3:
                assert resume.wait(10)
            claim = claim_one(client, "k")
            client.complete_chunk(claim.chunk.id, claim.lease_token)

    worker = BackgroundThread(work)
    first_leg = []
    for event in client.watch_job(job.id, timeout=30):
        first_leg.append(event)
        go.set()
        if event.job.chunks_summary.completed == 3:
            break  # the client goes away mid-job; the worker waits until it is back
    seen_revision = first_leg[-1].revision

    resume.set()
    second_leg = list(client.watch_job(job.id, after_revision=seen_revision, timeout=30))
    worker.join()

    assert second_leg[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    assert all(e.revision > seen_revision for e in second_leg if e.type != HEARTBEAT)
    assert all(e.revision >= seen_revision for e in second_leg)
    _check_revisions(first_leg)
    _check_revisions([*first_leg, *second_leg])
    latest = {}
    for event in [*first_leg, *second_leg]:
        for chunk in event.chunks:
            latest[chunk.index] = chunk
    assert latest == chunks_by_index(client, job.id)


def test_resume_beyond_the_jobs_revision_is_out_of_range(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    revision = client.get_job(job.id).revision

    with pytest.raises(errors.OutOfRange) as info:
        next(client.watch_job(job.id, after_revision=revision + 5, timeout=10))

    assert info.value.reason == "REVISION_AHEAD"
    assert info.value.code == grpc.StatusCode.OUT_OF_RANGE


def test_watching_a_job_that_is_deleted_ends_with_not_found(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    claim_one(client, "k")  # a running chunk keeps the job CANCELLING, not CANCELLED, until it is gone
    go = threading.Event()

    def delete() -> None:
        assert go.wait(10)
        client.delete_job(job.id, force=True)

    helper = BackgroundThread(delete)
    events = []
    with pytest.raises(errors.NotFound) as info:
        for event in client.watch_job(job.id, timeout=20):
            events.append(event)
            go.set()
    helper.join()

    assert info.value.reason == "JOB_NOT_FOUND"
    assert events[0].type == SNAPSHOT


def test_idle_stream_gets_heartbeats_with_the_current_revision(make_server: Any, connect: Any) -> None:
    srv = make_server(heartbeat_interval=0.2)
    client = connect(srv)
    job = client.create_job("k", 2, chunk_size=1)
    revision = client.get_job(job.id).revision

    stream = client.watch_job(job.id, timeout=10)
    started = time.monotonic()
    first = next(stream)
    second = next(stream)
    third = next(stream)
    elapsed = time.monotonic() - started
    stream.close()

    assert first.type == SNAPSHOT
    assert second.type == HEARTBEAT
    assert third.type == HEARTBEAT
    assert second.revision == third.revision == revision
    assert len(second.chunks) == 0
    assert elapsed < 5


def test_resume_at_the_current_revision_then_sees_the_next_change(make_server: Any, connect: Any) -> None:
    srv = make_server(heartbeat_interval=0.2)
    client = connect(srv)
    job = client.create_job("k", 2, chunk_size=1)
    revision = client.get_job(job.id).revision

    stream = client.watch_job(job.id, after_revision=revision, timeout=10)
    first = next(stream)
    assert first.revision == revision
    assert len(first.chunks) == 0

    claim = claim_one(client, "k")
    change = next(e for e in stream if e.type != HEARTBEAT)
    stream.close()

    assert change.type == CHANGE
    assert change.revision > revision
    assert [(c.index, c.state) for c in change.chunks] == [
        (claim.chunk.index, job_pb2.CHUNK_STATE_PROCESSING)
    ]
    assert change.job.state == job_pb2.JOB_STATE_PROCESSING


def test_large_snapshot_spans_several_messages(client: jobpulse.Client) -> None:
    job = client.create_job("big", 1500, chunk_size=1)
    client.cancel_job(job.id)

    events = list(client.watch_job(job.id, timeout=20))

    assert [e.type for e in events] == [SNAPSHOT] * len(events)
    assert [e.more for e in events] == [True] * (len(events) - 1) + [False]
    assert len({e.revision for e in events}) == 1
    assert all(len(e.chunks) <= 1000 for e in events)
    indexes = [c.index for e in events for c in e.chunks]
    assert sorted(indexes) == list(range(1500))
    assert events[-1].job.state == job_pb2.JOB_STATE_CANCELLED


def test_watch_ends_for_cancelled_and_failed_jobs(client: jobpulse.Client) -> None:
    cancelled = client.create_job("c", 2, chunk_size=1)
    claim = claim_one(client, "c")
    go = threading.Event()

    def finish() -> None:
        assert go.wait(10)
        client.cancel_job(cancelled.id, reason="bye")
        client.complete_chunk(claim.chunk.id, claim.lease_token)

    helper = BackgroundThread(finish)
    events = []
    for event in client.watch_job(cancelled.id, timeout=20):
        events.append(event)
        go.set()
    helper.join()
    assert events[0].job.state == job_pb2.JOB_STATE_PROCESSING
    assert events[-1].job.state == job_pb2.JOB_STATE_CANCELLED
    assert events[-1].job.cancel_reason == "bye"

    failed = client.create_job("f", 1)
    bad = claim_one(client, "f")
    client.fail_chunk(bad.chunk.id, bad.lease_token, "X", "", retryable=False)
    final = list(client.watch_job(failed.id, timeout=10))
    assert len(final) == 1
    assert final[0].job.state == job_pb2.JOB_STATE_FAILED
    assert final[0].job.error.chunk_index == 0


def test_watch_of_completed_job_resumed_from_an_old_revision(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    mark = client.get_job(job.id).revision
    run_all(client, "k")

    events = list(client.watch_job(job.id, after_revision=mark, timeout=10))

    assert len(events) == 1
    assert events[0].type == CHANGE
    assert events[0].job.state == job_pb2.JOB_STATE_COMPLETED
    assert sorted(c.index for c in events[0].chunks) == [0, 1, 2]
