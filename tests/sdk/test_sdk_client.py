"""The sync Client against a scripted fake server: errors, paging, masks, retries, watch resumption."""

from __future__ import annotations

import queue
from datetime import datetime, timezone

import grpc
import pytest

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2, worker_service_pb2

RESULT_TIMEOUT = 5.0


def _job(job_id: str, state: int = job_pb2.JOB_STATE_PROCESSING, **fields: object) -> job_pb2.Job:
    return job_pb2.Job(id=job_id, state=state, **fields)  # type: ignore[arg-type]


def test_rich_error_becomes_typed_exception_with_reason_and_field_violations(fake, client):
    pending = fake.run(client.create_job, "", 0)
    fake.fail(
        "JobService.CreateJob",
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 fields are invalid",
        reason="INVALID_ARGUMENT",
        metadata={"field": "kind"},
        violations=(("kind", "must not be empty"), ("total_items", "must be at least 1")),
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        pending.result(RESULT_TIMEOUT)
    error = caught.value
    assert isinstance(error, jobpulse.JobpulseError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.domain == "jobpulse"
    assert error.metadata == {"field": "kind"}
    assert error.message == "2 fields are invalid"
    assert error.field_violations == [("kind", "must not be empty"), ("total_items", "must be at least 1")]
    # Said once: the message, the violations folded in, the code in brackets (reason = code, not repeated).
    assert str(error) == (
        "2 fields are invalid: kind must not be empty; total_items must be at least 1 [INVALID_ARGUMENT]"
    )


def test_error_text_drops_a_message_that_only_restates_the_violations_and_shows_a_distinct_reason():
    restating = errors.InvalidArgument(
        "invalid request: priority: must be between 0 and 10 (got 99)",
        reason="INVALID_ARGUMENT",
        field_violations=[("priority", "must be between 0 and 10 (got 99)")],
    )
    assert str(restating) == "priority must be between 0 and 10 (got 99) [INVALID_ARGUMENT]"
    missing = errors.NotFound("job nope not found", reason="JOB_NOT_FOUND")
    assert str(missing) == "job nope not found [NOT_FOUND JOB_NOT_FOUND]"
    assert str(errors.Unavailable()) == "[UNAVAILABLE]"


def test_the_api_key_comes_from_jobpulse_api_key_when_none_is_passed(fake, monkeypatch):
    monkeypatch.setenv("JOBPULSE_API_KEY", "from-env")
    with (
        jobpulse.Client(channel=fake.channel, timeout=5.0) as from_env,
        jobpulse.Client(channel=fake.channel, api_key="", timeout=5.0) as without,
    ):
        pending = fake.run(from_env.get_job, "j1")
        metadata, _, rpc = fake.take_unary("JobService.GetJob")
        rpc.terminate(job_service_pb2.GetJobResponse(job=job_pb2.Job(id="j1")), (), grpc.StatusCode.OK, "")
        pending.result(RESULT_TIMEOUT)
        assert ("authorization", "Bearer from-env") in metadata

        pending = fake.run(without.get_job, "j1")
        metadata, _, rpc = fake.take_unary("JobService.GetJob")
        rpc.terminate(job_service_pb2.GetJobResponse(job=job_pb2.Job(id="j1")), (), grpc.StatusCode.OK, "")
        pending.result(RESULT_TIMEOUT)
        assert not [key for key, _ in metadata or () if key == "authorization"]


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND", errors.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ALREADY_TERMINAL", errors.FailedPrecondition),
        (grpc.StatusCode.ABORTED, "LEASE_LOST", errors.LeaseLost),
        (grpc.StatusCode.ABORTED, "SOMETHING_ELSE", errors.Aborted),
        (grpc.StatusCode.PERMISSION_DENIED, "", errors.PermissionDenied),
        (grpc.StatusCode.INTERNAL, "INTERNAL", errors.Internal),
    ],
)
def test_each_status_code_maps_to_its_exception(fake, client, code, reason, expected):
    pending = fake.run(client.cancel_job, "j1")
    fake.fail("JobService.CancelJob", code, "nope", reason=reason)
    with pytest.raises(expected) as caught:
        pending.result(RESULT_TIMEOUT)
    assert type(caught.value) is expected
    assert caught.value.reason == reason


