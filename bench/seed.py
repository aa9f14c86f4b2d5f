"""Test data, created through the public API of a running jobpulse server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2

from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2, worker_service_pb2_grpc

TIMEOUT = 60.0
KINDS = ("thumbnails", "transcribe", "export", "index")
# Longer than any run, so the sweeper never moves the seeded PROCESSING chunks mid-measurement.
SEED_LEASE = duration_pb2.Duration(seconds=3600)


@dataclass
class ReadData:
    """Ids of the jobs the read benchmarks ask for."""

    small_job_id: str  # 10 chunks, PENDING
    big_job_id: str  # 1,000 chunks: 300 COMPLETED (one artifact each), 100 PROCESSING, 600 PENDING
    list_jobs: int  # jobs in the table besides the two above


async def seed_read_data(channel: grpc.aio.Channel, list_jobs: int) -> ReadData:
    """A 10-chunk job, a 1,000-chunk job part-way through, and ``list_jobs`` small jobs to list."""
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    small_job = job_service_pb2.CreateJobRequest(kind="thumbnails", total_items=5_000, chunk_size=500)
    small_job.display_name = "bench small job"
    big_job = job_service_pb2.CreateJobRequest(kind="transcribe", priority=10, total_items=100_000)
    big_job.chunk_size, big_job.display_name = 100, "bench big job"
    for request in (small_job, big_job):
        request.labels.update({"team": "bench", "tier": "gold"})
        request.metadata.update({"source": "bench", "bucket": "s3://bench-in"})
    small = await jobs.CreateJob(small_job, timeout=TIMEOUT)
    big = await jobs.CreateJob(big_job, timeout=TIMEOUT)
    await _advance_big_job(worker_service_pb2_grpc.WorkerServiceStub(channel), big.job.id)
    await _create_list_jobs(jobs, list_jobs)
    return ReadData(small.job.id, big.job.id, list_jobs)


async def _advance_big_job(workers: worker_service_pb2_grpc.WorkerServiceStub, job_id: str) -> None:
    """Claims 400 chunks of the big job (it has the top priority) and completes 300 of them."""
    claimed: list[worker_service_pb2.ChunkClaim] = []
    ask = worker_service_pb2.ClaimChunksRequest(worker_id="bench-seed-worker", kinds=["transcribe"])
    ask.max_chunks = 100
    ask.lease_duration.CopyFrom(SEED_LEASE)
    for _ in range(4):
        claimed.extend((await workers.ClaimChunks(ask, timeout=TIMEOUT)).claims)
    if len(claimed) != 400 or any(c.job_id != job_id for c in claimed):
        raise RuntimeError(f"seeding: expected 400 claims on job {job_id}, got {len(claimed)}")
    for claim in claimed[:300]:
        index = claim.chunk.index
        name = f"part-{index:05d}.json"
        done = worker_service_pb2.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token)
        done.external_task_id = f"gpu-task-{index:06d}"
        uri = f"s3://bench-out/{job_id}/{name}"
        done.artifacts.add(name=name, uri=uri, media_type="application/json", size_bytes=4096 + index)
        await workers.CompleteChunk(done, timeout=TIMEOUT)


async def _create_list_jobs(jobs: job_service_pb2_grpc.JobServiceStub, count: int) -> None:
    """``count`` two-chunk jobs, eight CreateJob calls in flight."""
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            kind = KINDS[i % len(KINDS)]
            request = job_service_pb2.CreateJobRequest(kind=kind, total_items=1_000, chunk_size=500)
            request.display_name = f"bench list job {i:05d}"
            request.labels.update({"team": "bench", "batch": str(i // 100)})
            request.metadata.update({"source": "bench", "n": i})
            await jobs.CreateJob(request, timeout=TIMEOUT)

    await asyncio.gather(*(lane() for _ in range(8)))
