"""The floor of the worker path under gRPC: a grpc.aio server doing nothing but the store's work behind
ClaimChunks, CompleteChunk and CompleteChunks, with no service layer, call guard, request checks, change
hub or HTTP side, and the collector tuned as jobpulse tunes it. Answers use the server's own claim
encoding (``api/workers._add_claims``), so the wire messages are jobpulse's: the rows driven against it
show what jobpulse's could reach if everything of its own around the store and gRPC cost nothing.

On PostgreSQL it is the store's group-committed path (store/batch/; the database must be migrated
already). On SQLite, which has no path below the service, it is ``WorkerService`` itself, plus CreateJob,
GetJob and CancelJob through ``JobService`` so that bench.scenarios.chunk_throughput runs against it as
against jobpulse (the file is migrated at start). A declined completion fails its row's check.
"""

from __future__ import annotations

from typing import Any

import grpc

from bench.bare import SERVER_OPTIONS
from bench.procs import Child, Serving
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc
from jobpulse_server.api.workers import _add_claims
from jobpulse_server.domain.clock import now_us
from jobpulse_server.domain.model import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_KIND,
    DEFAULT_LEASE_US,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    Chunk,
    Job,
)
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.domain.work import DECLINED, Claim, ClaimRequest, Completion
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform import gc_tuning
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.jobs import JobService, NewJob
from jobpulse_server.services.outbox import Outbox
from jobpulse_server.services.workers import WorkerService
from jobpulse_server.store.batch import Batch
from jobpulse_server.store.database import SqlStore
from jobpulse_server.wire.convert import job_pb


def _lease_us(request: worker_service_pb2.ClaimChunksRequest) -> int:
    if not request.HasField("lease_duration"):
        return DEFAULT_LEASE_US
    return request.lease_duration.seconds * 1_000_000 + request.lease_duration.nanos // 1_000


def _claims(got: list[tuple[Job, Chunk]]) -> list[Claim]:
    return [Claim(job, chunk, chunk.lease_token or "", chunk.lease_expire_time or 0) for job, chunk in got]


