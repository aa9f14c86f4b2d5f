"""End-to-end: creating, reading and steering jobs (CreateJob, GetJob, BatchGetJobs, CancelJob, RetryJob,
UpdateJob, DeleteJob, GetJobStats) through the sync SDK against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from support.e2e import assert_summary_matches, chunks_by_index, claim_one, recount, run_all, summary_dict

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2

UNKNOWN = "01NOSUCHJOB0000000000000000"

# --- CreateJob ---------------------------------------------------------------------------------------


def test_create_splits_items_into_chunks(client: jobpulse.Client) -> None:
    job = client.create_job("thumbnails", 2500, chunk_size=500, display_name="Holiday photos")

    assert job.id
    assert job.state == job_pb2.JOB_STATE_PENDING
    assert [c.index for c in job.chunks] == [0, 1, 2, 3, 4]
    assert [c.item_start for c in job.chunks] == [0, 500, 1000, 1500, 2000]
    assert [c.item_count for c in job.chunks] == [500] * 5
    assert all(c.state == job_pb2.CHUNK_STATE_PENDING and c.attempt == 0 for c in job.chunks)
    assert summary_dict(job.chunks_summary) == {
        "total": 5,
        "pending": 5,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert job.progress.items_total == 2500
    assert job.progress.items_done == 0
    assert job.progress.percent == 0
    assert job.revision >= 1
    assert job.HasField("create_time")
    assert not job.HasField("end_time")
    assert_summary_matches(client, job.id)


def test_create_uses_documented_defaults(client: jobpulse.Client) -> None:
    job = client.create_job("transcode", 1200)

    assert job.chunk_size == 500
    assert job.max_attempts == 3
    assert job.priority == 5
    assert len(job.chunks) == 3
    assert all(c.max_attempts == 3 for c in job.chunks)
    fetched = client.get_job(job.id)
    assert (fetched.chunk_size, fetched.max_attempts, fetched.priority) == (500, 3, 5)


def test_create_last_chunk_is_partial(client: jobpulse.Client) -> None:
    job = client.create_job("transcode", 1001, chunk_size=500)

    assert [(c.item_start, c.item_count) for c in job.chunks] == [(0, 500), (500, 500), (1000, 1)]
    assert job.chunks_summary.total == 3
    assert sum(c.item_count for c in client.list_job_chunks(job.id)) == 1001


def test_labels_and_metadata_round_trip(client: jobpulse.Client) -> None:
    labels = {"team": "media", "env": "prod"}
    metadata = {"bucket": "s3://photos", "width": 320, "formats": ["jpg", "webp"], "opts": {"crop": True}}
    created = client.create_job(
        "thumbnails", 10, chunk_size=5, labels=labels, metadata=metadata, display_name="Round trip"
    )

    for job in (created, client.get_job(created.id), client.get_job(created.id, view="basic")):
        assert dict(job.labels) == labels
        assert MessageToDict(job.metadata) == metadata
        assert job.display_name == "Round trip"
        assert job.kind == "thumbnails"

    claim = claim_one(client, "thumbnails")
    assert claim.job_id == created.id
    assert claim.job_kind == "thumbnails"
    assert MessageToDict(claim.job_metadata) == metadata


def test_same_request_id_returns_the_first_job_and_creates_nothing(client: jobpulse.Client) -> None:
    first = client.create_job("import", 1000, request_id="req-42", display_name="first")
    assert client.list_jobs_page().total_size == 1

    again = client.create_job("import", 1000, request_id="req-42", display_name="first")

    assert again.id == first.id
    assert client.list_jobs_page().total_size == 1
    other = client.create_job("import", 1000, request_id="req-43")
    assert other.id != first.id
    assert client.list_jobs_page().total_size == 2


@pytest.mark.parametrize(
    "change",
    [
        {"total_items": 7},
        {"display_name": "other"},
        {"priority": 9},
        {"labels": {"team": "b"}},
        {"metadata": {"source": "elsewhere"}},
        {"kind": "export"},
    ],
)
def test_same_request_id_with_another_request_is_refused_naming_request_id(
    client: jobpulse.Client, change: dict[str, Any]
) -> None:
    asked: dict[str, Any] = {
        "kind": "import",
        "total_items": 1000,
        "display_name": "first",
        "labels": {"team": "a"},
        "metadata": {"source": "s3"},
    }
    first = client.create_job(request_id="req-7", **asked)
    # Changing the job afterwards does not matter: the first request is what counts.
    client.update_job(first.id, priority=2, labels={"team": "c"})
    assert client.create_job(request_id="req-7", **asked).id == first.id

    with pytest.raises(errors.InvalidArgument) as refused:
        client.create_job(request_id="req-7", **{**asked, **change})

    assert [field for field, _ in refused.value.field_violations] == ["request_id"]
    assert first.id in refused.value.field_violations[0][1]
    assert client.list_jobs_page().total_size == 1


async def test_concurrent_creates_with_one_request_id_make_one_job(server: Any) -> None:
    async with jobpulse.AsyncClient(server.address, timeout=30.0) as aclient:
        made = await asyncio.gather(
            *(aclient.create_job("race", 40, chunk_size=4, request_id="same-request") for _ in range(24))
        )
        assert {job.id for job in made} == {made[0].id}
        assert all(job.chunks_summary.total == 10 for job in made)
        assert (await aclient.list_jobs_page()).total_size == 1


BAD_CREATES: list[tuple[dict[str, Any], set[str]]] = [
    ({"total_items": 0}, {"total_items"}),
    ({"total_items": -5}, {"total_items"}),
    ({"total_items": 10, "chunk_size": -1}, {"chunk_size"}),
    ({"total_items": 10, "priority": 11}, {"priority"}),
    ({"total_items": 10, "priority": -1}, {"priority"}),
    ({"total_items": 10**9, "chunk_size": 1}, {"total_items", "chunk_size"}),
    ({"total_items": 10, "display_name": "x" * 257}, {"display_name"}),
    ({"total_items": 10, "max_attempts": -1}, {"max_attempts"}),
]


def test_create_rejects_bad_input_naming_the_field_and_creates_nothing(client: jobpulse.Client) -> None:
    client.create_job("existing", 10)

    for kwargs, fields in BAD_CREATES:
        args = dict(kwargs)
        total_items = args.pop("total_items")
        with pytest.raises(errors.InvalidArgument) as info:
            client.create_job(
                "thumbnails", total_items, request_id=f"bad-{len(fields)}-{total_items}", **args
            )
        err = info.value
        case = f"{kwargs!r:.80}"
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, case
        named = {field for field, _ in err.field_violations}
        assert named & fields, (
            f"{case}: expected a violation naming one of {fields}, got {err.field_violations}"
        )
        assert client.list_jobs_page().total_size == 1, f"{case}: a rejected CreateJob created a job"

    assert client.list_jobs_page(kind="thumbnails").total_size == 0
    longest = client.create_job("k", 1, display_name="n" * 256)
    assert client.get_job(longest.id).display_name == "n" * 256


# --- GetJob ------------------------------------------------------------------------------------------


def test_get_job_views(client: jobpulse.Client) -> None:
    created = client.create_job("k", 2500, chunk_size=500)

    full = client.get_job(created.id, view="full")
    basic = client.get_job(created.id, view="basic")
    unspecified = client.get_job(created.id, view=job_pb2.JOB_VIEW_UNSPECIFIED)

    assert [c.index for c in full.chunks] == [0, 1, 2, 3, 4]
    assert [c.index for c in unspecified.chunks] == [0, 1, 2, 3, 4]
    assert len(basic.chunks) == 0
    for job in (full, basic, unspecified):
        assert job.HasField("chunks_summary")
        s = job.chunks_summary
        assert s.total == 5
        assert s.pending + s.processing + s.completed + s.failed + s.cancelled == s.total
        assert job.progress.items_total == 2500
        assert job.chunks_next_page_token == ""


def test_full_view_inlines_1000_chunks_and_continues_in_list_job_chunks(
    client: jobpulse.Client, job_stub: Any
) -> None:
    created = client.create_job("big", 1500, chunk_size=1)
    assert len(created.chunks) == 1000
    assert created.chunks_next_page_token

    job = client.get_job(created.id, view="full")
    assert len(job.chunks) == 1000
    assert [c.index for c in job.chunks] == list(range(1000))
    assert job.chunks_summary.total == 1500
    assert job.chunks_next_page_token

    rest = list(client.list_job_chunks(job.id, page_size=1000, page_token=job.chunks_next_page_token))
    assert [c.index for c in rest] == list(range(1000, 1500))

    capped = job_stub.ListJobChunks(job_service_pb2.ListJobChunksRequest(job_id=job.id, page_size=5000))
    assert len(capped.chunks) == 1000
    assert capped.next_page_token
    page = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(
            job_id=job.id, page_size=1000, page_token=job.chunks_next_page_token
        )
    )
    assert page.chunks[0].index == 1000
    assert len(page.chunks) == 500
    assert page.next_page_token == ""
    assert page.total_size == 1500


def test_unknown_job_is_not_found_everywhere(client: jobpulse.Client) -> None:
    client.create_job("k", 1)
    calls = {
        "GetJob": lambda: client.get_job(UNKNOWN),
        "ListJobChunks": lambda: list(client.list_job_chunks(UNKNOWN)),
        "CancelJob": lambda: client.cancel_job(UNKNOWN),
        "RetryJob": lambda: client.retry_job(UNKNOWN),
        "UpdateJob": lambda: client.update_job(UNKNOWN, priority=1),
        "DeleteJob": lambda: client.delete_job(UNKNOWN),
        "DeleteJob(force)": lambda: client.delete_job(UNKNOWN, force=True),
        "WatchJob": lambda: next(client.watch_job(UNKNOWN, timeout=10)),
        "wait": lambda: client.wait(UNKNOWN, timeout=5),
    }
    for name, call in calls.items():
        with pytest.raises(errors.NotFound) as info:
            call()
        assert info.value.reason == "JOB_NOT_FOUND", name
        assert info.value.code == grpc.StatusCode.NOT_FOUND, name
    assert client.list_jobs_page().total_size == 1


# --- BatchGetJobs ------------------------------------------------------------------------------------


def test_batch_get_keeps_request_order(client: jobpulse.Client) -> None:
    a, b, c = (client.create_job("k", 3, chunk_size=1, display_name=n) for n in "abc")

    jobs = client.batch_get_jobs([c.id, a.id, b.id])
    assert [j.id for j in jobs] == [c.id, a.id, b.id]
    assert [j.display_name for j in jobs] == ["c", "a", "b"]
    assert all(len(j.chunks) == 3 for j in jobs)

    basic = client.batch_get_jobs([b.id, a.id], view="basic")
    assert [j.id for j in basic] == [b.id, a.id]
    assert all(len(j.chunks) == 0 and j.chunks_summary.total == 3 for j in basic)


def test_batch_get_rejects_more_than_100_ids_and_missing_ones(client: jobpulse.Client) -> None:
    job = client.create_job("k", 1)
    with pytest.raises(errors.InvalidArgument) as info:
        client.batch_get_jobs([job.id] * 101)
    assert "job_ids" in {field for field, _ in info.value.field_violations}
    assert len(client.batch_get_jobs([job.id] * 100, view="basic")) == 100

    with pytest.raises(errors.NotFound) as missing:
        client.batch_get_jobs([job.id, UNKNOWN])
    assert missing.value.reason == "JOB_NOT_FOUND"


# --- CancelJob ---------------------------------------------------------------------------------------


def test_cancel_pending_job_is_immediate(client: jobpulse.Client) -> None:
    job = client.create_job("k", 4, chunk_size=1)

    cancelled = client.cancel_job(job.id, reason="changed my mind")

    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert cancelled.cancel_reason == "changed my mind"
    fetched = client.get_job(job.id)
    assert fetched.state == job_pb2.JOB_STATE_CANCELLED
    assert fetched.cancel_reason == "changed my mind"
    assert fetched.HasField("end_time")
    assert [c.state for c in fetched.chunks] == [job_pb2.CHUNK_STATE_CANCELLED] * 4
    assert fetched.chunks_summary.cancelled == 4
    assert client.claim_chunks("w1", kinds=["k"]) == []
    assert_summary_matches(client, job.id)


def test_cancel_running_job_waits_for_its_worker(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    claim = claim_one(client, "k")
    assert claim.chunk.index == 0

    cancelling = client.cancel_job(job.id, reason="stop it")

    assert cancelling.state == job_pb2.JOB_STATE_CANCELLING
    chunks = chunks_by_index(client, job.id)
    assert chunks[0].state == job_pb2.CHUNK_STATE_PROCESSING
    assert chunks[1].state == chunks[2].state == job_pb2.CHUNK_STATE_CANCELLED
    assert_summary_matches(client, job.id)

    heartbeat = client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=0)
    assert heartbeat.cancel_requested is True

    done = client.complete_chunk(claim.chunk.id, claim.lease_token)
    assert done.job_state == job_pb2.JOB_STATE_CANCELLED

    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert final.cancel_reason == "stop it"
    assert [c.state for c in final.chunks] == [job_pb2.CHUNK_STATE_CANCELLED] * 3
    assert_summary_matches(client, job.id)


def test_chunks_that_stop_after_a_cancel_end_cancelled_whatever_the_worker_reports(
    client: jobpulse.Client,
) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    claims = {c.chunk.index: c for c in client.claim_chunks("w1", kinds=["k"], max_chunks=2)}
    client.cancel_job(job.id, reason="halt")

    assert client.complete_chunk(claims[0].chunk.id, claims[0].lease_token).job_state == (
        job_pb2.JOB_STATE_CANCELLING
    )
    outcome = client.fail_chunk(claims[1].chunk.id, claims[1].lease_token, "BROKEN", "", retryable=True)

    assert outcome.will_retry is False
    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert [c.state for c in final.chunks] == [job_pb2.CHUNK_STATE_CANCELLED] * 2
    assert final.artifacts == []
    assert_summary_matches(client, job.id)


def test_cancelling_a_cancelled_job_is_ok(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    first = client.cancel_job(job.id, reason="once")
    revision = first.revision

    again = client.cancel_job(job.id, reason="twice")

    assert again.state == job_pb2.JOB_STATE_CANCELLED
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_CANCELLED
    assert client.get_job(job.id).cancel_reason == "once"
    assert client.get_job(job.id).revision == revision


def test_cancel_completed_or_failed_job_is_failed_precondition(client: jobpulse.Client) -> None:
    done = client.create_job("done", 1)
    run_all(client, "done")
    failed = client.create_job("bad", 1)
    claim = claim_one(client, "bad")
    client.fail_chunk(claim.chunk.id, claim.lease_token, "BROKEN", "no", retryable=False)

    for job_id, state in ((done.id, job_pb2.JOB_STATE_COMPLETED), (failed.id, job_pb2.JOB_STATE_FAILED)):
        before = client.get_job(job_id)
        assert before.state == state
        with pytest.raises(errors.FailedPrecondition) as info:
            client.cancel_job(job_id, reason="too late")
        assert info.value.reason == "JOB_ALREADY_TERMINAL"
        after = client.get_job(job_id)
        assert after.state == state
        assert after.revision == before.revision
        assert after.cancel_reason == ""


# --- RetryJob ----------------------------------------------------------------------------------------


def test_retry_failed_job_runs_it_to_completion(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    claims = client.claim_chunks("w1", kinds=["k"], max_chunks=3)
    by_index = {c.chunk.index: c for c in claims}
    client.complete_chunk(by_index[0].chunk.id, by_index[0].lease_token)
    client.complete_chunk(by_index[2].chunk.id, by_index[2].lease_token)
    client.fail_chunk(by_index[1].chunk.id, by_index[1].lease_token, "CORRUPT", "bad frame", retryable=False)

    failed = client.get_job(job.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert failed.error.chunk_index == 1
    assert failed.chunks[1].state == job_pb2.CHUNK_STATE_FAILED

    retried = client.retry_job(job.id)

    assert retried.state != job_pb2.JOB_STATE_FAILED
    assert retried.state in (job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_PROCESSING)
    chunks = chunks_by_index(client, job.id)
    assert chunks[1].state == job_pb2.CHUNK_STATE_PENDING
    # The retry count is kept: one claim so far, and the job's max_attempts (3) more allowed.
    assert (chunks[1].attempt, chunks[1].max_attempts) == (1, 4)
    assert chunks[0].state == chunks[2].state == job_pb2.CHUNK_STATE_COMPLETED
    assert client.get_job(job.id).chunks_summary.failed == 0
    assert_summary_matches(client, job.id)

    again = claim_one(client, "k")
    assert again.chunk.index == 1
    assert again.chunk.attempt == 2
    result = client.complete_chunk(again.chunk.id, again.lease_token)
    assert result.job_state == job_pb2.JOB_STATE_COMPLETED
    final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_COMPLETED
    assert final.progress.percent == 100
    assert_summary_matches(client, job.id)


def test_retry_cancelled_job_puts_cancelled_chunks_back(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1)
    client.cancel_job(job.id)

    retried = client.retry_job(job.id)

    assert retried.state == job_pb2.JOB_STATE_PENDING
    assert retried.cancel_reason == ""
    assert [c.state for c in client.list_job_chunks(job.id)] == [job_pb2.CHUNK_STATE_PENDING] * 2
    assert run_all(client, "k") == 2
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED


def test_a_retried_job_runs_at_the_priority_it_was_given_while_finished(client: jobpulse.Client) -> None:
    # Both at priority 5; the earlier job wins a tie. The later one is cancelled, raised to 9 while
    # CANCELLED, then retried: its chunks come back at 9 and are claimed first.
    earlier = client.create_job("prio-retry", 1, priority=5)
    later = client.create_job("prio-retry", 1, priority=5)
    client.cancel_job(later.id)
    client.update_job(later.id, priority=9)
    client.retry_job(later.id)

    first = claim_one(client, "prio-retry")

    assert first.chunk.job_id == later.id
    assert claim_one(client, "prio-retry").chunk.job_id == earlier.id


def test_retry_of_a_job_that_is_not_failed_or_cancelled_is_refused(client: jobpulse.Client) -> None:
    pending = client.create_job("pending", 2, chunk_size=1)
    running = client.create_job("running", 2, chunk_size=1)
    claim_one(client, "running")
    completed = client.create_job("completed", 1)
    run_all(client, "completed")

    for job_id, state in (
        (pending.id, job_pb2.JOB_STATE_PENDING),
        (running.id, job_pb2.JOB_STATE_PROCESSING),
        (completed.id, job_pb2.JOB_STATE_COMPLETED),
    ):
        before = client.get_job(job_id)
        assert before.state == state
        with pytest.raises(errors.FailedPrecondition) as info:
            client.retry_job(job_id)
        assert info.value.reason == "JOB_NOT_RETRYABLE"
        assert client.get_job(job_id).revision == before.revision


# --- UpdateJob ---------------------------------------------------------------------------------------


def test_update_changes_only_the_given_field_and_grows_the_revision(client: jobpulse.Client) -> None:
    job = client.create_job("k", 2, chunk_size=1, priority=3, labels={"a": "1"}, display_name="old")
    rev = job.revision

    updated = client.update_job(job.id, priority=7)
    assert (updated.priority, dict(updated.labels), updated.display_name) == (7, {"a": "1"}, "old")
    assert updated.revision > rev
    rev = updated.revision

    updated = client.update_job(job.id, labels={"b": "2"})
    assert (updated.priority, dict(updated.labels), updated.display_name) == (7, {"b": "2"}, "old")
    assert updated.revision > rev
    rev = updated.revision

    updated = client.update_job(job.id, display_name="new")
    assert (updated.priority, dict(updated.labels), updated.display_name) == (7, {"b": "2"}, "new")
    assert updated.revision > rev

    stored = client.get_job(job.id)
    assert (stored.priority, dict(stored.labels), stored.display_name) == (7, {"b": "2"}, "new")
    assert stored.revision == updated.revision

    cleared = client.update_job(job.id, labels={})
    assert dict(cleared.labels) == {}
    assert cleared.display_name == "new"


def test_new_priority_changes_which_job_is_claimed_first(client: jobpulse.Client) -> None:
    older = client.create_job("k", 2, chunk_size=1, priority=5)
    newer = client.create_job("k", 2, chunk_size=1, priority=5)

    client.update_job(newer.id, priority=9)

    first = claim_one(client, "k")
    assert first.job_id == newer.id
    client.update_job(older.id, priority=10)
    second = claim_one(client, "k")
    assert second.job_id == older.id


def test_update_with_invalid_priority_is_rejected(client: jobpulse.Client) -> None:
    job = client.create_job("k", 1, priority=4)
    for bad in (11, -1):
        with pytest.raises(errors.InvalidArgument) as info:
            client.update_job(job.id, priority=bad)
        assert "priority" in {field for field, _ in info.value.field_violations}
    stored = client.get_job(job.id)
    assert stored.priority == 4
    assert stored.revision == job.revision


# --- DeleteJob ---------------------------------------------------------------------------------------


def test_delete_terminal_job(client: jobpulse.Client) -> None:
    keep = client.create_job("keep", 1)
    job = client.create_job("k", 2, chunk_size=1)
    run_all(client, "k")
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED

    client.delete_job(job.id)

    with pytest.raises(errors.NotFound) as info:
        client.get_job(job.id)
    assert info.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(errors.NotFound):
        list(client.list_job_chunks(job.id))
    page = client.list_jobs_page()
    assert [j.id for j in page.jobs] == [keep.id]
    assert page.total_size == 1


def test_delete_running_job_needs_force_and_the_worker_then_loses_the_chunk(client: jobpulse.Client) -> None:
    job = client.create_job("k", 3, chunk_size=1)
    claim = claim_one(client, "k")

    with pytest.raises(errors.FailedPrecondition) as info:
        client.delete_job(job.id)
    assert info.value.reason == "JOB_NOT_TERMINAL"
    still = client.get_job(job.id)
    assert still.state == job_pb2.JOB_STATE_PROCESSING
    assert still.chunks_summary.processing == 1

    client.delete_job(job.id, force=True)

    with pytest.raises(errors.NotFound) as info:
        client.get_job(job.id)
    assert info.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(errors.NotFound) as info:
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    assert info.value.reason == "CHUNK_NOT_FOUND"
    with pytest.raises(errors.NotFound) as info:
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=1)
    assert info.value.reason == "CHUNK_NOT_FOUND"
    assert client.claim_chunks("w2", kinds=["k"]) == []


# --- GetJobStats -------------------------------------------------------------------------------------


def _state_counts(stats: Any) -> dict[int, int]:
    return {sc.state: sc.count for sc in stats.state_counts}


def test_job_stats_report_processing_time_of_finished_jobs_that_started(client: jobpulse.Client) -> None:
    done = [client.create_job("encode", 2, chunk_size=1) for _ in range(2)]
    run_all(client, "encode")
    broken = client.create_job("encode", 1)
    claim = claim_one(client, "encode")
    client.fail_chunk(claim.chunk.id, claim.lease_token, "BROKEN", "", retryable=False)
    never_started = client.create_job("scan", 1)
    client.cancel_job(never_started.id)
    client.create_job("scan", 4)  # pending: not finished
    running = client.create_job("idle", 2, chunk_size=1)
    claim_one(client, "idle")  # started, not finished

    def processing_us(job_id: str) -> int:
        job = client.get_job(job_id)
        assert job.HasField("start_time") and job.HasField("end_time")
        return (job.end_time.ToMicroseconds()) - job.start_time.ToMicroseconds()

    expected = sum(processing_us(j.id) for j in [*done, broken])
    stats = client.get_job_stats()
    overall = stats.stats

    assert overall.processed_jobs == 3
    assert overall.processing_time_total.ToMicroseconds() == expected
    assert overall.processing_time_avg.ToMicroseconds() == expected // 3
    by_kind = {k.kind: k for k in stats.kinds}
    assert by_kind["encode"].processed_jobs == 3
    assert by_kind["encode"].processing_time_total.ToMicroseconds() == expected
    assert by_kind["scan"].processed_jobs == 0
    assert by_kind["scan"].processing_time_total.ToMicroseconds() == 0
    assert by_kind["scan"].processing_time_avg.ToMicroseconds() == 0
    assert by_kind["idle"].processed_jobs == 0, running.id


def test_job_stats_counts_rates_and_durations(client: jobpulse.Client) -> None:
    for _ in range(2):
        client.create_job("encode", 2, chunk_size=1)
    run_all(client, "encode")
    broken = client.create_job("encode", 1)
    claim = claim_one(client, "encode")
    client.fail_chunk(claim.chunk.id, claim.lease_token, "BROKEN", "", retryable=False)
    assert client.get_job(broken.id).state == job_pb2.JOB_STATE_FAILED
    stopped = client.create_job("scan", 1)
    client.cancel_job(stopped.id)
    client.create_job("scan", 10, chunk_size=5)
    client.create_job("idle", 3)

    response = client.get_job_stats()

    overall = response.stats
    assert overall.total_jobs == 6
    counts = _state_counts(overall)
    assert counts[job_pb2.JOB_STATE_COMPLETED] == 2
    assert counts[job_pb2.JOB_STATE_FAILED] == 1
    assert counts[job_pb2.JOB_STATE_CANCELLED] == 1
    assert counts[job_pb2.JOB_STATE_PENDING] == 2
    assert counts[job_pb2.JOB_STATE_PROCESSING] == 0
    assert set(counts) >= {
        job_pb2.JOB_STATE_PENDING,
        job_pb2.JOB_STATE_PROCESSING,
        job_pb2.JOB_STATE_CANCELLING,
        job_pb2.JOB_STATE_COMPLETED,
        job_pb2.JOB_STATE_FAILED,
        job_pb2.JOB_STATE_CANCELLED,
    }
    assert overall.success_rate == pytest.approx(2 / 4)
    assert overall.items_done == 4
    for name in ("duration_p50", "duration_p95", "duration_p99", "duration_max"):
        assert overall.HasField(name), name
    p50, p95, p99, top = (
        getattr(overall, n).ToTimedelta()
        for n in ("duration_p50", "duration_p95", "duration_p99", "duration_max")
    )
    assert p50 <= p95 <= p99 <= top
    assert [k.kind for k in response.kinds] == ["encode", "idle", "scan"]

    encode = client.get_job_stats(kind="encode")
    assert encode.stats.total_jobs == 3
    assert encode.stats.success_rate == pytest.approx(2 / 3)
    assert [k.kind for k in encode.kinds] == ["encode"]

    idle = client.get_job_stats(kind="idle")
    assert idle.stats.total_jobs == 1
    assert idle.stats.success_rate == 0
    assert not idle.stats.HasField("duration_p50")

    last = client.list_jobs_page(page_size=1).jobs[0]
    recent = client.get_job_stats(created_after=last.create_time)
    assert recent.stats.total_jobs == 1
    assert [k.kind for k in recent.kinds] == [last.kind]
    older = client.get_job_stats(created_before=last.create_time)
    assert older.stats.total_jobs == 5

    nothing = client.get_job_stats(kind="nope")
    assert nothing.stats.total_jobs == 0
    assert list(nothing.kinds) == []


def test_summary_matches_recount_after_mixed_activity(client: jobpulse.Client) -> None:
    job = client.create_job("mix", 6, chunk_size=1)
    claims = client.claim_chunks("w1", kinds=["mix"], max_chunks=4)
    client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
    client.fail_chunk(claims[1].chunk.id, claims[1].lease_token, "X", "", retryable=False)
    client.fail_chunk(claims[2].chunk.id, claims[2].lease_token, "Y", "", retryable=True)

    stored = assert_summary_matches(client, job.id)
    assert recount(client, job.id) == {
        "total": 6,
        "pending": 3,
        "processing": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert stored.state == job_pb2.JOB_STATE_PROCESSING


def _failed_for_good(
    client: jobpulse.Client, kind: str, chunks: int = 3, fail: tuple[int, ...] = (1,)
) -> Any:
    """A job of ``kind`` whose chunks in ``fail`` failed for good and the others completed."""
    job = client.create_job(kind, chunks, chunk_size=1, max_attempts=2)
    for claim in client.claim_chunks("w1", kinds=[kind], max_chunks=chunks):
        if claim.chunk.index in fail:
            client.fail_chunk(claim.chunk.id, claim.lease_token, "CORRUPT", "bad frame", retryable=False)
        else:
            client.complete_chunk(claim.chunk.id, claim.lease_token)
    return job


def test_retry_chunk_runs_one_failed_chunk_again_and_keeps_counting_its_attempts(
    client: jobpulse.Client,
) -> None:
    job = _failed_for_good(client, "retry-chunk")
    failed = client.get_job(job.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.error.chunk_index == 1
    chunk = chunks_by_index(client, job.id)[1]
    assert (chunk.state, chunk.attempt, chunk.max_attempts) == (job_pb2.CHUNK_STATE_FAILED, 1, 2)

    retried = client.retry_chunk(job.id, chunk.id)

    assert retried.state == job_pb2.JOB_STATE_PROCESSING, "the job goes back to PROCESSING"
    assert not retried.HasField("end_time") and not retried.HasField("error")
    assert (retried.chunks_summary.pending, retried.chunks_summary.failed) == (1, 0)
    back = chunks_by_index(client, job.id)[1]
    assert (back.state, back.attempt, back.max_attempts) == (job_pb2.CHUNK_STATE_PENDING, 1, 3)
    assert not back.HasField("error")
    assert_summary_matches(client, job.id)

    # It fails again (retryable): one more claim is allowed by the retry's budget, then it fails for good.
    again = claim_one(client, "retry-chunk")
    assert (again.chunk.id, again.chunk.attempt) == (chunk.id, 2)
    client.fail_chunk(again.chunk.id, again.lease_token, "FLAKY", "try again", retryable=True)
    third = claim_until(client, "retry-chunk")
    assert third.chunk.attempt == 3
    client.fail_chunk(third.chunk.id, third.lease_token, "FLAKY", "still broken", retryable=True)
    final = chunks_by_index(client, job.id)[1]
    assert (final.state, final.attempt) == (job_pb2.CHUNK_STATE_FAILED, 3)
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_FAILED

    # A second retry, and this time it works: attempts 1..4 over the chunk's life.
    client.retry_chunk(job.id, chunk.id)
    last = claim_one(client, "retry-chunk")
    assert last.chunk.attempt == 4
    assert client.complete_chunk(last.chunk.id, last.lease_token).job_state == job_pb2.JOB_STATE_COMPLETED
    assert_summary_matches(client, job.id)


def claim_until(client: jobpulse.Client, kind: str, deadline_s: float = 20) -> Any:
    """Claims one chunk of ``kind``, polling while it waits out a retry backoff."""
    claims = client.claim_chunks("w1", kinds=[kind], max_chunks=1, wait=deadline_s)
    assert len(claims) == 1, f"no chunk of {kind!r} became claimable within {deadline_s}s"
    return claims[0]


def test_retry_chunk_of_a_job_with_another_failed_chunk_keeps_the_job_error(client: jobpulse.Client) -> None:
    job = _failed_for_good(client, "retry-two", fail=(0, 2))
    chunks = chunks_by_index(client, job.id)
    retried = client.retry_chunk(job.id, chunks[0].id)
    assert retried.state == job_pb2.JOB_STATE_PROCESSING
    # Running again: its other failed chunk shows in the summary and in that chunk, not as Job.error.
    assert not retried.HasField("error") and retried.chunks_summary.failed == 1
    run_all(client, "retry-two")
    ended = client.get_job(job.id)
    assert ended.state == job_pb2.JOB_STATE_FAILED, "chunk 2 still failed for good"
    assert ended.HasField("error")


def test_a_running_job_with_a_chunk_failed_for_good_shows_no_error_until_it_fails(
    client: jobpulse.Client,
) -> None:
    job = client.create_job("error-late", 2, chunk_size=1)
    first, second = client.claim_chunks("w1", kinds=["error-late"], max_chunks=2)
    client.fail_chunk(first.chunk.id, first.lease_token, "CORRUPT", "bad frame", retryable=False)
    running = client.get_job(job.id, view="full")
    assert running.state == job_pb2.JOB_STATE_PROCESSING
    assert not running.HasField("error"), "Job.error is set only once the job has FAILED"
    assert running.chunks_summary.failed == 1
    assert running.chunks[first.chunk.index].error.reason == "CORRUPT"
    listed = [j for j in client.list_jobs(kind="error-late") if j.id == job.id]
    assert listed and not listed[0].HasField("error")

    client.complete_chunk(second.chunk.id, second.lease_token)
    ended = client.get_job(job.id)
    assert ended.state == job_pb2.JOB_STATE_FAILED
    assert ended.error.reason == "CORRUPT" and ended.error.chunk_index == first.chunk.index


def test_retry_chunk_refuses_what_cannot_be_retried(client: jobpulse.Client) -> None:
    job = _failed_for_good(client, "retry-bad")
    chunks = chunks_by_index(client, job.id)
    with pytest.raises(errors.FailedPrecondition) as info:
        client.retry_chunk(job.id, chunks[0].id)  # COMPLETED
    assert info.value.reason == "CHUNK_NOT_RETRYABLE" and "COMPLETED" in str(info.value)
    with pytest.raises(errors.NotFound) as info:
        client.retry_chunk(job.id, "no-such-chunk")
    assert info.value.reason == "CHUNK_NOT_FOUND"
    other = client.create_job("retry-bad-other", 1)
    with pytest.raises(errors.NotFound) as info:
        client.retry_chunk(other.id, chunks[1].id)  # a chunk of another job
    assert info.value.reason == "CHUNK_NOT_FOUND"
    with pytest.raises(errors.NotFound) as info:
        client.retry_chunk("no-such-job", chunks[1].id)
    assert info.value.reason == "JOB_NOT_FOUND"
    for bad in ({"job_id": job.id, "chunk_id": ""}, {"job_id": "", "chunk_id": chunks[1].id}):
        with pytest.raises(errors.InvalidArgument) as invalid:
            client.retry_chunk(**bad)
        assert [f for f, _ in invalid.value.field_violations] == [k for k, v in bad.items() if not v]
    # A cancelled job is resumed by RetryJob only.
    cancelled = client.create_job("retry-bad-cancel", 2, chunk_size=1, max_attempts=1)
    claim = claim_one(client, "retry-bad-cancel")
    client.fail_chunk(claim.chunk.id, claim.lease_token, "CORRUPT", "bad", retryable=False)
    client.cancel_job(cancelled.id)
    with pytest.raises(errors.FailedPrecondition) as info:
        client.retry_chunk(cancelled.id, claim.chunk.id)
    assert info.value.reason == "JOB_NOT_RETRYABLE"
    assert chunks_by_index(client, job.id)[1].state == job_pb2.CHUNK_STATE_FAILED, "nothing changed"