def test_lease_lost_is_an_aborted_error(fake, client):
    pending = fake.run(client.complete_chunk, "c1", "stale-token")
    fake.fail("WorkerService.CompleteChunk", grpc.StatusCode.ABORTED, "lease lost", reason="LEASE_LOST")
    with pytest.raises(errors.Aborted) as caught:
        pending.result(RESULT_TIMEOUT)
    assert isinstance(caught.value, jobpulse.LeaseLost)


def test_retry_info_is_exposed_as_retry_delay(fake, client):
    pending = fake.run(client.complete_chunk, "c1", "t")
    fake.fail("WorkerService.CompleteChunk", grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after=2.5)
    with pytest.raises(errors.ResourceExhausted) as caught:
        pending.result(RESULT_TIMEOUT)
    assert caught.value.retry_delay == pytest.approx(2.5)


def test_api_key_is_sent_as_bearer_token(fake, client):
    pending = fake.run(client.get_job, "j1")
    metadata, request, rpc = fake.take_unary("JobService.GetJob")
    rpc.terminate(job_service_pb2.GetJobResponse(job=_job("j1")), (), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT).id == "j1"
    assert ("authorization", "Bearer s3cret") in metadata
    assert request.view == job_pb2.JOB_VIEW_FULL


def test_list_jobs_follows_page_tokens_with_the_same_filters(fake, client):
    after = datetime(2024, 5, 1, tzinfo=timezone.utc)
    pending = fake.run(
        lambda: [
            j.id
            for j in client.list_jobs(states=["completed", "JOB_STATE_FAILED"], kind="k", created_after=after)
        ]
    )
    first = fake.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job("a"), _job("b")], next_page_token="p2", total_size=5),
    )
    second = fake.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job("c"), _job("d")], next_page_token="p3", total_size=5),
    )
    third = fake.answer(
        "JobService.ListJobs", job_service_pb2.ListJobsResponse(jobs=[_job("e")], total_size=5)
    )

    assert pending.result(RESULT_TIMEOUT) == ["a", "b", "c", "d", "e"]
    assert [first.page_token, second.page_token, third.page_token] == ["", "p2", "p3"]
    for request in (first, second, third):
        assert list(request.states) == [job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED]
        assert request.kind == "k"
        assert request.created_after.ToDatetime(tzinfo=timezone.utc) == after


def test_list_jobs_page_returns_total_size(fake, client):
    pending = fake.run(client.list_jobs_page, page_size=2, search="nightly")
    request = fake.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job("a")], next_page_token="n", total_size=41),
    )
    page = pending.result(RESULT_TIMEOUT)
    assert (page.total_size, page.next_page_token) == (41, "n")
    assert (request.page_size, request.search) == (2, "nightly")


def test_list_job_chunks_iterates_over_all_pages(fake, client):
    pending = fake.run(lambda: [c.index for c in client.list_job_chunks("j1", states=["failed"])])
    first = fake.answer(
        "JobService.ListJobChunks",
        job_service_pb2.ListJobChunksResponse(chunks=[job_pb2.Chunk(index=0)], next_page_token="t"),
    )
    fake.answer(
        "JobService.ListJobChunks", job_service_pb2.ListJobChunksResponse(chunks=[job_pb2.Chunk(index=7)])
    )
    assert pending.result(RESULT_TIMEOUT) == [0, 7]
    assert list(first.states) == [job_pb2.CHUNK_STATE_FAILED]


