"""jobpulse.v1.WorkerService: claims, heartbeats, progress, completions and failures of chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from jobpulse.v1 import (
    job_pb2,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from jobpulse_server.api.messages import (
    MAX_CLAIM,
    MAX_COMPLETIONS,
    Ctx,
)
from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.model import (
    DEFAULT_LEASE_US,
    Artifact,
    trimmed_details,
)
from jobpulse_server.domain.work import Claim, ClaimRequest, Completion, Failure, ProgressReport
from jobpulse_server.platform.artifact_uris import DEFAULT_SCHEMES, uri_problem
from jobpulse_server.services import auth
from jobpulse_server.services.job_trace import traceparent
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.wire.convert import chunk_kwargs, timestamp, timestamp_kwargs
from jobpulse_server.wire.validation import (
    MAX_ID,
    Checker,
    duration_us,
)

T = TypeVar("T")
R = TypeVar("R")


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    """jobpulse.v1.WorkerService."""

    ROLES = auth.WORKER_ROLES

    def __init__(
        self, work: WorkerService, clock: Clock, artifact_schemes: frozenset[str] = frozenset(DEFAULT_SCHEMES)
    ) -> None:
        self.work = work
        self.clock = clock
        # The schemes an artifact's uri may have (platform/artifact_uris.py; setting artifact_uri_schemes).
        self.artifact_schemes = artifact_schemes

    async def ClaimChunks(
        self, request: worker_service_pb2.ClaimChunksRequest, context: Ctx
    ) -> worker_service_pb2.ClaimChunksResponse:
        c = Checker()
        ask = _claim_request(request, c, "")
        c.done()
        out = worker_service_pb2.ClaimChunksResponse()
        _add_claims(out.claims, await self.work.claim(ask))
        return out

    async def ReportChunkProgress(
        self, request: worker_service_pb2.ReportChunkProgressRequest, context: Ctx
    ) -> worker_service_pb2.ReportChunkProgressResponse:
        c = Checker()
        c.text(request.chunk_id, "chunk_id", MAX_ID, required=True)
        c.text(request.lease_token, "lease_token", MAX_ID, required=True)
        c.check(request.items_done >= 0, "items_done", "must not be negative")
        c.text(request.stage, "stage", 256)
        c.text(request.message, "message", 4096)
        c.text(request.external_task_id, "external_task_id", 256)
        lease_us = None
        if request.HasField("lease_duration"):
            lease_us = duration_us(request.lease_duration, "lease_duration", c, lo_s=0.001, hi_s=24 * 3600)
        shown = _artifacts(request.artifacts, c, "", self.artifact_schemes) if request.artifacts else []
        c.done()
        cancel, expire = await self.work.report_progress(
            ProgressReport(
                request.chunk_id,
                request.lease_token,
                items_done=request.items_done,
                stage=request.stage,
                message=request.message,
                external_task_id=request.external_task_id,
                lease_us=lease_us or 0,
                artifacts=shown,
            )
        )
        return worker_service_pb2.ReportChunkProgressResponse(
            cancel_requested=cancel, lease_expire_time=timestamp(expire)
        )

    async def CompleteChunk(
        self, request: worker_service_pb2.CompleteChunkRequest, context: Ctx
    ) -> worker_service_pb2.CompleteChunkResponse:
        c = Checker()
        item = _completion(request, c, "", self.artifact_schemes)
        ask = _claim_request(request.claim_next, c, "claim_next.") if request.HasField("claim_next") else None
        c.done()
        state, claims = await self.work.complete(item, ask)
        out = worker_service_pb2.CompleteChunkResponse(job_state=int(state))  # type: ignore[arg-type]
        _add_claims(out.claims, claims)
        return out

    async def CompleteChunks(
        self, request: worker_service_pb2.CompleteChunksRequest, context: Ctx
    ) -> worker_service_pb2.CompleteChunksResponse:
        c = Checker()
        n = len(request.completions)
        c.check(n <= MAX_COMPLETIONS, "completions", f"at most {MAX_COMPLETIONS} per call (got {n})")
        c.check(
            n > 0 or request.HasField("claim_next"),
            "completions",
            "must not be empty (unless claim_next is set)",
        )
        items = [
            _completion(item, c, f"completions[{i}].", self.artifact_schemes)
            for i, item in enumerate(request.completions)
        ]
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.chunk_id in seen:
                c.fail(f"completions[{i}].chunk_id", f"chunk {item.chunk_id} appears more than once")
            seen.add(item.chunk_id)
        ask = _claim_request(request.claim_next, c, "claim_next.") if request.HasField("claim_next") else None
        c.done()
        out = worker_service_pb2.CompleteChunksResponse()
        results, claims = await self.work.complete_many(items, ask)
        for r in results:
            if r.error is None:
                out.results.add(chunk_id=r.chunk_id, ok=True, job_state=int(r.job_state or 0))  # type: ignore[arg-type]
            else:
                out.results.add(chunk_id=r.chunk_id, ok=False, reason=r.error.reason, message=r.error.message)
        _add_claims(out.claims, claims)
        return out

    async def FailChunk(
        self, request: worker_service_pb2.FailChunkRequest, context: Ctx
    ) -> worker_service_pb2.FailChunkResponse:
        c = Checker()
        c.text(request.chunk_id, "chunk_id", MAX_ID, required=True)
        c.text(request.lease_token, "lease_token", MAX_ID, required=True)
        c.text(request.error.reason, "error.reason", 128)
        c.text(request.error.message, "error.message", 4096)
        c.done()
        outcome = await self.work.fail(
            Failure(
                request.chunk_id,
                request.lease_token,
                request.error.reason,
                request.error.message,
                request.retryable,
                trimmed_details(request.error.details),
            )
        )
        return worker_service_pb2.FailChunkResponse(
            will_retry=outcome.will_retry, next_attempt_time=timestamp(outcome.next_attempt_time)
        )


def _claim_request(request: worker_service_pb2.ClaimChunksRequest, c: Checker, prefix: str) -> ClaimRequest:
    """ClaimChunks' arguments, checked."""
    c.text(request.worker_id, prefix + "worker_id", MAX_ID, required=True)
    c.check(
        0 <= request.max_chunks <= MAX_CLAIM,
        prefix + "max_chunks",
        f"must be between 0 (means 1) and {MAX_CLAIM}",
    )
    lease_us = DEFAULT_LEASE_US
    if request.HasField("lease_duration"):
        lease_us = duration_us(
            request.lease_duration, prefix + "lease_duration", c, lo_s=0.001, hi_s=24 * 3600
        )
    wait_s = 0.0
    if request.HasField("wait"):
        wait_s = duration_us(request.wait, prefix + "wait", c, lo_s=0, hi_s=60) / 1e6
    for i, kind in enumerate(request.kinds):
        c.text(kind, f"{prefix}kinds[{i}]", MAX_ID, required=True)
    return ClaimRequest(request.worker_id, list(request.kinds), request.max_chunks or 1, lease_us, wait_s)


