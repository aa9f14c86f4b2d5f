"""kill -9 of the server while caps bind: a kind's max_running_chunks (3) and a job's (2) hold before the
kill and after the restart, on the same database. The chunks the killed server had leased stay running
until their short leases run out and the new server's sweeper puts them back, so they count against the
caps meanwhile; then every chunk of both jobs completes, each job's summary equal to a recount."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
from google.protobuf import duration_pb2
from support.faults import Stubs
from support.polling import eventually
from support.servers import ServerProcess

from jobpulse.v1 import job_pb2, worker_service_pb2_grpc
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

KIND = "kill9-capped"
KIND_CAP, JOB_CAP = 3, 2
WORKERS = 6
LEASE = duration_pb2.Duration(seconds=2)


class Sampler:
    """The kind's and the capped job's running chunks, as the server reports them, every 10 ms; calls
    that fail while the server is down are passed over."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.address = ""
        self.most = {"kind": 0, "job": 0}
        # Samples taken from each server (the one killed, then the one restarted).
        self.samples: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, address: str) -> None:
        self.address = address
        if not self._thread.is_alive():
            self._thread.start()

    def _run(self) -> None:
        # One channel per server, kept between samples (a channel a sample made them slow enough under
        # load that a run could end with fewer than 50).
        stubs: Stubs | None = None
        on = ""
        while not self._stop.wait(0.01):
            address = self.address
            if stubs is None or on != address:
                if stubs is not None:
                    stubs.close()
                stubs, on = Stubs(address), address
            try:
                kinds = stubs.jobs.ListKinds(J.ListKindsRequest(), timeout=2).kinds
                job = stubs.jobs.GetJob(J.GetJobRequest(job_id=self.job_id), timeout=2).job
            except grpc.RpcError:
                continue
            running = {k.kind: k.running_chunks for k in kinds}.get(KIND, 0)
            self.most["kind"] = max(self.most["kind"], running)
            self.most["job"] = max(self.most["job"], job.chunks_summary.processing)
            self.samples[address] = self.samples.get(address, 0) + 1
        if stubs is not None:
            stubs.close()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        return self.most


def _work(address: str, worker_id: str, stop: threading.Event) -> None:
    """Claims one chunk at a time under a 2 s lease and completes it after 10 ms, until ``stop`` or the
    server goes away."""
    with grpc.insecure_channel(address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        ask = W.ClaimChunksRequest(worker_id=worker_id, kinds=[KIND], max_chunks=1, lease_duration=LEASE)
        while not stop.is_set():
            try:
                claims = stub.ClaimChunks(ask, timeout=5).claims
                for claim in claims:
                    stop.wait(0.01)  # the work
                    done = W.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token)
                    stub.CompleteChunk(done, timeout=5)
                if not claims:
                    stop.wait(0.05)
            except grpc.RpcError:
                return


def _pool(address: str, stop: threading.Event) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_work, args=(address, f"w{n}", stop), daemon=True) for n in range(WORKERS)
    ]
    for t in threads:
        t.start()
    return threads


def test_caps_hold_across_a_kill_and_nothing_is_left_stuck(database_url: str, tmp_path: Path) -> None:
    settings = {"rate_limit_client": 0, "rate_limit_worker": 0, "drain_seconds": 0, "sweep_interval": 0.5}
    log = tmp_path / "server.log"
    first = ServerProcess(database_url, log, **settings).start()
    second = None
    stop = threading.Event()
    try:
        stubs = Stubs(first.address)
        kind = J.Kind(kind=KIND, max_running_chunks=KIND_CAP)
        stubs.jobs.UpdateKind(J.UpdateKindRequest(kind=kind), timeout=30)
        capped = stubs.jobs.CreateJob(
            J.CreateJobRequest(kind=KIND, total_items=60, chunk_size=1, max_running_chunks=JOB_CAP),
            timeout=30,
        ).job
        other = stubs.jobs.CreateJob(
            J.CreateJobRequest(kind=KIND, total_items=60, chunk_size=1), timeout=30
        ).job
        stubs.close()
        sampler = Sampler(capped.id)
        sampler.start(first.address)
        threads = _pool(first.address, stop)

        def done_before_kill() -> bool:
            s = Stubs(first.address)
            try:
                return (
                    s.jobs.GetJob(J.GetJobRequest(job_id=other.id), timeout=5).job.chunks_summary.completed
                    >= 15
                )
            finally:
                s.close()

        eventually(done_before_kill, 60, "15 completions before the kill")
        first.kill()
        for t in threads:
            t.join(20)
        stop.clear()

        second = ServerProcess(database_url, log, **settings).start()
        sampler.address = second.address
        threads = _pool(second.address, stop)
        stubs = Stubs(second.address)
        try:

            def finished() -> bool:
                jobs = [
                    stubs.jobs.GetJob(J.GetJobRequest(job_id=j.id), timeout=5).job for j in (capped, other)
                ]
                return all(j.state == job_pb2.JOB_STATE_COMPLETED for j in jobs)

            eventually(finished, 90, "both jobs completed after the restart")
            for job in (capped, other):
                assert stubs.assert_summary_matches_chunks(job.id).chunks_summary.completed == 60
        finally:
            stubs.close()
        stop.set()
        for t in threads:
            t.join(20)
        most = sampler.stop()
        # Sampled while the first server ran and again once the second did.
        assert sampler.samples.get(first.address, 0) > 10 and sampler.samples.get(second.address, 0) > 10, (
            sampler.samples
        )
        assert most["kind"] <= KIND_CAP and most["job"] <= JOB_CAP, most
        assert most["kind"] == KIND_CAP, "the kind's cap never bound: the test could not have seen a breach"
    finally:
        stop.set()
        first.close()
        if second is not None:
            second.close()
