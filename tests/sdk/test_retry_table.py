"""The SDK's one table of which unary calls it sends again (jobpulse._retry.RESENT), held to the
services' descriptors: every unary method the clients can call is in it, and nothing else is."""

from __future__ import annotations

from typing import Any

from google.longrunning import operations_proto_pb2
from google.protobuf import message_factory

from jobpulse import _retry
from jobpulse.v1 import (
    admin_service_pb2,
    job_service_pb2,
    schedule_service_pb2,
    worker_service_pb2,
)

_SERVICES = (
    (job_service_pb2, "JobService"),
    (worker_service_pb2, "WorkerService"),
    (admin_service_pb2, "AdminService"),
    (schedule_service_pb2, "ScheduleService"),
    (operations_proto_pb2, "Operations"),
)


def _methods() -> list[tuple[str, Any, bool]]:
    """(method name, its request's descriptor, whether it streams) of every method of the services."""
    found = []
    for module, name in _SERVICES:
        for method in module.DESCRIPTOR.services_by_name[name].methods:
            found.append((method.name, method.input_type, method.client_streaming or method.server_streaming))
    return found


def test_every_unary_method_is_in_the_table_and_no_stream_is() -> None:
    unary = {request.full_name for _, request, stream in _methods() if not stream}
    streams = {request.full_name for _, request, stream in _methods() if stream}
    assert set(_retry.RESENT) == unary
    assert not streams & set(_retry.RESENT)


def test_reads_are_resent_and_writes_that_would_act_twice_are_not() -> None:
    resent = {
        name: _retry.may_resend(message_factory.GetMessageClass(request)())
        for name, request, stream in _methods()
        if not stream
    }
    for name, may in resent.items():
        if name.startswith(("Get", "List", "BatchGet", "Summarize", "Wait")):
            assert may, f"{name} only reads: it should be sent again"
    once = (
        "RetryJob",
        "RetryChunk",
        "DeleteJob",
        "ClaimChunks",
        "CompleteChunk",
        "CompleteChunks",
        "FailChunk",
    )
    for name in (*once, "CreateSchedule", "TriggerSchedule", "DeleteSchedule"):
        assert resent[name] is False, f"{name} would act twice"
    # Those that depend on the request: CreateJob with an idempotency key; a bulk action only counting.
    assert not resent["CreateJob"]
    assert _retry.may_resend(job_service_pb2.CreateJobRequest(request_id="r-1"))
    for bulk in (
        job_service_pb2.CancelJobsRequest,
        job_service_pb2.RetryJobsRequest,
        job_service_pb2.PurgeJobsRequest,
    ):
        assert not _retry.may_resend(bulk())
        assert _retry.may_resend(bulk(validate_only=True))
