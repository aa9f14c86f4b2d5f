"""Many watchers on one job: every one of them follows it to the terminal state, and the server ends
every stream with OK."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from support.watch import TERMINAL, check_stream

import jobpulse
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

KIND = "watch-fanout"
SDK_WATCHERS = 200
RAW_WATCHERS = 20
CHUNKS = 10


async def test_200_watchers_see_the_end_and_streams_end_ok(make_server: Callable[..., Any]) -> None:
    srv = make_server()
    started = asyncio.Event()
    first_seen = 0
    total = SDK_WATCHERS + RAW_WATCHERS

    def saw_first() -> None:
        nonlocal first_seen
        first_seen += 1
        if first_seen == total:
            started.set()

    async def sdk_watcher(client: jobpulse.AsyncClient, job_id: str) -> list[Any]:
        events = []
        async for event in client.watch_job(job_id, timeout=60):
            if not events:
                saw_first()
            events.append(event)
        return events

    async def raw_watcher(stub: Any, job_id: str) -> tuple[list[Any], grpc.StatusCode]:
        events = []
        call = stub.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id), timeout=60)
        async for event in call:
            if not events:
                saw_first()
            events.append(event)
        return events, await call.code()

    async with (
        jobpulse.AsyncClient(srv.address, timeout=30) as driver,
        jobpulse.AsyncClient(srv.address) as watchers_a,
        jobpulse.AsyncClient(srv.address) as watchers_b,
        grpc.aio.insecure_channel(srv.address) as raw_channel,
    ):
        job = await driver.create_job(KIND, CHUNKS, chunk_size=1)
        stub = job_service_pb2_grpc.JobServiceStub(raw_channel)
        sdk = [
            asyncio.ensure_future(sdk_watcher(watchers_a if i % 2 else watchers_b, job.id))
            for i in range(SDK_WATCHERS)
        ]
        raw = [asyncio.ensure_future(raw_watcher(stub, job.id)) for _ in range(RAW_WATCHERS)]
        await asyncio.wait_for(started.wait(), 30)

        claims = await driver.claim_chunks("fanout", [KIND], max_chunks=CHUNKS)
        assert len(claims) == CHUNKS
        for claim in claims:
            await driver.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=1)
            await driver.complete_chunk(claim.chunk.id, claim.lease_token)
        final = await driver.get_job(job.id, view="basic")
        sdk_results = await asyncio.wait_for(asyncio.gather(*sdk), 60)
        raw_results = await asyncio.wait_for(asyncio.gather(*raw), 60)

    assert final.state == job_pb2.JOB_STATE_COMPLETED
    streams = [*sdk_results, *(events for events, _ in raw_results)]
    for events in streams:
        check_stream(events)
        last = events[-1]
        assert last.job.state in TERMINAL
        assert last.job.state == job_pb2.JOB_STATE_COMPLETED
        assert last.revision == final.revision
        assert last.job.chunks_summary.completed == CHUNKS
    codes = [code for _, code in raw_results]
    assert codes == [grpc.StatusCode.OK] * RAW_WATCHERS
