"""The core scenario: GetJob, ListJobs, the SQLite worker rows beside their floor, watch of 1,000 jobs.

    python -m bench core            # full run, about 2.5 minutes
    python -m bench core --quick    # smoke run for CI, about 40 seconds

Three server processes are started on 127.0.0.1, each on a port of its own: a jobpulse server
holding the read data, a jobpulse server for the worker throughput runs (so the two data sets do
not disturb each other) and the bare grpc.aio baseline. This process is the only client. Once they
are stopped, the watch row runs with servers of its own (``bench.watch_streams.run_many_jobs``).
The printout ends with the targets and whether each is met.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2
from support.servers import ServerProcess

from bench import procs, report, scenarios, seed, watch_streams, work
from bench.bare import BareServer, padded_get_job_response
from bench.grpc_floor import floor_server
from bench.load import Call
from bench.procs import Child
from jobpulse.v1 import job_pb2, job_service_pb2

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"

# Bare server keys (the job_id of a baseline GetJob request).
BARE_SMALL_BASIC = "bare-small-basic"
BARE_BIG_BASIC = "bare-big-basic"
BARE_BIG_FULL = "bare-big-full"
BARE_BIG_FULL_NEW_REVISION = "bare-big-full-new-revision"
BARE_LIST_PAGE = "bare-list-page"


@dataclass
class Settings:
    """A run's sizes; the defaults are a full run's."""

    mode: str = "full"
    list_jobs: int = 2_000
    concurrency: int = 16
    rate_rounds: int = 4
    rate_seconds: float = 3.0
    rate_warmup: float = 0.5
    latency_calls: int = 300
    latency_blocks: int = 6
    latency_warmup: int = 10
    list_page_size: int = 20
    chunk_workers: int = 4
    # Enough that the fastest mode (CompleteChunks of 10, some 5,000 chunks/s here) does not run dry;
    # the rows at other backlogs (sensitivity_backlogs) show whether the size matters.
    chunk_backlog: int = 50_000
    chunk_seconds: float = 8.0
    chunk_rounds: int = 2
    sensitivity_backlogs: tuple[int, ...] = (500, 5_000)
    sensitivity_seconds: float = 3.0
    watch_jobs: int = 1_000
    watch_in_flight: int = 4
    watch_chunks_per_job: int = 10


FULL = Settings()
# A quick run: the sizes that differ from a full run's.
QUICK = replace(FULL, mode="quick", list_jobs=300, rate_rounds=2, rate_seconds=1.0, rate_warmup=0.3)
QUICK = replace(QUICK, latency_calls=60, latency_blocks=2, latency_warmup=5, chunk_backlog=20_000)
QUICK = replace(QUICK, chunk_seconds=2.5, chunk_rounds=1, sensitivity_backlogs=(), sensitivity_seconds=0.0)
QUICK = replace(QUICK, watch_jobs=400)

# Section 3: the modes in the order of the first round (later rounds alternate it).
CHUNK_MODES = ("one_by_one", "complete_and_claim", "batched", "batched_complete_chunks")
# The rows with a target, run again against their floor under gRPC (bench.grpc_floor on SQLite: the
# service and store alone behind bare grpc.aio handlers), in the same rounds.
FLOOR_MODES = ("one_by_one", "complete_and_claim")
# Label values that keep the same width, so every new revision answers with the same size.
FIRST_REVISION_LABEL = 100_000


async def _run(
    s: Settings, reader: ServerProcess, worker: ServerProcess, bare: BareServer, floor: Child
) -> Any:
    results: dict[str, Any] = {}
    timed = functools.partial(
        scenarios.latencies, calls=s.latency_calls, blocks=s.latency_blocks, warmup=s.latency_warmup
    )
    chunks = functools.partial(scenarios.chunk_throughput, workers=s.chunk_workers, backlog=s.chunk_backlog)
    async with scenarios.Target.open(reader) as jp, scenarios.Target.open(bare) as bt:
        report.log(f"seeding: a 10-chunk job, a 1,000-chunk job part-way done, {s.list_jobs:,} jobs to list")
        t0 = time.perf_counter()
        data = await seed.seed_read_data(jp.channel, s.list_jobs)
        results["seed_seconds"] = time.perf_counter() - t0

        # The baselines answer with responses of exactly the size jobpulse sends.
        small_basic = await jp.get_job(data.small_job_id, job_pb2.JOB_VIEW_BASIC)()
        big_basic = await jp.get_job(data.big_job_id, job_pb2.JOB_VIEW_BASIC)()
        big_full = await jp.get_job(data.big_job_id, job_pb2.JOB_VIEW_FULL)()
        list_page = await jp.list_jobs(s.list_page_size)()
        if len(big_full.job.chunks) != 1000 or len(list_page.jobs) != s.list_page_size:
            raise RuntimeError("seeded data does not look as expected")
        bare.set_response(BARE_SMALL_BASIC, small_basic.SerializeToString())
        bare.set_response(BARE_BIG_BASIC, big_basic.SerializeToString())
        bare.set_response(BARE_BIG_FULL, big_full.SerializeToString())
        bare.set_response(BARE_LIST_PAGE, padded_get_job_response(list_page.ByteSize(), BARE_LIST_PAGE))

        report.log("1. GetJob BASIC rate")
        small, timing = (data.small_job_id, BARE_SMALL_BASIC), (s.rate_rounds, s.rate_seconds, s.rate_warmup)
        rate = await scenarios.getjob_rate(jp, bt, small, s.concurrency, timing)
        rate["response_bytes"] = small_basic.ByteSize()
        results["getjob_rate"] = rate
        bare_4 = await scenarios.bare_rate(bt, BARE_SMALL_BASIC, s.chunk_workers, s.rate_seconds)
        results["bare_rate_4"] = bare_4

        report.log("2. latency")
        basic, full = job_pb2.JOB_VIEW_BASIC, job_pb2.JOB_VIEW_FULL
        rows = (
            ("getjob_basic_1000", jp.get_job(data.big_job_id, basic), BARE_BIG_BASIC, big_basic),
            ("getjob_full_1000", jp.get_job(data.big_job_id, full), BARE_BIG_FULL, big_full),
            ("listjobs_20", jp.list_jobs(s.list_page_size), BARE_LIST_PAGE, list_page),
        )
        cases = [
            scenarios.LatencyCase(name, call, bt.get_job(key, basic), size.ByteSize(), reader, bare)
            for name, call, key, size in rows
        ]
        results["latency"] = await timed(cases)

        # After the rows above, which must not see the job change under them.
        report.log("2b. GetJob FULL, a new revision before each call")
        relabel = _relabel(jp, data.big_job_id)
        await relabel()
        big_full_rev = await jp.get_job(data.big_job_id, job_pb2.JOB_VIEW_FULL)()
        bare.set_response(BARE_BIG_FULL_NEW_REVISION, big_full_rev.SerializeToString())
        pair = jp.get_job(data.big_job_id, full), bt.get_job(BARE_BIG_FULL_NEW_REVISION, basic)
        name, size = "getjob_full_1000_new_revision", big_full_rev.ByteSize()
        case = scenarios.LatencyCase(name, *pair, size, reader, bare, relabel)
        results["latency"].update(await timed([case]))
        last = await jp.get_job(data.big_job_id, job_pb2.JOB_VIEW_FULL)()
        first_rev, last_rev = big_full_rev.job.revision, last.job.revision
        # The size may move by a byte or two: timestamps are varints.
        if abs(last.ByteSize() - size) > 16 or last_rev <= first_rev:
            raise RuntimeError(
                f"GetJob FULL after the relabelling: {last.ByteSize():,} B at revision {last_rev}, "
                f"before {size:,} B at revision {first_rev}"
            )
        results["latency"][name]["revisions"] = last_rev - first_rev

    report.log("3. chunk throughput")
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in CHUNK_MODES}
    floors: dict[str, list[dict[str, Any]]] = {key: [] for key in FLOOR_MODES}
    servers = ((worker, CHUNK_MODES, runs), (floor, FLOOR_MODES, floors))
    for r in range(s.chunk_rounds):
        # Every other round the floor goes first and the modes run backwards, so drift hits both alike.
        for target, keys, into in servers if r % 2 == 0 else reversed(servers):
            for key in keys if r % 2 == 0 else reversed(keys):
                into[key].append(await chunks(target, mode=work.MODES[key], seconds=s.chunk_seconds))
    results["chunks"] = {key: _merge_chunk_runs(rows) for key, rows in runs.items()}
    results["chunk_floors"] = {key: _merge_chunk_runs(rows) for key, rows in floors.items()}
    results["backlog_sensitivity"] = []
    for backlog in s.sensitivity_backlogs:
        report.log(f"3b. one-by-one with a backlog of {backlog:,} chunks")
        one_by_one, seconds = work.MODES["one_by_one"], s.sensitivity_seconds
        row = await chunks(worker, mode=one_by_one, backlog=backlog, seconds=seconds)
        results["backlog_sensitivity"].append(row)
    return results


def _relabel(target: scenarios.Target, job_id: str) -> Call:
    """UpdateJob of one label to the next counter value: a new revision of the job, same size."""
    counter = FIRST_REVISION_LABEL
    stub = target.jobs

    async def call() -> Any:
        nonlocal counter
        counter += 1
        labels = {"team": "bench", "tier": "gold", "rev": str(counter)}
        mask = field_mask_pb2.FieldMask(paths=["labels"])
        request = job_service_pb2.UpdateJobRequest(job_id=job_id, labels=labels, update_mask=mask)
        return await stub.UpdateJob(request, timeout=scenarios.TIMEOUT)

    return call


def _merge_chunk_runs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    head = {k: rows[0][k] for k in ("mode", "max_chunks", "workers", "backlog")}
    if any(r.get("unimplemented") for r in rows):
        return {**head, "unimplemented": True, "rounds": rows}
    summed = ("seconds", "chunks", "rpcs", "claim_calls", "claimed_next", "claim_next_empty", "not_ok")
    out = {**head, **{k: sum(r[k] for r in rows) for k in summed}, "ran_dry": any(r["ran_dry"] for r in rows)}
    seconds, chunks = out["seconds"], out["chunks"]
    cpu = [x * r["chunks"] for r in rows if (x := r["server_cpu_us_per_chunk"]) is not None]
    out |= {"chunks_per_second": chunks / seconds, "rpcs_per_second": out["rpcs"] / seconds, "rounds": rows}
    return out | {"server_cpu_us_per_chunk": sum(cpu) / chunks if len(cpu) == len(rows) and chunks else None}


def _watch(settings: Settings, tmp: str) -> dict[str, Any]:
    """The many-jobs watch scenario of bench.watch_streams, with the client settings it uses there (put
    back afterwards)."""
    s = settings
    report.log(f"4. watch: {s.watch_jobs:,} jobs, one watcher and one change each")
    procs.raise_nofile()
    threshold = gc.get_threshold()
    procs.tune_gc()
    try:
        return watch_streams.run_many_jobs(tmp, s.watch_jobs, s.watch_in_flight, s.watch_chunks_per_job)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def main(argv: list[str] | None = None) -> int:
    quick = "short smoke run (about 40 s), e.g. for CI"
    args = report.arguments("core", __doc__, quick, DEFAULT_JSON).parse_args(argv)
    settings = QUICK if args.quick else FULL
    run = report.Run()
    with tempfile.TemporaryDirectory(prefix="jobpulse-bench-") as tmp:
        report.log(f"{settings.mode} run; starting servers (databases under {tmp})")
        with (
            procs.Jobpulse(f"sqlite:///{tmp}/read.db") as reader,
            procs.Jobpulse(f"sqlite:///{tmp}/work.db") as worker,
            BareServer() as bare,
            floor_server(f"sqlite:///{tmp}/floor.db") as floor,
        ):
            results = asyncio.run(_run(settings, reader, worker, bare, floor))
        results["watch"] = _watch(settings, tmp)

    run.stamp(results)
    results["settings"] = asdict(settings)
    goals = report.goals(results)
    results["targets"] = [goal.as_dict() for goal in goals]
    return report.publish(results, report.render(results), args.json, "" if args.quick else "core", goals)
