"""A scenario of the harness at its smallest size, end to end: the watch scenario's servers started, streams
opened, changes timed, the printout and its targets rendered. Checks that the machinery runs and that the
printout carries its figures; no figure is judged (speed belongs to the benchmarks)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import report, watch_streams
from bench.watch_streams import FanoutProcess, Side, floor_memory, many_jobs, one_job


@pytest.mark.slow  # 14 s; the worker rows' smoke run (tests/bench/test_harness.py) stays
def test_the_watch_rows_run_and_print_beside_their_baselines(tmp_path: Path) -> None:
    async def measure(side: Side) -> dict[str, Any]:
        return {"one": await one_job(side, 5, 2, 2), "many": await many_jobs(side, 4, 2, 2)}

    pair = watch_streams._with_pair(str(tmp_path), "tiny", 2, measure)
    sides = ("jobpulse", "bare")
    got = {part: {side: pair[side][part] for side in sides} for part in ("one", "many")}
    got["message_bytes"] = pair["message_bytes"]
    floor = FanoutProcess()
    try:
        floor.start()
        got["one"]["floor"] = asyncio.run(floor_memory(floor, 5))
    finally:
        floor.close()
    results = report.Run().stamp({"one_job": [got["one"]], "many_jobs": got["many"]})
    results |= {"message_bytes": got["message_bytes"], "settings": {"mode": "tiny", "chunks_per_job": 2}}

    for side in ("jobpulse", "bare"):
        assert got["one"][side]["streams"] == 5 and got["one"][side]["latency"]["samples"] == 10
        assert got["many"][side]["latency"]["samples"] == 4
    assert got["one"]["floor"]["opened"] and got["message_bytes"]["snapshot"] > 0
    text = watch_streams.render(results)
    assert "bare fan-out" in text and "p99 at 4 watchers of 4 jobs" in text
    assert [g.path for g in watch_streams.goals(results)] == ["p99 at 4 watchers of 4 jobs"]
