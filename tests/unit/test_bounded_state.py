"""What grows with traffic is bounded: state kept per method, per label text, per worker id does not grow
with what callers make up."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
from typing import Any

import grpc
import pytest

from jobpulse_server.api.interceptors import CallGuard
from jobpulse_server.platform.logs import Observer
from jobpulse_server.platform.metrics import Metrics
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


async def _write_page(store: SqlStore, n: int) -> None:
    """One write transaction of a row about a page long (a page or more of the log each)."""
    async with store.driver.write() as conn:
        await conn.execute(
            "INSERT INTO rate_buckets (key_name, tokens, refill_time, granted) VALUES (:k, 1.0, :n, 0)",
            {"k": f"k{n}" + "x" * 3000, "n": n},
        )


def _wal_state(path: str) -> tuple[bytes, int]:
    """The write-ahead log's salt (header bytes 16-23: SQLite writes a new one each time the log starts
    over from its first frame) and its file's size."""
    try:
        with open(path, "rb") as f:
            return f.read(24)[16:24], os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return b"", 0


async def test_a_log_written_all_the_time_starts_over_at_its_limit(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PASSIVE checkpoints alone never reach the end of a log that writers keep appending to, so SQLite
    never starts it over: the log (and its index, mapped into memory) grew without end. Past WAL_LIMIT
    it is checkpointed whole and the next writer starts it over from its first frame (a new salt in its
    header), so its file stops growing while writes go on: written without end (no restart) it passed
    600 MB in this test."""
    limit = 256 * 1024
    monkeypatch.setattr(sqlite_driver, "WAL_LIMIT", limit)
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_INTERVAL", 0.01)
    store = SqlStore(f"sqlite:///{tmp_path}/wal.db")
    await store.start()
    wal = f"{tmp_path}/wal.db-wal"
    salts: list[bytes] = []
    written = 0
    deadline = asyncio.get_running_loop().time() + 60
    try:
        n = 0
        # At least 128 limits' worth of pages (each commit writes one page or more), and 3 restarts.
        while (len(salts) < 4 or written < 128 * limit) and asyncio.get_running_loop().time() < deadline:
            n += 1
            async with store.driver.write() as conn:
                await conn.execute(
                    "INSERT INTO rate_buckets (key_name, tokens, refill_time, granted) "
                    "VALUES (:k, 1.0, :n, 0)",
                    {"k": f"k{n}", "n": n},
                )
            async with store.driver.read() as conn:  # readers all along, as under load
                await conn.fetch("SELECT count(*) FROM rate_buckets")
            written += 4096
            salt, size = _wal_state(wal)
            if salt and (not salts or salt != salts[-1]):
                salts.append(salt)
            await asyncio.sleep(0)
    finally:
        await store.close()
    assert len(salts) >= 4, f"the log started over {len(salts) - 1} times in {written:,} bytes written"
    assert written >= 128 * limit, f"only {written:,} bytes written in a minute"
    # The file stays at about the most written between two restarts; 64 limits leave room for a
    # checkpoint thread that does not get its turn for a while.
    assert size <= 64 * limit, f"the log's file is {size:,} bytes after {written:,} written"


async def test_an_idle_log_past_its_limit_is_not_checkpointed_again_and_again(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RESTART checkpoint leaves the log as it is until the next writer starts it over: on a server
    whose writes stopped with the log past WAL_LIMIT, the checkpoint thread asks for one restart, not
    one at every tick (each holds the writers and opens a connection)."""
    limit = 64 * 1024
    monkeypatch.setattr(sqlite_driver, "WAL_LIMIT", limit)
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_INTERVAL", 0.01)
    restarts: list[str] = []
    restart_wal = sqlite_driver._restart_wal

    def counted(path: str) -> None:
        restarts.append(path)
        restart_wal(path)

    monkeypatch.setattr(sqlite_driver, "_restart_wal", counted)
    store = SqlStore(f"sqlite:///{tmp_path}/idle.db")
    await store.start()
    loop = asyncio.get_running_loop()

    async def ticks(n: int) -> None:
        checkpointer = store.driver._checkpointer
        assert checkpointer is not None
        until = checkpointer.ticks + n
        deadline = loop.time() + 30
        while checkpointer.ticks < until:
            assert loop.time() < deadline, "the checkpoint thread stopped"
            await asyncio.sleep(0.01)

    try:
        for n in range(64):  # past the limit
            await _write_page(store, n)
        await ticks(5)  # whatever the writes asked for has been asked
        after_writes = len(restarts)
        await ticks(30)
    finally:
        await store.close()
    assert after_writes >= 1, "the log passed its limit and no restart was asked for"
    assert len(restarts) == after_writes, f"{len(restarts) - after_writes} more restarts on an idle log"


async def test_a_log_grown_behind_a_long_reader_is_cut_back_when_it_starts_over(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holding its snapshot keeps every checkpoint from reaching the log's end, so the log's file
    grows with each write meanwhile; once the reader is gone and the log starts over, its file is cut
    back to WAL_FILE_LIMIT rather than kept at its high-water size for good."""
    limit = 64 * 1024
    file_limit = 512 * 1024
    monkeypatch.setattr(sqlite_driver, "WAL_LIMIT", limit)
    monkeypatch.setattr(sqlite_driver, "WAL_FILE_LIMIT", file_limit)
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_INTERVAL", 0.01)
    store = SqlStore(f"sqlite:///{tmp_path}/long.db")
    await store.start()
    wal = f"{tmp_path}/long.db-wal"
    loop = asyncio.get_running_loop()
    written = itertools.count()

    reader = sqlite3.connect(f"{tmp_path}/long.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM rate_buckets").fetchone()  # the snapshot is held from here
        deadline = loop.time() + 60
        while _wal_state(wal)[1] <= 4 * file_limit:
            assert loop.time() < deadline, f"the log's file is {_wal_state(wal)[1]:,} bytes after a minute"
            await _write_page(store, next(written))
        grown = _wal_state(wal)[1]
        reader.execute("COMMIT")
        salt = _wal_state(wal)[0]
        deadline = loop.time() + 60
        # Writes go on: the log is checkpointed whole, started over (a new salt) and its file cut back.
        while (size := _wal_state(wal)[1]) > file_limit or _wal_state(wal)[0] == salt:
            assert loop.time() < deadline, f"the log's file is still {size:,} bytes (it grew to {grown:,})"
            await _write_page(store, next(written))
            await asyncio.sleep(0.001)
    finally:
        reader.close()
        await store.close()
    assert grown > 4 * file_limit and size <= file_limit
