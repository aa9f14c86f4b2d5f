"""SQLite with the standard library's ``sqlite3``, run on the event loop's own thread.

A statement here is a direct call into SQLite: no worker thread, no SQL toolkit, no
suspension. That is safe for the reasons given in ``sqlite_inline``: writers are serialised
by the ``Database``'s asyncio lock and take the file lock with ``BEGIN IMMEDIATE`` (SQLite
waits at most ``SQLITE_LOOP_BUSY_MS`` for another process; beyond that the begin is retried
asynchronously), WAL readers never wait, and the statements are short.

Reads use connections of a small free list (a reader that suspends mid-read keeps its
connection to itself); writes use one connection, under the write lock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy.engine import make_url

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job
from jobpulse_server.store import GeneralPathsOnly, TwoStepLocks, WriteTx, sql
from jobpulse_server.store.engine import (
    SQLITE_LOOP_BUSY_MS,
    SQLITE_WRITE_WAIT,
    Database,
    existing_sqlite_file,
)
from jobpulse_server.store.rows import (
    artifact_from_row,
    chunk_from_row,
    chunk_saved_values,
    job_from_row,
    job_saved_values,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


# Seconds between WAL checkpoints, which run on a thread of their own.
CHECKPOINT_INTERVAL = 0.5


def _connect(path: str) -> sqlite3.Connection:
    # Never creates the file (Database.start did): a removed file is an outage, not a new database.
    conn = sqlite3.connect(
        existing_sqlite_file(path),
        uri=True,
        check_same_thread=False,
        isolation_level=None,
        cached_statements=256,
    )
    conn.execute(f"PRAGMA busy_timeout={int(SQLITE_LOOP_BUSY_MS)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    # No checkpoint inside a commit on the event loop: that copies pages to the database file and
    # syncs it (15% of the server's samples under claim + complete). ``SqliteStore`` checkpoints on a
    # thread instead.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


class Checkpointer:
    """Copies the write-ahead log into the database file every CHECKPOINT_INTERVAL seconds, on a
    thread of its own (a PASSIVE checkpoint waits for no reader or writer).

    The thread owns its connection: it opens, uses and closes it, and nothing else touches it. (A
    first version ran each checkpoint through ``asyncio.to_thread`` and closed the connection on the
    loop when cancelled, while the checkpoint could still be running on the worker thread: a
    segmentation fault at shutdown.) The connection opens the file read-write without creating it,
    so a database file moved away is not replaced by an empty one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobpulse-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                try:
                    if conn is None:
                        conn = sqlite3.connect(
                            f"file:{quote(self.path)}?mode=rw", uri=True, isolation_level=None
                        )
                        conn.execute(f"PRAGMA busy_timeout={int(SQLITE_LOOP_BUSY_MS)}")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    # The database may be away for a while (health reports it); reopen next time.
                    log.debug("WAL checkpoint failed: %s", exc)
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()

    async def stop(self) -> None:
        """Stops the thread and waits for it (at most one checkpoint's time)."""
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)


