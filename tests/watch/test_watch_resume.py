"""A watcher survives its server going away: stopped (drained) or killed with SIGKILL, then restarted on
the same port and database. The SDK iterator resumes by itself from the last complete revision it
yielded; across all streams it sees no revision twice and misses nothing (per chunk, the last state it
saw is the final one)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.polling import eventually
from support.servers import ServerProcess
from support.watch import (
    FAST_RECONNECT,
    HEARTBEAT,
    Recorder,
    WatchCallCounter,
    assert_matches_final,
    check_stream,
    counted_channel,
    final_state,
    iter_claims,
    ready,
)

import jobpulse
from jobpulse.v1 import job_pb2

KIND = "watch-resume"
CHUNKS = 24
CHUNK_SIZE = 10
HEARTBEAT_INTERVAL = 0.3


def _drive_through_bounces(
    driver: jobpulse.Client,
    driver_channel: grpc.Channel,
    rec: Recorder,
    counter: WatchCallCounter,
    job_id: str,
    bounce: Callable[[], None],
) -> int:
    """Works the job to completion with three server bounces at different moments. Returns bounces."""

    def after_bounce() -> None:
        ready(driver_channel)

    def wait_resumed(calls_before: int) -> None:
        # The watcher opened a new stream and that stream delivered (at least) a heartbeat.
        eventually(lambda: counter.calls > calls_before, what="the watcher to open a new stream")
        seen = len(rec.events)
        rec.wait_for(
            lambda events: any(e.type == HEARTBEAT for e in events[seen:]), what="a message on the new stream"
        )

    first = list(iter_claims(driver, KIND, 8, lease_duration=120))
    # 1. A burst of changes, then the server goes away at once: the watcher may be anywhere in the burst.
    for claim in first[:4]:
        driver.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=5, stage="half")
    for claim in first[:3]:
        driver.complete_chunk(claim.chunk.id, claim.lease_token)
    bounce()
    after_bounce()
    # Changes right after the restart, while the watcher is still reconnecting.
    for claim in first[3:6]:
        driver.complete_chunk(claim.chunk.id, claim.lease_token)
    second = list(iter_claims(driver, KIND, 8, lease_duration=120))

    # 2. The watcher is exactly caught up when the server goes away; it resumes with nothing new.
    rec.wait_revision(driver.get_job(job_id).revision)
    calls = counter.calls
    bounce()
    after_bounce()
    wait_resumed(calls)
    for claim in [*first[6:], *second]:
        driver.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=7, stage="late")
    for claim in [*first[6:], *second[:4]]:
        driver.complete_chunk(claim.chunk.id, claim.lease_token)

    # 3. Gone again right after a multi-chunk revision (a batch claim).
    third = list(iter_claims(driver, KIND, CHUNKS - 16, lease_duration=120))
    bounce()
    after_bounce()
    for claim in [*second[4:], *third]:
        driver.complete_chunk(claim.chunk.id, claim.lease_token)
    return 3


def _check(
    driver: jobpulse.Client, rec: Recorder, counter: WatchCallCounter, job_id: str, bounces: int
) -> None:
    events = rec.join(60)
    job, chunks = final_state(driver, job_id)
    assert job.state == job_pb2.JOB_STATE_COMPLETED
    assert job.chunks_summary.completed == CHUNKS
    assert len(chunks) == CHUNKS

    check = check_stream(events)
    assert_matches_final(check, events, chunks)
    assert events[-1].revision == job.revision
    assert events[-1].job.chunks_summary.completed == CHUNKS
    # The SDK did reconnect by itself, each time from a revision it had completely seen.
    assert counter.calls >= 1 + bounces, counter.after_revisions
    assert counter.after_revisions[0] == 0
    resumes = counter.after_revisions[1:]
    assert resumes == sorted(resumes), f"resumed from an older revision: {counter.after_revisions}"
    assert set(resumes) <= set(check.complete_revisions), (
        f"resumed from a revision never completely delivered: {resumes} vs {check.complete_revisions}"
    )


def _run(address: str, bounce: Callable[[], None]) -> None:
    watch_channel, watch_raw, counter = counted_channel(address)
    driver_channel = grpc.insecure_channel(address, options=FAST_RECONNECT)
    watcher = jobpulse.Client(address, channel=watch_channel)
    driver = jobpulse.Client(address, channel=driver_channel, timeout=20)
    try:
        job = driver.create_job(KIND, CHUNKS * CHUNK_SIZE, chunk_size=CHUNK_SIZE)
        rec = Recorder(watcher, job.id).start()
        rec.wait_for(lambda events: bool(events), what="the snapshot")
        bounces = _drive_through_bounces(driver, driver_channel, rec, counter, job.id, bounce)
        _check(driver, rec, counter, job.id, bounces)
    finally:
        watch_raw.close()
        driver_channel.close()


def test_watch_resumes_across_server_stop_and_restart(make_server: Callable[..., Any]) -> None:
    srv = make_server(heartbeat_interval=HEARTBEAT_INTERVAL)
    address = srv.address
    _run(address, srv.restart)


# 17-25 s a database (four server processes started): the same bounces as the test above, whose server
# stops in-process, with a kill; make test-slow runs it.
@pytest.mark.slow
def test_watch_resumes_across_sigkill_and_restart(database_url: str, tmp_path: Path) -> None:
    server = ServerProcess(database_url, tmp_path, heartbeat_interval=HEARTBEAT_INTERVAL, drain_seconds=0)
    server.start()

    def bounce() -> None:
        server.kill()
        server.start()

    try:
        _run(server.address, bounce)
    except BaseException:
        print(server.log())
        raise
    finally:
        server.close()
