"""Typed exceptions for everything that can go wrong talking to jobpulse.

Every failed RPC is turned into a subclass of :class:`JobpulseError` chosen from a table keyed by the gRPC
status code, so callers can write ``except jobpulse.errors.NotFound`` instead of inspecting status codes.
The rich details the server attaches (``google.rpc.ErrorInfo``, ``BadRequest`` and ``RetryInfo`` inside a
``google.rpc.Status``) are decoded into plain attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobpulse._settings import SettingError

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "JobpulseError",
    "LeaseLost",
    "NotFound",
    "OutOfRange",
    "PermanentError",
    "PermissionDenied",
    "ResourceExhausted",
    "SettingError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "WaitTimeout",
    "from_rpc_error",
]

_DETAILS_KEY = "grpc-status-details-bin"


class JobpulseError(Exception):
    """Base class of every error an RPC to jobpulse can raise.

    Attributes:
        code: The gRPC status code of the failed call.
        reason: The stable machine-readable reason from ``google.rpc.ErrorInfo`` (for example
            ``"JOB_NOT_FOUND"``), or ``""`` when the server sent none.
        message: The human-readable status message.
        metadata: The ``ErrorInfo.metadata`` map (for example ``{"job_id": "..."}``).
        domain: The ``ErrorInfo.domain``; ``"jobpulse"`` for errors raised by the server itself.
        field_violations: ``(field, description)`` pairs from ``google.rpc.BadRequest``.
        retry_delay: Seconds the server asks the client to wait before retrying (``google.rpc.RetryInfo``),
            or ``None``.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        domain: str = "",
        field_violations: Iterable[tuple[str, str]] = (),
        retry_delay: float | None = None,
    ) -> None:
        """Creates the error; normally done by :func:`from_rpc_error`, not by user code.

        Args:
            message: The human-readable status message.
            code: The status code; defaults to the class's own code.
            reason: The ``ErrorInfo.reason``.
            metadata: The ``ErrorInfo.metadata``.
            domain: The ``ErrorInfo.domain``.
            field_violations: ``(field, description)`` pairs.
            retry_delay: The ``RetryInfo.retry_delay`` in seconds.
        """
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.domain = domain
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        self.retry_delay = retry_delay

    @property
    def tag(self) -> str:
        """The status code, then the reason when it says more than the code: ``"NOT_FOUND JOB_NOT_FOUND"``,
        ``"INVALID_ARGUMENT"``."""
        if self.reason and self.reason != self.code.name:
            return f"{self.code.name} {self.reason}"
        return self.code.name

    @property
    def text(self) -> str:
        """What went wrong, said once: the message, with the field violations folded in.

        The server's ``INVALID_ARGUMENT`` message restates its violations (``"invalid request: priority:
        must be ..."``), so when every violation is already in the message, the violations alone are the
        text (``"priority must be between 0 and 10 (got 99)"``); a message that says more keeps its words.
        """
        if not self.field_violations:
            return self.message
        folded = "; ".join(f"{field} {description}" for field, description in self.field_violations)
        if all(f"{field}: {description}" in self.message for field, description in self.field_violations):
            return folded
        return f"{self.message}: {folded}" if self.message else folded

    def __str__(self) -> str:
        # One line, each thing said once: "priority must be between 0 and 10 (got 99) [INVALID_ARGUMENT]".
        text = self.text
        return f"{text} [{self.tag}]" if text else f"[{self.tag}]"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"
        )


class Cancelled(JobpulseError):
    """The call was cancelled, usually by the caller."""

    code = grpc.StatusCode.CANCELLED


