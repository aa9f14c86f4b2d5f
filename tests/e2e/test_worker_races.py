"""Sixteen workers racing on one job, on both databases: the job row every one of them changes is the hot
row the group commit (PostgreSQL) and the write lock (SQLite) serialise. Workers of three kinds share
the job (claim then complete one by one, complete with claim_next, batches of four with CompleteChunks
and claim_next), while a reader takes FULL snapshots of the job throughout. Every snapshot's summary
equals a recount of the chunks in that same answer, every chunk is acknowledged as completed to exactly
one worker once, and at the end the job is COMPLETED with a summary equal to a recount.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
from support.e2e import assert_summary_matches, count_states, summary_dict

import jobpulse
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

W = worker_service_pb2
KIND = "race"
CHUNKS = 480
WORKERS = 16
BATCH = 4


async def _race(address: str, job_id: str) -> tuple[list[str], list[dict[str, int]]]:
    acknowledged: list[str] = []  # one entry per completion answered ok, whoever it was
    snapshots: list[dict[str, int]] = []
    done = asyncio.Event()
    async with grpc.aio.insecure_channel(address) as channel:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        jobs = job_service_pb2_grpc.JobServiceStub(channel)

        def ask(worker_id: str, n: int) -> W.ClaimChunksRequest:
            return W.ClaimChunksRequest(worker_id=worker_id, kinds=[KIND], max_chunks=n)

        async def one_by_one(worker_id: str) -> None:
            while True:
                claims = (await workers.ClaimChunks(ask(worker_id, 1), timeout=30)).claims
                if not claims:
                    return
                c = claims[0]
                await workers.CompleteChunk(
                    W.CompleteChunkRequest(chunk_id=c.chunk.id, lease_token=c.lease_token), timeout=30
                )
                acknowledged.append(c.chunk.id)  # an error would have raised

        async def complete_and_claim(worker_id: str) -> None:
            claims = list((await workers.ClaimChunks(ask(worker_id, 1), timeout=30)).claims)
            while claims:
                c = claims[0]
                answer = await workers.CompleteChunk(
                    W.CompleteChunkRequest(
                        chunk_id=c.chunk.id, lease_token=c.lease_token, claim_next=ask(worker_id, 1)
                    ),
                    timeout=30,
                )
                acknowledged.append(c.chunk.id)
                claims = list(answer.claims)

        async def batched(worker_id: str) -> None:
            claims = list((await workers.ClaimChunks(ask(worker_id, BATCH), timeout=30)).claims)
            while claims:
                answer = await workers.CompleteChunks(
                    W.CompleteChunksRequest(
                        completions=[
                            W.ChunkCompletion(chunk_id=c.chunk.id, lease_token=c.lease_token) for c in claims
                        ],
                        claim_next=ask(worker_id, BATCH),
                    ),
                    timeout=30,
                )
                refused = [(r.chunk_id, r.reason) for r in answer.results if not r.ok]
                assert not refused, f"completions refused under current leases: {refused}"
                acknowledged.extend(r.chunk_id for r in answer.results)
                claims = list(answer.claims)

        async def reader() -> None:
            while not done.is_set():
                job = (
                    await jobs.GetJob(
                        job_service_pb2.GetJobRequest(job_id=job_id, view=job_pb2.JOB_VIEW_FULL), timeout=30
                    )
                ).job
                counted, summary = count_states(job.chunks), summary_dict(job.chunks_summary)
                assert summary == counted, f"revision {job.revision}: summary {summary} != recount {counted}"
                snapshots.append(counted)

        kinds = (one_by_one, complete_and_claim, batched)
        watching = asyncio.ensure_future(reader())
        try:
            await asyncio.gather(*(kinds[i % 3](f"w{i}") for i in range(WORKERS)))
        finally:
            done.set()
            await watching
    return acknowledged, snapshots


async def test_sixteen_workers_on_one_job_complete_each_chunk_once_and_keep_its_summary(
    make_server: Any,
) -> None:
    server = make_server()
    async with jobpulse.AsyncClient(server.address, timeout=30.0) as client:
        job = await client.create_job(KIND, CHUNKS, chunk_size=1)
    acknowledged, snapshots = await _race(server.address, job.id)

    twice = [chunk for chunk, n in Counter(acknowledged).items() if n > 1]
    assert not twice, f"chunks acknowledged as completed more than once: {twice[:5]}"
    assert len(acknowledged) == CHUNKS
    # The reader's checks are not vacuous: it saw the job part done, with chunks running.
    mid = [s for s in snapshots if 0 < s["completed"] < CHUNKS and s["processing"] > 0]
    assert mid, f"no snapshot taken mid-race ({len(snapshots)} in all)"
    with jobpulse.Client(server.address, timeout=30.0) as sync_client:
        final = assert_summary_matches(sync_client, job.id)
        assert final.state == job_pb2.JOB_STATE_COMPLETED
        assert final.chunks_summary.completed == CHUNKS
        assert sorted(acknowledged) == sorted(
            c.id for c in sync_client.list_job_chunks(job.id, page_size=1000)
        )
