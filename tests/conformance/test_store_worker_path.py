"""The worker path: ClaimChunks, ReportChunkProgress, CompleteChunk (with claim_next), CompleteChunks,
FailChunk, calls with stale, wrong, empty or unknown leases, and the sweep of expired leases at and past their
ends, on every driver mode (PostgreSQL's batched path included) as on the fake: answers, publications, chunk
counters, every job after each call, and the webhook events the path writes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import Topic, run

WORKER_PATH = Topic(
    {
        "create": 9,
        "claim": 14,
        "progress": 9,
        "complete": 12,
        "complete_and_claim": 7,
        "complete_many": 6,
        "fail": 10,
        "stale": 5,
        "tick": 5,
        "sweep": 6,
    },
    ("outbox rows",),
    steps=100,
)


@pytest.mark.parametrize("seed", [302])
async def test_workers_claim_report_complete_and_fail_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, WORKER_PATH)
