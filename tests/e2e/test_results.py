"""A finished job's results (its artifacts) wherever a caller learns that it finished: GetJob in
either view, BatchGetJobs, ListJobs, the terminal WatchJob message, SDK wait() (sync and async), the
WatchJobs feed, the steering RPCs' answers and the job.completed webhook."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook
from support.receiver import Receiver

import jobpulse
from jobpulse.v1 import job_pb2, job_service_pb2

SECRET = "whsec_dGhlIHJlc3VsdHMgdGVzdCBzZWNyZXQ="
TERMINAL = job_service_pb2.WATCH_EVENT_TYPE_CHANGE


def _artifact(index: int, n: int) -> dict[str, Any]:
    return {"name": f"part-{index}-{n}.png", "uri": f"s3://out/{index}/{n}.png", "media_type": "image/png"}


def _finish(client: jobpulse.Client, kind: str, per_chunk: int = 2) -> None:
    """Completes every chunk of ``kind``, each with ``per_chunk`` artifacts."""
    while claims := client.claim_chunks("w", kinds=[kind], max_chunks=10):
        for claim in claims:
            idx = claim.chunk.index
            client.complete_chunk(
                claim.chunk.id, claim.lease_token, artifacts=[_artifact(idx, n) for n in range(per_chunk)]
            )


def _uris(job: job_pb2.Job) -> list[str]:
    return [a.uri for a in job.artifacts]


def _expected(chunks: int, per_chunk: int = 2) -> list[str]:
    return [f"s3://out/{i}/{n}.png" for i in range(chunks) for n in range(per_chunk)]


def test_get_batch_get_and_list_carry_the_jobs_artifacts_in_basic_view(client: jobpulse.Client) -> None:
    job = client.create_job("results-basic", 3, chunk_size=1)
    fresh = client.get_job(job.id, view="basic")
    assert list(fresh.artifacts) == [], "a job with no completed chunk has no artifacts"
    _finish(client, "results-basic")
    want = _expected(3)
    basic = client.get_job(job.id, view="basic")
    assert basic.state == job_pb2.JOB_STATE_COMPLETED
    assert _uris(basic) == want, "BASIC carries the job-level artifacts in chunk order"
    assert [a.chunk_index for a in basic.artifacts] == [0, 0, 1, 1, 2, 2]
    assert list(basic.chunks) == [], "BASIC still leaves the chunks out"
    assert _uris(client.get_job(job.id, view="full")) == want
    # A second read is served from the encoded-job cache: it must carry them too.
    assert _uris(client.get_job(job.id, view="basic")) == want
    assert [_uris(j) for j in client.batch_get_jobs([job.id], view="basic")] == [want]
    listed = [j for j in client.list_jobs(kind="results-basic")]
    assert [_uris(j) for j in listed] == [want]
    assert [_uris(j) for j in client.list_jobs(kind="results-basic")] == [want]  # cached encoding
    assert _uris(client.update_job(job.id, display_name="renamed")) == want


def test_artifacts_of_a_job_in_progress_grow_with_its_completed_chunks(client: jobpulse.Client) -> None:
    job = client.create_job("results-partial", 3, chunk_size=1)
    claim = client.claim_chunks("w", kinds=["results-partial"], max_chunks=1)[0]
    client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=[_artifact(claim.chunk.index, 0)])
    got = client.get_job(job.id, view="basic")
    assert got.state == job_pb2.JOB_STATE_PROCESSING
    assert _uris(got) == [f"s3://out/{claim.chunk.index}/0.png"]
    cancelled = client.cancel_job(job.id, reason="enough")
    assert _uris(cancelled) == [f"s3://out/{claim.chunk.index}/0.png"], "CancelJob's answer shows them"


def test_the_terminal_watch_message_and_wait_carry_the_artifacts(client: jobpulse.Client) -> None:
    job = client.create_job("results-watch", 2, chunk_size=1)
    done = threading.Event()
    box: dict[str, Any] = {}

    def waiter() -> None:
        try:
            box["job"] = client.wait(job.id, timeout=30)
        finally:
            done.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    _finish(client, "results-watch")
    assert done.wait(30), "wait() did not return"
    thread.join()
    assert box["job"].state == job_pb2.JOB_STATE_COMPLETED
    assert _uris(box["job"]) == _expected(2), "wait() returns the results without a second call"
    # A watcher that comes after the end gets one terminal message with them.
    last = list(client.watch_job(job.id, timeout=30))[-1]
    assert last.job.state == job_pb2.JOB_STATE_COMPLETED
    assert _uris(last.job) == _expected(2)
    # So does one resuming from an earlier revision (a CHANGE that reaches the terminal state).
    resumed = list(client.watch_job(job.id, after_revision=1, timeout=30))
    assert resumed[-1].type == TERMINAL and _uris(resumed[-1].job) == _expected(2)


def test_async_wait_carries_the_artifacts(server: Any) -> None:
    async def run() -> job_pb2.Job:
        async with jobpulse.AsyncClient(server.address) as aclient:
            job = await aclient.create_job("results-async", 2, chunk_size=1)
            waiting = asyncio.ensure_future(aclient.wait(job.id, timeout=30))
            with jobpulse.Client(server.address) as client:
                await asyncio.to_thread(_finish, client, "results-async")
            return await waiting

    got = asyncio.run(run())
    assert got.state == job_pb2.JOB_STATE_COMPLETED and _uris(got) == _expected(2)


def test_the_feed_reports_a_finished_job_with_its_artifacts(client: jobpulse.Client) -> None:
    start = client.list_jobs_page(kind="results-feed").watch_cursor
    job = client.create_job("results-feed", 2, chunk_size=1)
    _finish(client, "results-feed")
    deadline = time.monotonic() + 20
    for msg in client.watch_jobs(cursor=start, kind="results-feed", timeout=30):
        finished = [j for j in msg.jobs if j.id == job.id and j.state == job_pb2.JOB_STATE_COMPLETED]
        if finished:
            assert _uris(finished[0]) == _expected(2)
            break
        assert time.monotonic() < deadline, "the feed did not report the finished job"


def test_only_the_first_thousand_artifacts_ride_on_the_job(client: jobpulse.Client) -> None:
    job = client.create_job("results-many", 11, chunk_size=1)
    _finish(client, "results-many", per_chunk=100)  # 1,100 artifacts
    basic = client.get_job(job.id, view="basic")
    assert len(basic.artifacts) == 1000
    assert _uris(basic) == _expected(11, per_chunk=100)[:1000]
    last_chunk = list(client.list_job_chunks(job.id))[-1]
    assert len(last_chunk.artifacts) == 100, "every chunk's own artifacts stay in ListJobChunks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_the_completion_webhook_carries_the_artifacts(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(webhook_secret=SECRET)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("results-hook", 3, chunk_size=1, webhook_url=receiver.url)
        # Two chunks complete in one CompleteChunks call: the last one's artifacts are written in
        # the same transaction as the event, and must be in it too.
        first = client.claim_chunks("w", kinds=["results-hook"], max_chunks=1)[0]
        client.complete_chunk(first.chunk.id, first.lease_token, artifacts=[_artifact(first.chunk.index, 0)])
        rest = client.claim_chunks("w", kinds=["results-hook"], max_chunks=2)
        client.complete_chunks(
            [
                {
                    "chunk_id": c.chunk.id,
                    "lease_token": c.lease_token,
                    "artifacts": [_artifact(c.chunk.index, 0)],
                }
                for c in rest
            ]
        )
        post = receiver.wait_for(1)[0]
    # Verified as a receiver would (Standard Webhooks), then read.
    body = dict(Webhook(SECRET).verify(post["body"], post["headers"]))
    assert body["type"] == "job.completed" and body["job"]["id"] == job.id
    assert [a["uri"] for a in body["job"]["artifacts"]] == [f"s3://out/{i}/0.png" for i in range(3)]


# --- the artifact URI rule ---------------------------------------------------------------------------

NOT_URIS = [
    "/tmp/render/0.png",  # a path on the worker's disk
    "C:\\out\\0.png",  # a Windows path: "C" is a drive, not a scheme
    "file:///tmp/render/0.png",  # a scheme the default setting leaves out
    "render/0.png",
    "https://",  # no host
    "s3:///key-without-bucket",
    "https://cdn.example.com/a b.png",  # a space: percent-encode it
]


@pytest.mark.parametrize("uri", NOT_URIS)
def test_an_artifact_uri_must_be_absolute_and_of_an_allowed_scheme(client: jobpulse.Client, uri: str) -> None:
    job = client.create_job("uri-rule", 1)
    [claim] = client.claim_chunks("w", kinds=["uri-rule"])
    artifacts = [{"name": "ok.png", "uri": "s3://out/ok.png"}, {"name": "bad.png", "uri": uri}]
    with pytest.raises(jobpulse.errors.InvalidArgument) as info:
        client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=artifacts)
    [(field, _)] = info.value.field_violations
    assert field == "artifacts[1].uri"
    assert uri not in str(info.value), "the refusal repeats no path of the worker's disk"
    with pytest.raises(jobpulse.errors.InvalidArgument) as info:
        client.complete_chunks(
            [{"chunk_id": claim.chunk.id, "lease_token": claim.lease_token, "artifacts": artifacts}]
        )
    assert [f for f, _ in info.value.field_violations] == ["completions[0].artifacts[1].uri"]
    # Nothing was written: the chunk still runs under its lease, and completes with good artifacts.
    done = client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=artifacts[:1])
    assert done.job_state == job_pb2.JOB_STATE_COMPLETED
    assert _uris(client.get_job(job.id)) == ["s3://out/ok.png"]


def test_the_allowed_schemes_are_a_setting(make_server: Any) -> None:
    srv = make_server(artifact_uri_schemes="s3, Mem")
    with jobpulse.Client(srv.address, timeout=20) as client:
        client.create_job("uri-schemes", 2, chunk_size=1)
        first, second = client.claim_chunks("w", kinds=["uri-schemes"], max_chunks=2)
        client.complete_chunk(
            first.chunk.id, first.lease_token, artifacts=[{"name": "a", "uri": "mem:scratch/0"}]
        )
        with pytest.raises(jobpulse.errors.InvalidArgument) as info:
            client.complete_chunk(
                second.chunk.id,
                second.lease_token,
                artifacts=[{"name": "b", "uri": "https://cdn.example.com/b"}],
            )
        assert "'https' is not allowed" in str(info.value) and "mem, s3" in str(info.value)


def test_a_bad_scheme_in_the_setting_stops_the_server_at_start() -> None:
    from jobpulse_server.platform.config import Config

    with pytest.raises(ValueError, match="JOBPULSE_ARTIFACT_URI_SCHEMES: '3d' is not a URI scheme"):
        Config(artifact_uri_schemes="https,3d")
