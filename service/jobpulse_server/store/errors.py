"""What the drivers' errors mean for a caller: every way the database can be away, refuse us, lack
the schema this server needs, or abort a transaction becomes the domain's DatabaseUnavailable. The
only module that knows the drivers' exception types, SQLSTATE codes and schema error texts."""

from __future__ import annotations

import re
import sqlite3

import asyncpg

from jobpulse_server.domain.errors import UNAVAILABLE_MESSAGE, DatabaseUnavailable
from jobpulse_server.store.drivers import Aborted

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


# What to do when the database lacks a table or column this server uses: the server points at the
# wrong database, or the schema was dropped or changed under it. `migrate` only sets up what its
# version table says is missing, so it cannot repair a table dropped by hand: a person must look.
SCHEMA_HINT = (
    "the server points at the wrong database, or its schema was dropped or changed; an operator must "
    "check --database-url (JOBPULSE_DATABASE_URL) or restore the database "
    "(`jobpulse-server migrate` sets up an empty one)"
)
_GONE = (
    "the server's database does not exist (dropped or renamed); an operator must restore it or "
    "check --database-url (JOBPULSE_DATABASE_URL); retry later"
)
_REFUSED = (
    "the database refuses the server's login or rights (its role, password or CONNECT privilege "
    "changed); an operator must restore them; retry later"
)
# The driver texts that name what is missing. PostgreSQL translates its messages (lc_messages), so
# the name may not be found: the SQLSTATE alone decides, the name only makes the message better.
_PG_TABLE = re.compile(r'relation "([^"]+)" does not exist')
# A column named in a query as alias.column comes back so; the alias means nothing to an operator.
_PG_COLUMN = re.compile(r'column (?:"([^"]+)"|(?:[^\s.]+\.)?(\S+)) (?:of relation "([^"]+)" )?does not exist')
_SQLITE_TABLE = re.compile(r"no such table: (?:main\.)?(\S+)")
_SQLITE_COLUMN = re.compile(r"no such column: (\S+)|table (\S+) has no column named (\S+)")


def _schema_problem(what: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"the database {what}: {SCHEMA_HINT}")


def _missing_table(name: str | None) -> DatabaseUnavailable:
    return _schema_problem(f'has no table "{name}"' if name else "lacks a table this server uses")


def _missing_column(column: str | None, table: str | None = None) -> DatabaseUnavailable:
    if column and table:
        return _schema_problem(f'has no column "{column}" in table "{table}"')
    return _schema_problem(f'has no column "{column}"' if column else "lacks a column this server uses")


def _unavailable_state(state: str, text: str = "") -> DatabaseUnavailable | None:
    """DatabaseUnavailable for an SQLSTATE that says the database is away, refuses us or lacks our
    schema; ``text`` is the driver's message, which may name the missing table or column."""
    if state in ("40001", "40P01"):
        # Serialization failure or deadlock: nothing was committed; the call may be retried.
        return DatabaseUnavailable("the database aborted the transaction under contention; retry")
    if state == "42P01":
        # Undefined table: dropped (alone, or with its schema), or the server points at another database.
        table = _PG_TABLE.search(text)
        return _missing_table(table.group(1) if table else None)
    if state == "42703":
        # Undefined column: the table was altered under the server.
        column = _PG_COLUMN.search(text)
        if column is None:
            return _missing_column(None)
        return _missing_column(column.group(1) or column.group(2), column.group(3))
    if state == "3D000":
        return DatabaseUnavailable(_GONE)
    if state[:2] == "28" or state == "42501":
        return DatabaseUnavailable(_REFUSED)
    if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES:
        return DatabaseUnavailable(UNAVAILABLE_MESSAGE)
    return None


def _sqlite_schema_problem(exc: sqlite3.Error) -> DatabaseUnavailable | None:
    """SQLite says a table or column is missing only in its message (result code SQLITE_ERROR)."""
    text = str(exc)
    table = _SQLITE_TABLE.search(text)
    if table is not None:
        return _missing_table(table.group(1))
    column = _SQLITE_COLUMN.search(text)
    if column is not None:
        return _missing_column(column.group(1) or column.group(3), column.group(2))
    return None


def translated(exc: BaseException) -> BaseException:
    """``exc`` as the store's callers see it: DatabaseUnavailable (from ``exc``) where ``database_error``
    finds one, else ``exc`` itself."""
    found = database_error(exc)
    if found is None:
        return exc
    found.__cause__ = exc
    return found


def database_error(exc: BaseException) -> DatabaseUnavailable | None:
    """DatabaseUnavailable when ``exc`` says the database is away, refused us, lacks a table or column
    the server uses, or aborted the transaction (nothing was committed and the call may be retried);
    None for anything else. The message says what to do and never quotes the driver's own text."""
    if isinstance(exc, Aborted):
        return _unavailable_state(exc.sqlstate)
    if isinstance(exc, (ConnectionError, OSError)):
        return DatabaseUnavailable(UNAVAILABLE_MESSAGE)
    return _driver_error(exc)


def _driver_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The mapping for errors of the two drivers (sqlite3, asyncpg)."""
    if isinstance(exc, sqlite3.Error):
        found = _sqlite_schema_problem(exc)
        if found is not None:
            return found
    if isinstance(exc, sqlite3.OperationalError) or (
        isinstance(exc, sqlite3.DatabaseError) and _sqlite_unavailable(exc)
    ):
        # Locked beyond the wait, disk full, unreadable, or no longer a database: nothing was committed.
        return DatabaseUnavailable(UNAVAILABLE_MESSAGE)
    if isinstance(exc, asyncpg.PostgresError):
        return _unavailable_state(str(getattr(exc, "sqlstate", "") or ""), str(exc))
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return DatabaseUnavailable(UNAVAILABLE_MESSAGE)
    if isinstance(exc, asyncpg.exceptions._base.InternalClientError):
        # The connection was cut while asyncpg was mid-operation (seen when a new pooled connection's
        # set-up was terminated by an outage): asyncpg's state machine gives up on it.
        return DatabaseUnavailable(UNAVAILABLE_MESSAGE)
    return None


def _sqlite_unavailable(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE
