"""google.longrunning.Operations over jobs, so generic long-running-operation tooling (google-api-core's
``OperationsClient`` and ``operation.from_gapic``) can poll jobpulse.

Every job is the operation ``operations/<job id>``:

- ``done`` once the job is terminal (COMPLETED, FAILED, CANCELLED);
- ``metadata``: the Job (BASIC view, with its artifacts) packed in an Any;
- ``response`` (COMPLETED): a ``jobpulse.v1.JobResult`` {job_id, artifacts};
- ``error`` (FAILED): a google.rpc.Status with code UNKNOWN (the server cannot tell what kind of
  failure a worker reported), the job's error message, and an ErrorInfo (domain "jobpulse") whose
  reason is the job's error reason ("CHUNK_FAILED" or the worker's own) and whose metadata name the
  job and the chunk; (CANCELLED): code CANCELLED, with the cancel reason in the message.

The calls are the JobService use cases with the same caller, so ownership and errors are theirs: an
unknown job or another owner's is NOT_FOUND (JOB_NOT_FOUND), a malformed ``name`` or ``filter`` is
INVALID_ARGUMENT naming that field. Decisions where google.longrunning leaves room:

- CancelOperation is CancelJob, except that cancelling an operation that is already done is OK and
  changes nothing (CancelJob says JOB_ALREADY_TERMINAL): cancellation is best effort by contract, and
  tooling that checked ``done`` a moment before must not fail because the job just finished.
  GetOperation then says whether the cancel took effect (``error.code`` CANCELLED) or not.
- DeleteOperation is DeleteJob without force: a done operation is deleted; one still running is
  FAILED_PRECONDITION (JOB_NOT_TERMINAL), since google.longrunning says DeleteOperation does not
  cancel, and deleting a running job would. Cancel first.
- WaitOperation waits up to ``timeout`` (unset: DEFAULT_WAIT_SECONDS, at most MAX_WAIT_SECONDS) and
  never past the call's deadline (it answers with a tenth of the time left, at most a second, to
  spare), then returns the operation as it stands, done or not.
- Bulk operations (CancelJobs, RetryJobs, PurgeJobs) are ``operations/bulk-<id>`` (wire/bulk.py):
  GetOperation and WaitOperation follow them, CancelOperation stops one where it is (``error`` CANCELLED
  then; what it did stays done), DeleteOperation forgets one that has ended (one still running is
  FAILED_PRECONDITION, OPERATION_NOT_DONE); an unknown one, or another owner's, is NOT_FOUND
  (OPERATION_NOT_FOUND). ListOperations lists them with the filter ``type = bulk`` (the jobs
  otherwise).
- ListOperations: ``name`` is "operations" or empty; ``filter`` is the grammar of operation_filter.py;
  newest first; ``page_size`` 0 means 20, at most 100; page tokens are keyset tokens (ListJobs' for the
  jobs), bound to the filter they were made under.
"""

from __future__ import annotations

from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import any_pb2, empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from jobpulse.v1 import job_pb2
from jobpulse_server.api.error_mapping import DOMAIN
from jobpulse_server.api.interceptors import caller
from jobpulse_server.api.messages import DEFAULT_PAGE_JOBS, MAX_PAGE_JOBS, Ctx
from jobpulse_server.api.operation_filter import parse_filter
from jobpulse_server.domain.bulk import NAME_PREFIX
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.errors import JobAlreadyTerminal, JobNotTerminal
from jobpulse_server.domain.filters import DEFAULT_ORDER, JobFilter
from jobpulse_server.domain.model import Job, JobState
from jobpulse_server.domain.retention import Retention
from jobpulse_server.services import auth
from jobpulse_server.services.bulk import BulkService
from jobpulse_server.services.jobs import JobService
from jobpulse_server.services.waiting import JobWaiter
from jobpulse_server.wire.bulk import bulk_operation_pb
from jobpulse_server.wire.convert import artifact_pb, job_pb
from jobpulse_server.wire.validation import MAX_ID, Checker

