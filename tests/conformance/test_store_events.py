"""What a change tells the world: the webhook outbox rows (job.progress and terminal events, a URL that is not
http), the publications to the change hub, and the WatchJobs feed of created, changed and deleted jobs,
compared every 25 steps, on every driver mode as on the fake. Most jobs here ask for webhooks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import HOOK, Topic, run

EVENTS = Topic(
    {
        "create": 10,
        "claim": 10,
        "progress": 7,
        "complete": 8,
        "complete_and_claim": 4,
        "complete_many": 3,
        "fail": 6,
        "cancel": 4,
        "delete": 3,
        "tick": 3,
        "sweep": 3,
    },
    ("outbox rows", "the WatchJobs feed"),
    steps=75,
    every=25,
    webhook_urls=("", HOOK, HOOK, HOOK),
)


@pytest.mark.parametrize("seed", [501])
async def test_events_outbox_and_feed_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, EVENTS)
