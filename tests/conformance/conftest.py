"""Fixtures of the conformance suite: the driver modes, and the randomness both rigs must share."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from jobpulse_server.domain import ids
from jobpulse_server.domain.model import Chunk
from jobpulse_server.services import worker_path as worker_path_module
from jobpulse_server.store import Tx


@pytest.fixture(params=["on-loop", "on-thread"])
def driver_mode(request: pytest.FixtureRequest) -> str:
    """SQLite on the event loop or on its dedicated thread; PostgreSQL (asyncpg) has one mode, "on-loop"."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leaves out PostgreSQL "on-thread" before its database is made: the thread is a SQLite mode."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pg_on_thread = params.get("driver_mode") == "on-thread" and params.get("database_url") == "postgresql"
        (dropped if pg_on_thread else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Job (and delivery) ids and the retry jitter, restarted at the same point for each step on
    both rigs; returns the function that restarts them."""
    counter = [0]

    def new_job_id() -> str:
        counter[0] += 1
        return f"0PAR{counter[0]:022d}"  # sorts by creation, as ULIDs do

    class StepJitter:
        """Every draw of a step gives the step's value (see rig.py's docstring)."""

        value = 0.5

        def random(self) -> float:
            return self.value

    jitter = StepJitter()
    monkeypatch.setattr(ids, "new_job_id", new_job_id)
    monkeypatch.setattr(worker_path_module, "_jitter", jitter)

    # Ties of ORDER BY lease_expire_time in the fake's order (see rig.py's docstring).
    def ordered(original: Callable[..., Any]) -> Callable[..., Any]:
        async def expired_leases(self: Any, now: int, limit: int) -> list[Chunk]:
            found = await original(self, now, limit)
            return sorted(found, key=lambda c: (c.lease_expire_time, c.job_id, c.index))

        return expired_leases

    monkeypatch.setattr(Tx, "expired_leases", ordered(Tx.expired_leases))

    # overdue_cancels has no ORDER BY (SQLite walks ix_jobs_state_priority_id once the table has
    # rows): in the fake's id order. LIMIT 100 is never reached here, so the set is the same.
    original_overdue = Tx.overdue_cancels

    async def overdue_cancels(self: Tx, cancel_before: int, limit: int = 100) -> list[str]:
        return sorted(await original_overdue(self, cancel_before, limit))

    monkeypatch.setattr(Tx, "overdue_cancels", overdue_cancels)

    def restart(step: int) -> None:
        counter[0] = step * 1000
        jitter.value = random.Random(step).random()

    return restart
