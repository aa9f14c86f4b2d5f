"""Which canonical status (google.rpc.Code name) each domain error is: the gRPC edge sends it as the
call's status code, the HTTP edge as its HTTP status and in its JSON error body; and the google.rpc
details both send with it (``details_of``)."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from jobpulse_server.domain.errors import (
    ChunkNotFound,
    ChunkNotRetryable,
    DatabaseUnavailable,
    DeliveryNotFound,
    DependencyFailed,
    DomainError,
    InvalidArgument,
    InvalidPageToken,
    JobAlreadyExists,
    JobAlreadyTerminal,
    JobNotFound,
    JobNotRetryable,
    JobNotTerminal,
    LeaseLost,
    MalformedRequest,
    OperationNotDone,
    OperationNotFound,
    PermissionDenied,
    RateLimited,
    RevisionAhead,
    ScheduleNotFound,
    ShuttingDown,
    Unauthenticated,
    WebhookSecretMissing,
)

_CODES: dict[type[DomainError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    InvalidPageToken: "INVALID_ARGUMENT",
    MalformedRequest: "INVALID_ARGUMENT",
    JobNotFound: "NOT_FOUND",
    ChunkNotFound: "NOT_FOUND",
    ScheduleNotFound: "NOT_FOUND",
    JobAlreadyTerminal: "FAILED_PRECONDITION",
    JobAlreadyExists: "ALREADY_EXISTS",
    OperationNotFound: "NOT_FOUND",
    OperationNotDone: "FAILED_PRECONDITION",
    DependencyFailed: "FAILED_PRECONDITION",
    JobNotRetryable: "FAILED_PRECONDITION",
    ChunkNotRetryable: "FAILED_PRECONDITION",
    JobNotTerminal: "FAILED_PRECONDITION",
    LeaseLost: "ABORTED",
    RevisionAhead: "OUT_OF_RANGE",
    Unauthenticated: "UNAUTHENTICATED",
    DeliveryNotFound: "NOT_FOUND",
    WebhookSecretMissing: "FAILED_PRECONDITION",
    PermissionDenied: "PERMISSION_DENIED",
    RateLimited: "RESOURCE_EXHAUSTED",
    DatabaseUnavailable: "UNAVAILABLE",
    ShuttingDown: "UNAVAILABLE",
}

# google.rpc.Code -> HTTP status, as in google/rpc/code.proto's own notes.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def code_of(err: DomainError) -> str:
    """The canonical code name of ``err`` (INTERNAL for a plain DomainError: a bug)."""
    return next((_CODES[t] for t in type(err).__mro__ if t in _CODES), "INTERNAL")


# The ErrorInfo domain of every jobpulse error.
DOMAIN = "jobpulse"


def details_of(err: DomainError) -> list[Message]:
    """The google.rpc details of ``err``: an ErrorInfo with its stable reason and metadata; BadRequest
    field violations for INVALID_ARGUMENT (and a bad page token); RetryInfo when retrying later helps
    (UNAVAILABLE: a second; RATE_LIMITED: when the key's budget refills)."""
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=dict(err.metadata))
    ]
    violations = []
    if isinstance(err, InvalidArgument):
        violations = [(v.field, v.description) for v in err.violations]
    elif isinstance(err, InvalidPageToken):
        violations = [("page_token", err.message)]
    if violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
                ]
            )
        )
    if code_of(err) == "UNAVAILABLE":
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)))
    elif isinstance(err, RateLimited):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1_000_000, int(err.retry_after * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details
