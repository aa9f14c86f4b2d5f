"""Domain errors. Services raise them; the gRPC edge (api/error_mapping.py) turns them into statuses."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller can cause or observe."""

    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class FieldViolation:
    """One bad field of a request."""

    __slots__ = ("description", "field")

    def __init__(self, field: str, description: str) -> None:
        self.field = field
        self.description = description

    def __repr__(self) -> str:
        return f"FieldViolation({self.field!r}, {self.description!r})"


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` names the fields."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        text = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {text}")
        self.violations = violations


class MalformedRequest(DomainError):
    """The request's bytes are not a valid message (truncated or corrupt, bad UTF-8 in a string, nested
    too deep), so no field can be named. The caller's mistake, with the same reason as InvalidArgument."""

    reason = "INVALID_ARGUMENT"


class InvalidPageToken(DomainError):
    """A page token that is malformed, foreign, or used with other filters."""

    reason = "INVALID_PAGE_TOKEN"


class JobNotFound(DomainError):
    """No such job, or not the caller's."""

    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found", job_id=job_id)


class ScheduleNotFound(DomainError):
    """No such schedule, or not the caller's."""

    reason = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} not found", schedule_id=schedule_id)


class ChunkNotFound(DomainError):
    """No such chunk."""

    reason = "CHUNK_NOT_FOUND"

    def __init__(self, chunk_id: str) -> None:
        super().__init__(f"chunk {chunk_id!r} not found", chunk_id=chunk_id)


class JobAlreadyTerminal(DomainError):
    """The job already completed or failed."""

    reason = "JOB_ALREADY_TERMINAL"


class OperationNotFound(DomainError):
    """No such bulk operation, or not the caller's (metadata ``name``)."""

    reason = "OPERATION_NOT_FOUND"


class OperationNotDone(DomainError):
    """DeleteOperation on a bulk operation still running (metadata ``name``)."""

    reason = "OPERATION_NOT_DONE"


class JobAlreadyExists(DomainError):
    """A job of the caller with the same kind and unique key has not ended (metadata ``job_id``)."""

    reason = "JOB_ALREADY_EXISTS"


class JobNotRetryable(DomainError):
    """RetryJob on a job that is not FAILED or CANCELLED; RetryChunk on a cancelled job."""

    reason = "JOB_NOT_RETRYABLE"


class ChunkNotRetryable(DomainError):
    """RetryChunk on a chunk that is not FAILED."""

    reason = "CHUNK_NOT_RETRYABLE"


class DependencyFailed(DomainError):
    """CreateJob after a job that has ended FAILED or CANCELLED: the new job could never run."""

    reason = "DEPENDENCY_FAILED"


class JobNotTerminal(DomainError):
    """DeleteJob without force on a job that is still running."""

    reason = "JOB_NOT_TERMINAL"


class LeaseLost(DomainError):
    """The lease token is not the chunk's current one (or it expired)."""

    reason = "LEASE_LOST"


class RevisionAhead(DomainError):
    """WatchJob asked to resume after a revision the job has not reached."""

    reason = "REVISION_AHEAD"


UNAVAILABLE_MESSAGE = "the database is unavailable; retry shortly"


class DatabaseUnavailable(DomainError):
    """The database cannot be reached, refuses the server, or lacks its schema; the call may be retried.
    The store raises it for every driver error that means so (store/errors.py), at its front door: no
    caller above the store sees a driver's exception."""

    reason = "DATABASE_UNAVAILABLE"


class ShuttingDown(DomainError):
    """The server is draining; reconnect (to another replica)."""

    reason = "SHUTTING_DOWN"


class Unauthenticated(DomainError):
    """No API key, or one the server does not know (or revoked)."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The key's role may not call this method."""

    reason = "PERMISSION_DENIED"


class RateLimited(DomainError):
    """The key is over its rate limit; ``retry_after`` says when a call will be admitted."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float, **metadata: str) -> None:
        super().__init__(message, **metadata)
        self.retry_after = retry_after


class DeliveryNotFound(DomainError):
    """No such webhook delivery, or not the caller's."""

    reason = "DELIVERY_NOT_FOUND"

    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"webhook delivery {delivery_id!r} not found", delivery_id=delivery_id)


class WebhookSecretMissing(DomainError):
    """A job asks for webhooks, but there is no secret to sign them with."""

    reason = "WEBHOOK_SECRET_MISSING"
