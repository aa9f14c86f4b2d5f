"""The one place where exceptions become gRPC statuses with google.rpc details.

Domain errors carry a stable ErrorInfo reason (and BadRequest field violations
for INVALID_ARGUMENT); a lost database (the store recognises it in its drivers'
errors, store/errors.py, and raises DatabaseUnavailable) is UNAVAILABLE with
RetryInfo; anything else is INTERNAL with a generic message and a logged traceback,
never a repr.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from jobpulse_server.domain.errors import DatabaseUnavailable, DomainError
from jobpulse_server.wire.status import DOMAIN, code_of, details_of

log = logging.getLogger(__name__)

__all__ = ["DOMAIN", "status_for", "to_status", "translate"]


def _pack(msg: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(msg)
    return detail


def to_status(err: DomainError) -> grpc.Status:
    """A domain error as a grpc.Status carrying google.rpc details (wire.status.details_of) in its
    trailers."""
    code = grpc.StatusCode[code_of(err)]
    details = [_pack(d) for d in details_of(err)]
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message, details=details)
    return rpc_status.to_status(status)


def translate(exc: BaseException) -> DomainError | None:
    """The domain error ``exc`` stands for; None for unknown ones (a bug: INTERNAL)."""
    return exc if isinstance(exc, DomainError) else None


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
