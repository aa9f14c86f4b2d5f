"""GetUsage counts survive a restart of the server, graceful (SIGTERM: nothing lost) and kill -9 (what was
flushed before it survives), on both databases, through a server process of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.polling import eventually
from support.servers import ServerProcess

import jobpulse
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.services import keys
from jobpulse_server.store.database import SqlStore


async def _make_keys(database_url: str) -> dict[str, str]:
    db = SqlStore(database_url)
    await db.start()
    try:
        return {
            name: await keys.create_key(db, name, role)
            for name, role in (("alice", "client"), ("root", "admin"))
        }
    finally:
        await db.close()


async def _stored(database_url: str) -> dict[str, KeyUsage]:
    db = SqlStore(database_url)
    await db.start(migrate=False)
    try:
        return await db.usage()
    finally:
        await db.close()


def _usage(srv: ServerProcess, root_key: str) -> dict[str, tuple[int, int]]:
    with jobpulse.Client(srv.address, api_key=root_key, timeout=10) as root:
        return {u.key_name: (u.calls, u.rejected) for u in root.get_usage().usage}


def _calls(srv: ServerProcess, key: str, n: int) -> None:
    with jobpulse.Client(srv.address, api_key=key, timeout=10) as client:
        for _ in range(n):
            client.list_jobs_page()


@pytest.fixture
def server_process(database_url: str, tmp_path: Path) -> ServerProcess:
    srv = ServerProcess(database_url, tmp_path, drain_seconds=0, usage_flush_interval=0.2)
    yield srv  # type: ignore[misc]
    srv.close()


@pytest.mark.slow  # a long kill-and-restart run (8-9 s a database)
def test_usage_survives_a_graceful_restart_and_a_kill(
    server_process: ServerProcess, database_url: str
) -> None:
    srv = server_process
    key = asyncio.run(_make_keys(database_url))
    srv.start()
    _calls(srv, key["alice"], 7)
    assert srv.terminate() == 0  # SIGTERM: the last flush runs before the process exits
    assert asyncio.run(_stored(database_url))["alice"] == KeyUsage("client", 7, 0)

    srv.start()
    usage = _usage(srv, key["root"])  # this GetUsage counts itself
    assert usage == {"alice": (7, 0), "root": (1, 0)}
    _calls(srv, key["alice"], 5)
    # kill -9 loses what was counted since the last flush: wait until the flusher wrote these.
    eventually(lambda: asyncio.run(_stored(database_url))["alice"].calls, 10, "a flush", expect=12)
    srv.kill()

    srv.start()
    assert _usage(srv, key["root"]) == {"alice": (12, 0), "root": (2, 0)}