class SqliteRead:
    """Reads on one sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def get_job(self, job_id: str, owner: str | None) -> Job | None:
        if owner is None:
            row = self.conn.execute(sql.GET_JOB, (job_id,)).fetchone()
        else:
            row = self.conn.execute(sql.GET_OWNED_JOB, (job_id, owner)).fetchone()
        return job_from_row(row) if row else None

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]:
        ids = sorted(set(job_ids))
        q = f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id IN ({sql.marks(len(ids))})"
        params: list[Any] = list(ids)
        if owner is not None:
            q += " AND owner = ?"
            params.append(owner)
        return {j.id: j for j in map(job_from_row, self.conn.execute(q, params).fetchall())}

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
    ) -> list[Chunk]:
        q, params = sql.chunk_list(job_id, after_index, limit, states, after_revision)
        found = list(map(chunk_from_row, self.conn.execute(q, params).fetchall()))
        done = [c for c in found if c.state == ChunkState.COMPLETED]
        if done:
            rows = self.conn.execute(
                sql.ARTIFACTS_BETWEEN, (job_id, done[0].index, done[-1].index)
            ).fetchall()
            attach_artifacts(done, rows)
        return found

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        q = sql.JOB_ARTIFACTS if len(job_ids) == 1 else sql.jobs_artifacts(len(job_ids))
        rows = self.conn.execute(q, [*job_ids, limit]).fetchall()
        return artifacts_by_job(rows)

    async def list_jobs(self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int) -> list[Job]:
        q, params = sql.list_jobs(sql.SQLITE, f, order_by, after, limit)
        return list(map(job_from_row, self.conn.execute(q, params).fetchall()))

    async def count_jobs(self, f: JobFilter) -> int:
        q, params = sql.count_jobs(sql.SQLITE, f)
        return int(self.conn.execute(q, params).fetchone()[0])

    async def change_horizon(self) -> int:
        return int(self.conn.execute(sql.SQLITE_HORIZON).fetchone()[0])

    async def chunk_states(self, job_id: str) -> str:
        return "".join(str(r[0]) for r in self.conn.execute(sql.CHUNK_STATES, (job_id,)))


def artifacts_by_job(rows: Iterable[Sequence[Any]]) -> dict[str, list[Artifact]]:
    """Rows of ``sql.jobs_artifacts`` grouped by job."""
    out: dict[str, list[Artifact]] = {}
    for r in rows:
        out.setdefault(r[5], []).append(artifact_from_row(r))
    return out


def attach_artifacts(done: list[Chunk], rows: Iterable[Sequence[Any]]) -> None:
    """Hands artifact rows (ARTIFACT_COLUMNS, in chunk order) to the completed chunks they belong to."""
    by_index: dict[int, list[Artifact]] = {}
    for r in rows:
        by_index.setdefault(r[0], []).append(artifact_from_row(r))
    for c in done:
        c.artifacts = by_index.get(c.index, [])


class SqliteWrite(SqliteRead, TwoStepLocks):
    """One write transaction on the write connection; changes are buffered until ``save``."""

    def __init__(self, conn: sqlite3.Connection, changes: Changes) -> None:
        super().__init__(conn)
        self.changes = changes
        self._artifacts: list[tuple[Any, ...]] = []
        self._outbox: list[tuple[Any, ...]] = []

    async def claim(
        self, kinds: Sequence[str], now: int, limit: int, *, skip_locked: bool
    ) -> tuple[dict[str, Job], list[Chunk]]:
        # One writer at a time, so no lock order to keep: pick the chunks straight from the claim
        # index (restricting them to jobs found first made SQLite sort every pending chunk of
        # those jobs, 68% of the server's time at 20,000 pending chunks), then read their jobs.
        q = sql.pick_ready(sql.SQLITE, len(kinds))
        rows = self.conn.execute(q, [*sql.ready_params(sql.SQLITE, kinds, now), limit]).fetchall()
        picked = list(map(chunk_from_row, rows))
        return await self.get_jobs([c.job_id for c in picked], None) if picked else {}, picked

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        # One writer at a time: everything read in a write transaction is locked already.
        if not job_ids:
            return {}
        return await self.get_jobs(job_ids, None)

    async def lock_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        ids = sorted(set(chunk_ids))
        q = f"SELECT {sql.CHUNK_SELECT} FROM chunks WHERE id IN ({sql.marks(len(ids))})"
        return {c.id: c for c in map(chunk_from_row, self.conn.execute(q, ids).fetchall())}

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]:
        rows = self.conn.execute(sql.EXPIRED_LEASES, (int(ChunkState.PROCESSING), now, limit)).fetchall()
        return list(map(chunk_from_row, rows))

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        self._artifacts += [
            (job_id, a.chunk_index, a.name, a.uri, a.media_type, a.size_bytes) for a in artifacts
        ]

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox += [tuple(r[c] for c in sql.OUTBOX_COLUMNS) for r in rows]

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        conn = self.conn
        if chunks:
            conn.executemany(sql.SQLITE_SAVE_CHUNK, [(*chunk_saved_values(c), c.id) for c in chunks])
        for job in jobs:
            conn.execute(sql.SQLITE_SAVE_JOB, (*job_saved_values(job), job.id))
            job.bumped = False
            self.changes.jobs[job.id] = max(job.revision, self.changes.jobs.get(job.id, 0))
        if self._artifacts:
            conn.executemany(sql.INSERT_ARTIFACT, self._artifacts)
            self._artifacts = []
        if self._outbox:
            conn.executemany(sql.INSERT_OUTBOX, self._outbox)
            self._outbox = []
            self.changes.webhooks = True


class SqliteStore(GeneralPathsOnly):
    """The Store for SQLite on the event loop."""

    def __init__(self, db: Database) -> None:
        self.db = db
        path = make_url(db.url).database
        assert path is not None
        self.path = str(Path(path).expanduser())
        self._readers: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None

    async def start(self) -> None:
        self._writer = _connect(self.path)
        self._readers.append(_connect(self.path))
        self._checkpointer = Checkpointer(self.path)

    async def chunks_added(self, n: int) -> None:
        """Nothing to do: SQLite plans the claim query from the index alone."""

    async def dispose(self) -> None:
        """Closes the idle connections; the next read or write opens new ones (as the engine's
        dispose does for its pool)."""
        for conn in self._readers:
            conn.close()
        self._readers = []
        if self._writer is not None and not self.db.write_locked():
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        for conn in [*self._readers, *([self._writer] if self._writer else [])]:
            conn.close()
        self._readers = []
        self._writer = None

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[SqliteRead]:
        conn = self._readers.pop() if self._readers else _connect(self.path)
        try:
            if not consistent:
                yield SqliteRead(conn)
                return
            conn.execute("BEGIN")
            try:
                yield SqliteRead(conn)
            finally:
                conn.execute("COMMIT")
        finally:
            self._readers.append(conn)

    async def write(self, body: Callable[[WriteTx], Awaitable[T]]) -> T:
        changes = Changes()
        async with self.db.write_lock():
            if self._writer is None:
                self._writer = _connect(self.path)
            conn = self._writer
            await _begin_immediate(conn)
            try:
                result = await body(SqliteWrite(conn, changes))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self.db.publish(changes)
        return result


async def _begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE; while another process holds the write lock, retries without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_WRITE_WAIT
    delay = 0.002
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
