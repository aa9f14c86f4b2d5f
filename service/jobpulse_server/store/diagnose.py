"""Why the database could not be opened at start-up, said in one line a newcomer can act on.

``jobpulse-server serve`` with a wrong ``--database-url`` used to end in a long driver traceback.
Only failures that are about reaching or opening the database are described here; anything else is
a bug and keeps its traceback."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

HINT = "check --database-url (JOBPULSE_DATABASE_URL)"


class CannotOpenDatabase(Exception):
    """The database could not be opened at start-up; the message says why and what to check."""


def startup_problem(exc: BaseException, database_url: str) -> str | None:
    """One line for ``exc`` raised while opening ``database_url``; None if it is not about that."""
    cause: BaseException = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    # SQLAlchemy's adapted asyncpg errors keep the driver's own exception one step further down.
    driver = cause.__cause__ if cause.__cause__ is not None else cause
    url = describe_url(database_url)
    if isinstance(driver, asyncpg.InvalidCatalogNameError):
        name = make_url(database_url).database
        return f"{url}: database {name!r} does not exist; create it (createdb {name}) or {HINT}"
    if isinstance(driver, (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)):
        return f"{url}: the server refused the login ({driver}); {HINT}"
    sqlite = database_url.startswith("sqlite")
    if sqlite and isinstance(driver, (sqlite3.Error, OSError)):
        return f"{url}: cannot open the SQLite file ({driver}); can this user create and write it? {HINT}"
    if isinstance(driver, asyncpg.PostgresError) or isinstance(exc, sa_exc.DBAPIError):
        return f"{url}: {str(driver).strip() or type(driver).__name__}; {HINT}"
    if isinstance(driver, (ConnectionRefusedError, TimeoutError)) or (
        isinstance(driver, OSError) and driver.errno is not None
    ):
        return f"{url}: cannot connect ({driver}); is the database server running there? {HINT}"
    return None


def describe_url(database_url: str) -> str:
    """The URL without its password."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return database_url
