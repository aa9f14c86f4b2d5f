"""What the drivers' errors mean for a caller: every way the database can be away, refuse us or
abort a transaction becomes the domain's DatabaseUnavailable. The only module that knows the
drivers' exception types and SQLSTATE codes."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

from jobpulse_server.domain.errors import DatabaseUnavailable


def database_error(exc: BaseException) -> DatabaseUnavailable | None:
    """DatabaseUnavailable when ``exc`` says the database is away, refused us or aborted the
    transaction (nothing was committed and the call may be retried); None for anything else."""
    if isinstance(exc, sa_exc.DBAPIError):
        state = _sqlstate(exc)
        if state in ("40001", "40P01"):
            # Serialization failure or deadlock: nothing was committed; the call may be retried.
            return DatabaseUnavailable("the database aborted the transaction under contention; retry")
        if state[:2] in ("08", "53", "57") or state == "55000":
            # Connection failures, too many connections, shutdown, or a database not accepting connections.
            return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, (ConnectionError, OSError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return _driver_error(exc)


def _driver_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The same mapping for errors of the drivers the store uses directly (sqlite3, asyncpg)."""
    if isinstance(exc, sqlite3.OperationalError):
        # Locked beyond the wait, disk full or unreadable: nothing was committed.
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state in ("40001", "40P01"):
            return DatabaseUnavailable("the database aborted the transaction under contention; retry")
        if state[:2] in ("08", "53", "57") or state == "55000":
            return DatabaseUnavailable("the database is unavailable; retry shortly")
        return None
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return DatabaseUnavailable("the database is unavailable; retry shortly")
    return None


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
