"""Picks the Store for a database and driver."""

from __future__ import annotations

from collections.abc import Callable

from jobpulse_server.store import Store
from jobpulse_server.store.engine import Database
from jobpulse_server.store.portable import PortableStore
from jobpulse_server.store.postgres import PgStore
from jobpulse_server.store.sqlite import SqliteStore


def open_store(db: Database, on_retry: Callable[[str], None] | None = None) -> Store:
    """The fastest store for ``db``'s database and driver."""
    if db.sqlite_on_loop:
        return SqliteStore(db)
    if db.dialect == "postgresql" and db.url.startswith("postgresql+asyncpg"):
        return PgStore(db, on_retry=on_retry)
    return PortableStore(db, on_retry=on_retry)
