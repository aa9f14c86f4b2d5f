"""The database goes away and comes back: RPCs fail with UNAVAILABLE (DATABASE_UNAVAILABLE), grpc health
turns NOT_SERVING, and both recover by themselves once the database is back.

PostgreSQL: the test database is made to refuse connections (ALLOW_CONNECTIONS false) and its backends
are terminated, from an admin connection to the ``test`` database; then connections are allowed again.

SQLite: chmod does not stop root, so the database file (and any -wal/-shm) is moved away and a
directory is put in its place: opening it then fails with "unable to open database file". What this
does NOT do by itself: a connection SQLite already has open keeps the moved file open (POSIX
semantics) and goes on reading AND writing it; seen in a probe, the server then answers OK and stays
SERVING, and only calls that happen to need a new pooled connection fail (so it would be flaky). So
the pool is disposed first, on the server's loop and right before the move (as a pool recycle would);
from then on every connection is new and fails, the health probe's included.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.engine import make_url
from support.faults import NOT_SERVING, SERVING, Stubs, reason_of
from support.polling import eventually
from support.postgres import POSTGRES_URL

from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W


def _pg_admin(sql: str) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class Outage:
    """Takes the server's database away and gives it back."""

    def __init__(self, srv: Any, database_url: str) -> None:
        self.srv = srv
        self.url = make_url(database_url)
        self.moved: list[tuple[Path, Path]] = []

    def begin(self) -> None:
        if self.url.drivername.startswith("postgresql"):
            name = self.url.database
            _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            return
        path = Path(str(self.url.database))
        away = path.parent / "away"
        away.mkdir()

        async def dispose_and_move() -> None:
            # The store's idle connections (its free list of SQLite connections, or its asyncpg pool).
            await self.srv.app.store.dispose()
            # No await between the dispose and the move: no task of the server can open the file in between.
            self._move(path, away)

        self.srv.call(dispose_and_move())

    def _move(self, path: Path, away: Path) -> None:
        for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if part.exists():
                part.rename(away / part.name)
                self.moved.append((away / part.name, part))
        path.mkdir()

    def end(self) -> None:
        if self.url.drivername.startswith("postgresql"):
            _pg_admin(f'ALTER DATABASE "{self.url.database}" ALLOW_CONNECTIONS true')
            return
        shutil.rmtree(Path(str(self.url.database)))
        for source, target in self.moved:
            source.rename(target)


def _get(stubs: Stubs, job_id: str) -> grpc.StatusCode | str:
    try:
        stubs.jobs.GetJob(J.GetJobRequest(job_id=job_id), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return f"{exc.code().name}/{reason_of(exc)}"  # type: ignore[attr-defined]


def _answers_during_outage(stubs: Stubs, job_id: str) -> dict[str, str]:
    """One read, one write, one claim and one listing, each as CODE/REASON."""
    calls: dict[str, Callable[[], Any]] = {
        "GetJob": lambda: stubs.jobs.GetJob(J.GetJobRequest(job_id=job_id), timeout=5),
        "CreateJob": lambda: stubs.jobs.CreateJob(J.CreateJobRequest(total_items=1), timeout=5),
        "ListJobs": lambda: stubs.jobs.ListJobs(J.ListJobsRequest(), timeout=5),
        "ClaimChunks": lambda: stubs.workers.ClaimChunks(W.ClaimChunksRequest(worker_id="w"), timeout=5),
    }
    answers = {}
    for name, fn in calls.items():
        try:
            fn()
            answers[name] = "OK"
        except grpc.RpcError as exc:
            answers[name] = f"{exc.code().name}/{reason_of(exc)}"  # type: ignore[attr-defined]
    return answers


def _recovered(stubs: Stubs, job_ids: list[str]) -> None:
    eventually(stubs.health_status, 10, "health SERVING again", expect=SERVING)
    eventually(lambda: _get(stubs, job_ids[0]), 10, "GetJob OK again", expect=grpc.StatusCode.OK)
    again = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=3, chunk_size=1), timeout=10).job
    assert again.chunks_summary.total == 3
    for job_id in (*job_ids, again.id):
        stubs.assert_summary_matches_chunks(job_id)


def test_health_is_not_serving_while_the_database_is_away_and_recovers(
    make_server: Callable[..., Any], database_url: str
) -> None:
    srv = make_server(health_interval=0.2, key_refresh_interval=0.5, sweep_interval=0.2)
    stubs = Stubs(srv.address)
    outage = Outage(srv, database_url)
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
        assert stubs.health_status() == SERVING
        outage.begin()
        try:
            eventually(stubs.health_status, 10, "health NOT_SERVING", expect=NOT_SERVING)
            _answers_during_outage(stubs, job.id)  # whatever they are, they must not break the recovery
            assert stubs.health_status() == NOT_SERVING
        finally:
            outage.end()
        _recovered(stubs, [job.id])
    finally:
        stubs.close()


def test_rpcs_answer_database_unavailable_while_the_database_is_away(
    request: pytest.FixtureRequest, make_server: Callable[..., Any], database_url: str
) -> None:
    srv = make_server(health_interval=0.2, key_refresh_interval=0.5, sweep_interval=0.2)
    stubs = Stubs(srv.address)
    outage = Outage(srv, database_url)
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(total_items=2, chunk_size=1), timeout=10).job
        outage.begin()
        try:
            eventually(stubs.health_status, 10, "health NOT_SERVING", expect=NOT_SERVING)
            answers = _answers_during_outage(stubs, job.id)
        finally:
            outage.end()
        _recovered(stubs, [job.id])
        assert answers == dict.fromkeys(answers, "UNAVAILABLE/DATABASE_UNAVAILABLE")
    finally:
        stubs.close()
