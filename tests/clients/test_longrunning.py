"""google.longrunning.Operations through generic tooling: google-api-core's ``OperationsClient`` and
``operation.from_gapic(...).result()`` against a real server and channel, on SQLite and PostgreSQL.

Every job is the operation ``operations/<job id>``: done once terminal, the Job as metadata, a
JobResult (the artifacts) as response, the job's error as a google.rpc.Status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions, operation, operations_v1
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from google.protobuf import descriptor_pb2, duration_pb2
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import jobpulse
from jobpulse.v1 import job_pb2
from jobpulse_server.services import keys

pytestmark = pytest.mark.timeout(90)

UNKNOWN_JOB = "01NOSUCHJOB0000000000000000"


class Background:
    """Runs ``fn`` in a thread; ``join`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background worker did not finish"
        if self.error is not None:
            raise self.error


@pytest.fixture
def jobs(server: Any) -> Iterator[jobpulse.Client]:
    """The jobpulse SDK on the same server: creates jobs and plays the worker."""
    with jobpulse.Client(server.address, timeout=20.0) as client:
        yield client


@pytest.fixture
def channel(server: Any) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(server.address)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture
def operations(channel: grpc.Channel) -> operations_v1.OperationsClient:
    return operations_v1.OperationsClient(channel)


def work(jobs: jobpulse.Client, kind: str) -> list[str]:
    """Claims and completes every chunk of ``kind``, each with one artifact; returns their URIs."""
    uris = []
    for claim in jobs.claim_chunks("w1", kinds=[kind], max_chunks=100):
        uri = f"s3://results/{claim.chunk.index}.bin"
        jobs.complete_chunk(
            claim.chunk.id, claim.lease_token, artifacts=[{"name": f"{claim.chunk.index}.bin", "uri": uri}]
        )
        uris.append(uri)
    return uris


def violations(exc: exceptions.GoogleAPICallError) -> dict[str, str]:
    """The BadRequest field violations of an error, field -> description."""
    return {
        v.field: v.description
        for detail in exc.details
        if isinstance(detail, error_details_pb2.BadRequest)
        for v in detail.field_violations
    }


def rpc_violations(err: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of a raw gRPC error, field -> description."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update((v.field, v.description) for v in bad.field_violations)
    return found


def test_from_gapic_result_is_the_job_result_once_a_worker_completes_it(
    jobs: jobpulse.Client, channel: grpc.Channel
) -> None:
    job = jobs.create_job("render", 3, chunk_size=1)

    # The snippet of docs/grpcurl.md ("google-api-core"), as a user runs it.
    operations = operations_v1.OperationsClient(channel)
    op = operations.get_operation(f"operations/{job.id}")
    future = operation.from_gapic(op, operations, job_pb2.JobResult, metadata_type=job_pb2.Job)

    assert not op.done and not future.done()
    assert future.metadata.id == job.id and future.metadata.state == job_pb2.JOB_STATE_PENDING
    uris: list[str] = []
    worker = Background(lambda: uris.extend(work(jobs, "render")))
    result = future.result(timeout=60)
    worker.join()

    assert isinstance(result, job_pb2.JobResult)
    assert result.job_id == job.id
    assert [a.uri for a in result.artifacts] == sorted(uris) == [f"s3://results/{i}.bin" for i in range(3)]
    assert future.metadata.state == job_pb2.JOB_STATE_COMPLETED
    assert list(future.metadata.artifacts) == list(result.artifacts)
    assert not future.cancelled()


def test_a_failed_job_raises_with_its_error(jobs: jobpulse.Client, operations: Any) -> None:
    job = jobs.create_job("fragile", 1, max_attempts=1)
    op = operations.get_operation(f"operations/{job.id}")
    future = operation.from_gapic(op, operations, job_pb2.JobResult, metadata_type=job_pb2.Job)

    def fail() -> None:
        (claim,) = jobs.claim_chunks("w1", kinds=["fragile"])
        jobs.fail_chunk(claim.chunk.id, claim.lease_token, "BAD_INPUT", "row 7 is not a number", False)

    worker = Background(fail)
    with pytest.raises(exceptions.GoogleAPICallError) as raised:
        future.result(timeout=60)
    worker.join()

    # UNKNOWN: a worker's failure says nothing a status code could (see api/operations.py).
    assert isinstance(raised.value, exceptions.Unknown)
    assert raised.value.grpc_status_code == grpc.StatusCode.UNKNOWN
    assert "row 7 is not a number" in raised.value.message and "BAD_INPUT" in raised.value.message
    done = operations.get_operation(f"operations/{job.id}")
    assert done.done and not done.HasField("response")
    (info,) = [d for d in done.error.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    error_info = error_details_pb2.ErrorInfo()
    info.Unpack(error_info)
    assert (error_info.reason, error_info.domain) == ("BAD_INPUT", "jobpulse")
    assert dict(error_info.metadata) == {"job_id": job.id, "chunk_index": "0"}


def test_a_cancelled_job_raises_cancelled(jobs: jobpulse.Client, operations: Any) -> None:
    job = jobs.create_job("long", 2, chunk_size=1)
    name = f"operations/{job.id}"
    future = operation.from_gapic(
        operations.get_operation(name), operations, job_pb2.JobResult, metadata_type=job_pb2.Job
    )
    operations.cancel_operation(name)  # no chunk was claimed: the job is CANCELLED at once

    with pytest.raises(exceptions.Cancelled) as raised:
        future.result(timeout=60)
    assert raised.value.grpc_status_code == grpc.StatusCode.CANCELLED
    assert future.cancelled()
    assert jobs.get_job(job.id).state == job_pb2.JOB_STATE_CANCELLED
    # Cancelling again, or a finished operation, is OK and changes nothing.
    operations.cancel_operation(name)
    finished = jobs.create_job("quick", 1)
    work(jobs, "quick")
    operations.cancel_operation(f"operations/{finished.id}")
    assert operations.get_operation(f"operations/{finished.id}").HasField("response")


def pages(channel: grpc.Channel, filter_: str, page_size: int) -> list[list[str]]:
    """Every page of a ListOperations listing (the raw stub: OperationsClient sends no page_size)."""
    stub = operations_pb2_grpc.OperationsStub(channel)
    found, token = [], ""
    while True:
        request = operations_proto_pb2.ListOperationsRequest(
            name="operations", filter=filter_, page_size=page_size, page_token=token
        )
        answer = stub.ListOperations(request, timeout=10)
        found.append([op.name for op in answer.operations])
        token = answer.next_page_token
        if not token:
            return found


def test_list_filters_and_pages(jobs: jobpulse.Client, operations: Any, channel: grpc.Channel) -> None:
    running = [jobs.create_job("a", 1).id for _ in range(3)]
    completed = jobs.create_job("b", 1).id
    work(jobs, "b")
    cancelled = jobs.create_job("b", 1).id
    jobs.cancel_job(cancelled)

    def names(filter_: str) -> list[str]:
        return [op.name for op in operations.list_operations("operations", filter_)]

    everything = names("")
    assert everything == [f"operations/{j}" for j in reversed([*running, completed, cancelled])]
    assert pages(channel, "", 2) == [everything[:2], everything[2:4], everything[4:]]
    assert pages(channel, "kind = a", 1) == [[f"operations/{j}"] for j in reversed(running)]

    assert names("done = true") == [f"operations/{cancelled}", f"operations/{completed}"]
    assert names("done=false") == [f"operations/{j}" for j in reversed(running)]
    assert names("state = COMPLETED") == [f"operations/{completed}"]
    assert names('state = "JOB_STATE_CANCELLED"') == [f"operations/{cancelled}"]
    assert names('kind = "b" AND done = true AND state = COMPLETED') == [f"operations/{completed}"]
    assert names("done = true AND state = PENDING") == []
    assert names('kind = "a" AND kind = "b"') == []
    # Metadata and results in the listing, as in GetOperation.
    (op,) = operations.list_operations("operations", "state = COMPLETED")
    assert op.done and op.response.Is(job_pb2.JobResult.DESCRIPTOR)
    job = job_pb2.Job()
    op.metadata.Unpack(job)
    assert job.id == completed


def test_delete_a_done_operation_but_not_a_running_one(jobs: jobpulse.Client, operations: Any) -> None:
    running = f"operations/{jobs.create_job('a', 1).id}"
    with pytest.raises(exceptions.FailedPrecondition) as raised:
        operations.delete_operation(running)
    assert "CancelOperation first" in raised.value.message
    assert not operations.get_operation(running).done  # DeleteOperation never cancels

    operations.cancel_operation(running)
    operations.delete_operation(running)
    with pytest.raises(exceptions.NotFound):
        operations.get_operation(running)


def test_wait_operation_returns_when_done_and_never_outlasts_the_deadline(
    jobs: jobpulse.Client, channel: grpc.Channel
) -> None:
    stub = operations_pb2_grpc.OperationsStub(channel)
    job = jobs.create_job("slow", 1)
    name = f"operations/{job.id}"

    # The timeout given ends the wait with the operation as it stands.
    short = operations_proto_pb2.WaitOperationRequest(
        name=name, timeout=duration_pb2.Duration(nanos=200_000_000)
    )
    assert not stub.WaitOperation(short, timeout=10).done
    # A timeout beyond the call's deadline is cut to it: the answer comes back in time, not DEADLINE_EXCEEDED.
    started = time.monotonic()
    long = operations_proto_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=600))
    assert not stub.WaitOperation(long, timeout=4.0).done
    assert time.monotonic() - started < 4.0

    # A worker finishing the job ends a long wait at once (it is woken, not polled).
    worker = Background(lambda: work(jobs, "slow"))
    started = time.monotonic()
    op = stub.WaitOperation(long, timeout=30)
    worker.join()
    assert op.done and op.response.Is(job_pb2.JobResult.DESCRIPTOR)
    assert time.monotonic() - started < 20
    # A done operation answers at once, whatever the timeout.
    assert stub.WaitOperation(long, timeout=5).done


def test_unknown_and_malformed_operations(operations: Any, channel: grpc.Channel) -> None:
    stub = operations_pb2_grpc.OperationsStub(channel)
    unknown = f"operations/{UNKNOWN_JOB}"
    for call in (
        lambda: operations.get_operation(unknown),
        lambda: operations.cancel_operation(unknown),
        lambda: operations.delete_operation(unknown),
        lambda: stub.WaitOperation(operations_proto_pb2.WaitOperationRequest(name=unknown), timeout=10),
    ):
        with pytest.raises((exceptions.NotFound, grpc.RpcError)) as raised:
            call()
        err = raised.value
        code = err.grpc_status_code if isinstance(err, exceptions.GoogleAPICallError) else err.code()
        assert code == grpc.StatusCode.NOT_FOUND

    for bad in ("jobs/x", "operations/", "operations/a/b", UNKNOWN_JOB, ""):
        for api_call in (operations.get_operation, operations.cancel_operation, operations.delete_operation):
            with pytest.raises(exceptions.InvalidArgument) as invalid:
                api_call(bad)
            assert "name" in violations(invalid.value), bad

    for bad_filter in (
        "done = maybe",
        'owner = "bob"',
        "done = true OR kind = a",
        "done",
        "kind != a",
        'kind = "a',
    ):
        with pytest.raises(exceptions.InvalidArgument) as invalid:
            list(operations.list_operations("operations", bad_filter))
        assert list(violations(invalid.value)) == ["filter"], bad_filter
    with pytest.raises(exceptions.InvalidArgument) as invalid:
        list(operations.list_operations("jobs", ""))
    assert list(violations(invalid.value)) == ["name"]
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListOperations(operations_proto_pb2.ListOperationsRequest(name="operations", page_size=-1))
    assert list(rpc_violations(raised.value)) == ["page_size"]
    negative = operations_proto_pb2.WaitOperationRequest(
        name=f"operations/{UNKNOWN_JOB}", timeout=duration_pb2.Duration(seconds=-1)
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.WaitOperation(negative, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(rpc_violations(raised.value)) == ["timeout"]


def test_operations_client_follows_page_tokens(jobs: jobpulse.Client, operations: Any) -> None:
    made = [jobs.create_job("many", 1).id for _ in range(23)]
    listing = operations.list_operations("operations", 'kind = "many"')
    assert [len(list(page)) for page in listing.pages] == [20, 3]  # the server's default page size
    listed = [op.name for op in operations.list_operations("operations", "")]
    assert listed == [f"operations/{j}" for j in reversed(made)]


def test_a_page_token_is_bound_to_its_filter(jobs: jobpulse.Client, channel: grpc.Channel) -> None:
    for _ in range(3):
        jobs.create_job("a", 1)
    stub = operations_pb2_grpc.OperationsStub(channel)
    first = stub.ListOperations(operations_proto_pb2.ListOperationsRequest(name="operations", page_size=1))
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListOperations(
            operations_proto_pb2.ListOperationsRequest(
                name="operations", page_size=1, filter="done = true", page_token=first.next_page_token
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(rpc_violations(raised.value)) == ["page_token"]


def _key(srv: Any, name: str, role: str) -> str:
    key = srv.call(keys.create_key(srv.app.db, name, role))
    srv.call(srv.app.auth.refresh())
    return key


def test_operations_need_a_client_key_and_see_only_the_owners_jobs(make_server: Any) -> None:
    srv = make_server(key_refresh_interval=0.2)
    alice_key, bob_key, worker_key = (
        _key(srv, "alice", "client"),
        _key(srv, "bob", "client"),
        _key(srv, "w1", "worker"),
    )

    def bearer(key: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {key}")]

    channel = grpc.insecure_channel(srv.address)
    try:
        operations = operations_v1.OperationsClient(channel)
        with jobpulse.Client(srv.address, api_key=alice_key, timeout=10) as alice:
            job = alice.create_job("k", 1)
        name = f"operations/{job.id}"
        op = operations.get_operation(name, metadata=bearer(alice_key))
        assert op.name == name and not op.done
        future = operation.from_gapic(
            op, operations, job_pb2.JobResult, grpc_metadata=bearer(alice_key), metadata_type=job_pb2.Job
        )
        assert not future.done() and future.metadata.owner == "alice"

        with pytest.raises(exceptions.Unauthenticated):
            operations.get_operation(name)
        with pytest.raises(exceptions.PermissionDenied):
            operations.get_operation(name, metadata=bearer(worker_key))
        # Bob sees alice's operation exactly as a missing one.
        stub = operations_pb2_grpc.OperationsStub(channel)
        for call in (
            lambda: operations.get_operation(name, metadata=bearer(bob_key)),
            lambda: operations.cancel_operation(name, metadata=bearer(bob_key)),
            lambda: operations.delete_operation(name, metadata=bearer(bob_key)),
        ):
            with pytest.raises(exceptions.NotFound):
                call()
        with pytest.raises(grpc.RpcError) as raised:
            stub.WaitOperation(
                operations_proto_pb2.WaitOperationRequest(name=name), metadata=bearer(bob_key), timeout=10
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert list(operations.list_operations("operations", "", metadata=bearer(bob_key))) == []
        assert [o.name for o in operations.list_operations("operations", "", metadata=bearer(alice_key))] == [
            name
        ]
        assert not operations.get_operation(name, metadata=bearer(alice_key)).done  # bob's cancel did nothing
    finally:
        channel.close()


def test_reflection_lists_and_describes_the_operations_service(channel: grpc.Channel) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed, service, result = reflect.ServerReflectionInfo(
        iter(
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                # What grpcurl describe reads, and JobResult to decode an operation's response with.
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="google.longrunning.Operations"
                ),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="jobpulse.v1.JobResult"),
            ]
        ),
        timeout=5,
    )
    assert "google.longrunning.Operations" in {s.name for s in listed.list_services_response.service}

    def files(
        answer: reflection_pb2.ServerReflectionResponse,
    ) -> dict[str, descriptor_pb2.FileDescriptorProto]:
        protos = answer.file_descriptor_response.file_descriptor_proto
        return {f.name: f for f in map(descriptor_pb2.FileDescriptorProto.FromString, protos)}

    assert "Operations" in [svc.name for svc in files(service)["google/longrunning/operations.proto"].service]
    job_file = files(result)["jobpulse/v1/job.proto"]
    assert "JobResult" in [m.name for m in job_file.message_type]
    comments = " ".join(loc.leading_comments for loc in job_file.source_code_info.location)
    assert "operations/<job id>" in comments


def test_health_answers_for_the_operations_service(channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service="google.longrunning.Operations"), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
