"""A watch that loses its server says so: the SDK's ``on_reconnect`` / ``on_resume`` callbacks, and the
notices of ``jobpulse watch`` built on them, against a real server stopped and started again on the same
port under a running watch (issue 16, finding 13: a resumed stream used to be silent).

The watch must also resume without a gap: no revision twice, the final state complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.polling import eventually
from support.servers import free_port

import jobpulse
from jobpulse.errors import JobpulseError, Unavailable
from jobpulse.v1 import job_pb2, job_service_pb2

KIND = "reconnect-notice"
CHUNKS = 4
CHUNK_SIZE = 10
HEARTBEAT = job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT
#: The driver's channel comes back quickly after the restart (the watcher keeps the SDK's defaults).
FAST_RECONNECT = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
JOBPULSE = str(Path(sys.executable).parent / "jobpulse")

pytestmark = pytest.mark.timeout(90)


class Bouncer:
    """A test server and a driver client; ``down()`` stops the server, ``up()`` starts it again on the
    same port and database and waits until the driver's channel is connected."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.port = srv.port
        self.address = srv.address
        self.channel = grpc.insecure_channel(self.address, options=FAST_RECONNECT)
        self.driver = jobpulse.Client(self.address, channel=self.channel, timeout=20)

    def down(self) -> None:
        self.srv.stop()

    def up(self) -> None:
        self.srv.config.port = self.port
        self.srv.start()
        grpc.channel_ready_future(self.channel).result(timeout=20)

    def create(self) -> job_pb2.Job:
        return self.driver.create_job(KIND, CHUNKS * CHUNK_SIZE, chunk_size=CHUNK_SIZE)

    def claim_all(self) -> list[Any]:
        claims = self.driver.claim_chunks("notice-test", [KIND], max_chunks=CHUNKS)
        assert len(claims) == CHUNKS
        return claims

    def progress(self, job_id: str, claim: Any, items: int) -> int:
        """Reports progress on one chunk; returns the job's revision after it."""
        self.driver.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=items, stage="half")
        return self.driver.get_job(job_id, view="basic").revision

    def finish(self, claims: list[Any]) -> None:
        for claim in claims:
            self.driver.complete_chunk(claim.chunk.id, claim.lease_token)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def bouncer(make_server: Callable[..., Any]) -> Iterator[Bouncer]:
    b = Bouncer(make_server(heartbeat_interval=0.3))
    yield b
    b.close()


def _check_reconnects(reconnects: list[jobpulse.ReconnectInfo], revision: int) -> None:
    """Every attempt of one outage, numbered from 1, each naming the error and the resume point."""
    assert [r.attempt for r in reconnects] == list(range(1, len(reconnects) + 1))
    for info in reconnects:
        assert isinstance(info.error, JobpulseError)
        assert info.error.code == grpc.StatusCode.UNAVAILABLE, info.error
        assert info.connected
        assert info.after_revision == revision and info.cursor == ""
        assert 0 < info.delay <= 5.0
    elapsed = [r.elapsed for r in reconnects]
    assert elapsed == sorted(elapsed) and elapsed[0] < 1.0


def _check_gap_free(events: list[job_service_pb2.WatchJobResponse]) -> None:
    """No revision delivered twice (heartbeats repeat the last one) and the last message is complete."""
    revisions = [e.revision for e in events if e.type != HEARTBEAT]
    assert revisions == sorted(set(revisions)), revisions
    final = events[-1].job
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.chunks_summary.completed == CHUNKS
    assert final.progress.items_done == CHUNKS * CHUNK_SIZE


