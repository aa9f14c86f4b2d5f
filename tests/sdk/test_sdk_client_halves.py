"""Client and AsyncClient, one test body each, against one scripted fake server: errors, paging, masks,
retries, watch resumption.

The fake is both services on a ``grpc.aio`` server on port 0 in the test's event loop, answering each call
with the next step of a script the test wrote (a response, a rich error, or a stream's messages ending in an
error or OK). The blocking Client runs its calls in a worker thread meanwhile (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import jobpulse
from jobpulse import errors
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)


@dataclass
class Fail:
    """A step of a script: end the call with this status and jobpulse's rich details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] | None = None
    violations: tuple[tuple[str, str], ...] = ()
    retry_after: float | None = None

    def status(self) -> grpc.Status:
        details = []
        if self.reason:
            details.append(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain="jobpulse", metadata=self.metadata or {}
                )
            )
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.violations
                    ]
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_after * 1000))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        message = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return rpc_status.to_status(message)


class Hang:
    """A step of a stream's script: send nothing more, until the client cancels the call."""


_UNARY = {
    "JobService": ("GetJob", "CreateJob", "CancelJob", "ListJobs", "ListJobChunks", "UpdateJob"),
    "WorkerService": ("ClaimChunks", "CompleteChunk"),
}
_STREAMS = ("WatchJob",)


class Scripted:
    """Answers each call with the next step of ``scripts[method]`` and records what it was sent."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Any]] = defaultdict(list)
        self.calls: dict[str, list[tuple[dict[str, str], Any]]] = defaultdict(list)

    def script(self, method: str, *steps: Any) -> None:
        self.scripts[method].extend(steps)

    def requests(self, method: str) -> list[Any]:
        return [request for _, request in self.calls[method]]

    def _record(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.calls[method].append((dict(context.invocation_metadata() or ()), request))
        assert self.scripts[method], f"no answer scripted for call {len(self.calls[method])} of {method}"
        return self.scripts[method].pop(0)

    def unary(self, method: str) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            step = self._record(method, request, context)
            if isinstance(step, Fail):
                await context.abort_with_status(step.status())
            return step

        return handle

    def stream(self, method: str) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            for step in self._record(method, request, context):
                if isinstance(step, Fail):
                    await context.abort_with_status(step.status())
                if isinstance(step, Hang):
                    await asyncio.Event().wait()
                yield step

        return handle


class Half:
    """One half of the SDK under test, called the same way from an async test body."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.is_async = isinstance(client, jobpulse.AsyncClient)

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, name)
        if self.is_async:
            return await method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    async def collect(self, name: str, *args: Any, dwell: float = 0.0, **kwargs: Any) -> list[Any]:
        """Every item of an iterating method, in order; ``dwell``: seconds spent on each item."""
        items: list[Any] = []
        if self.is_async:
            async for item in getattr(self.client, name)(*args, **kwargs):
                items.append(item)
                await asyncio.sleep(dwell)
            return items

        def collect() -> list[Any]:
            for item in getattr(self.client, name)(*args, **kwargs):
                items.append(item)
                time.sleep(dwell)
            return items

        return await asyncio.to_thread(collect)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    jobs = job_service_pb2_grpc.JobServiceServicer()
    workers = worker_service_pb2_grpc.WorkerServiceServicer()
    for service, methods in _UNARY.items():
        servicer = jobs if service == "JobService" else workers
        for method in methods:
            setattr(servicer, method, scripted.unary(method))
    for method in _STREAMS:
        setattr(jobs, method, scripted.stream(method))
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield scripted, f"127.0.0.1:{port}"
    await server.stop(None)


HALVES = ["Client", "AsyncClient"]


async def _open(kind: str, target: str, **options: Any) -> Half:
    options.setdefault("timeout", 5.0)
    return Half(getattr(jobpulse, kind)(target, **options))


async def _close(half: Half) -> None:
    if half.is_async:
        await half.client.close()
    else:
        await asyncio.to_thread(half.client.close)


@pytest.fixture(params=HALVES)
async def half(request: pytest.FixtureRequest, served: tuple[Scripted, str]) -> AsyncIterator[Half]:
    opened = await _open(request.param, served[1], api_key="s3cret")
    yield opened
    await _close(opened)


@pytest.fixture
def fake(served: tuple[Scripted, str]) -> Scripted:
    return served[0]


def _job(job_id: str, state: int = job_pb2.JOB_STATE_PROCESSING, **fields: Any) -> job_pb2.Job:
    return job_pb2.Job(id=job_id, state=state, **fields)