class Unknown(JobpulseError):
    """The server or the transport failed in a way it could not classify."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(JobpulseError):
    """The request was malformed; ``field_violations`` names the offending fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(JobpulseError):
    """The call did not finish before its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(JobpulseError):
    """The job or chunk does not exist, or belongs to another owner."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(JobpulseError):
    """The resource to create already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(JobpulseError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(JobpulseError):
    """A quota or limit was hit; ``retry_delay`` may say when to try again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(JobpulseError):
    """The job is not in a state that allows the operation (e.g. ``JOB_ALREADY_TERMINAL``)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(JobpulseError):
    """The operation was aborted, typically by a concurrency conflict."""

    code = grpc.StatusCode.ABORTED


class LeaseLost(Aborted):
    """The worker's lease token is no longer the chunk's current one (reason ``LEASE_LOST``).

    The chunk was reclaimed or finished by someone else; the worker should drop it and move on.
    """


class OutOfRange(JobpulseError):
    """A value is past a valid range (e.g. ``REVISION_AHEAD`` for a watch resume point)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(JobpulseError):
    """The server does not implement this RPC."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(JobpulseError):
    """The server hit a bug; the details are in its logs."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(JobpulseError):
    """The server could not be reached or is shutting down; safe to retry idempotent calls."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(JobpulseError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(JobpulseError):
    """No valid credentials were sent (see the ``api_key`` client option)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class WaitTimeout(DeadlineExceeded):
    """``Client.wait`` gave up before the job reached a terminal state.

    Attributes:
        job_id: The job that was being waited for.
        last_job: The last state of the job seen before giving up, or ``None`` if none was seen.
    """

    def __init__(self, job_id: str, timeout: float, last_job: Any = None) -> None:
        """Creates the error.

        Args:
            job_id: The job that was being waited for.
            timeout: The timeout that elapsed, in seconds.
            last_job: The last ``Job`` message seen, if any.
        """
        what = job_id if job_id.startswith("operations/") else f"job {job_id}"  # wait_bulk_operation's
        super().__init__(f"{what} did not finish within {timeout:g}s", reason="WAIT_TIMEOUT")
        self.job_id = job_id
        self.last_job = last_job


class PermanentError(Exception):
    """Raise from a worker handler to fail a chunk for good, without further attempts.

    Any other exception fails the chunk as retryable, so it is tried again while attempts remain.
    """


class ChunkFailure(Exception):
    """What ``task.fail(...)`` raises to end a handler with a failure of its own words: the Worker reports
    exactly this ``reason``, ``message``, ``details`` and ``retryable`` (no traceback)."""

    def __init__(self, reason: str, message: str = "", details: str = "", retryable: bool = True) -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message
        self.details = details
        self.retryable = retryable


_BY_CODE: dict[grpc.StatusCode, type[JobpulseError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

_BY_REASON: dict[tuple[grpc.StatusCode, str], type[JobpulseError]] = {
    (grpc.StatusCode.ABORTED, "LEASE_LOST"): LeaseLost,
}


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """Returns the ``google.rpc.Status`` carried by a failed call, if any."""
    if isinstance(error, grpc.Call):
        try:
            status = rpc_status.from_call(error)
        except (ValueError, DecodeError):
            status = None
        if status is not None:
            return status
    # grpc.aio errors are not grpc.Call objects, and from_call rejects statuses whose message differs from
    # the call's details: read the trailer directly in both cases.
    trailing = getattr(error, "trailing_metadata", None)
    pairs = trailing() if callable(trailing) else None
    for key, value in pairs or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def _code_and_details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return code, details if isinstance(details, str) else str(error)


def from_rpc_error(error: grpc.RpcError) -> JobpulseError:
    """Converts a failed gRPC call (sync or ``grpc.aio``) into the matching typed exception.

    Args:
        error: The ``grpc.RpcError`` raised by a stub call or a response stream.

    Returns:
        An instance of the :class:`JobpulseError` subclass for the call's status code (or :class:`LeaseLost`
        for ``ABORTED``/``LEASE_LOST``), with reason, metadata, field violations and retry delay decoded.
    """
    code, details = _code_and_details(error)
    reason = ""
    domain = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    retry_delay: float | None = None
    status = _rich_status(error)
    if status is not None:
        if status.message:
            details = status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    cls = _BY_REASON.get((code, reason)) or _BY_CODE.get(code, Unknown)
    return cls(
        details,
        code=code,
        reason=reason,
        metadata=metadata,
        domain=domain,
        field_violations=violations,
        retry_delay=retry_delay,
    )
