"""WatchJobs: a feed of job-level changes, resumable by cursor, that never skips a late commit."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import asyncpg
import grpc
import pytest

import jobpulse
from jobpulse.errors import InvalidArgument
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc

CHANGE = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
HEARTBEAT = job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT


def _collect(stream: Any, want: set[str], deadline_s: float = 20) -> tuple[list[Any], str]:
    """Reads messages until every job id in ``want`` was reported; returns them and the last cursor."""
    seen: list[Any] = []
    cursor = ""
    deadline = time.monotonic() + deadline_s
    for msg in stream:
        seen.append(msg)
        cursor = msg.cursor
        if want <= {j.id for m in seen for j in m.jobs}:
            break
        assert time.monotonic() < deadline, "the feed did not report the changes"
    return seen, cursor


def test_feed_reports_changes_after_a_listing_with_filters(server: Any) -> None:
    with jobpulse.Client(server.address) as client:
        client.create_job("other", 1)
        start = client.list_jobs_page(kind="feed").watch_cursor
        job = client.create_job("feed", 2, chunk_size=1)
        client.create_job("other", 1)
        claim = client.claim_chunks("w", kinds=["feed"])[0]
        client.complete_chunk(claim.chunk.id, claim.lease_token)
        final = client.get_job(job.id, view="basic")

        stream = client.watch_jobs(cursor=start, kind="feed", timeout=20)
        seen: list[Any] = []
        for msg in stream:
            seen.append(msg)
            if any(j.revision == final.revision for m in seen for j in m.jobs):
                break
        stream.close()
    reported = [j for m in seen for j in m.jobs]
    assert {j.kind for j in reported} == {"feed"}, "the kind filter was not applied"
    assert all(m.type == CHANGE for m in seen)
    # Each message carries a job's latest state once; revisions of one job only grow.
    revisions = [j.revision for j in reported if j.id == job.id]
    assert revisions == sorted(revisions) and revisions[-1] == final.revision


def test_resuming_from_a_cursor_misses_nothing_and_repeats_nothing(server: Any) -> None:
    with jobpulse.Client(server.address) as client:
        start = client.list_jobs_page().watch_cursor
        first = [client.create_job("feed", 1).id for _ in range(3)]
        stream = client.watch_jobs(cursor=start, timeout=20)
        seen, cursor = _collect(stream, set(first))
        stream.close()
        later = [client.create_job("feed", 1).id for _ in range(3)]
        stream = client.watch_jobs(cursor=cursor, timeout=20)
        resumed, _ = _collect(stream, set(later))
        stream.close()
    assert [j.id for m in seen for j in m.jobs] == first
    assert [j.id for m in resumed for j in m.jobs] == later


def test_an_idle_feed_sends_heartbeats_with_a_cursor(make_server: Any) -> None:
    srv = make_server(heartbeat_interval=0.2)
    with jobpulse.Client(srv.address) as client:
        stream = client.watch_jobs(timeout=10)
        first, second = next(stream), next(stream)
        stream.close()
    assert first.type == HEARTBEAT and first.cursor
    assert second.type == HEARTBEAT and second.cursor == first.cursor


def test_a_foreign_cursor_is_rejected(server: Any) -> None:
    with jobpulse.Client(server.address) as client:
        job = client.create_job("feed", 2, chunk_size=1)
        stub = job_service_pb2_grpc.JobServiceStub(grpc.insecure_channel(server.address))
        page_token = stub.ListJobChunks(
            job_service_pb2.ListJobChunksRequest(job_id=job.id, page_size=1)
        ).next_page_token
        with pytest.raises(InvalidArgument) as info:
            next(client.watch_jobs(cursor=page_token, timeout=10))
    assert info.value.reason == "INVALID_PAGE_TOKEN"


def test_a_change_that_commits_late_is_not_skipped(server: Any, database_url: str) -> None:
    """A slow transaction that changed job A commits after a faster one changed job B.

    A feed that advanced past B as soon as B committed would never report A.
    """
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: commits cannot overtake each other")
    with jobpulse.Client(server.address) as client:
        a = client.create_job("late", 1)
        start = client.list_jobs_page().watch_cursor
        opened, release, done = threading.Event(), threading.Event(), threading.Event()

        async def slow_writer() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE jobs SET display_name = 'late', "
                        "change_seq = pg_current_xact_id()::text::bigint WHERE id = $1",
                        a.id,
                    )
                    opened.set()
                    await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
            finally:
                await conn.close()
                done.set()

        writer = threading.Thread(target=lambda: asyncio.run(slow_writer()), daemon=True)
        writer.start()
        assert opened.wait(10)
        b = client.create_job("late", 1)  # commits while A's transaction is still open

        channel = grpc.insecure_channel(server.address)
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        stream = stub.WatchJobs(job_service_pb2.WatchJobsRequest(cursor=start), timeout=20)
        seen: list[Any] = []
        both = threading.Event()

        def read() -> None:
            for msg in stream:
                seen.extend(msg.jobs)
                if {a.id, b.id} <= {j.id for j in seen}:
                    both.set()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # Give the feed a moment in which B is committed and A is not: a feed that hands B out now
        # moves its cursor past A's change. (Waiting less only makes this test weaker, never wrong.)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not any(j.id == b.id for j in seen):
            time.sleep(0.02)
        release.set()
        assert done.wait(10)
        assert both.wait(15), "the change committed late was skipped"
        stream.cancel()
        channel.close()
    late = [j for j in seen if j.id == a.id]
    assert late[-1].display_name == "late"


async def test_async_feed_follows_changes_across_a_server_restart(make_server: Any) -> None:
    """AsyncClient.watch_jobs: filtered changes, and after the server restarts on the same port the
    iterator reconnects from its last cursor and reports what changed meanwhile."""
    srv = make_server()
    async with jobpulse.AsyncClient(srv.address, timeout=20) as client:
        start = (await client.list_jobs_page(kind="afeed")).watch_cursor
        first = await client.create_job("afeed", 1)
        await client.create_job("other", 1)
        feed = client.watch_jobs(cursor=start, kind="afeed", timeout=60, reconnect_timeout=30)
        seen: list[Any] = []

        async def until(job_id: str) -> None:
            async for msg in feed:
                seen.append(msg)
                if any(j.id == job_id for j in msg.jobs):
                    return

        await asyncio.wait_for(until(first.id), 20)
        # Restart on the same port (the server thread's loop does it); the feed is mid-stream.
        await asyncio.get_running_loop().run_in_executor(None, srv.restart)
        second = await client.create_job("afeed", 1)
        await asyncio.wait_for(until(second.id), 30)
        await feed.aclose()
    reported = [j for m in seen for j in m.jobs]
    assert {j.kind for j in reported} == {"afeed"}
    assert [j.id for j in reported] == [first.id, second.id], "a change was missed or repeated"


def test_feed_reports_deletions_that_match_its_filters_in_change_order(server: Any) -> None:
    with jobpulse.Client(server.address, timeout=20) as client:
        start = client.list_jobs_page(kind="gone").watch_cursor
        doomed = client.create_job("gone", 1)
        other = client.create_job("other", 1)
        keep = client.create_job("gone", 1)
        client.cancel_job(doomed.id)
        client.delete_job(doomed.id)
        client.delete_job(other.id, force=True)  # another kind: not this feed's business

        stream = client.watch_jobs(cursor=start, kind="gone", timeout=30)
        seen: list[Any] = []
        deadline = time.monotonic() + 20
        for msg in stream:
            seen.append(msg)
            if any(doomed.id in m.deleted_job_ids for m in seen):
                break
            assert time.monotonic() < deadline, "the deletion was not reported"
        # A change made after the feed passed the deletion is still reported: on SQLite a job's
        # change_seq must stay above the tombstones' (the deleted job had the largest one).
        updated = client.update_job(keep.id, priority=9)
        for msg in stream:
            seen.append(msg)
            if any(j.id == keep.id and j.revision == updated.revision for j in msg.jobs):
                break
            assert time.monotonic() < deadline, "a change after the deletion was missed"
        stream.close()
        # Resuming from the start again reports the deletion again: tombstones are kept.
        again = client.watch_jobs(cursor=start, kind="gone", timeout=30)
        replay: list[Any] = []
        for msg in again:
            replay.append(msg)
            if any(j.id == keep.id and j.revision == updated.revision for m in replay for j in m.jobs):
                break
            assert time.monotonic() < deadline + 20, "the replay did not reach the last change"
        again.close()

    for messages in (seen, replay):
        deleted = [d for m in messages for d in m.deleted_job_ids]
        assert deleted == [doomed.id], "only the matching job's deletion, once"
        # In change order: the deletion comes after every report of the doomed job, and before the
        # later change of the job that stayed.
        order = [(i, "del") for i, m in enumerate(messages) if m.deleted_job_ids] + [
            (i, j.id) for i, m in enumerate(messages) for j in m.jobs
        ]
        del_at = next(i for i, what in order if what == "del")
        assert all(i <= del_at for i, what in order if what == doomed.id)
        assert any(i >= del_at for i, what in order if what == keep.id)
        assert other.id not in {j.id for m in messages for j in m.jobs}
