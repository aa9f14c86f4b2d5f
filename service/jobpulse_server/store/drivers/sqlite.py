"""SQLite through the standard library's ``sqlite3``: statements on the event loop's own thread (the
default), or the same calls on one dedicated thread (``sqlite_on_loop=false``).

On the loop a statement is a direct call into SQLite: no thread hand-off (a hand-off pair costs
0.15-0.25 ms on the 2-core machines this is measured on, ten times what SQLite needs for a GetJob's
statements). That is safe because writers are serialised by an asyncio lock and take the file lock with
``BEGIN IMMEDIATE`` (SQLite waits at most ``BUSY_MS`` for another process; beyond that the begin is
retried asynchronously), WAL readers never wait, ``synchronous=NORMAL`` makes a commit a write to the WAL
without an fsync, and every statement is bounded by a page size. Writes that may take long (the expiry
sweep's deletes) ask for ``bulk``: their calls go to a thread of their own, and the loop (or the
dedicated thread) serves calls meanwhile. WAL checkpoints run on a thread of their own, never inside a
commit on the loop.

Reads use connections of a small free list (a reader that suspends mid-read keeps its connection to
itself); writes use one connection, under the write lock.

On the loop, writes whose blocks end in the same turn of the loop share one transaction and one COMMIT
(``_Group``): the first begins it, each later one runs in a savepoint of its own and is rolled back alone
if it raises, and the commit comes at the end of that turn. Each write's block ends (its caller is
answered) only after that commit, and ``then`` (the change hub's publish) runs right after it, also for
a caller cancelled meanwhile. A COMMIT and a BEGIN fewer per write that joins: with 4 workers claiming and
completing one chunk at a time, 2.8% more chunks a second, and 13% with 16 (bench.compare).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from jobpulse_server.store.drivers import Conflict
from jobpulse_server.store.statements import NO_PARAMS, for_sqlite

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a statement may wait inside SQLite for another process's lock (ms), and how long a writer keeps
# retrying BEGIN IMMEDIATE, asynchronously, before giving up (s). Short in both modes: on the loop a wait
# inside SQLite stalls every call, and on the dedicated thread it would stall every read queued behind it.
BUSY_MS = 20
WRITE_WAIT = 30.0
# Seconds between WAL checkpoints, which run on a thread of their own.
CHECKPOINT_INTERVAL = 0.5
# A log holding more than this (the frames written since it last started over, not its file's size) is
# checkpointed to its end and started over from its first frame, writers held meanwhile (a few ms). The
# PASSIVE checkpoints alone never reach the end of a log that is written all the time (each copies the
# frames written before it started, and writers append more meanwhile), and SQLite only starts a log over
# after a checkpoint that did: under a steady load the log grew by gigabytes, its index (``-shm``, mapped
# into the server's memory) with it. Small, so that under load the log starts over at about every
# checkpoint and its file stays a few tens of MB, written over in place: against 64 MiB and checkpoints
# that truncated the file (which the writers then grew again), claim + complete ran 5-9% more chunks a
# second (bench.compare, SQLite, 4 workers).
WAL_LIMIT = 4 * 1024 * 1024
WAL_FRAME_HEADER = 24
# The log's file is cut back to this size when a writer starts the log over (SQLite's
# journal_size_limit). Under a steady load the file stays well below it (35-40 MB in the worker
# benchmarks) and nothing is cut; but a reader that holds its snapshot for long (another process reading
# the file: a backup, a sqlite3 shell left in a transaction) keeps any checkpoint from reaching the log's
# end, so meanwhile the file grows with every write, and without a limit it kept that size on disk for
# good once the log started over.
WAL_FILE_LIMIT = 64 * 1024 * 1024


def existing_file(path: str) -> str:
    """A sqlite3 URI (``uri=True``) opening ``path`` read-write without ever creating it. Only start-up
    creates the database: a file removed under a running server must make calls fail
    (DATABASE_UNAVAILABLE, health NOT_SERVING), not quietly open a new, empty database in its place."""
    return f"file:{quote(str(Path(path).expanduser()))}?mode=rw"


def _connect(path: str, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        existing_file(path), uri=True, check_same_thread=False, isolation_level=None, cached_statements=256
    )
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    # No checkpoint inside a commit (it copies pages into the database file and syncs it: 15% of the
    # server's samples under claim + complete on the loop): the Checkpointer's thread does them.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={int(WAL_FILE_LIMIT)}")
    return conn


class SqliteConn:
    """``Conn`` over one sqlite3 connection; ``run`` is where each call runs (here, or on the thread)."""

    __slots__ = ("_run", "conn")

    def __init__(self, conn: sqlite3.Connection, run: Callable[[Callable[[], Any]], Any] | None) -> None:
        self.conn = conn
        self._run = run

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            if self._run is None:
                return fn()
            return await self._run(fn)  # type: ignore[no-any-return]  # the thread's result is fn's
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc

    # On the loop each call goes straight to SQLite (no closure, no extra await): they are on every
    # call's path.

    async def fetch(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> list[Sequence[Any]]:
        text, _, values = for_sqlite(sql)
        if self._run is None:
            return self.conn.execute(text, values(params)).fetchall()
        return await self._call(lambda: self.conn.execute(text, values(params)).fetchall())

    async def fetchrow(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Sequence[Any] | None:
        text, _, values = for_sqlite(sql)
        if self._run is None:
            return self.conn.execute(text, values(params)).fetchone()  # type: ignore[no-any-return]
        return await self._call(lambda: self.conn.execute(text, values(params)).fetchone())

    async def fetchval(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> Any:
        row = await self.fetchrow(sql, params)
        return row[0] if row is not None else None

    async def execute(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> int:
        text, _, values = for_sqlite(sql)
        if self._run is None:
            try:
                return self.conn.execute(text, values(params)).rowcount
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from exc
        return await self._call(lambda: self.conn.execute(text, values(params)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        text, _, values = for_sqlite(sql)
        if self._run is None:
            try:
                self.conn.executemany(text, map(values, rows))
            except sqlite3.IntegrityError as exc:
                raise Conflict(str(exc)) from exc
            return
        await self._call(lambda: self.conn.executemany(text, map(values, rows)))


def _restart_wal(path: str) -> None:
    """Checkpoints the whole log so that the next writer starts it over from its first frame (readers
    may hold it up: BUSY_MS each, then it is tried again at a later checkpoint). The file keeps its size:
    writers write over the old frames rather than grow a truncated file again."""
    conn = sqlite3.connect(existing_file(path), uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        conn.execute("PRAGMA wal_checkpoint(RESTART)")
    finally:
        conn.close()


class Checkpointer:
    """Copies the write-ahead log into the database file every CHECKPOINT_INTERVAL seconds, on a thread of
    its own (a PASSIVE checkpoint waits for no reader or writer). The thread owns its connection: it
    opens, uses and closes it (closing one on the loop while a checkpoint still ran on a worker thread
    crashed the process at shutdown). The connection never creates the file."""

    def __init__(self, path: str, on_long_wal: Callable[[], object] | None = None) -> None:
        self.path = path
        self.on_long_wal = on_long_wal
        self.ticks = 0  # checkpoints tried so far (tests wait on it)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobpulse-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        # The log's length when a restart was last asked for: a RESTART checkpoint leaves the log as it is
        # until the next writer starts it over, so an idle log past the limit must not ask again and again.
        asked_at = -1
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                try:
                    if conn is None:
                        conn = sqlite3.connect(existing_file(self.path), uri=True, isolation_level=None)
                        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
                        frame_bytes = conn.execute("PRAGMA page_size").fetchone()[0] + WAL_FRAME_HEADER
                    # (busy, frames in the log, frames copied into the database file)
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.ticks += 1
                    if (
                        self.on_long_wal is not None
                        and frames * frame_bytes > WAL_LIMIT
                        and frames != asked_at
                    ):
                        asked_at = frames
                        self.on_long_wal()
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
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)


class SqliteDriver:
    """Read snapshots and serialised write transactions on one SQLite file."""

    def __init__(self, path: str, *, on_loop: bool = True) -> None:
        self.path = str(Path(path).expanduser())
        self.on_loop = on_loop
        self._readers: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        # The dedicated thread (every call, when not on the loop), and one for bulk writes, so that a long
        # delete holds up neither the loop nor the reads queued for the dedicated thread.
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._checkpointer: Checkpointer | None = None
        # Connections opened before the last ``dispose`` are closed when they come back, not reused.
        self._epoch = 0
        self._born: dict[int, int] = {}
        self._restarting: asyncio.Task[None] | None = None
        # The write transaction left open to the end of this turn of the loop (on the loop only), and the
        # loop it runs on (looked up once: on Python 3.11 each lookup is a getpid system call).
        self._group: _Group | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _on(self, name: str) -> Callable[[Callable[[], Any]], Any]:
        def run(fn: Callable[[], Any]) -> Any:
            pool = self._threads.get(name)
            if pool is None:
                pool = self._threads[name] = ThreadPoolExecutor(
                    1, thread_name_prefix=f"jobpulse-sqlite-{name}"
                )
            return asyncio.get_running_loop().run_in_executor(pool, fn)

        return run

    def _runner(self, bulk: bool = False) -> Callable[[Callable[[], Any]], Any] | None:
        if bulk:
            return self._on("bulk")
        return None if self.on_loop else self._on("db")

    async def _open(self) -> sqlite3.Connection:
        run = self._runner()
        conn: sqlite3.Connection = (
            _connect(self.path, BUSY_MS) if run is None else await run(lambda: _connect(self.path, BUSY_MS))
        )
        self._born[id(conn)] = self._epoch
        return conn

    def _close(self, conn: sqlite3.Connection) -> None:
        self._born.pop(id(conn), None)
        conn.close()

    def _stale(self, conn: sqlite3.Connection) -> bool:
        return self._born.get(id(conn), -1) < self._epoch

    async def start(self) -> None:
        self._writer = await self._open()
        self._readers.append(await self._open())
        loop = self._loop = asyncio.get_running_loop()
        self._checkpointer = Checkpointer(self.path, lambda: loop.call_soon_threadsafe(self._restart_soon))

    def _restart_soon(self) -> None:
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        """The whole log into the database file, so that the next writer starts it over, with this
        process's writers held (they queue on the write lock rather than wait on SQLite's busy handler on
        the loop)."""
        async with self._lock:
            self._end_group()
            try:
                await asyncio.to_thread(_restart_wal, self.path)
            except sqlite3.Error as exc:
                log.debug("WAL restart failed: %s", exc)

    async def close(self) -> None:
        async with self._lock:  # a write still running ends first, then the open group commits
            self._end_group()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._restarting is not None:
            await asyncio.gather(self._restarting, return_exceptions=True)
            self._restarting = None
        for conn in [*self._readers, *([self._writer] if self._writer else [])]:
            self._close(conn)
        self._readers, self._writer = [], None
        for pool in self._threads.values():
            pool.shutdown(wait=True)
        self._threads = {}

    async def dispose(self) -> None:
        """Closes the idle connections, and those in use as they come back: every later read or write
        opens the file anew (after it moved, or was replaced)."""
        self._epoch += 1
        for conn in self._readers:
            self._close(conn)
        self._readers = []
        if self._writer is not None and not self._lock.locked() and self._group is None:
            self._close(self._writer)
            self._writer = None

    def read(self, *, consistent: bool = True) -> _Reading:
        """A read snapshot (a deferred transaction; WAL readers never wait), or with ``consistent`` false
        each statement on its own."""
        return _Reading(self, consistent)

    def _take_reader(self) -> sqlite3.Connection | None:
        return self._readers.pop() if self._readers else None

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if self._stale(conn):
            self._close(conn)
        else:
            self._readers.append(conn)

    def write(self, *, bulk: bool = False, then: Callable[[], object] | None = None) -> _Writing:
        """A write transaction under the process's write lock: committed when the block ends (``then``
        runs right after the commit), rolled back when it raises. On the loop, writes that end in the
        same turn of the loop share one COMMIT (``_Group``); the block ends after it."""
        return _Writing(self, bulk, then)

    def _commit_due(self, group: _Group) -> None:
        """The end of the turn of the loop in which ``group`` opened: commit it, unless a writer holds
        the lock (a member suspended mid-write: it commits when it ends, since ``due`` is set)."""
        if group is not self._group:
            return  # committed already, by a writer that needed the connection to itself
        if self._lock.locked():
            group.due = True
            return
        self._end_group()

    def _end_group(self) -> None:
        """Commits the open group, if any: runs its members' ``then`` and wakes them, or hands each the
        error. Called with the lock free or held by the caller (never mid-statement)."""
        group = self._group
        if group is None:
            return
        self._group = None
        raw = self._writer
        failure: BaseException | None = group.broken
        if failure is None:
            try:
                if raw is None or not raw.in_transaction:
                    raise sqlite3.OperationalError("the write transaction ended before its commit")
                raw.execute("COMMIT")
            except BaseException as exc:
                failure = exc
        if failure is not None:
            if raw is not None and raw.in_transaction:
                try:
                    raw.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        else:
            for then in group.thens:
                try:
                    then()
                except Exception:
                    log.exception("after a commit")
        for waiter in group.waiters:
            if not waiter.done():
                if failure is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(failure)
        if raw is not None:
            self._writer_done(raw)

    async def _writer_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = await self._open()
        return self._writer

    def _writer_done(self, writer: sqlite3.Connection) -> None:
        if self._stale(writer):  # disposed while it wrote: the next writer opens the file anew
            self._close(writer)
            self._writer = None

    async def _begin_immediate(self, c: SqliteConn) -> None:
        """BEGIN IMMEDIATE; while another process holds the write lock, retries without blocking the loop
        for up to WRITE_WAIT. The loop and its clock are looked up only then: on Python 3.11 finding the
        running loop is a getpid system call, on every write."""
        loop: asyncio.AbstractEventLoop | None = None
        deadline = 0.0
        delay = 0.002
        while True:
            try:
                await c.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower():
                    raise
                if loop is None:  # the first refusal
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + WRITE_WAIT
                elif loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


class _Reading:
    """``SqliteDriver.read()``: a class of its own rather than a generator, since every read goes
    through it (a generator-based context manager cost a few microseconds more per read)."""

    __slots__ = ("_conn", "_consistent", "_driver", "_raw")

    def __init__(self, driver: SqliteDriver, consistent: bool) -> None:
        self._driver = driver
        self._consistent = consistent
        self._raw: sqlite3.Connection | None = None

    async def __aenter__(self) -> SqliteConn:
        d = self._driver
        raw = d._take_reader() or await d._open()
        self._raw = raw
        conn = SqliteConn(raw, d._runner())
        self._conn = conn
        if self._consistent:
            try:
                await conn.execute("BEGIN")
            except BaseException:
                d._give_back(raw)
                raise
        return conn

    async def __aexit__(self, *exc: object) -> None:
        raw = self._raw
        assert raw is not None
        try:
            if self._consistent:
                await self._conn.execute("COMMIT")
        finally:
            self._driver._give_back(raw)


class _Group:
    """Writes on the loop whose blocks ended in one turn of the loop, all in one transaction: the first
    began it (BEGIN IMMEDIATE), each later one ran inside a savepoint of its own (rolled back alone if it
    raised), and a callback at the end of that turn commits them together. Each waits for the COMMIT
    before its block ends: nothing is acknowledged before it is committed."""

    __slots__ = ("broken", "due", "thens", "waiters")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.thens: list[Callable[[], object]] = []
        self.due = False  # the commit came due while a member held the lock
        # What ended the transaction under a member (SQLite rolls the whole transaction back on some
        # errors: a full disk, an I/O error): every member is told it, none is committed.
        self.broken: BaseException | None = None


class _Writing:
    """``SqliteDriver.write()`` (a class for the same reason as ``_Reading``)."""

    __slots__ = ("_bulk", "_conn", "_driver", "_joined", "_raw", "_then")

    def __init__(self, driver: SqliteDriver, bulk: bool, then: Callable[[], object] | None) -> None:
        self._driver = driver
        self._bulk = bulk
        self._then = then

    async def __aenter__(self) -> SqliteConn:
        d = self._driver
        await d._lock.acquire()
        self._joined = None
        try:
            group = d._group
            if group is not None:
                raw = d._writer
                if not self._bulk and raw is not None and raw.in_transaction:
                    self._raw = raw
                    conn = self._conn = SqliteConn(raw, None)
                    raw.execute("SAVEPOINT member")
                    self._joined = group
                    return conn
                # A bulk write has the connection to itself; a group whose transaction SQLite ended
                # under it is told so. Either way it ends here.
                d._end_group()
            raw = self._raw = await d._writer_conn()
            conn = self._conn = SqliteConn(raw, d._runner(self._bulk))
            await d._begin_immediate(conn)
        except BaseException:
            if d._writer is not None and d._group is None:
                d._writer_done(d._writer)
            d._lock.release()
            raise
        return conn

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: object
    ) -> None:
        d = self._driver
        group = self._joined
        if group is None and (self._bulk or not d.on_loop):
            await self._alone(kind)
            return
        raw = self._raw
        if group is None:  # began the transaction: it opens the group, committed at the end of this turn
            if kind is not None:
                await self._alone(kind)
                return
            group = d._group = _Group()
            assert d._loop is not None
            d._loop.call_soon(d._commit_due, group)
        else:
            failed = value if kind is not None else None
            if failed is None:
                try:
                    raw.execute("RELEASE member")
                except sqlite3.Error as exc:
                    failed = exc
            if failed is not None:
                await self._leave(group, failed)
                if kind is None:
                    raise failed
                return
        if self._then is not None:
            group.thens.append(self._then)
        await self._until_committed(group)

    def _until_committed(self, group: _Group) -> asyncio.Future[None]:
        """Releases the lock and gives the future the group's commit resolves (at once if it came due
        while this member held the lock)."""
        d = self._driver
        assert d._loop is not None
        waiter = d._loop.create_future()
        group.waiters.append(waiter)
        d._lock.release()
        if group.due:
            d._end_group()
        return waiter

    async def _leave(self, group: _Group, failed: BaseException | None) -> None:
        """A member that raised: its savepoint rolled back, the rest of its group kept. Its error too is
        told after the group's commit: it may come of what the members before it wrote (a request id
        taken a moment ago), and a caller that reads to learn more must find that committed."""
        raw = self._raw
        try:
            raw.execute("ROLLBACK TO member")
            raw.execute("RELEASE member")
        except sqlite3.Error:
            pass
        if not raw.in_transaction and group.broken is None:
            # The members before it are not committed either: they are told SQLite's error, or (the
            # block raised something else) that the transaction was rolled back.
            group.broken = (
                failed
                if isinstance(failed, sqlite3.Error)
                else sqlite3.OperationalError("the write transaction was rolled back")
            )
        try:
            await self._until_committed(group)
        except Exception:
            pass  # the group's own failure: this member's error is what its caller is told

    async def _alone(self, kind: type[BaseException] | None) -> None:
        d = self._driver
        try:
            if kind is None:
                try:
                    await self._conn.execute("COMMIT")
                except BaseException:
                    await self._roll_back()  # a failed COMMIT leaves the transaction open
                    raise
            else:
                await self._roll_back()
        finally:
            d._writer_done(self._raw)
            d._lock.release()
        if kind is None and self._then is not None:
            self._then()

    async def _roll_back(self) -> None:
        try:
            await asyncio.shield(self._conn.execute("ROLLBACK"))
        except sqlite3.Error:
            pass  # no transaction left to roll back (SQLite ended it), or the file is away: nothing to undo