def _event(
    revision: int, state: int, *, more: bool = False, kind: int = job_service_pb2.WATCH_EVENT_TYPE_CHANGE
) -> job_service_pb2.WatchJobResponse:
    return job_service_pb2.WatchJobResponse(type=kind, revision=revision, job=_job("j1", state), more=more)


async def test_rich_error_becomes_typed_exception_with_reason_and_field_violations(fake, half):
    fake.script(
        "CreateJob",
        Fail(
            grpc.StatusCode.INVALID_ARGUMENT,
            "2 fields are invalid",
            reason="INVALID_ARGUMENT",
            metadata={"field": "kind"},
            violations=(("kind", "must not be empty"), ("total_items", "must be at least 1")),
        ),
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        await half.call("create_job", "", 0)
    error = caught.value
    assert isinstance(error, jobpulse.JobpulseError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.reason, error.domain, error.metadata) == ("INVALID_ARGUMENT", "jobpulse", {"field": "kind"})
    assert error.message == "2 fields are invalid"
    assert error.field_violations == [("kind", "must not be empty"), ("total_items", "must be at least 1")]
    assert str(error) == (
        "2 fields are invalid: kind must not be empty; total_items must be at least 1 [INVALID_ARGUMENT]"
    )


@pytest.mark.parametrize("kind", HALVES)
async def test_the_api_key_comes_from_jobpulse_api_key_when_none_is_passed(served, monkeypatch, kind):
    fake, target = served
    monkeypatch.setenv("JOBPULSE_API_KEY", "from-env")
    fake.script("GetJob", job_service_pb2.GetJobResponse(job=_job("j1")), job_service_pb2.GetJobResponse())
    from_env = await _open(kind, target)
    without = await _open(kind, target, api_key="")
    try:
        await from_env.call("get_job", "j1")
        await without.call("get_job", "j1")
    finally:
        await _close(from_env)
        await _close(without)
    (env_metadata, _), (bare_metadata, _) = fake.calls["GetJob"]
    assert env_metadata["authorization"] == "Bearer from-env"
    assert "authorization" not in bare_metadata


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
async def test_each_status_code_maps_to_its_exception(fake, half, code, reason, expected):
    fake.script("CancelJob", Fail(code, "nope", reason=reason))
    with pytest.raises(expected) as caught:
        await half.call("cancel_job", "j1")
    assert type(caught.value) is expected
    assert caught.value.reason == reason


async def test_lease_lost_is_an_aborted_error(fake, half):
    fake.script("CompleteChunk", Fail(grpc.StatusCode.ABORTED, "lease lost", reason="LEASE_LOST"))
    with pytest.raises(errors.Aborted) as caught:
        await half.call("complete_chunk", "c1", "stale-token")
    assert isinstance(caught.value, jobpulse.LeaseLost)
    assert len(fake.calls["CompleteChunk"]) == 1  # a completion is never sent twice


async def test_retry_info_is_exposed_as_retry_delay(fake, half):
    fake.script("CompleteChunk", Fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after=2.5))
    with pytest.raises(errors.ResourceExhausted) as caught:
        await half.call("complete_chunk", "c1", "t")
    assert caught.value.retry_delay == pytest.approx(2.5)


async def test_api_key_is_sent_as_bearer_token(fake, half):
    fake.script("GetJob", job_service_pb2.GetJobResponse(job=_job("j1")))
    assert (await half.call("get_job", "j1")).id == "j1"
    [(metadata, request)] = fake.calls["GetJob"]
    assert metadata["authorization"] == "Bearer s3cret"
    assert request.view == job_pb2.JOB_VIEW_FULL


async def test_list_jobs_follows_page_tokens_with_the_same_filters(fake, half):
    after = datetime(2024, 5, 1, tzinfo=timezone.utc)
    fake.script(
        "ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job("a"), _job("b")], next_page_token="p2", total_size=5),
        job_service_pb2.ListJobsResponse(jobs=[_job("c"), _job("d")], next_page_token="p3", total_size=5),
        job_service_pb2.ListJobsResponse(jobs=[_job("e")], total_size=5),
    )
    jobs = await half.collect(
        "list_jobs", states=["completed", "JOB_STATE_FAILED"], kind="k", created_after=after
    )
    assert [job.id for job in jobs] == ["a", "b", "c", "d", "e"]
    requests = fake.requests("ListJobs")
    assert [request.page_token for request in requests] == ["", "p2", "p3"]
    for request in requests:
        assert list(request.states) == [job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED]
        assert request.kind == "k"
        assert request.created_after.ToDatetime(tzinfo=timezone.utc) == after


