"""The store: what the services read and write, on SQLite or PostgreSQL.

A service holds one ``Store``. ``read()`` hands out a ``Tx`` that sees one snapshot; ``write(body)`` runs
``body(tx)`` in one write transaction, commits, publishes what changed to the change hub, and runs it
again after a deadlock or serialization failure (so ``body`` must not act outside the transaction).
``store.batch`` holds PostgreSQL's group-committed worker path (None on SQLite).

Where things are: ``statements.py`` (every statement, once), ``tx.py`` (every operation, once, over a
connection that only runs statements), ``batch/`` (PostgreSQL's group commit), ``drivers/``
(sqlite3 and asyncpg), ``database.py`` (the front door: ``SqlStore``), ``schema.py`` + ``tables.py`` +
``migrations/`` (the schema, at start-up), ``rows.py`` (rows to domain objects), ``errors.py`` (what a
driver's error means for a caller).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from jobpulse_server.store.batch import Batch
from jobpulse_server.store.tx import RequestIdTaken, SqlTx, UniqueKeyTaken

T = TypeVar("T")

# The operations a transaction offers the services (the in-memory fake of the tests has the same).
Tx = SqlTx

__all__ = ["Batch", "RequestIdTaken", "Store", "Tx", "UniqueKeyTaken"]


class Store(Protocol):
    """Read snapshots and write transactions (``database.SqlStore``; tests also use an in-memory fake)."""

    batch: Batch | None

    def read(self, *, consistent: bool = True) -> AbstractAsyncContextManager[Tx]: ...

    async def write(self, body: Callable[[Tx], Awaitable[T]], *, bulk: bool = False) -> T: ...

    async def chunks_added(self, n: int) -> None: ...
