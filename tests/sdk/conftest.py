"""Fixtures for SDK tests: the sync client against a scripted grpc_testing fake of both services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

import jobpulse
from jobpulse.v1 import job_service_pb2, worker_service_pb2

_SERVICES = {
    "JobService": job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    "WorkerService": worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
}


def rich_trailer(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    violations: tuple[tuple[str, str], ...] = (),
    retry_after: float | None = None,
) -> tuple[tuple[str, bytes], ...]:
    """Builds the trailing metadata a jobpulse server sends with an error: a serialized google.rpc.Status."""
    details = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain="jobpulse", metadata=metadata or {})
        details.append(info)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
        details.append(bad)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class FakeServer:
    """The server side of a grpc_testing channel: take the client's requests and answer them."""

    trailer = staticmethod(rich_trailer)

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._pool = ThreadPoolExecutor(max_workers=4)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Runs a client call in the background, since the fake answers only when the test tells it to."""
        return self._pool.submit(fn, *args, **kwargs)

    @staticmethod
    def _method(name: str) -> Any:
        service, method = name.split(".")
        return _SERVICES[service].methods_by_name[method]

    def take_unary(self, name: str) -> tuple[Any, Any, Any]:
        """Waits for a unary call ("JobService.GetJob") and returns (metadata, request, rpc)."""
        return self.channel.take_unary_unary(self._method(name))

    def take_stream(self, name: str) -> tuple[Any, Any, Any]:
        """Waits for a server-streaming call and returns (metadata, request, rpc)."""
        return self.channel.take_unary_stream(self._method(name))

    def answer(self, name: str, response: Any) -> Any:
        """Takes the next call of ``name``, answers it with ``response`` and returns its request."""
        _, request, rpc = self.take_unary(name)
        rpc.terminate(response, (), grpc.StatusCode.OK, "")
        return request

    def fail(self, name: str, code: grpc.StatusCode, message: str, **rich: Any) -> Any:
        """Takes the next call of ``name``, fails it with a rich status and returns its request."""
        _, request, rpc = self.take_unary(name)
        rpc.terminate(None, rich_trailer(code, message, **rich), code, message)
        return request

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    channel = grpc_testing.channel(_SERVICES.values(), grpc_testing.strict_real_time())
    server = FakeServer(channel)
    yield server
    server.close()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[jobpulse.Client]:
    with jobpulse.Client(channel=fake.channel, api_key="s3cret", timeout=5.0) as c:
        yield c
