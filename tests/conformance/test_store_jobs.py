"""Jobs as callers see them: CreateJob (request ids, webhooks, ttl, too many chunks), GetJob BASIC, FULL and
since a known revision, BatchGetJobs, UpdateJob and DeleteJob (with and without force), on every driver
mode as on the fake. Workers claim and complete now and then, so that jobs run, end and can be deleted."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import Topic, run

JOBS = Topic(
    {
        "create": 12,
        "claim": 5,
        "complete": 5,
        "cancel": 2,
        "update": 8,
        "delete": 6,
        "read": 10,
    },
    ("tombstones", "the WatchJobs feed"),
    steps=80,
)


@pytest.mark.parametrize("seed", [101])
async def test_jobs_are_created_read_updated_and_deleted_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, JOBS)
