"""Every driver error that says the database is away or refuses us maps to DatabaseUnavailable (a
caller is told to retry), and errors that are bugs or conflicts do not. Real outages are reproduced in
tests/faults/test_edge_errors.py and test_database_outage.py; this covers the classes a test server
cannot easily be brought to (too many connections, a starting server, a corrupt file), and the drivers'
own translation of aborted transactions and conflicts."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from jobpulse_server.domain.errors import DatabaseUnavailable
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.drivers import Aborted, Conflict
from jobpulse_server.store.errors import database_error

PG_UNAVAILABLE = [
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D000: dropped or renamed
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28000: role may not log in
    asyncpg.exceptions.InvalidPasswordError,  # 28P01
    asyncpg.exceptions.InsufficientPrivilegeError,  # 42501: CONNECT revoked
    asyncpg.exceptions.TooManyConnectionsError,  # 53300
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # 55000: ALLOW_CONNECTIONS false
    asyncpg.exceptions.SerializationError,  # 40001
    asyncpg.exceptions.DeadlockDetectedError,  # 40P01
]
PG_NOT_AN_OUTAGE = [
    asyncpg.exceptions.UniqueViolationError,
    asyncpg.exceptions.PostgresSyntaxError,
    asyncpg.exceptions.DataError,
]


@pytest.mark.parametrize("cls", PG_UNAVAILABLE, ids=lambda c: c.__name__)
def test_postgres_outages_and_refusals_are_unavailable(cls: type[asyncpg.PostgresError]) -> None:
    assert isinstance(database_error(cls("x")), DatabaseUnavailable)


@pytest.mark.parametrize("cls", PG_NOT_AN_OUTAGE, ids=lambda c: c.__name__)
def test_postgres_errors_that_are_not_outages_are_left_alone(cls: type[asyncpg.PostgresError]) -> None:
    assert database_error(cls("x")) is None


def _sqlite_error(path: Path, content: bytes) -> sqlite3.DatabaseError:
    path.write_bytes(content)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError) as raised:
            conn.execute("SELECT * FROM sqlite_master").fetchall()
        return raised.value
    finally:
        conn.close()


def test_a_sqlite_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    err = _sqlite_error(tmp_path / "x.db", b"not a database, whatever its name says\n" * 200)
    assert type(err) is sqlite3.DatabaseError  # not an OperationalError: mapped by its result code
    assert isinstance(database_error(err), DatabaseUnavailable)


def test_a_sqlite_constraint_violation_is_left_alone(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError) as raised:
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    assert database_error(raised.value) is None


@pytest.mark.parametrize(
    "err",
    [ConnectionRefusedError(111, "refused"), TimeoutError("connect"), socket.gaierror(-2, "no such host")],
    ids=["refused", "timeout", "no_such_host"],
)
def test_a_database_server_that_cannot_be_reached_is_unavailable(err: OSError) -> None:
    assert isinstance(database_error(err), DatabaseUnavailable)


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_a_transaction_aborted_after_its_last_retry_is_unavailable(sqlstate: str) -> None:
    # The asyncpg driver hands serialization failures and deadlocks on as Aborted; the store runs the
    # write again, and only the last failure reaches the caller.
    found = database_error(Aborted(sqlstate, "deadlock detected"))
    assert isinstance(found, DatabaseUnavailable) and "contention" in found.message


def test_a_connection_cut_mid_operation_is_unavailable() -> None:
    # asyncpg's state machine refuses a connection whose operation an outage cut short.
    err = asyncpg.exceptions._base.InternalClientError(
        "cannot switch to state 11; another operation (2) is in progress"
    )
    assert isinstance(database_error(err), DatabaseUnavailable)


def test_a_conflict_is_left_alone() -> None:
    assert database_error(Conflict("duplicate key")) is None


async def test_the_store_front_door_raises_database_unavailable_itself(tmp_path: Path) -> None:
    """No caller above the store sees a driver's exception: a driver error that means the database is
    away leaves a read or a write as DatabaseUnavailable (the driver's error its cause), and any other
    error leaves as it was raised."""
    store = SqlStore(f"sqlite:///{tmp_path / 'front-door.db'}")
    await store.start()
    try:
        outage = sqlite3.OperationalError("disk I/O error")

        async def failing_write(tx: object) -> None:
            raise outage

        with pytest.raises(DatabaseUnavailable) as raised:
            await store.write(failing_write)
        assert raised.value.__cause__ is outage

        with pytest.raises(DatabaseUnavailable) as raised:
            async with store.read():
                raise outage
        assert raised.value.__cause__ is outage

        bug = KeyError("not the database's")
        with pytest.raises(KeyError) as other:
            async with store.read():
                raise bug
        assert other.value is bug
        await store.probe()  # and the store still answers
    finally:
        await store.close()
