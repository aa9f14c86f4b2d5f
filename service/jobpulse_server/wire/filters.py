"""The ListJobs-style filters of a request (ListJobs, ExportJobs, WatchJobs, GetJobStats), checked:
the gRPC servicers pass their request, the HTTP side a WatchJobsRequest built from query parameters."""

from __future__ import annotations

from jobpulse.v1 import job_service_pb2
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import JobState
from jobpulse_server.wire.validation import MAX_DISPLAY_NAME, MAX_ID, Checker, timestamp_us

_JOB_STATES = [int(s) for s in JobState]


def job_filter(
    request: job_service_pb2.ListJobsRequest
    | job_service_pb2.ExportJobsRequest
    | job_service_pb2.WatchJobsRequest
    | job_service_pb2.CancelJobsRequest
    | job_service_pb2.RetryJobsRequest
    | job_service_pb2.PurgeJobsRequest,
    c: Checker,
) -> JobFilter:
    """The ListJobs-style filters of a request, checked."""
    c.enums(request.states, _JOB_STATES, "states")
    f = JobFilter(states=[JobState(s) for s in request.states if s in _JOB_STATES], kind=request.kind)
    c.text(request.kind, "kind", MAX_ID)
    if request.HasField("min_priority"):
        c.priority(request.min_priority, "min_priority")
        f.min_priority = request.min_priority
    if request.HasField("max_priority"):
        c.priority(request.max_priority, "max_priority")
        f.max_priority = request.max_priority
    if f.min_priority is not None and f.max_priority is not None and f.min_priority > f.max_priority:
        c.fail("min_priority", "must not be greater than max_priority")
    time_range(request, c, f)
    c.text(request.search, "search", MAX_DISPLAY_NAME)
    f.search = request.search
    c.labels(dict(request.labels))
    f.labels = dict(request.labels)
    return f


def time_range(
    request: job_service_pb2.ListJobsRequest
    | job_service_pb2.ExportJobsRequest
    | job_service_pb2.WatchJobsRequest
    | job_service_pb2.CancelJobsRequest
    | job_service_pb2.RetryJobsRequest
    | job_service_pb2.PurgeJobsRequest
    | job_service_pb2.GetJobStatsRequest
    | job_service_pb2.SummarizeFailuresRequest,
    c: Checker,
    f: JobFilter,
) -> None:
    if request.HasField("created_after"):
        f.created_after = timestamp_us(request.created_after, "created_after", c)
    if request.HasField("created_before"):
        f.created_before = timestamp_us(request.created_before, "created_before", c)
    if f.created_after is not None and f.created_before is not None and f.created_after > f.created_before:
        c.fail("created_after", "must not be later than created_before")
