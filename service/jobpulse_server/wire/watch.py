"""Watch messages on the wire: WatchJobResponse for gRPC, and the SSE text of the HTTP side built from
it (proto3 JSON mapping, one line). Each form of a message is built once, whoever sends it."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import json_format

from jobpulse.v1 import job_service_pb2
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.retention import Retention
from jobpulse_server.services.watch import FeedMessage, WatchMessage
from jobpulse_server.wire.convert import chunk_pb, job_pb


def watch_encoder(
    clock: Clock, retention: Retention | None = None
) -> Callable[[WatchMessage], job_service_pb2.WatchJobResponse]:
    """How WatchService encodes its messages for the wire."""

    def encode(msg: WatchMessage) -> job_service_pb2.WatchJobResponse:
        return job_service_pb2.WatchJobResponse(
            type=int(msg.type),  # type: ignore[arg-type]
            revision=msg.revision,
            job=job_pb(msg.job, clock(), retention=retention) if msg.job is not None else None,
            chunks=[chunk_pb(ch) for ch in msg.chunks],
            more=msg.more,
        )

    return encode


def feed_encoder(
    clock: Clock, retention: Retention | None = None
) -> Callable[[FeedMessage], job_service_pb2.WatchJobsResponse]:
    """How a WatchJobs message goes on the wire."""

    def encode(msg: FeedMessage) -> job_service_pb2.WatchJobsResponse:
        now = clock()
        return job_service_pb2.WatchJobsResponse(
            type=int(msg.type),  # type: ignore[arg-type]
            jobs=[job_pb(j, now, retention=retention) for j in msg.jobs],
            cursor=msg.cursor,
            deleted_job_ids=msg.deleted,
        )

    return encode


def json_line(message: object) -> str:
    """A message in the proto3 JSON mapping, on one line (an SSE ``data:`` line may not break)."""
    return json_format.MessageToJson(message, indent=None)  # type: ignore[arg-type]
