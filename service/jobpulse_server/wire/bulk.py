"""Bulk operations (CancelJobs, RetryJobs, PurgeJobs) as google.longrunning Operations: the name
``operations/bulk-<id>``, ``metadata`` a jobpulse.v1.BulkJobsMetadata (the progress), and once done
``response`` a BulkJobsResult, or for one stopped by CancelOperation ``error`` with code CANCELLED."""

from __future__ import annotations

from google.longrunning import operations_proto_pb2
from google.rpc import code_pb2, status_pb2

from jobpulse.v1 import job_service_pb2
from jobpulse_server.domain.bulk import BulkOperation
from jobpulse_server.wire.convert import timestamp

OPERATIONS_PREFIX = "operations/"


def bulk_operation_pb(op: BulkOperation) -> operations_proto_pb2.Operation:
    """The operation ``op`` is (unnamed when it was only validated: ``validate_only``)."""
    msg = operations_proto_pb2.Operation(name=OPERATIONS_PREFIX + op.name if op.id else "", done=op.finished)
    msg.metadata.Pack(
        job_service_pb2.BulkJobsMetadata(
            action=int(op.action),  # type: ignore[arg-type]
            matched=op.matched,
            done=op.done,
            skipped=op.skipped,
            create_time=timestamp(op.create_time),
            end_time=timestamp(op.end_time),
        )
    )
    if op.cancelled:
        msg.error.CopyFrom(
            status_pb2.Status(
                code=code_pb2.CANCELLED,
                message=f"stopped by CancelOperation after {op.done} of {op.matched} job(s)",
            )
        )
    elif op.finished:
        msg.response.Pack(job_service_pb2.BulkJobsResult(done=op.done, skipped=op.skipped))
    return msg
