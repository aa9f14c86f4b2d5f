"""The hot paths as users see them: one call per chunk for a busy worker, and GetJob / ListJobs
answers that reuse an encoding only while it is current."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

import jobpulse
from jobpulse.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from jobpulse_server.api.interceptors import CallGuard
from jobpulse_server.app.wiring import REGISTERED_METHODS
from jobpulse_server.platform.logs import Observer
from jobpulse_server.platform.metrics import Metrics


def _calls(srv: Any, method: str) -> float:
    value = srv.app.metrics.registry.get_sample_value("jobpulse_rpcs_total", {"method": method, "code": "OK"})
    return value or 0.0


def test_the_sdk_worker_claims_once_then_gets_work_with_each_completion(server, client):
    job = client.create_job(kind="resize", total_items=5, chunk_size=1)
    claims_before = _calls(server, "ClaimChunks")
    worker = jobpulse.Worker(server.address, kinds=["resize"], concurrency=1, progress_interval=0.0)
    try:
        handled = worker.run(lambda task: None, max_chunks=5)
    finally:
        worker.close()
    assert handled == 5
    done = client.get_job(job.id, view="basic")
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.chunks_summary.completed == 5
    # One ClaimChunks, then each completion brought the next chunk (the fifth asked for none).
    assert _calls(server, "ClaimChunks") - claims_before == 1
    assert _calls(server, "CompleteChunk") == 5


def test_getjob_full_is_current_after_every_change_and_eta_is_fresh(server, client):
    job = client.create_job(kind="resize", total_items=4, chunk_size=1)
    first = client.get_job(job.id)
    again = client.get_job(job.id)
    assert again == first  # same revision: the same answer (served from the encoding kept)
    claim = client.claim_chunks("w1", kinds=["resize"])[0]
    client.complete_chunk(claim.chunk.id, claim.lease_token, [{"name": "out", "uri": "s3://b/0"}])
    after = client.get_job(job.id)
    assert after.revision > first.revision
    states = {c.id: c.state for c in after.chunks}
    assert states[claim.chunk.id] == job_pb2.CHUNK_STATE_COMPLETED
    assert [a.uri for c in after.chunks for a in c.artifacts] == ["s3://b/0"]
    assert after.chunks_summary.completed == 1 and after.chunks_summary.pending == 3
    listed = {j.id: j for j in client.list_jobs(view="full")}
    assert listed[job.id] == after


def test_cached_answers_never_cross_owners_or_views(server, client):
    job = client.create_job(kind="resize", total_items=3, chunk_size=1)
    full = client.get_job(job.id, view="full")
    basic = client.get_job(job.id, view="basic")
    assert len(full.chunks) == 3 and len(basic.chunks) == 0
    assert basic.chunks_summary == full.chunks_summary
    batch = client.batch_get_jobs([job.id, job.id], view="basic")
    assert [j.id for j in batch] == [job.id, job.id] and all(len(j.chunks) == 0 for j in batch)


def test_concurrent_reads_and_writes_stay_consistent(server, client):
    """Readers hammering GetJob FULL while a worker completes chunks always see a summary that
    matches the chunks in the same answer."""
    job = client.create_job(kind="resize", total_items=40, chunk_size=1)
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        with jobpulse.Client(server.address) as reader:
            while not stop.is_set():
                j = reader.get_job(job.id)
                done = sum(1 for c in j.chunks if c.state == job_pb2.CHUNK_STATE_COMPLETED)
                if done != j.chunks_summary.completed:
                    problems.append(
                        f"revision {j.revision}: {done} chunks completed, summary says "
                        f"{j.chunks_summary.completed}"
                    )

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        worker = jobpulse.Worker(server.address, kinds=["resize"], concurrency=2, progress_interval=0.0)
        assert worker.run(lambda task: None, max_chunks=40) == 40
        worker.close()
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert problems == []
    assert client.get_job(job.id).state == job_pb2.JOB_STATE_COMPLETED


def test_full_view_of_a_big_job_after_a_change_keeps_its_page_token(server, client, job_stub):
    """A FULL read after a change re-encodes only what changed, and still shows the first 1,000
    chunks with the token that continues in ListJobChunks."""
    job = client.create_job(kind="big", total_items=1_005, chunk_size=1)
    before = client.get_job(job.id)
    assert len(before.chunks) == 1_000 and before.chunks_next_page_token
    claims = client.claim_chunks("w1", kinds=["big"], max_chunks=2)
    client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
    after = client.get_job(job.id)
    assert len(after.chunks) == 1_000
    assert after.chunks_next_page_token == before.chunks_next_page_token
    states = [c.state for c in after.chunks[:3]]
    assert states == [
        job_pb2.CHUNK_STATE_COMPLETED,
        job_pb2.CHUNK_STATE_PROCESSING,
        job_pb2.CHUNK_STATE_PENDING,
    ]
    assert [c.revision for c in after.chunks[2:]] == [c.revision for c in before.chunks[2:]]
    rest = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(job_id=job.id, page_token=after.chunks_next_page_token)
    )
    assert [c.index for c in rest.chunks] == [1_000, 1_001, 1_002, 1_003, 1_004]


def test_the_methods_grpc_gets_as_registered_are_methods_of_the_services(server, client):
    """A name in REGISTERED_METHODS that names no method would leave that method on the generic path
    unnoticed: each must be one of the services'. The methods left out are served all the same
    (the auth, listing and worker tests call them), here two of JobService's through the server."""
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (job_service_pb2, worker_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert REGISTERED_METHODS < methods
    job = client.create_job(kind="resize", total_items=2, chunk_size=1)
    assert "/jobpulse.v1.JobService/CancelJob" not in REGISTERED_METHODS
    assert client.cancel_job(job.id).state == job_pb2.JOB_STATE_CANCELLED
    assert client.get_job_stats().stats.total_jobs >= 1


def test_only_the_registered_methods_reach_grpc_as_registered_and_the_rest_answer_through_the_guard():
    """The servicers added through ``guard.server`` as the server adds them, onto a stand-in that keeps
    what grpc would be given: the registered methods are exactly REGISTERED_METHODS, and a method left
    out (CancelJob, Health's Check) still has a handler on the generic path, guarded where its service
    is."""

    class Recording:
        def __init__(self) -> None:
            self.registered: dict[str, grpc.RpcMethodHandler] = {}
            self.generic: list[grpc.GenericRpcHandler] = []

        def add_registered_method_handlers(self, service, handlers):
            self.registered.update({f"/{service}/{n}": h for n, h in handlers.items()})

        def add_generic_rpc_handlers(self, handlers):
            self.generic.extend(handlers)

        def generic_handler(self, method):
            details = type("Details", (), {"method": method, "invocation_metadata": ()})()
            found = [h.service(details) for h in self.generic]
            return next((h for h in found if h is not None), None)

    roles = {
        "jobpulse.v1.JobService": frozenset({"client"}),
        "jobpulse.v1.WorkerService": frozenset({"worker"}),
    }
    guard = CallGuard(None, Observer(Metrics()), roles)  # type: ignore[arg-type]  # no call is made
    recording = Recording()
    guarded = guard.server(recording, REGISTERED_METHODS)  # type: ignore[arg-type]
    job_service_pb2_grpc.add_JobServiceServicer_to_server(job_service_pb2_grpc.JobServiceServicer(), guarded)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        worker_service_pb2_grpc.WorkerServiceServicer(), guarded
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), guarded)

    assert set(recording.registered) == REGISTERED_METHODS
    # Registered or not, a guarded method answers through the guard's one wrapped handler.
    get_job = "/jobpulse.v1.JobService/GetJob"
    assert recording.generic_handler(get_job) is recording.registered[get_job]
    cancel = recording.generic_handler("/jobpulse.v1.JobService/CancelJob")
    assert cancel is not None and cancel is guard.wrap("/jobpulse.v1.JobService/CancelJob", cancel)
    assert recording.generic_handler("/grpc.health.v1.Health/Check") is not None
    assert recording.generic_handler("/jobpulse.v1.JobService/NoSuchMethod") is None