class FloorWorkers(worker_service_pb2_grpc.WorkerServiceServicer):
    """ClaimChunks, CompleteChunk and CompleteChunks straight onto the group commit; every other RPC is
    UNIMPLEMENTED."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    async def _claim(self, request: worker_service_pb2.ClaimChunksRequest) -> list[Claim]:
        while True:
            got = await self.batch.claim(_ask(request), now_us())
            if got is not DECLINED:
                return _claims(got)
            # None: other workers took the work of the jobs this claim locked; look again.

    async def ClaimChunks(self, request: Any, context: Any) -> Any:
        out = worker_service_pb2.ClaimChunksResponse()
        _add_claims(out.claims, await self._claim(request))
        return out

    async def CompleteChunk(self, request: Any, context: Any) -> Any:
        if request.HasField("claim_next"):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no claim_next on the floor's CompleteChunk")
        one = await self.batch.complete(Completion(request.chunk_id, request.lease_token, []), now_us())
        if one is DECLINED:
            # No reason field on this answer: a declined completion fails the call, and the row with it.
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the store declined the completion")
            raise AssertionError("abort raises")
        return worker_service_pb2.CompleteChunkResponse(job_state=int(one.job_state))  # type: ignore[arg-type]

    async def CompleteChunks(self, request: Any, context: Any) -> Any:
        items = [Completion(c.chunk_id, c.lease_token, [], c.external_task_id) for c in request.completions]
        nxt = request.claim_next if request.HasField("claim_next") else None
        ask = None if nxt is None else _ask(nxt)
        out = worker_service_pb2.CompleteChunksResponse()
        if items:
            done, got = await self.batch.complete_many(items, now_us(), ask)
        else:
            done, got = [], DECLINED
        for item, one in zip(items, done, strict=True):
            if one is DECLINED:
                out.results.add(chunk_id=item.chunk_id, ok=False, reason="DECLINED")
            else:
                out.results.add(chunk_id=item.chunk_id, ok=True, job_state=int(one.job_state))  # type: ignore[arg-type]
        if nxt is not None:
            _add_claims(out.claims, _claims(got) if got is not DECLINED else await self._claim(nxt))
        return out


def _ask(request: worker_service_pb2.ClaimChunksRequest) -> ClaimRequest:
    return ClaimRequest(request.worker_id, list(request.kinds), request.max_chunks or 1, _lease_us(request))


class ServiceWorkers(worker_service_pb2_grpc.WorkerServiceServicer):
    """SQLite: the worker RPCs straight to ``WorkerService``, answered as the servicer answers them."""

    def __init__(self, work: WorkerService) -> None:
        self.work = work

    async def ClaimChunks(self, request: Any, context: Any) -> Any:
        out = worker_service_pb2.ClaimChunksResponse()
        _add_claims(out.claims, await self.work.claim(_ask(request)))
        return out

    async def CompleteChunk(self, request: Any, context: Any) -> Any:
        ask = _ask(request.claim_next) if request.HasField("claim_next") else None
        done = Completion(request.chunk_id, request.lease_token, [], request.external_task_id)
        state, claims = await self.work.complete(done, ask)
        out = worker_service_pb2.CompleteChunkResponse(job_state=int(state))  # type: ignore[arg-type]
        _add_claims(out.claims, claims)
        return out

    async def CompleteChunks(self, request: Any, context: Any) -> Any:
        items = [Completion(c.chunk_id, c.lease_token, [], c.external_task_id) for c in request.completions]
        ask = _ask(request.claim_next) if request.HasField("claim_next") else None
        out = worker_service_pb2.CompleteChunksResponse()
        if not items and ask is None:
            return out  # bench.work.supported's probe
        results, claims = await self.work.complete_many(items, ask)
        for r in results:
            if r.error is None:
                out.results.add(chunk_id=r.chunk_id, ok=True, job_state=int(r.job_state or 0))  # type: ignore[arg-type]
            else:
                out.results.add(chunk_id=r.chunk_id, ok=False, reason=r.error.reason)
        _add_claims(out.claims, claims)
        return out


class ServiceJobs(job_service_pb2_grpc.JobServiceServicer):
    """SQLite: what bench.scenarios.chunk_throughput asks of JobService, through ``JobService``."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    async def CreateJob(self, request: Any, context: Any) -> Any:
        r = request
        size, attempts = r.chunk_size or DEFAULT_CHUNK_SIZE, r.max_attempts or DEFAULT_MAX_ATTEMPTS
        new = NewJob(r.kind or DEFAULT_KIND, r.total_items, size, attempts, DEFAULT_PRIORITY, r.display_name)
        page = await self.jobs.create_job(ANONYMOUS, new)
        return job_service_pb2.CreateJobResponse(job=job_pb(page.job, None))

    async def GetJob(self, request: Any, context: Any) -> Any:
        page = await self.jobs.get_job(ANONYMOUS, request.job_id, full=False)
        return job_service_pb2.GetJobResponse(job=job_pb(page.job, None))

    async def CancelJob(self, request: Any, context: Any) -> Any:
        page = await self.jobs.cancel_job(ANONYMOUS, request.job_id, request.reason)
        return job_service_pb2.CancelJobResponse(job=job_pb(page.job, None))


async def serve_floor(database_url: str) -> Serving:
    """The floor on ``database_url``, in a ``bench.procs.Child`` (``floor_server``); no commands."""
    sqlite = database_url.startswith("sqlite")
    hub = ChangeHub()
    store = SqlStore(database_url, on_commit=hub.publish if sqlite else None)
    await store.start(migrate=sqlite)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    if sqlite:
        # Wired as app.create_server wires the two services (a change hub, an outbox that no job here
        # uses, the metrics the services keep), without the server around them.
        config = Config(database_url=database_url)
        outbox = Outbox(lambda *_: {}, 0)
        work = WorkerService(store, hub, outbox, config, metrics=Metrics())
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(ServiceWorkers(work), server)  # type: ignore[abstract]
        jobs = ServiceJobs(JobService(store, outbox, config))  # type: ignore[abstract]
        job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    else:
        assert store.batch is not None
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(FloorWorkers(store.batch), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gc_tuning.tune(Config().gc_threshold)  # as jobpulse's server does once it is up (app.py)

    async def stop() -> None:
        await server.stop(0)
        await store.close()

    return port, lambda msg: ("error", f"unknown command {msg[0]!r}"), stop


def floor_server(database_url: str) -> Child:
    """The floor in a process of its own (started)."""
    return Child(serve_floor, database_url, name="floor").start()
