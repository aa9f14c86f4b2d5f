"""AsyncClient against an in-process grpc.aio fake JobService on port 0 (grpc_testing has no aio support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


def _status(code: grpc.StatusCode, message: str, reason: str, violations=()) -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="jobpulse", metadata={"job_id": "x"}))
    details = [info]
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


class FakeJobService(job_service_pb2_grpc.JobServiceServicer):
    """Scripted behaviour: errors for unknown ids, three pages of jobs, a watch that breaks once."""

    def __init__(self) -> None:
        self.watch_requests: list[job_service_pb2.WatchJobRequest] = []
        self.page_tokens: list[str] = []

    async def GetJob(self, request, context):
        await context.abort_with_status(
            rpc_status.to_status(_status(grpc.StatusCode.NOT_FOUND, "job x not found", "JOB_NOT_FOUND"))
        )

    async def CreateJob(self, request, context):
        await context.abort_with_status(
            rpc_status.to_status(
                _status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "1 field is invalid",
                    "INVALID_ARGUMENT",
                    violations=[("total_items", "must be at least 1")],
                )
            )
        )

    async def ListJobs(self, request, context):
        self.page_tokens.append(request.page_token)
        pages = {"": (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], "")}
        ids, token = pages[request.page_token]
        return job_service_pb2.ListJobsResponse(
            jobs=[job_pb2.Job(id=i) for i in ids], next_page_token=token, total_size=4
        )

    async def WatchJob(self, request, context) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        if request.job_id == "down":  # as if nothing listened: not counted among the watches
            await context.abort(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
        self.watch_requests.append(request)
        if request.job_id == "gone":
            await context.abort_with_status(
                rpc_status.to_status(
                    _status(grpc.StatusCode.NOT_FOUND, "job gone not found", "JOB_NOT_FOUND")
                )
            )
        if len(self.watch_requests) == 1:
            for revision in (1, 2):
                yield job_service_pb2.WatchJobResponse(
                    type=job_service_pb2.WATCH_EVENT_TYPE_CHANGE,
                    revision=revision,
                    job=job_pb2.Job(id=request.job_id, state=job_pb2.JOB_STATE_PROCESSING),
                )
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
        yield job_service_pb2.WatchJobResponse(
            type=job_service_pb2.WATCH_EVENT_TYPE_CHANGE,
            revision=5,
            job=job_pb2.Job(id=request.job_id, state=job_pb2.JOB_STATE_COMPLETED),
        )


@pytest.fixture
async def served():
    service = FakeJobService()
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with jobpulse.AsyncClient(f"127.0.0.1:{port}", timeout=5.0) as client:
        yield service, client
    await server.stop(None)


async def test_rich_errors_map_to_typed_exceptions(served):
    _, client = served
    with pytest.raises(errors.NotFound) as not_found:
        await client.get_job("x")
    assert (not_found.value.reason, not_found.value.metadata) == ("JOB_NOT_FOUND", {"job_id": "x"})

    with pytest.raises(errors.InvalidArgument) as invalid:
        await client.create_job("k", 0)
    assert invalid.value.field_violations == [("total_items", "must be at least 1")]


async def test_list_jobs_follows_every_page(served):
    service, client = served
    assert [job.id async for job in client.list_jobs()] == ["a", "b", "c", "d"]
    assert service.page_tokens == ["", "t1", "t2"]


async def test_watch_resumes_after_unavailable_and_ends_at_terminal_state(served):
    service, client = served
    revisions = [event.revision async for event in client.watch_job("j1")]
    assert revisions == [1, 2, 5]
    assert [r.after_revision for r in service.watch_requests] == [0, 2]


async def test_watch_raises_not_found_and_wait_returns_final_job(served):
    service, client = served
    with pytest.raises(errors.NotFound):
        async for _ in client.watch_job("gone"):
            pass
    service.watch_requests.append(job_service_pb2.WatchJobRequest())  # the next watch does not break
    final = await client.wait("j2", timeout=5)
    assert (final.id, final.state) == ("j2", job_pb2.JOB_STATE_COMPLETED)


async def test_a_watch_that_never_connected_gives_up_after_the_connect_timeout(served):
    service, client = served
    with pytest.raises(errors.Unavailable):
        async for _ in client.watch_job("down", connect_timeout=0):
            pass
    # A stream that was up resumes whatever the connect timeout.
    revisions = [event.revision async for event in client.watch_job("j1", connect_timeout=0)]
    assert revisions == [1, 2, 5]
    assert [r.after_revision for r in service.watch_requests] == [0, 2]
