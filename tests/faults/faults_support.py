"""Helpers for the fault tests: raw stubs and rich-status reasons (polling and the server process are in
``support``)."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Stubs:
    """Raw stubs over one channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, timeout: float = 2.0) -> int | None:
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return None

    def chunks(self, job_id: str) -> list[job_pb2.Chunk]:
        found: list[job_pb2.Chunk] = []
        token = ""
        while True:
            page = self.jobs.ListJobChunks(
                job_service_pb2.ListJobChunksRequest(job_id=job_id, page_size=1000, page_token=token),
                timeout=10,
            )
            found.extend(page.chunks)
            token = page.next_page_token
            if not token:
                return found

    def assert_summary_matches_chunks(self, job_id: str) -> job_pb2.Job:
        job = self.jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id, view=1), timeout=10).job
        counts = {name: 0 for name in ("pending", "processing", "completed", "failed", "cancelled")}
        for chunk in self.chunks(job_id):
            counts[job_pb2.ChunkState.Name(chunk.state).removeprefix("CHUNK_STATE_").lower()] += 1
        s = job.chunks_summary
        summary = {
            "pending": s.pending,
            "processing": s.processing,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
        }
        assert summary == counts, f"chunks_summary {summary} != recount {counts}"
        assert sum(counts.values()) == s.total
        return job

    def close(self) -> None:
        self.channel.close()


def reason_of(exc: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' if none)."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""
