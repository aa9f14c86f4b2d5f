"""ListJobs' total_size: exact where counting is cheap, the planner's estimate on PostgreSQL past 10,000."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest
from sqlalchemy.engine import make_url

from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc

EXACT_UP_TO = 10_000


async def _insert_jobs(database_url: str, n: int, kind: str) -> None:
    """Writes n pending jobs straight into the table (CreateJob for 10,000 jobs would take minutes)."""
    url = make_url(database_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database, timeout=10
    )
    try:
        await conn.execute(
            """
            INSERT INTO jobs (id, owner, display_name, kind, state, stage, message, priority, labels,
                job_metadata, total_items, chunk_size, max_attempts, revision, n_pending, n_processing,
                n_completed, n_failed, n_cancelled, items_done, error_reason, error_message,
                cancel_requested, cancel_reason, create_time, update_time, change_seq)
            SELECT 'BULK' || lpad(g::text, 22, '0'), 'anonymous', 'bulk ' || g, $2, 1, '', '', 5,
                '{}', '{}', 1, 1, 3, 1, 0, 0, 0, 0, 0, 0, '', '', false, '', g, g, 0
            FROM generate_series(1, $1) AS g
            """,
            n,
            kind,
        )
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


def test_total_size_past_ten_thousand_is_an_estimate_on_postgresql(server: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite counts exactly (no planner estimate to use)")
    asyncio.run(_insert_jobs(database_url, 12_000, "bulk"))
    with grpc.insecure_channel(server.address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        jobs.CreateJob(job_service_pb2.CreateJobRequest(kind="rare", total_items=1))
        page = jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=5))
        # Past 10,000 the count is the planner's estimate: never below what was counted, and close
        # to the truth right after ANALYZE.
        assert EXACT_UP_TO < page.total_size
        assert abs(page.total_size - 12_001) <= 12_001 * 0.1
        rare = jobs.ListJobs(job_service_pb2.ListJobsRequest(kind="rare"))
        assert rare.total_size == 1  # few matches: exact
        next_page = jobs.ListJobs(
            job_service_pb2.ListJobsRequest(page_size=5, page_token=page.next_page_token)
        )
        assert next_page.total_size == page.total_size  # carried on by the token