async def test_list_jobs_page_returns_total_size(fake, half):
    fake.script(
        "ListJobs", job_service_pb2.ListJobsResponse(jobs=[_job("a")], next_page_token="n", total_size=41)
    )
    page = await half.call("list_jobs_page", page_size=2, search="nightly")
    assert (page.total_size, page.next_page_token) == (41, "n")
    [request] = fake.requests("ListJobs")
    assert (request.page_size, request.search) == (2, "nightly")


async def test_list_job_chunks_iterates_over_all_pages(fake, half):
    fake.script(
        "ListJobChunks",
        job_service_pb2.ListJobChunksResponse(chunks=[job_pb2.Chunk(index=0)], next_page_token="t"),
        job_service_pb2.ListJobChunksResponse(chunks=[job_pb2.Chunk(index=7)]),
    )
    chunks = await half.collect("list_job_chunks", "j1", states=["failed"])
    assert [chunk.index for chunk in chunks] == [0, 7]
    first, second = fake.requests("ListJobChunks")
    assert list(first.states) == [job_pb2.CHUNK_STATE_FAILED]
    assert (second.page_token, list(second.states)) == ("t", [job_pb2.CHUNK_STATE_FAILED])


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
async def test_update_job_masks_exactly_the_fields_given(fake, half, kwargs, paths):
    fake.script("UpdateJob", job_service_pb2.UpdateJobResponse(job=_job("j1")))
    await half.call("update_job", "j1", **kwargs)
    [request] = fake.requests("UpdateJob")
    assert list(request.update_mask.paths) == paths
    assert request.HasField("priority") == ("priority" in kwargs)
    if "labels" in kwargs:
        assert dict(request.labels) == kwargs["labels"]


async def test_update_job_without_fields_is_refused_before_any_call(fake, half):
    with pytest.raises(ValueError, match="at least one"):
        await half.call("update_job", "j1")
    assert not fake.calls["UpdateJob"]


async def test_reads_are_retried_on_unavailable(fake, half):
    fake.script(
        "GetJob",
        Fail(grpc.StatusCode.UNAVAILABLE, "connection refused"),
        job_service_pb2.GetJobResponse(job=_job("j1")),
    )
    assert (await half.call("get_job", "j1", view="basic")).id == "j1"
    assert [request.view for request in fake.requests("GetJob")] == [job_pb2.JOB_VIEW_BASIC] * 2


