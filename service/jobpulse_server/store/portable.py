"""The store's operations through SQLAlchemy on the ``Database``'s engine.

For the modes the direct stores do not cover: SQLite on aiosqlite's worker thread
(``sqlite_on_loop=false``) and PostgreSQL through psycopg. Same behaviour, more CPU per call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.model import Artifact, Chunk, ChunkState, Job
from jobpulse_server.store import WRITE_ATTEMPTS, GeneralPathsOnly, TwoStepLocks, WriteTx
from jobpulse_server.store import repository as repo
from jobpulse_server.store.engine import Database, UnitOfWork
from jobpulse_server.store.tables import chunks, jobs, webhook_deliveries

T = TypeVar("T")
_jitter = random.Random()


class PortableRead:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get_job(self, job_id: str, owner: str | None) -> Job | None:
        return await repo.get_job(self.conn, job_id, owner)

    async def get_jobs(self, job_ids: Sequence[str], owner: str | None) -> dict[str, Job]:
        return await repo.get_jobs(self.conn, job_ids, owner)

    async def list_chunks(
        self,
        job_id: str,
        *,
        after_index: int = -1,
        limit: int | None = None,
        states: Iterable[ChunkState] = (),
        after_revision: int | None = None,
    ) -> list[Chunk]:
        return await repo.list_chunks(
            self.conn,
            job_id,
            after_index=after_index,
            limit=limit,
            states=states,
            after_revision=after_revision,
        )

    async def jobs_artifacts(self, job_ids: Sequence[str], limit: int) -> dict[str, list[Artifact]]:
        return await repo.jobs_artifacts(self.conn, job_ids, limit)

    async def list_jobs(self, f: JobFilter, order_by: str, after: list[Any] | None, limit: int) -> list[Job]:
        return await repo.list_jobs(self.conn, f, order_by, after, limit)

    async def count_jobs(self, f: JobFilter) -> int:
        return await repo.count_jobs(self.conn, f)

    async def change_horizon(self) -> int:
        return await repo.change_horizon(self.conn)

    async def chunk_states(self, job_id: str) -> str:
        return await repo.chunk_states(self.conn, job_id)


class PortableWrite(PortableRead, TwoStepLocks):
    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow.conn)
        self.uow = uow
        self.changes = uow.changes
        self._artifacts: list[tuple[str, Artifact]] = []
        self._outbox: list[dict[str, Any]] = []

    async def claim(
        self, kinds: Sequence[str], now: int, limit: int, *, skip_locked: bool
    ) -> tuple[dict[str, Job], list[Chunk]]:
        if self.uow.dialect == "sqlite":
            # One writer at a time: no lock order to keep (see SqliteWrite.claim).
            picked = await repo.pick_claimable(self.conn, kinds=kinds, now=now, limit=limit, job_ids=None)
            return (await repo.get_jobs(self.conn, [c.job_id for c in picked]) if picked else {}), picked
        jobs = await repo.claim_jobs(self.conn, kinds=kinds, now=now, limit=limit, skip_locked=skip_locked)
        if not jobs:
            return jobs, []
        picked = await repo.pick_claimable(self.conn, kinds=kinds, now=now, limit=limit, job_ids=sorted(jobs))
        return jobs, picked

    async def lock_jobs(self, job_ids: Sequence[str], *, skip_locked: bool = False) -> dict[str, Job]:
        if not job_ids:
            return {}
        if skip_locked:
            return await repo.lock_jobs_skip_locked(self.conn, sorted(set(job_ids)))
        q = select(jobs).where(jobs.c.id.in_(sorted(set(job_ids)))).order_by(jobs.c.id)
        if self.uow.dialect == "postgresql":
            q = q.with_for_update()
        return {j.id: j for j in (repo._job_from_row(r) for r in (await self.conn.execute(q)).all())}

    async def lock_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        q = select(chunks).where(chunks.c.id.in_(sorted(set(chunk_ids)))).order_by(chunks.c.id)
        if self.uow.dialect == "postgresql":
            q = q.with_for_update()
        return {c.id: c for c in (repo._chunk_from_row(r) for r in (await self.conn.execute(q)).all())}

    async def expired_leases(self, now: int, limit: int) -> list[Chunk]:
        return await repo.expired_leases(self.conn, now, limit)

    def add_artifacts(self, job_id: str, artifacts: Sequence[Artifact]) -> None:
        self._artifacts += [(job_id, a) for a in artifacts]

    def add_outbox(self, rows: Sequence[dict[str, Any]]) -> None:
        self._outbox += rows

    async def save(self, jobs: Iterable[Job], chunks: Sequence[Chunk]) -> None:
        await repo.save_chunks(self.conn, chunks)
        for job in jobs:
            await repo.save_job(self.conn, job)
            self.uow.changed(job.id, job.revision)
        by_job: dict[str, list[Artifact]] = {}
        for job_id, a in self._artifacts:
            by_job.setdefault(job_id, []).append(a)
        for job_id, items in by_job.items():
            await repo.insert_artifacts(self.conn, job_id, items)
        self._artifacts = []
        if self._outbox:
            await self.conn.execute(insert(webhook_deliveries), self._outbox)
            self._outbox = []
            self.changes.webhooks = True


class PortableStore(GeneralPathsOnly):
    """The Store through SQLAlchemy."""

    def __init__(self, db: Database, on_retry: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.on_retry = on_retry

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def dispose(self) -> None:
        return None

    async def chunks_added(self, n: int) -> None:
        return None

    @asynccontextmanager
    async def read(self, *, consistent: bool = True) -> AsyncIterator[PortableRead]:
        async with self.db.read() as conn:
            yield PortableRead(conn)

    async def write(self, body: Callable[[WriteTx], Awaitable[T]]) -> T:
        attempt = 1
        while True:
            try:
                async with self.db.write() as uow:
                    return await body(PortableWrite(uow))
            except DBAPIError as exc:
                orig = exc.orig
                state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
                if state not in ("40001", "40P01") or attempt >= WRITE_ATTEMPTS:
                    raise
                if self.on_retry is not None:
                    self.on_retry(state)
                attempt += 1
                await asyncio.sleep(_jitter.random() * 0.01 * attempt)
