"""Errors at the edge say what the caller can act on, never a Python class name.

Undecodable requests (bad UTF-8 in a string field, truncated or corrupt bytes, a Struct nested too
deep) are the caller's mistake: INVALID_ARGUMENT with a plain message, on every jobpulse service and
on google.longrunning.Operations, unary and streaming alike. grpc decodes the request before any
handler runs, so before this a decode failure came back as UNKNOWN "Unexpected <class ...>".

A database that disappears under a running server is an outage, not a bug: UNAVAILABLE with reason
DATABASE_UNAVAILABLE and RetryInfo for every kind of call (a read, a write, a worker call, a stream).
PostgreSQL: the database is dropped, or renamed, or our role may no longer log in or connect. SQLite:
the file is removed, or replaced by one that is not a database. (A database refusing connections for a
while: tests/faults/test_database_outage.py; open streams, and tables or columns gone under the
server: tests/faults/test_database_gone.py.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.engine import make_url
from support.faults import NOT_SERVING, Stubs, pg_admin, reason_of, swap_sqlite_file
from support.polling import eventually

from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

# What a message meant for people must never contain: the marks of a Python exception.
LEAKS = ("Error", "Exception", "<class", "Traceback", "Unexpected")


# -- undecodable requests ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: strings, bytes and embedded messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deep_struct(depth: int) -> bytes:
    """A google.protobuf.Struct {"k": {"k": {...}}} ``depth`` levels deep, encoded by hand (protobuf
    itself refuses to build one this deep)."""
    struct = b""
    for _ in range(depth):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, b"k") + _field(2, value))  # Struct.fields: map entry k -> value
    return struct


# Each case: raw bytes that are not a valid request message, whatever the method (field 1 is a
# string in every request below but the empty GetUsageRequest).
UNDECODABLE = {
    "bad_utf8_in_a_string": _field(1, b"\xff\xfe\xfd"),
    "truncated": _field(1, b"abcdefghij")[:5],
    "corrupt_tag": b"\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
}
# CreateJobRequest.metadata (field 5) is a Struct: 200 levels is beyond the decoder's depth limit.
STRUCT_TOO_DEEP = _field(5, _deep_struct(200))

# Unary and streaming methods of every service CallGuard serves.
UNARY_METHODS = [
    "/jobpulse.v1.JobService/CreateJob",
    "/jobpulse.v1.JobService/GetJob",
    "/jobpulse.v1.WorkerService/ClaimChunks",
    "/jobpulse.v1.AdminService/GetUsage",
    "/google.longrunning.Operations/GetOperation",
]
STREAM_METHODS = ["/jobpulse.v1.JobService/WatchJob"]


def _status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    return exc.code(), reason_of(exc), exc.details() or ""  # type: ignore[attr-defined]


def _raw_unary(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        call(payload, timeout=10)
    return caught.value


def _raw_stream(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call(payload, timeout=10):
            pass
    return caught.value


@pytest.fixture
def raw_channel(server: Any) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(server.address)
    try:
        yield channel
    finally:
        channel.close()


def _assert_plain_invalid_argument(exc: grpc.RpcError) -> None:
    code, reason, message = _status_of(exc)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), (code, reason, message)
    assert message and not any(mark in message for mark in LEAKS), message


# GetUsageRequest has no fields: its field 1 is an unknown field, kept as bytes, so UTF-8 is not checked.
UNARY_CASES = [
    (method, case)
    for method in UNARY_METHODS
    for case in sorted(UNDECODABLE)
    if not (method.endswith("/GetUsage") and case == "bad_utf8_in_a_string")
]


@pytest.mark.parametrize(("method", "case"), UNARY_CASES)
def test_an_undecodable_unary_request_is_invalid_argument(
    raw_channel: grpc.Channel, method: str, case: str
) -> None:
    _assert_plain_invalid_argument(_raw_unary(raw_channel, method, UNDECODABLE[case]))


def test_a_struct_nested_too_deep_is_invalid_argument(raw_channel: grpc.Channel) -> None:
    _assert_plain_invalid_argument(
        _raw_unary(raw_channel, "/jobpulse.v1.JobService/CreateJob", STRUCT_TOO_DEEP)
    )


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
@pytest.mark.parametrize("method", STREAM_METHODS)
def test_an_undecodable_stream_request_is_invalid_argument(
    raw_channel: grpc.Channel, method: str, case: str
) -> None:
    _assert_plain_invalid_argument(_raw_stream(raw_channel, method, UNDECODABLE[case]))


def test_the_message_says_what_was_wrong_and_the_server_keeps_serving(
    server: Any, raw_channel: grpc.Channel
) -> None:
    utf8 = _raw_unary(raw_channel, "/jobpulse.v1.JobService/GetJob", UNDECODABLE["bad_utf8_in_a_string"])
    _assert_plain_invalid_argument(utf8)
    assert utf8.details() == (  # type: ignore[attr-defined]
        "the request is not a valid jobpulse.v1.GetJobRequest: "
        "a string field holds bytes that are not valid UTF-8"
    )
    deep = _raw_unary(raw_channel, "/jobpulse.v1.JobService/CreateJob", STRUCT_TOO_DEEP)
    assert deep.details() == (  # type: ignore[attr-defined]
        "the request is not a valid jobpulse.v1.CreateJobRequest: "
        "messages (or Struct values) are nested too deeply"
    )
    cut = _raw_unary(raw_channel, "/google.longrunning.Operations/GetOperation", UNDECODABLE["truncated"])
    assert cut.details() == (  # type: ignore[attr-defined]
        "the request is not a valid google.longrunning.GetOperationRequest: "
        "its bytes are truncated or corrupt"
    )
    # The same channel and server go on answering well-formed calls.
    stubs = Stubs(server.address)
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=1), timeout=10).job
        assert stubs.jobs.GetJob(J.GetJobRequest(job_id=job.id), timeout=10).job.id == job.id
    finally:
        stubs.close()


# -- the database disappears ------------------------------------------------------------------------


def _retry_delay_of(exc: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def _every_kind_of_call(stubs: Stubs, job_id: str) -> dict[str, str]:
    """A read, a listing, a write, a worker call and a stream, each as CODE/REASON/retry (or OK)."""
    calls: dict[str, Callable[[], Any]] = {
        "GetJob": lambda: stubs.jobs.GetJob(J.GetJobRequest(job_id=job_id), timeout=5),
        "ListJobs": lambda: stubs.jobs.ListJobs(J.ListJobsRequest(), timeout=5),
        "CreateJob": lambda: stubs.jobs.CreateJob(J.CreateJobRequest(total_items=1), timeout=5),
        "ClaimChunks": lambda: stubs.workers.ClaimChunks(W.ClaimChunksRequest(worker_id="w"), timeout=5),
        "WatchJob": lambda: next(iter(stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job_id), timeout=5))),
    }
    answers = {}
    for name, call in calls.items():
        try:
            call()
            answers[name] = "OK"
        except grpc.RpcError as exc:
            retry = "retry" if _retry_delay_of(exc) else "no-retry"
            answers[name] = f"{exc.code().name}/{reason_of(exc)}/{retry}"  # type: ignore[attr-defined]
    return answers


UNAVAILABLE = "UNAVAILABLE/DATABASE_UNAVAILABLE/retry"


def _assert_every_call_unavailable(stubs: Stubs, job_id: str) -> None:
    eventually(stubs.health_status, 15, "health NOT_SERVING", expect=NOT_SERVING)
    # Twice: the first round may meet connections the outage killed, the second opens new ones.
    for _ in range(2):
        answers = _every_kind_of_call(stubs, job_id)
        assert answers == dict.fromkeys(answers, UNAVAILABLE), answers


@pytest.mark.parametrize("how", ["dropped", "renamed"])
def test_a_postgres_database_that_disappears_makes_every_call_unavailable(
    make_server: Callable[..., Any], database_url: str, how: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL databases are dropped and renamed; SQLite files: see below")
    name = make_url(database_url).database
    srv = make_server(health_interval=0.2, key_refresh_interval=0.5, sweep_interval=0.2)
    stubs = Stubs(srv.address)
    renamed = f"{name}_renamed"
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
        if how == "dropped":
            pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        else:
            # A database cannot be renamed while anyone is connected: refuse new connections first.
            pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            pg_admin(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"')
            pg_admin(f'ALTER DATABASE "{renamed}" ALLOW_CONNECTIONS true')
        _assert_every_call_unavailable(stubs, job.id)
    finally:
        stubs.close()
        if how == "renamed":
            pg_admin(f'DROP DATABASE IF EXISTS "{renamed}" WITH (FORCE)')


@pytest.mark.empty_database  # the role, owning the database, runs the migrations: it owns the tables
@pytest.mark.parametrize("how", ["login_refused", "connect_revoked", "connection_limit"])
def test_a_postgres_role_refused_makes_every_call_unavailable(
    make_server: Callable[..., Any], database_url: str, how: str
) -> None:
    """The server's role may no longer log in (SQLSTATE class 28, as for a changed password), lost
    CONNECT on the database (42501), or may open no more connections (53300, too many connections
    for the role: superusers are exempt, hence a role): the database refuses us, and the caller is
    told to retry, not that we have a bug."""
    if not database_url.startswith("postgresql"):
        pytest.skip("roles are PostgreSQL's")
    url = make_url(database_url)
    role = f"{url.database}_role"
    pg_admin(f'CREATE ROLE "{role}" LOGIN')
    # The owner of a database owns its public schema's rights too (PostgreSQL 15+), so migrations run.
    pg_admin(f'ALTER DATABASE "{url.database}" OWNER TO "{role}"')
    try:
        srv = make_server(
            database_url=url.set(username=role).render_as_string(hide_password=False),
            health_interval=0.2, key_refresh_interval=0.5, sweep_interval=0.2,
        )  # fmt: skip
        stubs = Stubs(srv.address)
        try:
            job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
            if how == "login_refused":
                pg_admin(f'ALTER ROLE "{role}" NOLOGIN')
            elif how == "connection_limit":
                pg_admin(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
            else:
                pg_admin(f'REVOKE CONNECT ON DATABASE "{url.database}" FROM PUBLIC, "{role}"')
            pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
            _assert_every_call_unavailable(stubs, job.id)
        finally:
            stubs.close()
    finally:
        # The database goes before its owner can.
        pg_admin(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        pg_admin(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("how", ["removed", "not_a_database"])
def test_a_sqlite_file_that_disappears_makes_every_call_unavailable(
    make_server: Callable[..., Any], database_url: str, how: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite files are removed and replaced; PostgreSQL databases: see above")
    srv = make_server(health_interval=0.2, key_refresh_interval=0.5, sweep_interval=0.2)
    stubs = Stubs(srv.address)
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
        garbage = b"this is not a SQLite database, whatever its name says\n" * 200
        swap_sqlite_file(srv, database_url, None if how == "removed" else garbage)
        _assert_every_call_unavailable(stubs, job.id)
        if how == "removed":
            # The server must not quietly make a new, empty database where the old one was.
            assert not Path(str(make_url(database_url).database)).exists()
    finally:
        stubs.close()
