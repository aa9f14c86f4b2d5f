"""The baseline: a bare grpc.aio JobService whose GetJob returns a pre-built response, no database.

Responses are parsed once when registered and handed back as the same message object on every
call, so a call costs what grpc.aio itself costs: the transport, request parsing and response
serialization. The server options match jobpulse's (``jobpulse_server.app.create_server``).
"""

from __future__ import annotations

import os
from typing import Any

import grpc

from bench.procs import Child, Serving
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.platform.tracing import tracing_from_environment, tracing_requested

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    # The same pending-call limits as jobpulse (service/jobpulse_server/app.py), so that both open
    # thousands of streams at once.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


class BareJobServicer(job_service_pb2_grpc.JobServiceServicer):
    """GetJob answers from a dict keyed by job id; every other RPC is UNIMPLEMENTED (inherited).

    Registered with the generated ``add_JobServiceServicer_to_server``, as jobpulse's servicer is, so
    both servers take the same registered-method path through grpc.aio.
    """

    def __init__(self) -> None:
        self._responses: dict[str, job_service_pb2.GetJobResponse] = {}

    def set_response(self, job_id: str, payload: bytes) -> None:
        self._responses[job_id] = job_service_pb2.GetJobResponse.FromString(payload)

    async def GetJob(self, request: Any, context: Any) -> Any:
        response = self._responses.get(request.job_id)
        if response is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no response registered for {request.job_id!r}")
            raise AssertionError("abort returned")
        return response


async def serve_bare() -> Serving:
    """The bare server in a ``bench.procs.Child``, on 127.0.0.1, any free port: ``("set", job_id,
    payload)`` registers a response. Where the ``OTEL_*`` variables turn tracing on (as they do for
    jobpulse: jobpulse_server/tracing.py), every call gets jobpulse's own server span (``RpcSpans``)
    exported the same way, and nothing else: the floor of what a traced call costs."""
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if tracing_requested(os.environ):
        from jobpulse_server.api.tracing import RpcSpans

        service = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
        interceptors.append(RpcSpans(tracing_from_environment().tracer, [service]))
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    # The generated stubs mark every RPC abstract; the ones not overridden answer UNIMPLEMENTED.
    servicer = BareJobServicer()  # type: ignore[abstract]
    job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    def handle(msg: tuple[Any, ...]) -> tuple[Any, ...]:
        if msg[0] != "set":
            return ("error", f"unknown command {msg[0]!r}")
        servicer.set_response(msg[1], msg[2])
        return ("ok",)

    return port, handle, lambda: server.stop(0.0)


class BareServer(Child):
    """The bare grpc.aio server in a process of its own."""

    def __init__(self) -> None:
        super().__init__(serve_bare, name="bare")

    def set_response(self, key: str, payload: bytes) -> None:
        """GetJob(job_id=key) will answer with this serialized GetJobResponse."""
        reply = self.ask("set", key, payload)
        if reply[0] != "ok":
            raise RuntimeError(f"bare server refused {key!r}: {reply}")


def padded_get_job_response(size: int, job_id: str) -> bytes:
    """A serialized GetJobResponse of ``size`` bytes (a job whose message is padding).

    Exact, except next to a varint boundary where no message has that size: then one byte over.
    """
    msg = job_service_pb2.GetJobResponse()
    msg.job.id = job_id
    room = size - msg.ByteSize()
    for target in (size, size + 1):
        # Tag and length varints grow with the padding, so some sizes need a second padded field.
        for extra in range(4):
            msg.job.display_name = "y" * extra
            for pad in range(max(0, room - 16), room + 1):
                msg.job.message = "x" * pad
                if msg.ByteSize() == target:
                    return msg.SerializeToString()
    raise ValueError(f"cannot pad a GetJobResponse to {size} bytes")
