"""Retry policy: which failures are worth another attempt, and how long to wait before it."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import grpc

from jobpulse.errors import JobpulseError

#: Unary calls that only read, or whose repetition is harmless, are retried on these codes.
# UNAVAILABLE: the server or its database is away for a moment. RESOURCE_EXHAUSTED: over the rate
# limit; the server's RetryInfo says how long to wait, and the retry waits that long.
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

#: Attempts (first call included) for a retried unary call, within its deadline.
MAX_UNARY_ATTEMPTS = 5

#: Which unary calls the clients send again after a retryable failure, by the full name of their
#: request message: True for a read, or a write whose repetition changes nothing more (a second
#: CancelJob, the same UpdateJob); False for a write that would act twice (RetryJob, CompleteChunk,
#: ClaimChunks); a function of the request where it depends on it. Every unary method of the SDK's
#: services is here (tests/sdk/test_retry_table.py holds it to the descriptors).
RESENT: dict[str, bool | Callable[[Any], bool]] = {
    # JobService
    "jobpulse.v1.CreateJobRequest": lambda request: bool(request.request_id),  # the server dedupes it
    "jobpulse.v1.GetJobRequest": True,
    "jobpulse.v1.ListJobsRequest": True,
    "jobpulse.v1.ListJobChunksRequest": True,
    "jobpulse.v1.ListChunkAttemptsRequest": True,
    "jobpulse.v1.SummarizeFailuresRequest": True,
    "jobpulse.v1.BatchGetJobsRequest": True,
    "jobpulse.v1.CancelJobRequest": True,
    "jobpulse.v1.PauseJobRequest": True,
    "jobpulse.v1.ResumeJobRequest": True,
    "jobpulse.v1.RetryJobRequest": False,
    "jobpulse.v1.RetryChunkRequest": False,
    # A bulk action starts an operation each time; only counting is safe to repeat.
    "jobpulse.v1.CancelJobsRequest": lambda request: bool(request.validate_only),
    "jobpulse.v1.RetryJobsRequest": lambda request: bool(request.validate_only),
    "jobpulse.v1.PurgeJobsRequest": lambda request: bool(request.validate_only),
    "jobpulse.v1.UpdateJobRequest": True,
    "jobpulse.v1.DeleteJobRequest": False,
    "jobpulse.v1.GetJobStatsRequest": True,
    "jobpulse.v1.ListWebhookDeliveriesRequest": True,
    "jobpulse.v1.RedeliverWebhookRequest": True,
    "jobpulse.v1.CreateEventsTokenRequest": True,
    "jobpulse.v1.ListKindsRequest": True,
    "jobpulse.v1.UpdateKindRequest": True,
    # WorkerService
    "jobpulse.v1.ClaimChunksRequest": False,
    "jobpulse.v1.ReportChunkProgressRequest": True,
    "jobpulse.v1.CompleteChunkRequest": False,
    "jobpulse.v1.CompleteChunksRequest": False,
    "jobpulse.v1.FailChunkRequest": False,
    # AdminService
    "jobpulse.v1.GetUsageRequest": True,
    "jobpulse.v1.GetServerHealthRequest": True,
    # ScheduleService
    "jobpulse.v1.CreateScheduleRequest": False,
    "jobpulse.v1.GetScheduleRequest": True,
    "jobpulse.v1.ListSchedulesRequest": True,
    "jobpulse.v1.UpdateScheduleRequest": True,
    "jobpulse.v1.DeleteScheduleRequest": False,
    "jobpulse.v1.TriggerScheduleRequest": False,
    # google.longrunning.Operations
    "google.longrunning.ListOperationsRequest": True,
    "google.longrunning.GetOperationRequest": True,
    "google.longrunning.DeleteOperationRequest": True,
    "google.longrunning.CancelOperationRequest": True,
    "google.longrunning.WaitOperationRequest": True,
}


def may_resend(request: Any) -> bool:
    """Tells whether the unary call carrying ``request`` may be sent again (``RESENT``; a request not
    listed is not)."""
    rule = RESENT.get(request.DESCRIPTOR.full_name, False)
    return rule(request) if callable(rule) else rule


class Backoff:
    """Capped exponential backoff with full jitter on the upper half of each step.

    Args:
        initial: The first delay, in seconds.
        maximum: The cap on any delay, in seconds.
        multiplier: The growth factor between consecutive delays.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, multiplier: float = 2.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._current = initial

    def reset(self) -> None:
        """Starts over from the initial delay (call after a success)."""
        self._current = self._initial

    def next_delay(self, server_hint: float | None = None) -> float:
        """Returns the next delay and grows the following one.

        Args:
            server_hint: A delay the server asked for (``RetryInfo``); the result is never shorter.
        """
        step = self._current
        self._current = min(self._maximum, self._current * self._multiplier)
        delay = random.uniform(step / 2, step)
        if server_hint is not None:
            delay = max(delay, server_hint)
        return delay


def is_retryable(error: JobpulseError) -> bool:
    """Tells whether a unary call that failed with ``error`` may be sent again."""
    return error.code in RETRYABLE_CODES


def is_transport_failure(error: JobpulseError) -> bool:
    """Tells whether a stream broke because of the connection rather than a server decision.

    UNAVAILABLE always qualifies. INTERNAL or UNKNOWN without jobpulse ``ErrorInfo`` also do: the server
    attaches ErrorInfo to every status it sends itself, so a bare one comes from the transport (a reset
    stream, a proxy dropping the connection).
    """
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    if error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return error.domain != "jobpulse" and not error.reason
    return False
