"""``SqlStore``: the store's front door. Opens the database (the schema brought up to date at start-up),
hands out read snapshots, runs write transactions with the one retry policy, publishes what committed,
and on PostgreSQL offers the group-committed worker path as ``batch``.

The retry policy, for every write: a transaction (or a batched path's statement) aborted by a deadlock or a
serialization failure (SQLSTATE 40P01 / 40001) is run again, up to WRITE_ATTEMPTS times in all, after a
short random pause; the last failure reaches the caller as UNAVAILABLE. So ``body`` may run more than
once and must not act outside the transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import jobpulse_server.store.schema as schema
import jobpulse_server.store.statements as q
from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.usage import KeyUsage
from jobpulse_server.store.batch import Batch
from jobpulse_server.store.caps import Caps
from jobpulse_server.store.drivers import Aborted
from jobpulse_server.store.drivers.asyncpg import PgDriver
from jobpulse_server.store.drivers.sqlite import SqliteDriver
from jobpulse_server.store.errors import translated
from jobpulse_server.store.holds import Holds
from jobpulse_server.store.owners import Owners
from jobpulse_server.store.tx import SqlTx
from jobpulse_server.store.waiting import Waiting

T = TypeVar("T")
log = logging.getLogger(__name__)

# How many times in all a write aborted by a deadlock or serialization failure is run.
WRITE_ATTEMPTS = 5
# Refresh the chunks table's statistics once this many chunks were added since the last time (and at
# least a tenth of the table, autovacuum's own rule). See ``chunks_added``.
ANALYZE_MIN_CHUNKS = 1_000

_jitter = random.Random()


class TxSpans(Protocol):
    """What traces the store's transactions (the wiring installs one as ``SqlStore.spans`` when
    tracing is on; the store itself knows no tracing library)."""

    def start(self, operation: str) -> Any:
        """``operation``: ``read`` or ``write``; returns a handle for ``end`` (None: nothing traced)."""

    def end(self, handle: Any, error: BaseException | None) -> None: ...


class SqlStore:
    """The store on SQLite (``sqlite:///PATH``) or PostgreSQL (``postgresql://...``)."""

    def __init__(
        self,
        url: str,
        on_commit: Callable[[Changes], None] | None = None,
        *,
        sqlite_on_loop: bool = True,
        on_retry: Callable[[str], None] | None = None,
        on_wake: Callable[[float], None] | None = None,
        pool_size: int = 10,
        progress_interval_us: int = 5_000_000,
        fair_share: bool = True,
    ) -> None:
        """``progress_interval_us``: the least time between a job's job.progress webhook events (the
        server's webhook_progress_interval, as the outbox has it): PostgreSQL's group-committed worker
        path writes the changes of a job with webhooks when they make no event (``store/batch/``).
        ``on_wake(seconds)``: wakes this process's waiting claims that much later (store/waiting.py).
        ``fair_share``: claims rotate across owners (domain/model.py ``fair_order``); off: priority, then
        the oldest job."""
        self.url = schema.normalize_url(url)
        self.dialect = q.SQLITE if self.url.startswith("sqlite") else q.POSTGRES
        self.on_commit = on_commit
        self.on_retry = on_retry
        self.on_wake = on_wake
        self.fair_share = fair_share
        # Names this server in change notifications (several replicas may share a database).
        self.replica_id = secrets.token_hex(6)
        # When the first chunk waiting out a retry backoff comes due (store/waiting.py).
        self.waiting = Waiting(self._wake_claimers)
        # PostgreSQL: whether several owners have pending chunks, as last seen (fair share's statements).
        self.owners = Owners()
        # PostgreSQL: whether a PER_CHUNK dependant holds chunks, as last seen (the completions' statements).
        self.holds = Holds()
        # PostgreSQL: which kinds have a max_running_chunks, as last seen (the claims' statements).
        self.caps = Caps()
        self.driver: SqliteDriver | PgDriver
        self.batch: Batch | None
        if self.dialect.postgres:
            self.driver = PgDriver(schema.asyncpg_dsn(self.url), pool_size=pool_size)
            self.batch = Batch(self, progress_interval_us, fair_share)
        else:
            self.driver = SqliteDriver(schema.sqlite_path(self.url), on_loop=sqlite_on_loop)
            self.batch = None
        self._added_since_analyze = 0
        self._chunks_at_analyze = 0
        self._analyzing: asyncio.Task[None] | None = None
        # Set by the wiring when tracing is on; None: reads and writes are not traced (no cost).
        self.spans: TxSpans | None = None

    @property
    def kind(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.dialect.name

    async def start(self, *, migrate: bool = True) -> None:
        """Creates the SQLite file if missing, brings the schema to the newest migration, opens the driver."""
        if not self.dialect.postgres:
            await asyncio.to_thread(schema.create_sqlite_file, self.url)
        if migrate:
            await schema.migrate(self.url)
        await self.driver.start()

    async def close(self) -> None:
        if self._analyzing is not None:
            self._analyzing.cancel()
            await asyncio.gather(self._analyzing, return_exceptions=True)
        if self.batch is not None:
            await self.batch.group.close()  # the flush under way answers its callers first
        await self.driver.close()

    async def dispose(self) -> None:
        """Drops idle connections, so the next call connects afresh (after the database moved)."""
        await self.driver.dispose()

    # --- reads and writes --------------------------------------------------------------------------

    def read(self, *, consistent: bool = True) -> _Read:
        """A read snapshot. ``consistent=False``: each statement on its own, for callers that run one
        statement (two round trips fewer on PostgreSQL)."""
        if self.spans is not None:
            return _TracedRead(self, consistent)
        return _Read(self, consistent)

    async def write(self, body: Callable[[SqlTx], Awaitable[T]], *, bulk: bool = False) -> T:
        """Runs ``body`` in one write transaction and commits; publishes the changes after the commit.
        ``bulk``: on SQLite on the loop, this transaction's statements run on the driver's thread (long
        deletes that must not stall the loop)."""
        spans = self.spans
        if spans is not None:
            handle = spans.start("write")
            try:
                result = await self._write(body, bulk)
            except BaseException as exc:
                spans.end(handle, exc)
                raise
            spans.end(handle, None)
            return result
        return await self._write(body, bulk)

    async def _write(self, body: Callable[[SqlTx], Awaitable[T]], bulk: bool) -> T:
        async def run() -> T:
            # The changes go to the hub right after the commit, from the driver: on SQLite a write's
            # commit may come after its caller was cancelled (bodies that end in one turn of the loop
            # share one COMMIT), and what was committed is published all the same.
            changes = Changes()
            async with self.driver.write(bulk=bulk, then=lambda: self.publish(changes)) as conn:
                tx = SqlTx(
                    conn,
                    self.dialect,
                    changes,
                    self.replica_id,
                    self.waiting,
                    fair=self.fair_share,
                    owners=self.owners if self.dialect.postgres else None,
                    holds=self.holds if self.dialect.postgres else None,
                )
                result = await body(tx)
                await tx.finish()
            return result

        return await self._retrying(run)

    async def statement(self, sql: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """PostgreSQL: one statement, its own transaction, under the retry policy; its first row."""
        assert isinstance(self.driver, PgDriver)
        driver = self.driver
        return await self._retrying(lambda: driver.statement(sql, params))

    async def statement_rows(self, sql: str, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        """PostgreSQL: one statement, its own transaction, under the retry policy, on the group-commit
        flusher's connection (store/batch/flushes.py: it alone calls this, one flush at a time); all its
        rows."""
        assert isinstance(self.driver, PgDriver)
        driver = self.driver
        return await self._retrying(lambda: driver.pinned_rows(sql, params))

    async def _retrying(self, run: Callable[[], Awaitable[T]]) -> T:
        """Runs ``run`` under the retry policy; a driver error that means the database is away (or the
        last abort) leaves as the domain's DatabaseUnavailable, so nothing above the store sees one."""
        attempt = 1
        while True:
            try:
                return await run()
            except Aborted as exc:
                if attempt >= WRITE_ATTEMPTS:
                    error = translated(exc)
                    if error is exc:
                        raise
                    raise error from exc
                if self.on_retry is not None:
                    self.on_retry(exc.sqlstate)
                log.info(
                    "write aborted (SQLSTATE %s); running it again (attempt %d)", exc.sqlstate, attempt + 1
                )
                attempt += 1
                await asyncio.sleep(_jitter.random() * 0.01 * attempt)
            except Exception as exc:
                error = translated(exc)
                if error is exc:
                    raise
                raise error from exc

    def publish(self, changes: Changes) -> None:
        """Hands what a committed write changed to the change hub."""
        if self.on_commit is not None and (
            changes.jobs or changes.deleted or changes.new_work or changes.webhooks
        ):
            self.on_commit(changes)

    def _wake_claimers(self, seconds: float) -> None:
        """Wakes the claims waiting in this process in ``seconds`` (store/waiting.py): no change was
        committed, so nothing is published."""
        if self.on_wake is not None:
            self.on_wake(seconds)

    # --- single-operation conveniences (each its own transaction) ----------------------------------

    async def probe(self) -> None:
        """Raises unless the database answers and holds every table and column the server uses."""
        async with self.read(consistent=False) as tx:
            await tx.probe()

    async def add_usage(self, counts: Mapping[str, KeyUsage], now: int) -> None:
        """Adds calls per key to the stored totals (services/usage.py flushes through this)."""
        if counts:
            await self.write(lambda tx: tx.add_usage(counts, now))

    async def usage(self) -> dict[str, KeyUsage]:
        async with self.read() as tx:
            return await tx.usage()

    async def add_throughput(self, counts: Mapping[tuple[int, str], tuple[int, int]]) -> None:
        """Adds chunks and items completed per (minute, kind) (services/throughput.py flushes here)."""
        if counts:
            await self.write(lambda tx: tx.add_throughput(counts))

    async def throughput_since(self, since_minute_us: int) -> list[tuple[int, str, int, int]]:
        async with self.read() as tx:
            return await tx.throughput_since(since_minute_us)

    async def prune_throughput(self, before_minute_us: int) -> int:
        return await self.write(lambda tx: tx.prune_throughput(before_minute_us))

    async def chunks_added(self, n: int) -> None:
        """Told after ``n`` chunks were inserted. PostgreSQL: past ANALYZE_MIN_CHUNKS and a tenth of the
        table, refreshes the planner's statistics of ``chunks`` in the background. Until autovacuum gets
        round to it (a minute or more), a freshly loaded table keeps statistics saying almost no chunk is
        pending, and the claim is planned as a sort of every pending chunk instead of a walk of
        ix_chunks_claim: 11 ms instead of 0.2 ms per claim at 10,000 pending chunks. (SQLite plans the
        claim from the index alone.)"""
        if not isinstance(self.driver, PgDriver):
            return
        self._added_since_analyze += n
        due = max(ANALYZE_MIN_CHUNKS, self._chunks_at_analyze // 10)
        if self._added_since_analyze < due or (self._analyzing is not None and not self._analyzing.done()):
            return
        self._added_since_analyze = 0
        self._analyzing = asyncio.create_task(self._analyze(self.driver), name="jobpulse-analyze-chunks")

    async def _analyze(self, driver: PgDriver) -> None:
        try:
            self._chunks_at_analyze = await driver.analyze("chunks")
        except Exception as exc:  # the planner keeps its old statistics; autovacuum comes round later
            log.warning("could not refresh the statistics of chunks: %s", exc)


class _Read:
    """``SqlStore.read()``: a read transaction's ``SqlTx`` (a class rather than a generator-based context
    manager: every read goes through it)."""

    __slots__ = ("_consistent", "_inner", "_store")

    def __init__(self, store: SqlStore, consistent: bool) -> None:
        self._store = store
        self._consistent = consistent

    async def __aenter__(self) -> SqlTx:
        store = self._store
        self._inner = store.driver.read(consistent=self._consistent)
        try:
            conn = await self._inner.__aenter__()
        except Exception as exc:
            error = translated(exc)
            if error is exc:
                raise
            raise error from exc
        return SqlTx(conn, store.dialect, Changes(), store.replica_id)

    async def __aexit__(self, *exc: Any) -> None:
        """Ends the read; a driver error raised in it, or by its end, leaves as DatabaseUnavailable."""
        try:
            await self._inner.__aexit__(*exc)
        except Exception as failed:
            error = translated(failed)
            if error is failed:
                raise
            raise error from failed
        raised = exc[1]
        if isinstance(raised, Exception):
            error = translated(raised)
            if error is not raised:
                raise error from raised


class _TracedRead(_Read):
    """``_Read`` in a span of the store's ``spans`` (tracing on)."""

    __slots__ = ("_handle",)

    async def __aenter__(self) -> SqlTx:
        spans = self._store.spans
        assert spans is not None
        self._handle = spans.start("read")
        try:
            return await super().__aenter__()
        except BaseException as exc:
            spans.end(self._handle, exc)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        spans = self._store.spans
        assert spans is not None
        try:
            await super().__aexit__(*exc)
        except BaseException as error:
            spans.end(self._handle, error)
            raise
        spans.end(self._handle, None)  # an error of the reader's own is not the database's