def test_sync_watch_tells_each_reconnect_and_the_resume_and_misses_nothing(bouncer: Bouncer) -> None:
    job = bouncer.create()
    events: list[job_service_pb2.WatchJobResponse] = []
    reconnects: list[jobpulse.ReconnectInfo] = []
    resumes: list[tuple[jobpulse.ResumeInfo, int]] = []
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            with jobpulse.Client(bouncer.address) as watcher:
                for event in watcher.watch_job(
                    job.id,
                    on_reconnect=reconnects.append,
                    # Where in the stream the resume happened: the next message is the new stream's first.
                    on_resume=lambda info: resumes.append((info, len(events))),
                ):
                    events.append(event)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    eventually(lambda: events, what="the snapshot")
    claims = bouncer.claim_all()
    revision = bouncer.progress(job.id, claims[0], 5)
    eventually(lambda: events[-1].revision == revision, what=f"revision {revision} at the watcher")
    assert not reconnects and not resumes

    bouncer.down()
    # The server stays away until the watch has failed to reconnect at least once more.
    eventually(lambda: len(reconnects) >= 2, what="a second reconnect attempt")
    bouncer.up()
    eventually(lambda: resumes, what="the resume")
    bouncer.finish(claims)
    thread.join(30)
    assert not thread.is_alive() and not failure, failure

    _check_reconnects(reconnects, revision)
    [(info, index)] = resumes
    assert info.connected and info.after_revision == revision
    assert info.attempts == len(reconnects)
    assert info.downtime >= reconnects[-1].elapsed
    assert events[index - 1].revision == revision  # the last message before the break...
    assert events[index].revision >= revision  # ...and the new stream goes on from there
    _check_gap_free(events)


async def _until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Polls ``condition`` with a deadline without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_async_watch_tells_each_reconnect_and_the_resume_and_misses_nothing(bouncer: Bouncer) -> None:
    job = await asyncio.to_thread(bouncer.create)
    events: list[job_service_pb2.WatchJobResponse] = []
    reconnects: list[jobpulse.ReconnectInfo] = []
    resumes: list[jobpulse.ResumeInfo] = []

    async def watch() -> None:
        async with jobpulse.AsyncClient(bouncer.address) as watcher:
            async for event in watcher.watch_job(
                job.id, on_reconnect=reconnects.append, on_resume=resumes.append
            ):
                events.append(event)

    task = asyncio.create_task(watch())
    await _until(lambda: events, "the snapshot")
    claims = await asyncio.to_thread(bouncer.claim_all)
    revision = await asyncio.to_thread(bouncer.progress, job.id, claims[0], 5)
    await _until(lambda: events[-1].revision == revision, f"revision {revision} at the watcher")

    await asyncio.to_thread(bouncer.down)
    await _until(lambda: len(reconnects) >= 2, "a second reconnect attempt")
    await asyncio.to_thread(bouncer.up)
    await _until(lambda: resumes, "the resume")
    await asyncio.to_thread(bouncer.finish, claims)
    await asyncio.wait_for(task, 30)

    _check_reconnects(reconnects, revision)
    [info] = resumes
    assert info.connected and info.after_revision == revision and info.attempts == len(reconnects)
    _check_gap_free(events)


def test_job_feed_reconnects_name_the_cursor_it_resumes_from(bouncer: Bouncer) -> None:
    events: list[job_service_pb2.WatchJobsResponse] = []
    reconnects: list[jobpulse.ReconnectInfo] = []
    resumes: list[jobpulse.ResumeInfo] = []
    later: list[str] = []  # the id of the job created while the feed was down

    def watch() -> None:
        with jobpulse.Client(bouncer.address) as watcher:
            for event in watcher.watch_jobs(
                kind=KIND, on_reconnect=reconnects.append, on_resume=resumes.append
            ):
                events.append(event)
                # Over every event so far: the later job's may arrive before its CreateJob returns (the
                # heartbeats keep coming, so this looks again).
                if later and any(j.id == later[0] for e in events for j in e.jobs):
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    eventually(lambda: events, what="the feed's first heartbeat")
    first = bouncer.create()
    eventually(lambda: any(j.id == first.id for e in events for j in e.jobs), what="the first job")

    bouncer.down()
    eventually(lambda: reconnects, what="a reconnect attempt")
    cursor = events[-1].cursor  # nothing more arrives while the server is down
    bouncer.up()
    # Created after the break, so only a feed resumed from the cursor (not from "now") can show it.
    later.append(bouncer.create().id)
    thread.join(30)
    assert not thread.is_alive()

    assert cursor and all(r.cursor == cursor and r.after_revision == 0 for r in reconnects)
    [info] = resumes
    assert info.connected and info.cursor == cursor and info.attempts == len(reconnects)