@pytest.mark.parametrize(
    ("kwargs", "paths"),
    [
        ({"priority": 9}, ["priority"]),
        ({"priority": 0, "labels": {"team": "a"}}, ["priority", "labels"]),
        ({"labels": {}}, ["labels"]),
        ({"display_name": ""}, ["display_name"]),
        ({"display_name": "x", "labels": {"a": "b"}, "priority": 1}, ["priority", "labels", "display_name"]),
    ],
)
def test_update_job_masks_exactly_the_fields_given(fake, client, kwargs, paths):
    pending = fake.run(client.update_job, "j1", **kwargs)
    request = fake.answer("JobService.UpdateJob", job_service_pb2.UpdateJobResponse(job=_job("j1")))
    pending.result(RESULT_TIMEOUT)
    assert list(request.update_mask.paths) == paths
    assert request.HasField("priority") == ("priority" in kwargs)
    if "labels" in kwargs:
        assert dict(request.labels) == kwargs["labels"]


def test_update_job_without_fields_is_refused_before_any_call(client):
    with pytest.raises(ValueError, match="at least one"):
        client.update_job("j1")


def test_reads_are_retried_on_unavailable(fake, client):
    pending = fake.run(client.get_job, "j1", view="basic")
    fake.fail("JobService.GetJob", grpc.StatusCode.UNAVAILABLE, "connection refused")
    request = fake.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=_job("j1")))
    assert pending.result(RESULT_TIMEOUT).id == "j1"
    assert request.view == job_pb2.JOB_VIEW_BASIC


def test_create_job_is_not_retried_without_request_id(fake, client):
    pending = fake.run(client.create_job, "k", 10)
    fake.fail("JobService.CreateJob", grpc.StatusCode.UNAVAILABLE, "connection reset")
    with pytest.raises(errors.Unavailable):
        pending.result(RESULT_TIMEOUT)


def test_create_job_with_request_id_is_retried_and_sends_every_field(fake, client):
    pending = fake.run(
        client.create_job,
        "thumbnails",
        2500,
        chunk_size=500,
        priority=0,
        labels={"team": "media"},
        metadata={"bucket": "b", "sizes": [64, 128]},
        request_id="req-1",
    )
    fake.fail("JobService.CreateJob", grpc.StatusCode.UNAVAILABLE, "connection reset")
    request = fake.answer("JobService.CreateJob", job_service_pb2.CreateJobResponse(job=_job("j9")))
    assert pending.result(RESULT_TIMEOUT).id == "j9"
    assert (request.kind, request.total_items, request.chunk_size) == ("thumbnails", 2500, 500)
    assert request.HasField("priority") and request.priority == 0
    assert request.metadata["sizes"] == [64, 128]
    assert request.request_id == "req-1"


def _event(
    revision: int, state: int, *, more: bool = False, kind: int = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
):
    return job_service_pb2.WatchJobResponse(type=kind, revision=revision, job=_job("j1", state), more=more)


class _Collector:
    """Consumes an iterator in the background and hands each item over as it is yielded.

    grpc_testing drops responses not yet read when a stream ends with an error, so a test must see each
    message arrive before it breaks the stream.
    """

    _DONE = object()

    def __init__(self, fake, iterator_factory):
        self._items: queue.Queue = queue.Queue()
        self.result = fake.run(self._consume, iterator_factory)

    def _consume(self, iterator_factory):
        try:
            for item in iterator_factory():
                self._items.put(item)
        finally:
            self._items.put(self._DONE)

    def next(self):
        item = self._items.get(timeout=RESULT_TIMEOUT)
        assert item is not self._DONE, "the iterator ended early"
        return item

    def finished(self):
        return self._items.get(timeout=RESULT_TIMEOUT) is self._DONE


def test_a_watch_that_never_connected_gives_up_after_the_connect_timeout(fake, client):
    events = _Collector(fake, lambda: client.watch_job("j1", connect_timeout=0))
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert events.finished()
    with pytest.raises(errors.Unavailable):
        events.result.result(RESULT_TIMEOUT)


def test_a_watch_that_was_up_resumes_whatever_the_connect_timeout(fake, client):
    events = _Collector(fake, lambda: client.watch_job("j1", connect_timeout=0))
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(3, job_pb2.JOB_STATE_PROCESSING))
    assert events.next().revision == 3
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "connection lost")
    _, resumed, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(4, job_pb2.JOB_STATE_COMPLETED))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert events.next().job.state == job_pb2.JOB_STATE_COMPLETED
    assert events.finished() and resumed.after_revision == 3


