"""Errors as the HTTP side answers them: JSON ``{"error": {"code", "status", "reason", "message"}}``
with the HTTP status of the error's canonical code and the same reasons as the gRPC side."""

from __future__ import annotations

import json
import logging

from starlette.responses import Response

from jobpulse_server.domain.errors import DatabaseUnavailable, DomainError, RateLimited
from jobpulse_server.wire.status import HTTP_STATUS, code_of

log = logging.getLogger(__name__)


def error_body(status: int, code: str, reason: str, message: str) -> bytes:
    return json.dumps(
        {"error": {"code": status, "status": code, "reason": reason, "message": message}}
    ).encode()


def error_response(
    status: int, code: str, reason: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(error_body(status, code, reason, message), status, headers, media_type="application/json")


def response_for(exc: BaseException, what: str) -> Response:
    """The response for a request that raised ``exc``; unexpected errors are logged in full and
    answered with a generic 500, never a traceback."""
    err = exc if isinstance(exc, DomainError) else None
    if err is None:
        log.error("unhandled error in %s", what, exc_info=exc)
        return error_response(500, "INTERNAL", "INTERNAL", "internal error; the server logged the details")
    if isinstance(err, DatabaseUnavailable):
        log.warning("%s: database unavailable: %s", what, exc)
    code = code_of(err)
    status = HTTP_STATUS.get(code, 500)
    headers = {}
    if isinstance(err, RateLimited):
        headers["retry-after"] = str(max(1, round(err.retry_after + 0.499)))
    elif status == 503:
        headers["retry-after"] = "1"
    elif status == 401:
        headers["www-authenticate"] = 'Bearer realm="jobpulse"'
    return error_response(status, code, err.reason, err.message, headers)