async def test_create_job_is_not_retried_without_request_id(fake, half):
    fake.script("CreateJob", Fail(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    with pytest.raises(errors.Unavailable):
        await half.call("create_job", "k", 10)
    assert len(fake.calls["CreateJob"]) == 1


async def test_create_job_with_request_id_is_retried_and_sends_every_field(fake, half):
    fake.script(
        "CreateJob",
        Fail(grpc.StatusCode.UNAVAILABLE, "connection reset"),
        job_service_pb2.CreateJobResponse(job=_job("j9")),
    )
    job = await half.call(
        "create_job",
        "thumbnails",
        2500,
        chunk_size=500,
        priority=0,
        labels={"team": "media"},
        metadata={"bucket": "b", "sizes": [64, 128]},
        request_id="req-1",
    )
    assert job.id == "j9"
    first, request = fake.requests("CreateJob")
    assert first == request
    assert (request.kind, request.total_items, request.chunk_size) == ("thumbnails", 2500, 500)
    assert request.HasField("priority") and request.priority == 0
    assert dict(request.labels) == {"team": "media"}
    assert request.metadata["sizes"] == [64, 128]
    assert request.request_id == "req-1"


async def test_a_watch_that_never_connected_gives_up_after_the_connect_timeout(fake, half):
    fake.script("WatchJob", [Fail(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")])
    with pytest.raises(errors.Unavailable):
        await half.collect("watch_job", "j1", connect_timeout=0)
    assert len(fake.calls["WatchJob"]) == 1


async def test_a_watch_that_was_up_resumes_whatever_the_connect_timeout(fake, half):
    fake.script(
        "WatchJob",
        [_event(3, job_pb2.JOB_STATE_PROCESSING), Fail(grpc.StatusCode.UNAVAILABLE, "connection lost")],
        [_event(4, job_pb2.JOB_STATE_COMPLETED)],
    )
    events = await half.collect("watch_job", "j1", connect_timeout=0)
    assert [event.revision for event in events] == [3, 4]
    assert events[-1].job.state == job_pb2.JOB_STATE_COMPLETED
    assert fake.requests("WatchJob")[1].after_revision == 3


async def test_watch_resumes_after_unavailable_from_last_revision_and_stops_at_terminal_state(fake, half):
    fake.script(
        "WatchJob",
        [
            _event(3, job_pb2.JOB_STATE_PROCESSING, kind=job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT),
            _event(5, job_pb2.JOB_STATE_PROCESSING),
            Fail(grpc.StatusCode.UNAVAILABLE, "server shutting down"),
        ],
        # The stream stays open after the terminal state: the watch ends on the state, not on the stream.
        [_event(8, job_pb2.JOB_STATE_COMPLETED), _event(9, job_pb2.JOB_STATE_COMPLETED)],
    )
    events = await half.collect("watch_job", "j1")
    assert [(event.revision, event.job.state) for event in events] == [
        (3, job_pb2.JOB_STATE_PROCESSING),
        (5, job_pb2.JOB_STATE_PROCESSING),
        (8, job_pb2.JOB_STATE_COMPLETED),
    ]
    assert [request.after_revision for request in fake.requests("WatchJob")] == [0, 5]


async def test_watch_resumes_before_a_revision_split_over_several_messages(fake, half):
    fake.script(
        "WatchJob",
        [_event(4, job_pb2.JOB_STATE_PROCESSING, more=True), Fail(grpc.StatusCode.UNAVAILABLE, "lost")],
        [_event(4, job_pb2.JOB_STATE_PROCESSING, more=True), _event(4, job_pb2.JOB_STATE_CANCELLED)],
    )
    events = await half.collect("watch_job", "j1", after_revision=2)
    assert [(event.revision, event.more) for event in events] == [(4, True), (4, True), (4, False)]
    assert events[-1].job.state == job_pb2.JOB_STATE_CANCELLED
    assert [request.after_revision for request in fake.requests("WatchJob")] == [2, 2]


async def test_a_watch_gone_quiet_for_the_idle_timeout_is_resumed(fake, half):
    fake.script(
        "WatchJob",
        [_event(3, job_pb2.JOB_STATE_PROCESSING), Hang()],
        [_event(4, job_pb2.JOB_STATE_COMPLETED)],
    )
    events = await half.collect("watch_job", "j1", idle_timeout=0.3)
    assert [event.revision for event in events] == [3, 4]
    assert [request.after_revision for request in fake.requests("WatchJob")] == [0, 3]


async def test_the_time_spent_on_a_message_is_not_idle_time(fake, half):
    # The caller dwells on each message longer than the idle timeout: the stream is not presumed dead.
    fake.script("WatchJob", [_event(3, job_pb2.JOB_STATE_PROCESSING), _event(4, job_pb2.JOB_STATE_COMPLETED)])
    events = await half.collect("watch_job", "j1", idle_timeout=0.2, dwell=0.5)
    assert [event.revision for event in events] == [3, 4]
    assert len(fake.calls["WatchJob"]) == 1


async def test_watch_raises_typed_error_for_failures_a_reconnect_cannot_fix(fake, half):
    fake.script(
        "WatchJob", [Fail(grpc.StatusCode.NOT_FOUND, "job missing not found", reason="JOB_NOT_FOUND")]
    )
    with pytest.raises(errors.NotFound) as caught:
        await half.collect("watch_job", "missing")
    assert caught.value.reason == "JOB_NOT_FOUND"
    assert len(fake.calls["WatchJob"]) == 1


async def test_wait_returns_the_final_job(fake, half):
    fake.script(
        "WatchJob",
        [
            _event(1, job_pb2.JOB_STATE_PENDING, kind=job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT),
            job_service_pb2.WatchJobResponse(type=job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT, revision=1),
            _event(9, job_pb2.JOB_STATE_FAILED),
        ],
    )
    final = await half.call("wait", "j1", 30)
    assert (final.id, final.state) == ("j1", job_pb2.JOB_STATE_FAILED)


async def test_wait_raises_wait_timeout_when_the_deadline_passes(fake, half):
    fake.script("WatchJob", [Fail(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")])
    with pytest.raises(jobpulse.WaitTimeout) as caught:
        await half.call("wait", "j1", 30)
    assert isinstance(caught.value, errors.DeadlineExceeded)
    assert caught.value.job_id == "j1"


async def test_claim_chunks_sends_durations_and_returns_claims(fake, half):
    fake.script(
        "ClaimChunks",
        worker_service_pb2.ClaimChunksResponse(
            claims=[worker_service_pb2.ChunkClaim(job_id="j1", lease_token="t")]
        ),
    )
    claims = await half.call("claim_chunks", "w1", kinds=["k"], max_chunks=3, lease_duration=12.5, wait=2)
    assert [claim.lease_token for claim in claims] == ["t"]
    [request] = fake.requests("ClaimChunks")
    assert request.lease_duration.ToMilliseconds() == 12_500
    assert request.wait.seconds == 2
    assert (request.worker_id, list(request.kinds), request.max_chunks) == ("w1", ["k"], 3)
    assert len(fake.calls["ClaimChunks"]) == 1
