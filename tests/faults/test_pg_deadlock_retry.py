"""PostgreSQL aborts one transaction of a deadlock (SQLSTATE 40P01); when that is the server's, the server
runs the transaction again and the caller sees success, not an error.

The deadlock is made on purpose. The server's completion locks the job row, then the chunk row. The
test, on a connection of its own, locks the chunk row first; starts CompleteChunk (which takes the job
row and then waits for the chunk); waits until the server's backend is blocked by the test's; then asks
for the job row, which closes the cycle. The server's backend has waited longest, so its deadlock check
(after deadlock_timeout, 1 s by default) runs first and aborts the server's transaction; the test's
session sets its own deadlock_timeout to 5 s, so it is not the one aborted unless it closed the cycle
too late (which the test reports as such). The test then holds both rows and rolls back, and the
server's second try goes through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url
from support.faults import Stubs
from support.polling import eventually

from jobpulse.v1 import job_pb2
from jobpulse.v1 import job_service_pb2 as J
from jobpulse.v1 import worker_service_pb2 as W

T = TypeVar("T")
KIND = "deadlock"
RETRIES = "jobpulse_db_retries_total"


async def _connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=10,
    )


def _retries(srv: Any, sqlstate: str) -> float:
    value = srv.app.metrics.registry.get_sample_value(RETRIES, {"sqlstate": sqlstate})
    return float(value or 0.0)


@pytest.mark.timeout(90)
def test_completion_aborted_by_a_deadlock_is_retried_and_succeeds(
    make_server: Callable[..., Any], database_url: str
) -> None:
    """A CompleteChunk whose transaction PostgreSQL kills to break a deadlock still answers OK: the
    server retries it, the chunk ends COMPLETED, the summary adds up, and the retry is counted in
    jobpulse_db_retries{sqlstate="40P01"}."""
    if not database_url.startswith("postgresql"):
        pytest.skip("deadlock detection and retry are a PostgreSQL matter")
    srv = make_server(sweep_interval=3600)
    stubs = Stubs(srv.address)
    loop = asyncio.new_event_loop()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, 30))

    connections: list[asyncpg.Connection] = []
    try:
        job = stubs.jobs.CreateJob(J.CreateJobRequest(kind=KIND, total_items=2, chunk_size=1), timeout=20).job
        claims = stubs.workers.ClaimChunks(
            W.ClaimChunksRequest(worker_id="w1", kinds=[KIND], max_chunks=1), timeout=20
        ).claims
        assert len(claims) == 1
        claim = claims[0]
        retries_before = _retries(srv, "40P01")

        holder = run(_connect(database_url))
        connections.append(holder)
        monitor = run(_connect(database_url))
        connections.append(monitor)
        # The server's backend waits first and checks after 1 s; this session checks only after 5 s.
        run(holder.execute("SET deadlock_timeout = '5s'"))
        holder_pid: int = run(holder.fetchval("SELECT pg_backend_pid()"))
        transaction = holder.transaction()
        run(transaction.start())
        run(holder.execute("SELECT 1 FROM chunks WHERE id = $1 FOR UPDATE", claim.chunk.id))

        pending = stubs.workers.CompleteChunk.future(
            W.CompleteChunkRequest(chunk_id=claim.chunk.id, lease_token=claim.lease_token), timeout=60
        )

        def blocked_backends() -> list[int]:
            # A connection of its own: pg_stat_activity is a snapshot per transaction.
            rows = run(
                monitor.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
                    " AND wait_event_type = 'Lock'",
                    holder_pid,
                )
            )
            assert not pending.done(), f"CompleteChunk finished while its chunk was locked: {pending}"
            return [r["pid"] for r in rows]

        server_pids = eventually(
            blocked_backends, timeout=15, what="the server's backend to wait for the chunk"
        )
        assert len(server_pids) == 1, server_pids
        started = time.monotonic()

        # Close the cycle. This waits until PostgreSQL has aborted the server's transaction (freeing
        # the job row); the server's retry then queues behind this session for the job row.
        try:
            run(holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.id))
        except asyncpg.exceptions.DeadlockDetectedError:
            pytest.fail(
                "PostgreSQL aborted the test's transaction, not the server's: the cycle closed more than "
                f"1 s after the server began to wait ({time.monotonic() - started:.1f} s since seen waiting)"
            )
        run(transaction.rollback())

        try:
            response = pending.result(timeout=30)
        except grpc.RpcError as exc:
            pytest.fail(f"CompleteChunk failed after the deadlock: {exc.code().name}: {exc.details()}")

        assert response.job_state == job_pb2.JOB_STATE_PROCESSING
        retries = _retries(srv, "40P01")
        assert retries >= retries_before + 1, (
            f"{RETRIES}{{sqlstate=40P01}} went {retries_before} -> {retries}"
        )
        final = stubs.assert_summary_matches_chunks(job.id)
        assert (final.chunks_summary.completed, final.chunks_summary.pending) == (1, 1)
        chunk = {c.id: c for c in stubs.chunks(job.id)}[claim.chunk.id]
        assert chunk.state == job_pb2.CHUNK_STATE_COMPLETED
        assert chunk.attempt == 1
    finally:
        for conn in connections:
            run(conn.close())
        loop.close()
        stubs.close()