def test_a_watch_that_never_connects_reports_its_attempts_then_gives_up() -> None:
    reconnects: list[jobpulse.ReconnectInfo] = []
    resumes: list[jobpulse.ResumeInfo] = []
    with jobpulse.Client(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(Unavailable):
            for _ in client.watch_job(
                "nothing", connect_timeout=1.0, on_reconnect=reconnects.append, on_resume=resumes.append
            ):
                pass
    assert reconnects and not resumes
    assert [r.attempt for r in reconnects] == list(range(1, len(reconnects) + 1))
    assert not any(r.connected for r in reconnects)
    # Told only of attempts it then makes: none announced past the connect timeout.
    assert all(r.elapsed < 1.0 for r in reconnects)


def test_a_feed_that_never_connects_gives_up_after_its_connect_timeout() -> None:
    async def feed() -> None:
        async with jobpulse.AsyncClient(f"127.0.0.1:{free_port()}") as client:
            async for _ in client.watch_jobs(connect_timeout=1.0):
                pass

    started = time.monotonic()
    with jobpulse.Client(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(Unavailable):
            for _ in client.watch_jobs(connect_timeout=1.0):
                pass
    with pytest.raises(Unavailable):
        asyncio.run(feed())
    assert time.monotonic() - started < 20  # each gave up near its 1 s, not after reconnect_timeout (120 s)


# -- jobpulse watch, as a user runs it -----------------------------------------------------------------


class Lines:
    """Reads a pipe line by line in a thread."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for raw in pipe:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def join(self) -> list[str]:
        self._thread.join(10)
        return self.lines


@pytest.mark.parametrize("as_json", [False, True], ids=["plain", "json"])
def test_jobpulse_watch_says_it_reconnects_and_resumes_then_exits_0(bouncer: Bouncer, as_json: bool) -> None:
    job = bouncer.create()
    env = {**os.environ, "JOBPULSE_TARGET": bouncer.address}
    env.pop("JOBPULSE_API_KEY", None)
    argv = [JOBPULSE, "watch", job.id] + (["--json"] if as_json else [])
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        eventually(lambda: out.lines, what="the snapshot line")
        claims = bouncer.claim_all()
        revision = bouncer.progress(job.id, claims[0], 5)
        seen = (lambda line: json.loads(line)["revision"]) if as_json else (lambda line: line.split()[1])
        eventually(lambda: str(seen(out.lines[-1])) == str(revision), what=f"revision {revision} printed")

        bouncer.down()
        eventually(lambda: err.lines, what="the reconnect notice")
        bouncer.up()
        eventually(lambda: len(err.lines) >= 2, what="the resume notice")
        bouncer.finish(claims)
        assert proc.wait(30) == 0, err.lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stdout, stderr = out.join(), err.join()

    if as_json:
        messages = [json.loads(line) for line in stdout]  # stdout: watch messages only
        assert messages[-1]["job"]["state"] == "JOB_STATE_COMPLETED"
        lost, back = (json.loads(line) for line in stderr)
        assert lost["event"] == "reconnecting" and lost["attempt"] == 1
        assert (lost["code"], lost["target"]) == ("UNAVAILABLE", bouncer.address)
        assert lost["after_revision"] == revision
        assert back["event"] == "resumed" and back["after_revision"] == revision and back["attempts"] >= 1
        revisions = [int(m["revision"]) for m in messages if m.get("type") != "WATCH_EVENT_TYPE_HEARTBEAT"]
    else:
        assert stdout[-1] == f"job {job.id} COMPLETED"
        assert all(line.startswith("rev ") for line in stdout[:-1]), stdout
        assert len(stderr) == 2, stderr
        lost = rf"watch: connection to {re.escape(bouncer.address)} lost \(UNAVAILABLE( [A-Z_]+)?: .+\)"
        assert re.fullmatch(lost + "; reconnecting", stderr[0]), stderr[0]
        assert stderr[1] == f"watch: resumed after revision {revision}"
        revisions = [int(line.split()[1]) for line in stdout[:-1] if line.split()[2] != "heartbeat"]
    assert revisions == sorted(set(revisions)), revisions
    assert revision in revisions
