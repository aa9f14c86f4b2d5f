"""ListJobs under several filters and every order (every page, and BASIC for a caller holding half the
jobs) and ListJobChunks under state filters (every page), on every driver mode as on the fake, compared
every 20 steps while jobs are created, run, end, change priority and labels, and go."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import Topic, run

LISTINGS = Topic(
    {
        "create": 12,
        "claim": 6,
        "complete": 5,
        "fail": 3,
        "cancel": 3,
        "update": 5,
        "delete": 3,
        "tick": 2,
        "read": 4,
    },
    ("ListJobs", "ListChunks"),
    steps=60,
    every=20,
)


@pytest.mark.parametrize("seed", [202])
async def test_listings_page_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, LISTINGS)
