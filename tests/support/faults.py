"""Helpers for the fault tests: raw stubs and rich-status reasons (polling and the server process are in
``support``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sqlalchemy.engine import make_url

from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from support.postgres import POSTGRES_URL

T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Stubs:
    """Raw stubs over one channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, timeout: float = 2.0) -> int | None:
        try:
            return self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return None

    def chunks(self, job_id: str) -> list[job_pb2.Chunk]:
        found: list[job_pb2.Chunk] = []
        token = ""
        while True:
            page = self.jobs.ListJobChunks(
                job_service_pb2.ListJobChunksRequest(job_id=job_id, page_size=1000, page_token=token),
                timeout=10,
            )
            found.extend(page.chunks)
            token = page.next_page_token
            if not token:
                return found

    def assert_summary_matches_chunks(self, job_id: str) -> job_pb2.Job:
        job = self.jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id, view=1), timeout=10).job
        counts = {name: 0 for name in ("pending", "processing", "completed", "failed", "cancelled")}
        for chunk in self.chunks(job_id):
            counts[job_pb2.ChunkState.Name(chunk.state).removeprefix("CHUNK_STATE_").lower()] += 1
        s = job.chunks_summary
        summary = {
            "pending": s.pending,
            "processing": s.processing,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
        }
        assert summary == counts, f"chunks_summary {summary} != recount {counts}"
        assert sum(counts.values()) == s.total
        return job

    def close(self) -> None:
        self.channel.close()


def reason_of(exc: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call ('' if none)."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def pg_admin(sql: str, database: str | None = None) -> None:
    """Runs ``sql`` on an admin connection to ``database`` (by default the test cluster's own database,
    not a server's: the one to use to drop or rename a server's database)."""
    import asyncpg

    url = make_url(POSTGRES_URL)
    if database is not None:
        url = url.set(database=database)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, password=url.password,
            database=url.database, timeout=5,
        )  # fmt: skip
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def swap_sqlite_file(srv: Any, database_url: str, replacement: bytes | None) -> Path:
    """Moves the server's SQLite file (and -wal/-shm) into a folder ``away`` beside it, puts
    ``replacement`` in its place (None: nothing), and returns that folder (``restore_sqlite_file``
    puts them back). The pools are disposed first, on the server's loop with no await before the
    move, so every later call opens the path anew: a connection SQLite already has open would go on
    using the moved file (see test_database_outage.py)."""
    path = Path(str(make_url(database_url).database))
    away = path.parent / "away"
    away.mkdir()

    async def dispose_and_move() -> None:
        await srv.app.store.dispose()
        _move_and_replace(path, away, replacement)

    srv.call(dispose_and_move())
    return away


def _move_and_replace(path: Path, away: Path, replacement: bytes | None) -> None:
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if part.exists():
            part.rename(away / part.name)
    if replacement is not None:
        path.write_bytes(replacement)


def restore_sqlite_file(database_url: str, away: Path) -> None:
    """Undoes ``swap_sqlite_file``: the moved files go back where they were."""
    path = Path(str(make_url(database_url).database))
    path.unlink(missing_ok=True)
    for part in sorted(away.iterdir()):
        part.rename(path.parent / part.name)
