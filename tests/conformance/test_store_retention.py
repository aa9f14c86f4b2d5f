"""Retention and what is left of jobs: the expiry sweep (per-job ttl and the per-state defaults), DeleteJob's
tombstones and their trimming, and GetJobStats over what remains, on every driver mode as on the fake."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import Topic, run

RETENTION = Topic(
    {
        "create": 11,
        "claim": 9,
        "complete": 9,
        "fail": 6,
        "cancel": 4,
        "delete": 5,
        "tick": 5,
        "sweep": 3,
        "expire": 8,
    },
    ("tombstones", "stats", "the WatchJobs feed"),
    steps=80,
)


@pytest.mark.parametrize("seed", [601])
async def test_jobs_expire_and_leave_tombstones_and_stats_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, RETENTION)
