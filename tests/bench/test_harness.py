"""The benchmark harness still runs: its runner, its figures file and one scenario's machinery at a tiny
size (a jobpulse server, the bare baseline and the floor under gRPC, each a process of its own, driven by
the worker rows' own code). No figure is judged here: speed belongs to the benchmarks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import __main__ as runner
from bench import figures, procs, scenarios, work
from bench.bare import BareServer, padded_get_job_response
from bench.grpc_floor import floor_server
from bench.report import Goal
from jobpulse.v1 import job_pb2


def test_the_runner_lists_its_scenarios_and_refuses_an_unknown_one() -> None:
    assert runner.main(["list"]) == 0
    assert runner.main(["no-such-scenario"]) == 2
    assert set(runner.DEFAULT) <= set(runner.SCENARIOS)


def test_a_scenario_replaces_its_own_rows_and_the_readme_table_follows(tmp_path: Path) -> None:
    data, readme = tmp_path / "figures.json", tmp_path / "README.md"
    readme.write_text(f"# page\n\n{figures.START}\nold table\n{figures.END}\nafter\n")
    figures.record("core", [Goal("GetJob / bare", 0.7, True, 0.6, 0.8)], data, readme)
    figures.record("pg", [Goal("one by one / PgQueuer", 0.5, True, 0.55, 1.0)], data, readme)
    figures.record(
        "core",
        [Goal("GetJob / bare", 0.248, True, 0.25, 0.8), Goal("not run", None, True, 1, 2)],
        data,
        readme,
    )

    rows = figures.load(data)
    assert [(r["scenario"], r["target"], r["measured"]) for r in rows] == [
        ("pg", "one by one / PgQueuer", 0.5),
        ("core", "GetJob / bare", 0.248),
    ]
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{figures.END}\nafter\n")
    table = text.split(figures.START)[1].split(figures.END)[0]
    assert "| pg | one by one / PgQueuer | 0.50 | >= 0.55 | NO |" in table
    # 0.248 against a line of 0.25 shows the digit that says which side of it it is on.
    assert "| core | GetJob / bare | 0.248 | >= 0.25 | NO |" in table


async def test_a_worker_row_runs_against_jobpulse_and_its_floor_beside_the_bare_server(
    tmp_path: Path,
) -> None:
    server = procs.Jobpulse(f"sqlite:///{tmp_path}/work.db")
    bare = BareServer()
    floor = None
    try:
        await asyncio.to_thread(server.start, 60)
        await asyncio.to_thread(bare.start)
        floor = await asyncio.to_thread(floor_server, f"sqlite:///{tmp_path}/floor.db")

        bare.set_response("key", padded_get_job_response(300, "key"))
        target = scenarios.Target.open(bare)
        try:
            answer = await target.get_job("key", job_pb2.JOB_VIEW_BASIC)()
        finally:
            await target.channel.close()
        assert answer.ByteSize() == 300 and answer.job.id == "key"

        for served in (server, floor):
            row = await scenarios.chunk_throughput(
                served, mode=work.MODES["complete_and_claim"], workers=2, backlog=200, seconds=0.3
            )
            # chunk_throughput checks the job's COMPLETED count against the completions it counted.
            assert row["chunks"] > 0 and row["claimed_next"] > 0 and not row["not_ok"], row
            assert row["server_cpu_us_per_chunk"] is not None
    finally:
        await asyncio.to_thread(server.close)
        bare.close()
        if floor is not None:
            floor.close()
