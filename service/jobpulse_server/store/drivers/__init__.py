"""The two database drivers: the standard library's ``sqlite3`` and asyncpg. A driver only runs
statements (``Conn``: fetch and execute), opens read snapshots and write transactions, and says in the
driver-neutral terms below what an error means for the caller; every statement is in
``store/statements.py`` and every operation in ``store/tx.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Conn(Protocol):
    """One connection inside a transaction (or, for reads that asked for none, outside one).

    Statements use ``?`` placeholders; parameters are positional; rows are positional sequences."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    async def fetchrow(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None: ...

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Conflict(Exception):
    """A row broke a unique or foreign-key constraint (nothing of the statement was written)."""


class Aborted(Exception):
    """The database aborted the transaction to resolve a deadlock or a serialization failure; nothing
    of it was committed and it may be run again (``sqlstate``: 40P01 or 40001)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
