"""The two database drivers: the standard library's ``sqlite3`` and asyncpg. A driver only runs
statements (``Conn``: fetch and execute), opens read snapshots and write transactions, and says in the
driver-neutral terms below what an error means for the caller; every statement is in
``store/statements.py`` and every operation in ``store/tx.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from jobpulse_server.store.statements import NO_PARAMS


class Conn(Protocol):
    """One connection inside a transaction (or, for reads that asked for none, outside one).

    Statements name their parameters (``:name``, store/statements.py) and take them as a mapping (names a
    statement does not use are left alone); rows are positional sequences."""

    async def fetch(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> list[Sequence[Any]]: ...

    async def fetchrow(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Sequence[Any] | None: ...

    async def fetchval(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Any: ...

    async def execute(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> int:
        """Runs a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Runs a statement once per mapping of parameters."""
        ...


class Conflict(Exception):
    """A row broke a unique or foreign-key constraint (nothing of the statement was written)."""


class Aborted(Exception):
    """The database aborted the transaction to resolve a deadlock or a serialization failure; nothing
    of it was committed and it may be run again (``sqlstate``: 40P01 or 40001)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
