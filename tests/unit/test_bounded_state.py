"""What grows with traffic is bounded: state kept per method, per label text, per worker id does not grow
with what callers make up."""

from __future__ import annotations

import json
from typing import Any

from jobpulse_server.api.interceptors import CallGuard
from jobpulse_server.observability import Metrics, Observer
from jobpulse_server.store import rows


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def test_calls_to_made_up_methods_leave_nothing_behind() -> None:
    guard = CallGuard(None, Observer(Metrics()), {"jobpulse.v1.JobService": frozenset({"client"})})  # type: ignore[arg-type]

    async def unknown(details: Any) -> None:
        return None

    for n in range(1_000):
        assert await guard.intercept_service(unknown, _Details(f"/made.up.Service{n}/Method")) is None
    assert guard._handlers == {}


def test_only_short_json_texts_are_kept_decoded() -> None:
    rows._decoded.cache_clear()
    short = json.dumps({"team": "a"})
    long = json.dumps({"blob": "x" * 10_000})
    for _ in range(3):
        assert rows._json(short) == {"team": "a"}
        assert rows._json(long)["blob"] == "x" * 10_000
    info = rows._decoded.cache_info()
    assert (info.currsize, info.hits) == (1, 2)  # the long text was never kept
