"""While the database is away, the server's background loops say so once each, in one line, and once
more when it is back, instead of a traceback per loop per pass (pages of them a minute)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from support.faults import pg_admin
from support.polling import eventually

LOOPS = ("sweep", "expiry sweep", "webhook delivery", "API key refresh (the last known keys stay in force)")


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("jobpulse_server")]


def test_an_outage_is_one_line_per_loop_and_one_when_it_ends(
    make_server: Callable[..., Any], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "a database renamed under the server is PostgreSQL's (SQLite: tests in test_database_gone)"
        )
    caplog.set_level(logging.INFO, logger="jobpulse_server")
    srv = make_server(sweep_interval=0.05, key_refresh_interval=0.05, health_interval=0.2)
    name = make_url(database_url).database
    pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    pg_admin(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
    pg_admin(f'ALTER DATABASE "{name}_away" ALLOW_CONNECTIONS true')
    try:
        # Every loop has said it paused, and the outage lasted long enough for the health probe
        # (every 0.2 s) to see it too, so the sweeper (every 0.05 s) failed several passes: all loops
        # can report a pause within one sweep interval, and the database was then back too soon.
        eventually(
            lambda: (
                all(any(m.startswith(f"{loop} paused: ") for m in _messages(caplog)) for loop in LOOPS)
                and not srv.app.health.serving
            ),
            timeout=30,
            what="every loop saying it paused, and health NOT_SERVING",
        )
    finally:
        pg_admin(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
    eventually(
        lambda: any(m.startswith("sweep works again after ") for m in _messages(caplog)),
        timeout=30,
        what="the sweeper saying it works again",
    )
    messages = _messages(caplog)
    [again] = [m for m in messages if m.startswith("sweep works again after ")]
    failed = int(re.search(r"after (\d+) failed passes", again).group(1))  # type: ignore[union-attr]
    assert failed >= 2, again  # several passes failed, and were said once
    for loop in LOOPS:
        paused = [m for m in messages if m.startswith(f"{loop} paused: ")]
        assert len(paused) == 1, paused
        # Plain words (the connections were cut, then the database was gone), never a driver's class.
        assert "database" in paused[0] and not re.search(r"sqlalchemy|asyncpg|Error\b", paused[0]), paused[0]
    noisy = [r for r in caplog.records if r.name.startswith("jobpulse_server.services") and r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
