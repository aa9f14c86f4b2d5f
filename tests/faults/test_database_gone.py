"""The database goes, or loses tables or columns the server uses, under a running server: every call,
every open stream and health say so. Calls and streams end with UNAVAILABLE, reason
DATABASE_UNAVAILABLE, and a plain message that says what to do (never a Python class name); grpc
health says NOT_SERVING and AdminService.GetServerHealth says serving false, database_reachable false.

Open streams (WatchJob, WatchJobs) and long-polls (WaitOperation) wait on the server's change hub,
not on the database: before, streams went on heartbeating while every call failed, and a wait
answered with the job as it stood before. Now the health probe's finding ends them (the SDK resumes
with backoff). A missing table or column (PostgreSQL's undefined_table 42P01 and
undefined_column 42703, SQLite's "no such table/column") was INTERNAL, and health, which probed with
``SELECT 1``, stayed SERVING.

The ways the database goes, each on the databases it applies to:
- PostgreSQL: dropped; renamed; its public schema dropped (every table gone); a table dropped; a
  column renamed. Roles refused and databases refusing connections: test_edge_errors.py and
  test_database_outage.py.
- SQLite: the file removed, or replaced by one that is not a database (the pools disposed first: a
  connection SQLite already has open goes on using the moved file, see test_database_outage.py);
  every table dropped (the server pointed at an empty file); a table dropped; a column renamed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.engine import make_url
from support.faults import (
    NOT_SERVING,
    SERVING,
    Stubs,
    pg_admin,
    reason_of,
    restore_sqlite_file,
    swap_sqlite_file,
)
from support.polling import eventually

from jobpulse.v1 import admin_service_pb2 as A
from jobpulse.v1 import admin_service_pb2_grpc
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

# What a message meant for people must never contain: the marks of a Python exception.
LEAKS = ("Error", "Exception", "<class", "Traceback", "Unexpected")
# Probes, heartbeats and key refreshes well below the deadlines below.
FAST = {"health_interval": 0.2, "heartbeat_interval": 0.2, "key_refresh_interval": 0.5, "sweep_interval": 0.2}
# An open stream must end within this (from when it opened): without the fix it heartbeats until
# the deadline and ends DEADLINE_EXCEEDED instead.
STREAM_DEADLINE = 20.0
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
SNAPSHOT, HEARTBEAT = J.WATCH_EVENT_TYPE_SNAPSHOT, J.WATCH_EVENT_TYPE_HEARTBEAT


def _sqlite_path(database_url: str) -> Path:
    return Path(str(make_url(database_url).database))


def _sqlite_run(database_url: str, sql: str) -> None:
    """Runs ``sql`` on a connection of the test's own to the server's SQLite file."""
    conn = sqlite3.connect(_sqlite_path(database_url))
    try:
        conn.executescript(sql)
    finally:
        conn.close()


def _pg_run(database_url: str, sql: str) -> None:
    """Runs ``sql`` in the server's PostgreSQL database, on an admin connection of the test's own."""
    pg_admin(sql, database=make_url(database_url).database)


Undo = Callable[[], None]


@dataclass
class Way:
    """One way the database goes: where it applies, and how (returning how to undo it, if it can be)."""

    dialects: tuple[str, ...]
    apply: Callable[[Any, str], Undo | None]
    # For tables and columns gone: what the message must name.
    names: str = ""


def _pg_dropped(srv: Any, database_url: str) -> None:
    pg_admin(f'DROP DATABASE "{make_url(database_url).database}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _no_renamed_database_left(database_url: str) -> Iterator[None]:
    """A database renamed away by ``_pg_renamed`` and not renamed back is dropped after the test (the
    database fixture drops the original name only)."""
    yield
    if database_url.startswith("postgresql"):
        pg_admin(f'DROP DATABASE IF EXISTS "{make_url(database_url).database}_gone" WITH (FORCE)')


def _pg_renamed(srv: Any, database_url: str) -> Undo:
    name = make_url(database_url).database
    renamed = f"{name}_gone"
    # A database cannot be renamed while anyone is connected: refuse new connections first.
    pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    pg_admin(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"')
    pg_admin(f'ALTER DATABASE "{renamed}" ALLOW_CONNECTIONS true')
    # Nobody connects to the new name (the server asks for the old one), so it can be renamed back.
    return lambda: pg_admin(f'ALTER DATABASE "{renamed}" RENAME TO "{name}"')


def _sqlite_swapped(replacement: bytes | None) -> Callable[[Any, str], Undo]:
    def apply(srv: Any, database_url: str) -> Undo:
        away = swap_sqlite_file(srv, database_url, replacement)
        return lambda: restore_sqlite_file(database_url, away)

    return apply


def _table_dropped(srv: Any, database_url: str) -> None:
    if database_url.startswith("postgresql"):
        _pg_run(database_url, "DROP TABLE chunks CASCADE")
    else:
        _sqlite_run(database_url, "DROP TABLE chunks")


def _pg_schema_dropped(srv: Any, database_url: str) -> None:
    _pg_run(database_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def _sqlite_tables_dropped(srv: Any, database_url: str) -> None:
    conn = sqlite3.connect(_sqlite_path(database_url))
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        conn.executescript("".join(f'DROP TABLE "{n}";' for n in names if not n.startswith("sqlite_")))
    finally:
        conn.close()


def _column_renamed(srv: Any, database_url: str) -> Undo:
    run = _pg_run if database_url.startswith("postgresql") else _sqlite_run
    run(database_url, "ALTER TABLE chunks RENAME COLUMN item_count TO item_count_gone")
    return lambda: run(database_url, "ALTER TABLE chunks RENAME COLUMN item_count_gone TO item_count")


NOT_A_DATABASE = b"this is not a SQLite database, whatever its name says\n" * 200
WAYS = {
    "pg_dropped": Way(("postgresql",), _pg_dropped),
    "pg_renamed": Way(("postgresql",), _pg_renamed),
    "pg_schema_dropped": Way(("postgresql",), _pg_schema_dropped, names="has no table"),
    "sqlite_removed": Way(("sqlite",), _sqlite_swapped(None)),
    "sqlite_not_a_database": Way(("sqlite",), _sqlite_swapped(NOT_A_DATABASE)),
    "sqlite_tables_dropped": Way(("sqlite",), _sqlite_tables_dropped, names="has no table"),
    "table_dropped": Way(("postgresql", "sqlite"), _table_dropped, names='has no table "chunks"'),
    "column_renamed": Way(("postgresql", "sqlite"), _column_renamed, names='"item_count"'),
}


def _way(how: str, database_url: str) -> Way:
    way = WAYS[how]
    if make_url(database_url).get_backend_name() not in way.dialects:
        pytest.skip(f"{how} applies to {' and '.join(way.dialects)} only")
    return way


@dataclass
class Running:
    server: Any
    stubs: Stubs


@pytest.fixture
def running(make_server: Callable[..., Any]) -> Iterator[Running]:
    srv = make_server(**FAST)
    stubs = Stubs(srv.address)
    try:
        yield Running(srv, stubs)
    finally:
        stubs.close()


def _plain_unavailable(exc: grpc.RpcError) -> str:
    """The message of a call that ended UNAVAILABLE / DATABASE_UNAVAILABLE (asserted), leak-free."""
    code, reason, message = exc.code(), reason_of(exc), exc.details() or ""  # type: ignore[attr-defined]
    assert (code, reason) == UNAVAILABLE, (code, reason, message)
    assert message and not any(mark in message for mark in LEAKS), message
    return str(message)


def _stream_end(stream: Iterator[Any]) -> grpc.RpcError:
    """How an open stream ends: it must end with an error, before its deadline."""
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stream:
            pass
    return caught.value


def _server_health(stubs: Stubs) -> A.GetServerHealthResponse:
    admin = admin_service_pb2_grpc.AdminServiceStub(stubs.channel)
    return admin.GetServerHealth(A.GetServerHealthRequest(), timeout=10)


def _assert_health_agrees(stubs: Stubs) -> None:
    eventually(stubs.health_status, 15, "health NOT_SERVING", expect=NOT_SERVING)
    report = _server_health(stubs)
    assert (report.serving, report.database_reachable) == (False, False), report


@pytest.mark.parametrize("how", sorted(WAYS))
def test_open_streams_and_waits_end_unavailable_when_the_database_goes(
    running: Running, database_url: str, how: str
) -> None:
    way, stubs = _way(how, database_url), running.stubs
    job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
    watch = stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job.id), timeout=STREAM_DEADLINE)
    feed = stubs.jobs.WatchJobs(J.WatchJobsRequest(), timeout=STREAM_DEADLINE)
    # A long-poll for the job's end waits on the hub the same way (google.longrunning WaitOperation).
    wait = operations_pb2_grpc.OperationsStub(stubs.channel).WaitOperation.future(
        operations_pb2.WaitOperationRequest(name=f"operations/{job.id}", timeout=Duration(seconds=600)),
        timeout=STREAM_DEADLINE,
    )
    try:
        # Both streams are open and heartbeating, as idle streams do, and the wait is waiting.
        assert [next(watch).type, next(watch).type] == [SNAPSHOT, HEARTBEAT]
        assert [next(feed).type, next(feed).type] == [HEARTBEAT, HEARTBEAT]
        eventually(lambda: _server_health(stubs).open_streams, 10, "the wait waiting", expect=3)
        way.apply(running.server, database_url)
        for stream in (watch, feed):
            _plain_unavailable(_stream_end(stream))
        # Not the job as it stood before the database went (what the wait answered at its deadline).
        with pytest.raises(grpc.RpcError) as caught:
            wait.result()
        _plain_unavailable(caught.value)
        _assert_health_agrees(stubs)
    finally:
        watch.cancel()
        feed.cancel()
        wait.cancel()


@pytest.mark.parametrize("how", sorted(how for how, way in WAYS.items() if way.names))
def test_calls_say_which_table_or_column_is_missing(running: Running, database_url: str, how: str) -> None:
    """Each call that needs what is gone: UNAVAILABLE, naming it, and saying what to check."""
    way, stubs = _way(how, database_url), running.stubs
    job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
    way.apply(running.server, database_url)
    calls: dict[str, Callable[[], Any]] = {
        "CreateJob": lambda: stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=5),
        "ListJobChunks": lambda: stubs.jobs.ListJobChunks(J.ListJobChunksRequest(job_id=job.id), timeout=5),
        "ClaimChunks": lambda: stubs.workers.ClaimChunks(W.ClaimChunksRequest(worker_id="w"), timeout=5),
        "WatchJob": lambda: next(iter(stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job.id), timeout=5))),
    }
    # Twice: the first round may meet connections opened before, the second opens new ones.
    for _ in range(2):
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            message = _plain_unavailable(caught.value)
            assert way.names in message and "--database-url" in message, (name, message)
    _assert_health_agrees(stubs)


@pytest.mark.parametrize("how", ["column_renamed", "pg_renamed", "sqlite_not_a_database", "sqlite_removed"])
def test_streams_and_health_recover_once_the_database_is_back(
    running: Running, database_url: str, how: str
) -> None:
    way, stubs = _way(how, database_url), running.stubs
    job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
    undo = way.apply(running.server, database_url)
    assert undo is not None
    _assert_health_agrees(stubs)
    undo()
    eventually(stubs.health_status, 15, "health SERVING again", expect=SERVING)
    assert _server_health(stubs).database_reachable
    assert stubs.jobs.GetJob(J.GetJobRequest(job_id=job.id), timeout=10).job.id == job.id
    # A stream opened now heartbeats on: the outage is over for streams too.
    watch = stubs.jobs.WatchJob(J.WatchJobRequest(job_id=job.id), timeout=STREAM_DEADLINE)
    try:
        kinds = [next(watch).type for _ in range(4)]
        assert kinds == [SNAPSHOT, HEARTBEAT, HEARTBEAT, HEARTBEAT]
    finally:
        watch.cancel()
