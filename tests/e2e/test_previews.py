"""Live previews: a running chunk's ReportChunkProgress carries artifacts (a preview, a thumbnail), each
replacing the chunk's earlier one of the same name; GetJob, WatchJob, the job's SSE stream and the
chunk's own listing show them while the chunk runs; the completion's artifact of that name replaces the
preview; the artifact URI rule holds; the SDK's ``task.preview`` sends one with the next heartbeat."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support.polling import eventually
from support.sse import read

import jobpulse
from jobpulse.v1 import job_pb2

ROLE = job_pb2.ArtifactRole


def _preview(name: str, uri: str, role: int = ROLE.ARTIFACT_ROLE_PREVIEW) -> dict[str, Any]:
    return {"name": name, "uri": uri, "media_type": "image/jpeg", "role": role}


def _running(client: jobpulse.Client, job_id: str) -> job_pb2.Chunk:
    [chunk] = [c for c in client.get_job(job_id).chunks if c.state == job_pb2.CHUNK_STATE_PROCESSING]
    return chunk


def test_a_preview_shows_while_the_chunk_runs_and_the_same_name_replaces_it(client: jobpulse.Client) -> None:
    job = client.create_job("previews", 2, chunk_size=1)
    [claim] = client.claim_chunks("w", kinds=["previews"])
    client.report_chunk_progress(
        claim.chunk.id,
        claim.lease_token,
        stage="rendering",
        artifacts=[_preview("frame", "https://cdn.example/f1.jpg"), _preview("thumb", "s3://b/t.jpg", 3)],
    )
    chunk = _running(client, job.id)
    assert [(a.name, a.uri, a.role) for a in chunk.artifacts] == [
        ("frame", "https://cdn.example/f1.jpg", ROLE.ARTIFACT_ROLE_PREVIEW),
        ("thumb", "s3://b/t.jpg", ROLE.ARTIFACT_ROLE_THUMBNAIL),
    ]
    assert chunk.stage == "rendering"
    # A later preview of the same name replaces it; the job's artifacts have it too.
    client.report_chunk_progress(
        claim.chunk.id, claim.lease_token, artifacts=[_preview("frame", "https://cdn.example/f2.jpg")]
    )
    chunk = _running(client, job.id)
    assert sorted((a.name, a.uri) for a in chunk.artifacts) == [
        ("frame", "https://cdn.example/f2.jpg"),
        ("thumb", "s3://b/t.jpg"),
    ]
    assert sorted(a.uri for a in client.get_job(job.id, view="basic").artifacts) == [
        "https://cdn.example/f2.jpg",
        "s3://b/t.jpg",
    ]
    # The completion's artifact of that name replaces the preview; other names stay.
    final = {"name": "frame", "uri": "https://cdn.example/final.jpg", "media_type": "image/jpeg"}
    client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=[final])
    done = client.get_job(job.id).chunks[claim.chunk.index]
    assert sorted((a.name, a.uri, a.role) for a in done.artifacts) == [
        ("frame", "https://cdn.example/final.jpg", ROLE.ARTIFACT_ROLE_UNSPECIFIED),
        ("thumb", "s3://b/t.jpg", ROLE.ARTIFACT_ROLE_THUMBNAIL),
    ]


def test_a_preview_reaches_watchers_and_the_sse_stream_while_the_chunk_runs(
    client: jobpulse.Client, server: Any
) -> None:
    job = client.create_job("previews-watched", 1)
    [claim] = client.claim_chunks("w", kinds=["previews-watched"])
    seen: list[job_pb2.Artifact] = []
    watching = threading.Event()

    def watch() -> None:
        with jobpulse.Client(server.address, timeout=20) as watcher:
            for msg in watcher.watch_job(job.id, timeout=20):
                watching.set()
                for c in msg.chunks:
                    if c.state == job_pb2.CHUNK_STATE_PROCESSING and c.artifacts:
                        seen.extend(c.artifacts)
                        return

    thread = threading.Thread(target=watch)
    thread.start()
    assert watching.wait(20)
    client.report_chunk_progress(
        claim.chunk.id, claim.lease_token, artifacts=[_preview("scene-1", "https://cdn.example/s1.mp4")]
    )
    thread.join(20)
    assert [(a.name, a.uri, a.role) for a in seen] == [
        ("scene-1", "https://cdn.example/s1.mp4", ROLE.ARTIFACT_ROLE_PREVIEW)
    ]
    # A browser's EventSource gets it in the snapshot (proto3 JSON).
    got = read(f"{server.app.http_url}/v1/jobs/{job.id}/events", until=lambda e, events: True)
    snapshot = got.events[0].json
    [chunk] = snapshot["chunks"]
    assert chunk["state"] == "CHUNK_STATE_PROCESSING"
    assert chunk["artifacts"] == [
        {
            "name": "scene-1",
            "uri": "https://cdn.example/s1.mp4",
            "mediaType": "image/jpeg",
            "role": "ARTIFACT_ROLE_PREVIEW",
        }
    ]


def test_a_preview_s_uri_must_be_absolute_of_an_allowed_scheme(client: jobpulse.Client) -> None:
    client.create_job("previews-bad", 1)
    [claim] = client.claim_chunks("w", kinds=["previews-bad"])
    with pytest.raises(jobpulse.errors.InvalidArgument) as caught:
        client.report_chunk_progress(
            claim.chunk.id, claim.lease_token, artifacts=[_preview("frame", "/tmp/frame.jpg")]
        )
    assert [f for f, _ in caught.value.field_violations] == ["artifacts[0].uri"]
    assert "/tmp/frame.jpg" not in str(caught.value)


def test_the_worker_s_task_preview_goes_with_the_next_heartbeat(server: Any) -> None:
    shown = threading.Event()

    def handle(task: jobpulse.Task) -> None:
        task.preview("first-scene", "https://cdn.example/first.jpg", "image/jpeg")
        assert shown.wait(20), "the preview never showed"

    with jobpulse.Client(server.address, timeout=20) as client:
        job = client.create_job("previews-sdk", 1)
        worker = jobpulse.Worker(client, kinds=["previews-sdk"], poll_wait=0.2, progress_interval=0.01)
        runner = threading.Thread(target=worker.run, args=(handle,), kwargs={"max_chunks": 1})
        runner.start()
        try:
            chunk = eventually(
                lambda: next(
                    (
                        c
                        for c in client.get_job(job.id).chunks
                        if c.artifacts and c.state == job_pb2.CHUNK_STATE_PROCESSING
                    ),
                    None,
                ),
                timeout=20,
                what="the preview on the running chunk",
            )
            assert [(a.name, a.role) for a in chunk.artifacts] == [
                ("first-scene", ROLE.ARTIFACT_ROLE_PREVIEW)
            ]
        finally:
            shown.set()
            runner.join(20)
        assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED


def test_a_report_with_too_many_artifacts_is_refused(client: jobpulse.Client) -> None:
    client.create_job("previews-many", 1)
    [claim] = client.claim_chunks("w", kinds=["previews-many"])
    many = [_preview(f"p{i}", f"https://cdn.example/{i}.jpg") for i in range(101)]
    with pytest.raises(jobpulse.errors.InvalidArgument) as caught:
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, artifacts=many)
    assert [f for f, _ in caught.value.field_violations] == ["artifacts"]
