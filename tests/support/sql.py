"""Plain SQL against a test's database, beside the server (to look at rows the API does not show, or to
break things on purpose): sqlite3 for SQLite files, asyncpg for PostgreSQL. ``?`` placeholders."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import make_url


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (these statements have no literal ``?``)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))


def fetch(database_url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Runs one statement in its own transaction (committed) and returns its rows."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), timeout=30)
        try:
            with conn:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    async def run() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            return [tuple(r) for r in await conn.fetch(_numbered(sql), *params)]
        finally:
            await conn.close()

    return asyncio.run(run())


def value(database_url: str, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row (None without rows)."""
    rows = fetch(database_url, sql, params)
    return rows[0][0] if rows else None


def series(postgres: bool, first: int, last: int) -> str:
    """A FROM item yielding ``g`` = first..last, in the dialect's SQL."""
    if postgres:
        return f"generate_series({first}, {last}) AS g"
    return (
        f"(WITH RECURSIVE s(g) AS (SELECT {first} UNION ALL SELECT g + 1 FROM s WHERE g < {last}) "
        "SELECT g FROM s)"
    )


def insert_generated(table: Any, given: dict[str, str], source: str) -> str:
    """INSERT ... SELECT of ``given`` column expressions (in terms of ``g``) FROM ``source`` (``series``);
    every other non-null column of ``table`` gets false, 0 or '', but those with a server default, which
    the database fills (and which a schema migrated to an earlier revision may not have yet)."""
    names, exprs = [], []
    for column in table.columns:
        if column.name in given:
            names.append(column.name)
            exprs.append(given[column.name])
        elif not column.nullable and column.server_default is None:
            names.append(column.name)
            py = column.type.python_type
            exprs.append("false" if py is bool else "0" if py is int else "''")
    return f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(exprs)} FROM {source}"
