"""CancelJob (pending chunks at once, running ones through their lease, the sweep's force-cancel after the
cancel deadline) and RetryJob (failed and cancelled chunks back to work, at the job's current priority),
on every driver mode as on the fake, while workers keep claiming, completing and failing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import Topic, run

CANCEL_RETRY = Topic(
    {
        "create": 8,
        "claim": 10,
        "progress": 4,
        "complete": 6,
        "fail": 8,
        "cancel": 10,
        "retry": 9,
        "update": 3,
        "tick": 4,
        "sweep": 6,
    },
    ("outbox rows", "stats"),
    steps=80,
)


@pytest.mark.parametrize("seed", [401])
async def test_jobs_are_cancelled_and_retried_alike(
    database_url: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, "on-loop", seed, deterministic, CANCEL_RETRY)
