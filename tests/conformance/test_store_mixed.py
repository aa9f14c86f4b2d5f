"""Every operation at once, seeded: what the topic files leave out, the interactions across topics (a
retry after a sweep, a listing after an expiry, a completion of a job being cancelled), compared through
every view of the store, in every driver mode. (The topic files run SQLite on the event loop and
PostgreSQL: the dedicated thread changes how the driver reaches SQLite, not what a topic asks of it.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rig import END_VIEWS, MIXED, Topic, run

MIX = Topic(MIXED, tuple(END_VIEWS), steps=100)


@pytest.mark.parametrize("seed", [11, 22])
async def test_every_driver_mode_and_the_fake_agree(
    database_url: str, driver_mode: str, seed: int, deterministic: Callable[[int], None]
) -> None:
    await run(database_url, driver_mode, seed, deterministic, MIX)
