"""kill -9 of the server in the middle of 1,000 chunk completions loses no completion it acknowledged.

The server runs as a real process (``python -m jobpulse_server``). Worker threads claim and complete
chunks over raw channels, one by one (CompleteChunk) or in batches (CompleteChunks of 5 with claim_next,
which PostgreSQL group-commits with other workers' batches), recording every completion acknowledged
OK. The server is SIGKILLed once a few hundred are acknowledged (others are in flight at that moment),
restarted on the same database, and every acknowledged chunk must be COMPLETED, with the job's summary
equal to a recount.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from support.faults import Stubs
from support.polling import eventually
from support.servers import ServerProcess

from jobpulse.v1 import job_pb2, worker_service_pb2_grpc
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

CHUNKS = 1000
KILL_AFTER = 350
WORKERS = 4


class Workers:
    """Threads that claim and complete chunks until told to stop or the server goes away."""

    def __init__(self, address: str, batched: bool = False) -> None:
        self.address = address
        self.batched = batched
        self.acked: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WORKERS)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def acknowledged(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(20)
            assert not t.is_alive()

    def _run(self, i: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
            lease = duration_pb2.Duration(seconds=300)
            while not self._stop.is_set():
                try:
                    claims = stub.ClaimChunks(
                        W.ClaimChunksRequest(worker_id=f"w{i}", max_chunks=5, lease_duration=lease), timeout=5
                    ).claims
                except grpc.RpcError as exc:
                    self._failed(exc)
                    return
                if not claims:
                    return
                if self.batched:
                    self._complete_batches(stub, list(claims), lease)
                    return
                for claim in claims:
                    request = W.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token)
                    try:
                        stub.CompleteChunk(request, timeout=5)
                    except grpc.RpcError as exc:
                        self._failed(exc)
                        return
                    with self._lock:
                        self.acked.add(claim.chunk.id)

    def _complete_batches(
        self, stub: worker_service_pb2_grpc.WorkerServiceStub, claims: list[Any], lease: duration_pb2.Duration
    ) -> None:
        """CompleteChunks of the claims with claim_next (5), which hands back the next batch."""
        ask = W.ClaimChunksRequest(worker_id="batch", max_chunks=5, lease_duration=lease)
        while claims and not self._stop.is_set():
            request = W.CompleteChunksRequest(
                completions=[
                    W.ChunkCompletion(chunk_id=c.chunk.id, lease_token=c.lease_token) for c in claims
                ],
                claim_next=ask,
            )
            try:
                answer = stub.CompleteChunks(request, timeout=5)
            except grpc.RpcError as exc:
                self._failed(exc)
                return
            with self._lock:
                self.acked.update(r.chunk_id for r in answer.results if r.ok)
            claims = list(answer.claims)

    def _failed(self, exc: grpc.RpcError) -> None:
        with self._lock:
            self.errors.append(exc.code().name)  # type: ignore[attr-defined]


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batches"])
def test_kill9_loses_no_acknowledged_completion(database_url: str, tmp_path: Path, batched: bool) -> None:
    settings = {"rate_limit_client": 0, "rate_limit_worker": 0, "drain_seconds": 0, "sweep_interval": 0.5}
    log = tmp_path / "server.log"
    first = ServerProcess(database_url, log, **settings).start()
    second = None
    try:
        stubs = Stubs(first.address)
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=CHUNKS, chunk_size=1), timeout=30).job
        stubs.close()
        assert job.chunks_summary.total == CHUNKS

        workers = Workers(first.address, batched)
        workers.start()
        eventually(lambda: workers.acknowledged() >= KILL_AFTER, 60, f"{KILL_AFTER} acknowledged completions")
        first.kill()
        workers.stop()
        acked = set(workers.acked)
        assert KILL_AFTER <= len(acked) < CHUNKS, "the kill did not land in the middle"
        assert workers.errors and set(workers.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}

        second = ServerProcess(database_url, log, **settings).start()
        stubs = Stubs(second.address)
        try:
            chunks = stubs.chunks(job.id)
            completed = {c.id for c in chunks if c.state == job_pb2.CHUNK_STATE_COMPLETED}
            lost = acked - completed
            assert not lost, f"{len(lost)} acknowledged completions were lost, e.g. {sorted(lost)[:5]}"
            # At most the completions in flight at the kill committed without an acknowledgement.
            assert len(completed) - len(acked) <= WORKERS * (5 if batched else 1)
            job_now = stubs.assert_summary_matches_chunks(job.id)
            assert job_now.chunks_summary.completed == len(completed)
            assert job_now.state == job_pb2.JOB_STATE_PROCESSING
        finally:
            stubs.close()
    finally:
        first.close()
        if second is not None:
            second.close()
