"""What the drivers' errors mean for a caller: every way the database can be away, refuse us or
abort a transaction becomes the domain's DatabaseUnavailable. The only module that knows the
drivers' exception types and SQLSTATE codes."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

from jobpulse_server.domain.errors import DatabaseUnavailable

# SQLSTATE classes and codes that say the database is away or refuses us: connection exceptions (08),
# invalid authorization (28: the role or its password changed), too many connections or out of disk
# (53), shutdown or termination (57).
_UNAVAILABLE_CLASSES = ("08", "28", "53", "57")
_UNAVAILABLE_STATES = (
    "55000",  # object not in prerequisite state: the database does not accept connections
    "3D000",  # invalid catalog name: the database was dropped or renamed under the running server
    "42501",  # insufficient privilege: CONNECT (or a table's rights) revoked from our role
)
# SQLite's primary result codes for a file that is away, unreadable or not (any longer) a database.
# sqlite3 raises most as OperationalError (mapped as a whole); NOTADB and CORRUPT come as the
# broader DatabaseError, whose other subclasses (IntegrityError...) are not outages.
_SQLITE_UNAVAILABLE = {
    3,  # SQLITE_PERM
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    26,  # SQLITE_NOTADB
}


def _unavailable_state(state: str) -> DatabaseUnavailable | None:
    if state in ("40001", "40P01"):
        # Serialization failure or deadlock: nothing was committed; the call may be retried.
        return DatabaseUnavailable("the database aborted the transaction under contention; retry")
    if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES:
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return None


def database_error(exc: BaseException) -> DatabaseUnavailable | None:
    """DatabaseUnavailable when ``exc`` says the database is away, refused us or aborted the
    transaction (nothing was committed and the call may be retried); None for anything else."""
    if isinstance(exc, sa_exc.DBAPIError):
        found = _unavailable_state(_sqlstate(exc))
        if found is not None:
            return found
        if isinstance(exc.orig, sqlite3.DatabaseError) and _sqlite_unavailable(exc.orig):
            return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (ConnectionError, OSError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, sa_exc.TimeoutError):
        # No pooled connection freed up in time: the database is too slow to answer or not answering.
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return _driver_error(exc)


def _driver_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The same mapping for errors of the drivers the store uses directly (sqlite3, asyncpg)."""
    if isinstance(exc, sqlite3.OperationalError) or (
        isinstance(exc, sqlite3.DatabaseError) and _sqlite_unavailable(exc)
    ):
        # Locked beyond the wait, disk full, unreadable, or no longer a database: nothing was committed.
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, asyncpg.PostgresError):
        return _unavailable_state(str(getattr(exc, "sqlstate", "") or ""))
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return None


def _sqlite_unavailable(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
