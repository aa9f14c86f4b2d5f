"""The paths that are not hot (create, cancel, retry, update, delete, stats, the cancel deadline, the
WatchJobs feed) as a unit of work over SQLAlchemy Core, on both databases.

``SqlTransactions`` hands out ``SqlJobsTx`` objects: ``write()`` one write transaction whose changes
are published after its commit, ``read()`` one snapshot. The services see only the ``JobsTx`` and
``Transactions`` protocols (``store/__init__.py``), so they hold no connection, catch no driver
error, and can run on an in-memory fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobpulse_server.domain.changes import Changes
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job, JobState
from jobpulse_server.domain.principal import KeyInfo
from jobpulse_server.domain.reports import FeedEntry, StatsRow
from jobpulse_server.domain.retention import ExpiryCandidate, Retention
from jobpulse_server.domain.webhooks import Delivery
from jobpulse_server.store import RequestIdTaken, keys
from jobpulse_server.store import repository as repo
from jobpulse_server.store import webhooks as outbox_rows
from jobpulse_server.store.engine import Database


class SqlJobsTx:
    """The operations of one transaction (see ``JobsTx``)."""

    def __init__(self, conn: AsyncConnection, changes: Changes) -> None:
        self.conn = conn
        self.changes = changes

    def changed(self, job_id: str, revision: int) -> None:
        self.changes.jobs[job_id] = max(revision, self.changes.jobs.get(job_id, 0))

    async def find_job_by_request(self, owner: str, request_id: str) -> Job | None:
        return await repo.find_job_by_request(self.conn, owner, request_id)

    async def insert_job(self, job: Job, chunks: Sequence[Chunk], request_fingerprint: str = "") -> None:
        try:
            await repo.insert_job(self.conn, job, chunks)
        except IntegrityError as exc:
            if job.request_id:
                raise RequestIdTaken(job.request_id) from exc
            raise
        if request_fingerprint:
            await repo.add_request_fingerprint(self.conn, job.id, request_fingerprint)
        self.changed(job.id, job.revision)

    async def request_fingerprint(self, job_id: str) -> str | None:
        return await repo.request_fingerprint(self.conn, job_id)

    async def get_job(self, job_id: str, owner: str | None, *, for_update: bool = False) -> Job | None:
        return await repo.get_job(self.conn, job_id, owner, for_update=for_update)

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        return await repo.jobs_artifacts(self.conn, job_ids, limit)

    async def save_job(self, job: Job, outbox: Sequence[dict[str, Any]] = ()) -> None:
        await repo.save_job(self.conn, job)
        self.changed(job.id, job.revision)
        if outbox:
            await outbox_rows.add(self.conn, outbox)
            self.changes.webhooks = True

    async def cancel_pending_chunks(self, job_id: str, revision: int, now: int) -> int:
        return await repo.cancel_pending_chunks(self.conn, job_id, revision, now)

    async def reset_for_retry(
        self, job_id: str, revision: int, priority: int, attempts: int, chunk_id: str | None = None
    ) -> tuple[int, int, int]:
        return await repo.reset_for_retry(self.conn, job_id, revision, priority, attempts, chunk_id)

    async def get_chunk(self, job_id: str, chunk_id: str) -> Chunk | None:
        chunk = await repo.get_chunk(self.conn, chunk_id)
        return chunk if chunk is not None and chunk.job_id == job_id else None

    async def set_pending_priority(self, job_id: str, priority: int) -> None:
        await repo.set_pending_priority(self.conn, job_id, priority)

    async def delete_job(self, job_id: str, now: int) -> None:
        await repo.delete_job(self.conn, job_id, now)
        self.changes.deleted.add(job_id)

    async def overdue_cancels(self, cancel_before: int) -> list[str]:
        return await repo.overdue_cancels(self.conn, cancel_before)

    async def expiry_candidates(
        self, state: JobState, after: tuple[int, str], before: int, limit: int
    ) -> list[ExpiryCandidate]:
        return await repo.expiry_candidates(self.conn, state, after, before, limit)

    async def own_ttl_expired(self, now: int, limit: int) -> list[ExpiryCandidate]:
        return await repo.own_ttl_expired(self.conn, now, limit)

    async def delete_expired(self, job_ids: Sequence[str], now: int, retention: Retention) -> list[str]:
        gone = await repo.delete_expired(self.conn, job_ids, now, retention)
        self.changes.deleted.update(gone)
        return gone

    async def trim_tombstones(self, before: int, limit: int) -> int:
        return await repo.trim_tombstones(self.conn, before, limit)

    async def feed_floor(self) -> int:
        return await repo.feed_floor_seq(self.conn)

    async def processing_chunks(self, job_id: str) -> list[Chunk]:
        return await repo.list_chunks(self.conn, job_id, states=[ChunkState.PROCESSING])

    async def save_chunks(self, chunks: Sequence[Chunk]) -> None:
        await repo.save_chunks(self.conn, chunks)

    async def job_stats(self, f: JobFilter) -> tuple[StatsRow, list[StatsRow]]:
        return await repo.job_stats(self.conn, f)

    async def change_horizon(self) -> int:
        return await repo.change_horizon(self.conn)

    async def changed_jobs(
        self, f: JobFilter, after: tuple[int, str], horizon: int, limit: int
    ) -> tuple[list[FeedEntry], bool]:
        return await repo.changed_jobs(self.conn, f, after, horizon, limit)


class SqlKeysAndDeliveriesTx:
    """The operations of one transaction on keys and deliveries (see ``KeysAndDeliveriesTx``)."""

    def __init__(self, conn: AsyncConnection, changes: Changes) -> None:
        self.conn = conn
        self.changes = changes

    async def active_keys(self) -> dict[str, KeyInfo]:
        return await keys.active_keys(self.conn)

    async def events_secrets(self) -> dict[int, tuple[str, bool]]:
        return await keys.events_secrets(self.conn)

    async def ensure_events_secret(self, now: int) -> None:
        await keys.ensure_events_secret(self.conn, now)

    async def rotate_events_secret(self, now: int) -> int:
        return await keys.rotate_events_secret(self.conn, now)

    async def deliveries_for_job(self, job_id: str, owner: str | None, limit: int) -> list[Delivery] | None:
        return await outbox_rows.for_job(self.conn, job_id, owner, limit)

    async def requeue_delivery(self, delivery_id: str, owner: str | None, now: int) -> Delivery | None:
        found = await outbox_rows.requeue(self.conn, delivery_id, owner, now)
        if found is not None:
            self.changes.webhooks = True
        return found

    async def claim_due_deliveries(
        self, now: int, limit: int, hold_us: int
    ) -> list[tuple[Delivery, str | None]]:
        return await outbox_rows.claim_due(self.conn, now, limit, hold_us)

    async def record_deliveries(self, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        await outbox_rows.record(self.conn, outcomes)

    async def outbox_backlog(self, now: int) -> tuple[int, int | None]:
        return await outbox_rows.backlog(self.conn, now)

    async def trim_deliveries(self, before: int, limit: int) -> int:
        return await outbox_rows.trim(self.conn, before, limit)


class SqlKeysAndDeliveries:
    """Opens ``SqlKeysAndDeliveriesTx`` units of work on the ``Database``'s engine (``off_loop``: see
    ``SqlTransactions``)."""

    def __init__(self, db: Database, *, off_loop: bool = False) -> None:
        self.db = db
        self.off_loop = off_loop

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlKeysAndDeliveriesTx]:
        async with self.db.read(off_loop=self.off_loop) as conn:
            yield SqlKeysAndDeliveriesTx(conn, Changes())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqlKeysAndDeliveriesTx]:
        async with self.db.write(off_loop=self.off_loop) as uow:
            yield SqlKeysAndDeliveriesTx(uow.conn, uow.changes)


class SqlTransactions:
    """Opens ``SqlJobsTx`` transactions on the ``Database``'s engine.

    ``off_loop``: on SQLite driven on the event loop, run the statements on a worker thread instead
    (``Database.write(off_loop=True)``), for bulk work (the expiry sweep) that must not stall the loop;
    no difference elsewhere."""

    def __init__(self, db: Database, *, off_loop: bool = False) -> None:
        self.db = db
        self.off_loop = off_loop

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlJobsTx]:
        async with self.db.read(off_loop=self.off_loop) as conn:
            yield SqlJobsTx(conn, Changes())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqlJobsTx]:
        async with self.db.write(off_loop=self.off_loop) as uow:
            yield SqlJobsTx(uow.conn, uow.changes)