SERVICE_NAME = operations_proto_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
PREFIX = "operations/"
COLLECTION = "operations"
# WaitOperation without a timeout waits this long; a longer timeout is cut to MAX_WAIT_SECONDS
# (google.longrunning: "if the timeout is greater than the RPC timeout, the RPC timeout is used").
DEFAULT_WAIT_SECONDS = 60.0
MAX_WAIT_SECONDS = 300.0
# Of the call's time left, WaitOperation keeps this share (at most _SPARE_MAX seconds) to answer in.
_SPARE_SHARE = 0.1
_SPARE_MAX = 1.0


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """google.longrunning.Operations, one operation per job."""

    ROLES = auth.CLIENT_ROLES

    def __init__(
        self,
        jobs: JobService,
        waiter: JobWaiter,
        clock: Clock,
        bulk: BulkService,
        retention: Retention | None = None,
    ) -> None:
        self.jobs = jobs
        self.bulk = bulk
        self.waiter = waiter
        self.clock = clock
        # The server's default ttls, for the metadata Job's expire_time (None: never shown).
        self.retention = retention

    def _operation(self, job: Job) -> operations_proto_pb2.Operation:
        return operation_pb(job, self.clock(), self.retention)

    async def GetOperation(
        self, request: operations_proto_pb2.GetOperationRequest, context: Ctx
    ) -> operations_proto_pb2.Operation:
        c = Checker()
        job_id = _job_id(request.name, c)
        c.done()
        if job_id.startswith(NAME_PREFIX):
            return bulk_operation_pb(await self.bulk.get(caller(), job_id))
        page = await self.jobs.get_job(caller(), job_id, full=False)
        return self._operation(page.job)

    async def ListOperations(
        self, request: operations_proto_pb2.ListOperationsRequest, context: Ctx
    ) -> operations_proto_pb2.ListOperationsResponse:
        c = Checker()
        c.check(
            request.name in ("", COLLECTION),
            "name",
            f"must be {COLLECTION!r} or empty (got {request.name[:80]!r})",
        )
        c.check(request.page_size >= 0, "page_size", f"must not be negative (got {request.page_size})")
        wanted = parse_filter(request.filter, c)
        c.done()
        if wanted.matches_nothing:
            return operations_proto_pb2.ListOperationsResponse()
        page_size = min(request.page_size or DEFAULT_PAGE_JOBS, MAX_PAGE_JOBS)
        if wanted.type == "bulk":
            found, token = await self.bulk.list_operations(
                caller(), page_size, request.page_token, wanted.done
            )
            return operations_proto_pb2.ListOperationsResponse(
                operations=[bulk_operation_pb(op) for op in found], next_page_token=token
            )
        f = JobFilter(states=sorted(wanted.states or ()), kind=wanted.kind or "")
        pages, token, _, _ = await self.jobs.list_jobs(
            caller(),
            f,
            order_by=DEFAULT_ORDER,
            page_size=page_size,
            page_token=request.page_token,
            full=False,
            count=False,  # ListOperationsResponse has no total
        )
        return operations_proto_pb2.ListOperationsResponse(
            operations=[self._operation(p.job) for p in pages], next_page_token=token
        )

    async def CancelOperation(
        self, request: operations_proto_pb2.CancelOperationRequest, context: Ctx
    ) -> empty_pb2.Empty:
        c = Checker()
        job_id = _job_id(request.name, c)
        c.done()
        if job_id.startswith(NAME_PREFIX):
            await self.bulk.cancel(caller(), job_id)
            return empty_pb2.Empty()
        try:
            await self.jobs.cancel_job(caller(), job_id, "")
        except JobAlreadyTerminal:
            pass  # already done: nothing to cancel (see the module's comment)
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_proto_pb2.DeleteOperationRequest, context: Ctx
    ) -> empty_pb2.Empty:
        c = Checker()
        job_id = _job_id(request.name, c)
        c.done()
        if job_id.startswith(NAME_PREFIX):
            await self.bulk.delete(caller(), job_id)
            return empty_pb2.Empty()
        try:
            await self.jobs.delete_job(caller(), job_id, force=False)
        except JobNotTerminal as exc:
            # DeleteJob's message points at its force flag, which DeleteOperation does not have.
            raise JobNotTerminal(
                f"operation {request.name} is not done and DeleteOperation does not cancel: "
                "CancelOperation first, then delete it once it is done",
                **exc.metadata,
            ) from None
        return empty_pb2.Empty()

    async def WaitOperation(
        self, request: operations_proto_pb2.WaitOperationRequest, context: Ctx
    ) -> operations_proto_pb2.Operation:
        c = Checker()
        job_id = _job_id(request.name, c)
        timeout = _wait_seconds(request, c)
        c.done()
        left = context.time_remaining()
        if left is not None:
            timeout = min(timeout, max(0.0, left - min(_SPARE_MAX, left * _SPARE_SHARE)))
        if job_id.startswith(NAME_PREFIX):
            return bulk_operation_pb(await self.bulk.wait(caller(), job_id, timeout))
        page = await self.waiter.wait(caller(), job_id, timeout)
        return self._operation(page.job)


def operation_pb(
    job: Job, now: int | None, retention: Retention | None = None
) -> operations_proto_pb2.Operation:
    """The operation a job stands for (see the module's comment)."""
    op = operations_proto_pb2.Operation(name=PREFIX + job.id, done=job.state.terminal)
    op.metadata.Pack(job_pb(job, now, retention=retention))
    if job.state == JobState.COMPLETED:
        op.response.Pack(
            job_pb2.JobResult(
                job_id=job.id, artifacts=[artifact_pb(a) for a in job.artifacts], result_uri=job.result_uri
            )
        )
    elif job.state == JobState.FAILED:
        op.error.CopyFrom(_failure(job))
    elif job.state == JobState.CANCELLED:
        reason = f": {job.cancel_reason}" if job.cancel_reason else ""
        op.error.CopyFrom(
            status_pb2.Status(code=code_pb2.CANCELLED, message=f"job {job.id} was cancelled{reason}")
        )
    return op


def _failure(job: Job) -> status_pb2.Status:
    reason = job.error_reason or "JOB_FAILED"
    metadata = {"job_id": job.id}
    if job.error_chunk_index is not None:
        metadata["chunk_index"] = str(job.error_chunk_index)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    message = f"job {job.id} failed ({reason})" + (f": {job.error_message}" if job.error_message else "")
    return status_pb2.Status(code=code_pb2.UNKNOWN, message=message, details=[info])


def _job_id(name: str, c: Checker) -> str:
    """The job id of an operation name; a violation of ``name`` when it is not ``operations/<job id>``."""
    job_id = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not job_id or "/" in job_id or len(job_id) > MAX_ID or "\x00" in job_id:
        c.fail("name", f"must be {PREFIX}<job id> (got {name[:80]!r})")
    return job_id


def _wait_seconds(request: operations_proto_pb2.WaitOperationRequest, c: Checker) -> float:
    if not request.HasField("timeout"):
        return DEFAULT_WAIT_SECONDS
    d = request.timeout
    if d.seconds < 0 or d.nanos < 0 or d.nanos >= 1_000_000_000:
        c.fail("timeout", "must be a valid duration of 0 or more")
        return 0.0
    return min(d.seconds + d.nanos / 1e9, MAX_WAIT_SECONDS)
