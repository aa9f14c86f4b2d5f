"""The database URL forms users type, and the PostgreSQL drivers they pick."""

from __future__ import annotations

from typing import Any

import pytest

import jobpulse
from jobpulse_server.store.engine import normalize_url


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///jobpulse.db", "sqlite+aiosqlite:///jobpulse.db"),
        ("sqlite:////var/lib/jobpulse/jp.db", "sqlite+aiosqlite:////var/lib/jobpulse/jp.db"),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_url_forms(given: str, used: str) -> None:
    assert normalize_url(given) == used


@pytest.mark.parametrize(
    "bad", ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "postgresql+pg8000://h/db", "::"]
)
def test_unsupported_urls_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        normalize_url(bad)


def test_the_psycopg_driver_serves_every_kind_of_call(make_server: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL driver choice")
    srv = make_server(database_url=database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    assert srv.app.db.url.startswith("postgresql+psycopg://")
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("k", 4, chunk_size=1, labels={"team": "a"})
        for claim in client.claim_chunks("w", max_chunks=4):
            client.complete_chunk(claim.chunk.id, claim.lease_token)
        assert client.wait(job.id, timeout=10).state == jobpulse.JobState.JOB_STATE_COMPLETED
        assert [j.id for j in client.list_jobs(labels={"team": "a"})] == [job.id]
        assert client.get_job_stats().stats.total_jobs == 1
