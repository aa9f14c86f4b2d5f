"""Why a chunk failed, beyond its reason: ChunkError.details. The SDK's Worker sends a raising handler's
formatted traceback, ``task.fail`` sends the handler's own words, FailChunk keeps at most 8 KiB (the start
and the end of a longer one), on the batched path (a retry) and the transaction path (failed for good)
alike, and the dashboard's chunk page shows it folded."""

from __future__ import annotations

import threading
from typing import Any

import httpx

import jobpulse
from jobpulse.v1 import job_pb2


def _run(client: jobpulse.Client, kind: str, handler: Any, chunks: int) -> None:
    stop = threading.Event()
    worker = jobpulse.Worker(client, kinds=[kind], concurrency=1, poll_wait=0.2)
    worker.run(handler, stop_event=stop, max_chunks=chunks)


def _chunk(client: jobpulse.Client, job_id: str, index: int = 0) -> job_pb2.Chunk:
    return client.get_job(job_id, view="full").chunks[index]


def test_a_raising_handler_sends_its_traceback_on_every_attempt(client: jobpulse.Client) -> None:
    job = client.create_job("details-raise", 1, max_attempts=2)

    def decode_frame(task: jobpulse.Task) -> None:
        raise ValueError(f"frame {task.chunk.index} is truncated")

    _run(client, "details-raise", decode_frame, 1)  # the first attempt: retried (the batched path)
    retried = _chunk(client, job.id)
    assert retried.state == job_pb2.CHUNK_STATE_PENDING
    assert retried.error.reason == "ValueError" and retried.error.message == "frame 0 is truncated"
    details = retried.error.details
    assert details.startswith("Traceback (most recent call last):"), details
    assert "in decode_frame" in details and details.rstrip().endswith("ValueError: frame 0 is truncated")

    _run(client, "details-raise", decode_frame, 1)  # the last attempt: failed for good
    failed = client.get_job(job.id, view="full")
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert "in decode_frame" in failed.chunks[0].error.details


def test_task_fail_reports_the_handlers_own_words(client: jobpulse.Client) -> None:
    job = client.create_job("details-fail", 1, max_attempts=3)

    def check(task: jobpulse.Task) -> None:
        task.fail("BAD_INPUT", "page 3 is blank", details="pages: 1 ok, 2 ok, 3 blank", retryable=False)

    _run(client, "details-fail", check, 1)
    failed = client.get_job(job.id, view="full")
    assert failed.state == job_pb2.JOB_STATE_FAILED, "retryable=False: no more attempts"
    error = failed.chunks[0].error
    assert (error.reason, error.message, error.details) == (
        "BAD_INPUT",
        "page 3 is blank",
        "pages: 1 ok, 2 ok, 3 blank",
    )


def test_details_longer_than_8_kib_keep_their_start_and_end(client: jobpulse.Client) -> None:
    client.create_job("details-long", 2, chunk_size=1, max_attempts=1)
    long = "START " + "é" * 10_000 + " END"  # 20,010 bytes of UTF-8
    for claim in client.claim_chunks("w", kinds=["details-long"], max_chunks=2):
        client.fail_chunk(claim.chunk.id, claim.lease_token, "E", "long", retryable=False, details=long)
    [job] = client.list_jobs(kind="details-long")
    for chunk in client.get_job(job.id, view="full").chunks:
        kept = chunk.error.details
        assert len(kept.encode()) <= 8192 and kept.startswith("START éé") and kept.endswith("éé END")
        assert "bytes cut" in kept


def test_the_chunk_page_shows_the_details_folded(server: Any, client: jobpulse.Client) -> None:
    job = client.create_job("details-page", 1, max_attempts=1)
    [claim] = client.claim_chunks("w", kinds=["details-page"])
    client.fail_chunk(
        claim.chunk.id, claim.lease_token, "E", "bad", retryable=False, details="line 1\n<b>line 2</b>"
    )
    page = httpx.get(f"{server.app.http_url}/jobs/{job.id}/chunks/0", timeout=20).text
    assert '<details class="error-details" data-testid="error-details">' in page
    assert "line 1\n&lt;b&gt;line 2&lt;/b&gt;" in page, "shown as text, escaped"


def test_the_chunk_page_lists_its_attempts_newest_first(server: Any, client: jobpulse.Client) -> None:
    job = client.create_job("details-history", 1, max_attempts=3)
    for n in (1, 2):
        [claim] = client.claim_chunks(f"w{n}", kinds=["details-history"], wait=10)
        client.fail_chunk(claim.chunk.id, claim.lease_token, f"E{n}", "bad", details=f"trace {n}")
    [claim] = client.claim_chunks("w3", kinds=["details-history"], wait=10)
    client.complete_chunk(claim.chunk.id, claim.lease_token)
    page = httpx.get(f"{server.app.http_url}/jobs/{job.id}/chunks/0", timeout=20).text
    table = page[page.index('data-testid="attempt-history"') :]
    rows = table[: table.index("</table>")].split('<tr data-attempt="')[1:]
    assert [r.split('"', 1)[0] for r in rows] == ["3", "2", "1"], "newest first"
    assert "completed" in rows[0] and "<code>w3</code>" in rows[0] and "E2" not in rows[0]
    assert "<strong>E1</strong>" in rows[2] and "trace 1" in rows[2]


def test_a_chunk_keeps_its_own_stage_and_message(server: Any, client: jobpulse.Client) -> None:
    job = client.create_job("chunk-stage", 2, chunk_size=1)
    first, second = client.claim_chunks("w", kinds=["chunk-stage"], max_chunks=2)
    client.report_chunk_progress(first.chunk.id, first.lease_token, 0, stage="decode", message="frame 3")
    client.report_chunk_progress(second.chunk.id, second.lease_token, 0, stage="encode")
    client.report_chunk_progress(first.chunk.id, first.lease_token, 1)  # no stage: the chunk keeps its own
    got = client.get_job(job.id, view="full")
    by_index = {c.index: c for c in got.chunks}
    assert (by_index[first.chunk.index].stage, by_index[first.chunk.index].message) == ("decode", "frame 3")
    assert (by_index[second.chunk.index].stage, by_index[second.chunk.index].message) == ("encode", "")
    assert got.stage == "encode", "the job's stage is the last report of any of its chunks"
    page = httpx.get(f"{server.app.http_url}/jobs/{job.id}/chunks/{first.chunk.index}", timeout=20).text
    assert 'data-testid="chunk-stage">decode: frame 3<' in page
