"""What grows with traffic is bounded: state kept per method, per label text, per worker id does not grow
with what callers make up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from jobpulse_server.api.interceptors import CallGuard
from jobpulse_server.observability import Metrics, Observer
from jobpulse_server.store import rows
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.drivers import sqlite as sqlite_driver


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


def test_calls_to_made_up_methods_leave_nothing_behind() -> None:
    """The guard keeps a wrapped handler per method it serves, one for both forms a servicer registers;
    a method a caller makes up, in a guarded service or any other, is answered (UNIMPLEMENTED, by grpc)
    and forgotten."""
    guard = CallGuard(None, Observer(Metrics()), {"jobpulse.v1.JobService": frozenset({"client"})})  # type: ignore[arg-type]
    known = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    generic = grpc.method_handlers_generic_handler("jobpulse.v1.JobService", {"GetJob": known})
    service = guard.wrap_generic(generic)
    assert service is not generic
    found = service.service(_Details("/jobpulse.v1.JobService/GetJob"))
    assert found is not None and found.unary_unary is not known.unary_unary
    assert guard.wrap("/jobpulse.v1.JobService/GetJob", known) is found  # the registered form's too
    for n in range(1_000):
        assert service.service(_Details(f"/made.up.Service{n}/Method")) is None
        assert service.service(_Details(f"/jobpulse.v1.JobService/MadeUp{n}")) is None
    assert list(guard._wrapped) == ["/jobpulse.v1.JobService/GetJob"]


def test_only_short_json_texts_are_kept_decoded() -> None:
    rows._decoded.cache_clear()
    short = json.dumps({"team": "a"})
    long = json.dumps({"blob": "x" * 10_000})
    for _ in range(3):
        assert rows._json(short) == {"team": "a"}
        assert rows._json(long)["blob"] == "x" * 10_000
    info = rows._decoded.cache_info()
    assert (info.currsize, info.hits) == (1, 2)  # the long text was never kept


async def test_a_log_written_all_the_time_is_truncated_at_its_limit(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PASSIVE checkpoints alone never reach the end of a log that writers keep appending to, so SQLite
    never starts it over: the log (and its index, mapped into memory) grew without end. Past WAL_LIMIT
    it is checkpointed whole and truncated, so its file shrinks while writes go on."""
    monkeypatch.setattr(sqlite_driver, "WAL_LIMIT", 256 * 1024)
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_INTERVAL", 0.01)
    store = SqlStore(f"sqlite:///{tmp_path}/wal.db")
    await store.start()
    wal = f"{tmp_path}/wal.db-wal"
    largest = 0
    shrank = False
    deadline = asyncio.get_running_loop().time() + 60
    try:
        n = 0
        while not shrank and asyncio.get_running_loop().time() < deadline:
            n += 1
            async with store.driver.write() as conn:
                await conn.execute(
                    "INSERT INTO rate_buckets (key_name, tokens, refill_time, granted) VALUES (?, ?, ?, ?)",
                    (f"k{n}", 1.0, n, 0),
                )
            async with store.driver.read() as conn:  # readers all along, as under load
                await conn.fetch("SELECT count(*) FROM rate_buckets")
            size = sqlite_driver._size(wal)
            shrank = largest > 256 * 1024 and size < largest
            largest = max(largest, size)
            await asyncio.sleep(0)
    finally:
        await store.close()
    assert largest > 256 * 1024, "the log never passed the limit: the test wrote too little"
    assert shrank, f"the log grew to {largest:,} bytes and was never truncated"
