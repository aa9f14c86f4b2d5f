"""kill -9 of the server while a pipeline runs: stage 2 waits for stage 1 chunk by chunk (PER_CHUNK) and
ends with a finalize chunk. After the restart every chunk of both stages completes once, the finalize
chunk after all of them, no chunk of stage 2 started before its stage-1 chunk had completed
(watched while it runs, across the kill: support.e2e.PipelineOrder), and nothing is left held: both
jobs COMPLETED, their summaries equal to a recount."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from support.e2e import PipelineOrder
from support.faults import Stubs
from support.polling import eventually
from support.servers import ServerProcess

from jobpulse.v1 import job_pb2, worker_service_pb2_grpc
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

KINDS = ["kill9-stage1", "kill9-stage2", "kill9-final"]
CHUNKS = 40
WORKERS = 4
LEASE = duration_pb2.Duration(seconds=2)


def _work(address: str, worker_id: str, stop: threading.Event, completed: Counter[str]) -> None:
    """Claims one chunk of any stage at a time under a 2 s lease and completes it after 10 ms, counting
    each completion the server accepted, until ``stop`` or the server goes away."""
    with grpc.insecure_channel(address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        ask = W.ClaimChunksRequest(worker_id=worker_id, kinds=KINDS, max_chunks=1, lease_duration=LEASE)
        while not stop.is_set():
            try:
                claims = stub.ClaimChunks(ask, timeout=5).claims
                for claim in claims:
                    stop.wait(0.01)  # the work
                    done = W.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token)
                    stub.CompleteChunk(done, timeout=5)
                    completed[claim.chunk.id] += 1
                if not claims:
                    stop.wait(0.05)
            except grpc.RpcError:
                return


def _pool(address: str, stop: threading.Event, completed: Counter[str]) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_work, args=(address, f"w{n}", stop, completed), daemon=True)
        for n in range(WORKERS)
    ]
    for t in threads:
        t.start()
    return threads


def test_a_pipeline_survives_a_kill_with_nothing_run_early_twice_or_left_held(
    database_url: str, tmp_path: Path
) -> None:
    settings = {"rate_limit_client": 0, "rate_limit_worker": 0, "drain_seconds": 0, "sweep_interval": 0.5}
    log = tmp_path / "server.log"
    first = ServerProcess(database_url, log, **settings).start()
    second = None
    stop = threading.Event()
    completed: Counter[str] = Counter()
    try:
        stubs = Stubs(first.address)
        stage1 = stubs.jobs.CreateJob(
            J.CreateJobRequest(kind=KINDS[0], total_items=CHUNKS, chunk_size=1), timeout=30
        ).job
        stage2 = stubs.jobs.CreateJob(
            J.CreateJobRequest(
                kind=KINDS[1],
                total_items=CHUNKS,
                chunk_size=1,
                after=[stage1.id],
                after_mode=job_pb2.DEPENDENCY_MODE_PER_CHUNK,
                finalize_kind=KINDS[2],
            ),
            timeout=30,
        ).job
        stubs.close()
        order = PipelineOrder(first.address, stage1.id, stage2.id)
        # The watcher looks before the workers start, so it is known to work (a count of looks at the end
        # depended on how fast the machine ran the pipeline: 6-10 on a slow hour, against a line of 10).
        eventually(lambda: order.looks >= 3, 30, "the watcher looking")
        threads = _pool(first.address, stop, completed)

        def stage2_under_way() -> bool:
            s = Stubs(first.address)
            try:
                got = s.jobs.GetJob(J.GetJobRequest(job_id=stage2.id), timeout=5).job
                return got.chunks_summary.completed >= 10
            finally:
                s.close()

        eventually(stage2_under_way, 60, "10 stage-2 completions before the kill")
        first.kill()
        for t in threads:
            t.join(20)

        second = ServerProcess(database_url, log, **settings).start()
        order.address = second.address
        threads = _pool(second.address, stop, completed)
        stubs = Stubs(second.address)
        try:

            def finished() -> bool:
                jobs = [
                    stubs.jobs.GetJob(J.GetJobRequest(job_id=j.id), timeout=5).job for j in (stage1, stage2)
                ]
                return all(j.state == job_pb2.JOB_STATE_COMPLETED for j in jobs)

            eventually(finished, 90, "both stages completed after the restart")
            one = stubs.assert_summary_matches_chunks(stage1.id)
            two = stubs.assert_summary_matches_chunks(stage2.id)
            assert one.chunks_summary.completed == CHUNKS and two.chunks_summary.completed == CHUNKS + 1
            assert not two.blocked
        finally:
            stubs.close()
        stop.set()
        for t in threads:
            t.join(20)
        breaches = order.stop()
        assert order.looks > 3 and breaches == []
        assert max(completed.values()) == 1, "a completion was accepted twice"
    finally:
        stop.set()
        first.close()
        if second is not None:
            second.close()
