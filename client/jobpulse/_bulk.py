"""Bulk operations over a filter (``cancel_jobs``, ``retry_jobs``, ``purge_jobs``): their requests, and
:class:`BulkOperation`, the progress of one as the SDK hands it out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from google.longrunning import operations_proto_pb2

from jobpulse._filters import with_filters
from jobpulse.v1 import job_service_pb2

_ACTIONS = {
    job_service_pb2.BULK_ACTION_CANCEL: "cancel",
    job_service_pb2.BULK_ACTION_RETRY: "retry",
    job_service_pb2.BULK_ACTION_PURGE: "purge",
}


@dataclass(frozen=True)
class BulkOperation:
    """How far a bulk operation has got (the server's ``google.longrunning.Operation``, decoded).

    Attributes:
        name: ``operations/bulk-<id>``, for ``get_bulk_operation``, ``wait_bulk_operation`` and
            ``cancel_operation``; empty for a ``validate_only`` count.
        action: ``"cancel"``, ``"retry"`` or ``"purge"``.
        matched: Jobs matching the filters when it began.
        done: Jobs it has acted on so far.
        skipped: Matching jobs it passed over (the action no longer applied to them).
        finished: Whether it has ended (all done, or stopped by ``cancel_operation``).
        cancelled: Whether ``cancel_operation`` stopped it before its last job.
        create_time: When it began.
        end_time: When it ended; ``None`` while it runs.
        raw: The Operation message as the server sent it.
    """

    name: str
    action: str
    matched: int
    done: int
    skipped: int
    finished: bool
    cancelled: bool
    create_time: datetime | None
    end_time: datetime | None
    raw: operations_proto_pb2.Operation

    @property
    def progress(self) -> float:
        """The share of matched jobs handled (acted on or passed over), 0.0 to 1.0; 1.0 once finished
        (or when nothing matched)."""
        if self.finished or not self.matched:
            return 1.0
        return min(1.0, (self.done + self.skipped) / self.matched)

    @classmethod
    def from_operation(cls, op: operations_proto_pb2.Operation) -> BulkOperation:
        """Decodes an Operation of CancelJobs, RetryJobs or PurgeJobs.

        Raises:
            ValueError: ``op`` is not a bulk operation (its metadata is not a BulkJobsMetadata).
        """
        meta = job_service_pb2.BulkJobsMetadata()
        if not op.metadata.Unpack(meta):
            raise ValueError(f"{op.name or 'the operation'} is not a bulk operation")
        return cls(
            name=op.name,
            action=_ACTIONS.get(meta.action, "unknown"),
            matched=meta.matched,
            done=meta.done,
            skipped=meta.skipped,
            finished=op.done,
            cancelled=op.HasField("error") and op.error.code == 1,  # google.rpc.Code.CANCELLED
            create_time=_time(meta, "create_time"),
            end_time=_time(meta, "end_time"),
            raw=op,
        )


def _time(
    meta: job_service_pb2.BulkJobsMetadata, field: Literal["create_time", "end_time"]
) -> datetime | None:
    if not meta.HasField(field):
        return None
    return getattr(meta, field).ToDatetime(tzinfo=timezone.utc)  # type: ignore[no-any-return]


def bulk_request(
    message: type[Any], filters: Mapping[str, Any], call: str, *, validate_only: bool, **extra: Any
) -> Any:
    """A CancelJobsRequest, RetryJobsRequest or PurgeJobsRequest (``message``) with a JobFilter's keys
    (given to ``call``) and the action's own fields (``extra``)."""
    return with_filters(message(validate_only=validate_only, **extra), filters, call)