def test_watch_resumes_after_unavailable_from_last_revision_and_stops_at_terminal_state(fake, client):
    events = _Collector(fake, lambda: client.watch_job("j1"))

    _, first, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(
        _event(3, job_pb2.JOB_STATE_PROCESSING, kind=job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT)
    )
    stream.send_response(_event(5, job_pb2.JOB_STATE_PROCESSING))
    assert [events.next().revision, events.next().revision] == [3, 5]
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "server shutting down")

    _, second, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(8, job_pb2.JOB_STATE_COMPLETED))
    last = events.next()
    assert (last.revision, last.job.state) == (8, job_pb2.JOB_STATE_COMPLETED)
    stream.terminate((), grpc.StatusCode.OK, "")

    assert events.finished()
    events.result.result(RESULT_TIMEOUT)
    assert (first.after_revision, second.after_revision) == (0, 5)


def test_watch_resumes_before_a_revision_split_over_several_messages(fake, client):
    events = _Collector(fake, lambda: client.watch_job("j1", after_revision=2))
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(4, job_pb2.JOB_STATE_PROCESSING, more=True))
    assert events.next().more
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "connection lost")

    _, resumed, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(4, job_pb2.JOB_STATE_PROCESSING, more=True))
    stream.send_response(_event(4, job_pb2.JOB_STATE_CANCELLED))
    stream.terminate((), grpc.StatusCode.OK, "")

    assert [events.next().revision, events.next().job.state] == [4, job_pb2.JOB_STATE_CANCELLED]
    assert events.finished()
    assert resumed.after_revision == 2


def test_watch_raises_typed_error_for_failures_a_reconnect_cannot_fix(fake, client):
    pending = fake.run(lambda: list(client.watch_job("missing")))
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.terminate(
        fake.trailer(grpc.StatusCode.NOT_FOUND, "job missing not found", reason="JOB_NOT_FOUND"),
        grpc.StatusCode.NOT_FOUND,
        "job missing not found",
    )
    with pytest.raises(errors.NotFound) as caught:
        pending.result(RESULT_TIMEOUT)
    assert caught.value.reason == "JOB_NOT_FOUND"


def test_wait_returns_the_final_job(fake, client):
    pending = fake.run(client.wait, "j1", 30)
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(_event(1, job_pb2.JOB_STATE_PENDING, kind=job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT))
    stream.send_response(
        job_service_pb2.WatchJobResponse(type=job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT, revision=1)
    )
    stream.send_response(_event(9, job_pb2.JOB_STATE_FAILED))
    stream.terminate((), grpc.StatusCode.OK, "")
    final = pending.result(RESULT_TIMEOUT)
    assert (final.id, final.state) == ("j1", job_pb2.JOB_STATE_FAILED)


def test_wait_raises_wait_timeout_when_the_deadline_passes(fake, client):
    pending = fake.run(client.wait, "j1", 30)
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.terminate((), grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    with pytest.raises(jobpulse.WaitTimeout) as caught:
        pending.result(RESULT_TIMEOUT)
    assert isinstance(caught.value, errors.DeadlineExceeded)
    assert caught.value.job_id == "j1"


def test_claim_chunks_sends_durations_and_returns_claims(fake, client):
    pending = fake.run(client.claim_chunks, "w1", kinds=["k"], max_chunks=3, lease_duration=12.5, wait=2)
    request = fake.answer(
        "WorkerService.ClaimChunks",
        worker_service_pb2.ClaimChunksResponse(
            claims=[worker_service_pb2.ChunkClaim(job_id="j1", lease_token="t")]
        ),
    )
    claims = pending.result(RESULT_TIMEOUT)
    assert [c.lease_token for c in claims] == ["t"]
    assert request.lease_duration.ToMilliseconds() == 12_500
    assert request.wait.seconds == 2
    assert (request.worker_id, list(request.kinds), request.max_chunks) == ("w1", ["k"], 3)
