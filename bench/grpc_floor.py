"""The floor of the worker path under gRPC on PostgreSQL: a grpc.aio server that does nothing but the
store's group-committed path (store/group.py) behind ClaimChunks, CompleteChunk and CompleteChunks.

    python -m bench.grpc_floor DATABASE_URL     # prints "port N" once it listens, serves until killed

No service layer, no call guard (keys, rate limits, metrics, tracing, logs), no request checks, no
change hub, no HTTP side; the collector tuned as jobpulse tunes it (gc_tuning.py). Each call's
completions and claim go to ``SqlStore.fast`` as they come, and the answer is built with the server's
own encoding of a claim (``api/workers._add_claims``), so the messages on the wire are the ones
jobpulse sends. bench.pg_peer drives it with the same workers as the jobpulse rows (one by one, and
CompleteChunks of 10 with claim_next): what those rows could reach on this machine if everything of
jobpulse's own around the store and gRPC cost nothing.
A completion the store declines (none should: the bench's jobs have no webhooks and its leases are
current) is answered not ok, and the row's check then fails.

Only for the benchmark: the database must be migrated already (bench.pg_peer makes its jobs with a
jobpulse server first).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from bench.bare import SERVER_OPTIONS
from jobpulse.v1 import worker_service_pb2, worker_service_pb2_grpc
from jobpulse_server import gc_tuning
from jobpulse_server.api.workers import _add_claims
from jobpulse_server.config import Config
from jobpulse_server.domain.clock import now_us
from jobpulse_server.domain.ids import chunk_job_id
from jobpulse_server.domain.model import DEFAULT_LEASE_US, Chunk, Job
from jobpulse_server.services.workers import Claim
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.fast import PgFast


def _lease_us(request: worker_service_pb2.ClaimChunksRequest) -> int:
    if not request.HasField("lease_duration"):
        return DEFAULT_LEASE_US
    return request.lease_duration.seconds * 1_000_000 + request.lease_duration.nanos // 1_000


def _claims(got: list[tuple[Job, Chunk]]) -> list[Claim]:
    return [Claim(job, chunk, chunk.lease_token or "", chunk.lease_expire_time or 0) for job, chunk in got]


class FloorWorkers(worker_service_pb2_grpc.WorkerServiceServicer):
    """ClaimChunks, CompleteChunk and CompleteChunks straight onto the group commit; every other RPC is
    UNIMPLEMENTED."""

    def __init__(self, fast: PgFast) -> None:
        self.fast = fast

    async def _claim(self, request: worker_service_pb2.ClaimChunksRequest) -> list[Claim]:
        while True:
            got = await self.fast.claim(
                request.worker_id, list(request.kinds), request.max_chunks or 1, _lease_us(request), now_us()
            )
            if got is not None:
                return _claims(got)
            # None: other workers took the work of the jobs this claim locked; look again.

    async def ClaimChunks(
        self, request: worker_service_pb2.ClaimChunksRequest, context: Any
    ) -> worker_service_pb2.ClaimChunksResponse:
        out = worker_service_pb2.ClaimChunksResponse()
        _add_claims(out.claims, await self._claim(request))
        return out

    async def CompleteChunk(
        self, request: worker_service_pb2.CompleteChunkRequest, context: Any
    ) -> worker_service_pb2.CompleteChunkResponse:
        if request.HasField("claim_next"):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no claim_next on the floor's CompleteChunk")
        one = await self.fast.complete(
            request.chunk_id, chunk_job_id(request.chunk_id), request.lease_token, now_us(), "", []
        )
        if one is None:
            # No reason field on this answer: a declined completion fails the call, and the row with it.
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the store declined the completion")
            raise AssertionError("abort raises")
        return worker_service_pb2.CompleteChunkResponse(job_state=int(one.job_state))  # type: ignore[arg-type]

    async def CompleteChunks(
        self, request: worker_service_pb2.CompleteChunksRequest, context: Any
    ) -> worker_service_pb2.CompleteChunksResponse:
        items = [
            (c.chunk_id, chunk_job_id(c.chunk_id), c.lease_token, c.external_task_id, [])
            for c in request.completions
        ]
        nxt = request.claim_next if request.HasField("claim_next") else None
        ask = None if nxt is None else (nxt.worker_id, list(nxt.kinds), nxt.max_chunks or 1, _lease_us(nxt))
        out = worker_service_pb2.CompleteChunksResponse()
        if items:
            done, got = await self.fast.complete_many(items, now_us(), ask)
        else:
            done, got = [], None
        for item, one in zip(items, done, strict=True):
            if one is None:
                out.results.add(chunk_id=item[0], ok=False, reason="DECLINED")
            else:
                out.results.add(chunk_id=item[0], ok=True, job_state=int(one.job_state))  # type: ignore[arg-type]
        if nxt is not None:
            _add_claims(out.claims, _claims(got) if got is not None else await self._claim(nxt))
        return out


async def serve(database_url: str) -> None:
    store = SqlStore(database_url)
    await store.start(migrate=False)
    fast = store.fast
    if fast is None:
        raise SystemExit("bench.grpc_floor: PostgreSQL only (the store has no group-committed path here)")
    server = grpc.aio.server(options=SERVER_OPTIONS)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(FloorWorkers(fast), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gc_tuning.tune(Config().gc_threshold)  # as jobpulse's server does once it is up (app.py)
    print(f"port {port}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)
        await store.close()


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.grpc_floor DATABASE_URL")
    asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
