"""The one place where exceptions become gRPC statuses with google.rpc details.

Domain errors carry a stable ErrorInfo reason (and BadRequest field violations
for INVALID_ARGUMENT); a lost database is UNAVAILABLE with RetryInfo; anything
else is INTERNAL with a generic message and a logged traceback, never a repr.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from jobpulse_server.domain.errors import (
    ChunkNotFound,
    DatabaseUnavailable,
    DeliveryNotFound,
    DomainError,
    InvalidArgument,
    InvalidPageToken,
    JobAlreadyTerminal,
    JobNotFound,
    JobNotRetryable,
    JobNotTerminal,
    LeaseLost,
    PermissionDenied,
    RateLimited,
    RevisionAhead,
    ShuttingDown,
    Unauthenticated,
    WebhookSecretMissing,
)

log = logging.getLogger(__name__)

DOMAIN = "jobpulse"

_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidPageToken: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
    ChunkNotFound: grpc.StatusCode.NOT_FOUND,
    JobAlreadyTerminal: grpc.StatusCode.FAILED_PRECONDITION,
    JobNotRetryable: grpc.StatusCode.FAILED_PRECONDITION,
    JobNotTerminal: grpc.StatusCode.FAILED_PRECONDITION,
    LeaseLost: grpc.StatusCode.ABORTED,
    RevisionAhead: grpc.StatusCode.OUT_OF_RANGE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    DeliveryNotFound: grpc.StatusCode.NOT_FOUND,
    WebhookSecretMissing: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DatabaseUnavailable: grpc.StatusCode.UNAVAILABLE,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
}


def _pack(msg: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(msg)
    return detail


def to_status(err: DomainError) -> grpc.Status:
    """A domain error as a grpc.Status carrying google.rpc details in its trailers."""
    code = next((_CODES[t] for t in type(err).__mro__ if t in _CODES), grpc.StatusCode.INTERNAL)
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=dict(err.metadata)))
    ]
    if isinstance(err, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in err.violations
                    ]
                )
            )
        )
    elif isinstance(err, InvalidPageToken):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="page_token", description=err.message
                        )
                    ]
                )
            )
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))))
    elif isinstance(err, RateLimited):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1_000_000, int(err.retry_after * 1e9)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message, details=details)
    return rpc_status.to_status(status)


def translate(exc: BaseException) -> DomainError | None:
    """Maps infrastructure exceptions to domain errors; None for unknown ones."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, sa_exc.DBAPIError):
        state = _sqlstate(exc)
        if state in ("40001", "40P01"):
            # Serialization failure or deadlock: nothing was committed; the call may be retried.
            return DatabaseUnavailable("the database aborted the transaction under contention; retry")
        if state[:2] in ("08", "53", "57") or state == "55000":
            # Connection failures, too many connections, shutdown, or a database not accepting connections.
            return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (ConnectionError, OSError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return _translate_driver(exc)


def _translate_driver(exc: BaseException) -> DomainError | None:
    """The same mapping for errors of the drivers the store uses directly (sqlite3, asyncpg)."""
    if isinstance(exc, sqlite3.OperationalError):
        # Locked beyond the wait, disk full or unreadable: nothing was committed.
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state in ("40001", "40P01"):
            return DatabaseUnavailable("the database aborted the transaction under contention; retry")
        if state[:2] in ("08", "53", "57") or state == "55000":
            return DatabaseUnavailable("the database is unavailable; retry shortly")
        return None
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return None


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def status_for(exc: BaseException, method: str) -> grpc.Status:
    """The status a call that raised ``exc`` ends with; unexpected errors are logged in full."""
    err = translate(exc)
    if err is None:
        log.error("unhandled error in %s", method, exc_info=exc)
        err = DomainError("internal error; the server logged the details")
    elif isinstance(err, DatabaseUnavailable):
        log.warning("%s: database unavailable: %s", method, exc)
    return to_status(err)


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises AbortError to end the call: let it through untouched.
    return isinstance(exc, grpc.aio.AbortError)