def _completion(
    request: worker_service_pb2.CompleteChunkRequest | worker_service_pb2.ChunkCompletion,
    c: Checker,
    prefix: str,
    schemes: frozenset[str],
) -> Completion:
    """One completion, checked (an artifact's uri by the artifact URI rule, of ``schemes``)."""
    c.text(request.chunk_id, prefix + "chunk_id", MAX_ID, required=True)
    c.text(request.lease_token, prefix + "lease_token", MAX_ID, required=True)
    c.text(request.external_task_id, prefix + "external_task_id", 256)
    return Completion(
        request.chunk_id,
        request.lease_token,
        _artifacts(request.artifacts, c, prefix, schemes),
        request.external_task_id,
    )


def _artifacts(
    given: Sequence[job_pb2.Artifact], c: Checker, prefix: str, schemes: frozenset[str]
) -> list[Artifact]:
    """A completion's or a progress report's artifacts, checked (each uri by the artifact URI rule, of
    ``schemes``): at most 100."""
    c.check(len(given) <= 100, prefix + "artifacts", "at most 100 artifacts per chunk")
    for i, a in enumerate(given):
        c.text(a.name, f"{prefix}artifacts[{i}].name", 256, required=True)
        c.text(a.uri, f"{prefix}artifacts[{i}].uri", 2048, required=True)
        problem = uri_problem(a.uri, schemes) if a.uri and len(a.uri) <= 2048 else None
        if problem:
            c.check(False, f"{prefix}artifacts[{i}].uri", problem)
        c.text(a.media_type, f"{prefix}artifacts[{i}].media_type", 128)
        c.check(a.size_bytes >= 0, f"{prefix}artifacts[{i}].size_bytes", "must not be negative")
        c.enums([a.role], job_pb2.ArtifactRole.values(), f"{prefix}artifacts[{i}].role")
    return [Artifact(a.name, a.uri, a.media_type, a.size_bytes, role=a.role) for a in given]


def _add_claims(out: Any, claims: list[Claim]) -> None:
    """Appends claims to a repeated ChunkClaim field. The chunk and the lease's end go in as keywords
    (no Chunk or Timestamp message built and then copied in: a quarter less time a claim)."""
    for cl in claims:
        job = cl.job
        claim = out.add(
            job_id=job.id,
            job_kind=cl.chunk.kind,  # the job's, or its finalize_kind for the finalize chunk
            chunk=chunk_kwargs(cl.chunk),
            lease_token=cl.lease_token,
            lease_expire_time=timestamp_kwargs(cl.lease_expire_time),
            job_traceparent=traceparent(job.trace_parent),
        )
        if job.metadata:
            claim.job_metadata.update(job.metadata)
