"""Chunk claim + complete throughput on PostgreSQL: jobpulse next to PgQueuer, same run, same server.

    python -m bench pg [--quick] [--only scaling|peer]   # 5,000 units per row, 3 rounds (quick 1,000, 1)

Every row gets a fresh database (``JOBPULSE_BENCH_PG``), a clock from the first claim to the last
completion, and CPU per unit from /proc (jobpulse's server and all PostgreSQL processes); full runs keep
each row's median of 3 rounds.

* jobpulse: N one-item chunks over 10 jobs drained by W workers in each way of ``bench.work``; after,
  each chunk was completed once by the workers' count, ListJobs' summaries and the chunk rows.
* PgQueuer: N jobs drained with a no-op entrypoint by W QueueManagers, ``run(mode=drain, batch_size=k)``
  as shipped. Ratios: one by one and complete-and-claim against batch 1, CompleteChunks against batch 10;
  a full run repeats the batches of 10 on a 50,000 queue (``--deep``), where PgQueuer's cost per job grows.
* floors (``bench.grpc_floor``) of one by one and CompleteChunks: the same workers against the store's
  group commit alone.
* scaling: complete-and-claim on 1 job with 4 and 16 workers and on 4 jobs x 4 workers (a kind each),
  beside 4 and 16 QueueManagers. Target: 16 workers on one job at least 0.9 of the chunks/s of 4 (the
  server keeps its default pool of 10 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2
from support.e2e import SUMMARY_FIELDS

from bench import procs, report, work
from bench.grpc_floor import floor_server
from bench.load import shares
from bench.procs import cpu_seconds, metric_values, pid_cpu_seconds
from bench.report import Goal
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

TIMEOUT = 60.0
LEASE = duration_pb2.Duration(seconds=600)
JOBS_PER_RUN = 10
ENTRYPOINT = "noop"
DEFAULT_JSON = Path(__file__).resolve().parent / "results-pg.json"

# jobpulse rows: key -> bench.work mode, and the row's name.
JOBPULSE_ROWS = {
    "jp1": ("one_by_one", "jobpulse, ClaimChunks(1) + CompleteChunk"),
    "jpcc": ("complete_and_claim", "jobpulse, CompleteChunk + claim_next(1)"),
    "jp10": ("batched", "jobpulse, ClaimChunks(10) + CompleteChunk x10"),
    "jpb10": ("batched_complete_chunks", "jobpulse, CompleteChunks(10) + claim_next(10)"),
}


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the PostgreSQL processes of this machine that are alive now
    (None if there are none to see, e.g. PostgreSQL runs elsewhere)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == "postgres"]
    cpus = [cpu for pid in pids if (cpu := pid_cpu_seconds(pid)) is not None]
    return sum(cpus) if cpus else None


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:  # gone meanwhile, or not ours to read
        return ""


def _per_unit_us(before: float | None, after: float | None, n: int) -> float | None:
    return (after - before) / n * 1e6 if before is not None and after is not None and n else None


def _row(name: str, n: int, seconds: float, round_trips: int, **extra: Any) -> dict[str, Any]:
    row = {"name": name, "n": n, "seconds": seconds, "per_second": n / seconds, "round_trips": round_trips}
    return row | extra


# --- jobpulse ----------------------------------------------------------------------------------


# Complete-and-claim as workers are added: key -> (jobs, workers per job). Each job has a kind of its own
# and each worker claims only its job's kind, so every group of workers works its one job.
SCALING_ROWS = {"sc1x4": (1, 4), "sc1x16": (1, 16), "sc4x4": (4, 4)}
SCALING_MODE = "complete_and_claim"
# PgQueuer beside them: key -> W QueueManagers (batch_size=1).
SCALING_PEERS = {"sqm4": 4, "sqm16": 16}
# Rounds of a full run. One round of a row lasts 1-14 s here, and on these machines a row's rate moved by
# a fifth between two runs of the same code an hour apart (one by one 0.60 then 0.48 of PgQueuer): the
# median of three rounds, the systems alternating within each, is the figure the targets are read from.
FULL_ROUNDS = 3

# The order they run in, round after round (jobpulse and PgQueuer alternating, so drift hits both).
SCALING_ORDER = ("sc1x4", "sqm4", "sc1x16", "sqm16", "sc4x4")
SCALING_KEYS = frozenset(SCALING_ORDER)


def _scaling_name(key: str) -> str:
    jobs, per_job = SCALING_ROWS[key]
    return f"jobpulse complete-and-claim, {jobs} job{'s' * (jobs > 1)} x {per_job} workers"


async def jobpulse_drain(n: int, workers: int, key: str) -> dict[str, Any]:
    """A row against PgQueuer: N chunks over JOBS_PER_RUN jobs of one kind, W workers claiming any kind."""
    mode_key, name = JOBPULSE_ROWS[key]
    jobs = [("bench-work", share) for share in shares(n, JOBS_PER_RUN)]
    return await _drain(key, name, work.MODES[mode_key], jobs, [((), workers)])


async def scaling_drain(n: int, key: str) -> dict[str, Any]:
    """A scaling row: N chunks over its jobs, one kind per job, a group of workers per job claiming that
    kind only."""
    n_jobs, per_job = SCALING_ROWS[key]
    kinds = [f"bench-scale-{j}" for j in range(n_jobs)]
    jobs = list(zip(kinds, shares(n, n_jobs), strict=True))
    groups: Groups = [((kind,), per_job) for kind in kinds]
    return await _drain(key, _scaling_name(key), work.MODES[SCALING_MODE], jobs, groups)


async def _workers(
    server: procs.Served, mode: work.Mode, groups: Groups, prefix: str
) -> tuple[list[work.Counts], dict[str, Any]]:
    """The groups of workers (the kinds a group claims, empty for any; how many workers) drain the server
    until every worker's claim comes back empty: their counts by group, and the row's seconds, server and
    PostgreSQL CPU, and (from a jobpulse server's /metrics) the group-commit flusher's share of it."""
    http_port = getattr(server, "http_port", -1)
    counts = [work.Counts() for _ in groups]
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        flusher0 = await asyncio.to_thread(flusher_counts, http_port) if http_port > 0 else None
        cpu0, db0, t0 = cpu_seconds(server), postgres_cpu_seconds(), time.perf_counter()
        one = functools.partial(
            work.worker, stub, mode, lease=LEASE, keep_going=lambda: True, timeout=TIMEOUT
        )
        ids = [(f"{prefix}-{g}-{w}", g, kinds) for g, (kinds, n) in enumerate(groups) for w in range(n)]
        try:
            await asyncio.gather(*(one(worker_id=i, counts=counts[g], kinds=kinds) for i, g, kinds in ids))
        except grpc.aio.AioRpcError as exc:
            # The server logs to /dev/null: say at least whether it is gone, and how it ended.
            proc = server.proc
            code = proc.poll() if hasattr(proc, "poll") else proc.exitcode
            if code is not None:
                raise RuntimeError(f"{prefix}: the server exited mid-row ({code})") from exc
            raise
        elapsed = time.perf_counter() - t0
        cpu1, db1 = cpu_seconds(server), postgres_cpu_seconds()
        flusher1 = await asyncio.to_thread(flusher_counts, http_port) if http_port > 0 else None
    total = sum(c.chunks for c in counts)
    cpu = {"server_cpu_us": _per_unit_us(cpu0, cpu1, total), "db_cpu_us": _per_unit_us(db0, db1, total)}
    return counts, {"seconds": elapsed, **cpu, **_flusher(flusher0, flusher1, elapsed)}


async def _create_jobs(address: str, jobs: list[tuple[str, int]]) -> None:
    """The jobs (kind, one-item chunks), each of its own CreateJob (not timed)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for j, (kind, items) in enumerate(jobs):
            request = job_service_pb2.CreateJobRequest(display_name=f"peer {j}", kind=kind, total_items=items)
            request.chunk_size = 1
            await stub.CreateJob(request, timeout=TIMEOUT)


Groups = list[tuple[tuple[str, ...], int]]  # groups of workers: the kinds a group claims, its workers


async def _drain(
    key: str, name: str, mode: work.Mode, jobs: list[tuple[str, int]], groups: Groups
) -> dict[str, Any]:
    """Makes the jobs, then drains them with the groups of workers. Then checks what was done: every
    chunk completed once, by the workers' counts and by the jobs' summaries; each group completed exactly
    the chunks of its kinds; each job's summary equals a recount of its chunk rows; every chunk was
    completed by a worker of a group that claims its kind."""
    n = sum(items for _, items in jobs)
    async with procs.database("postgresql", key) as dsn:
        with procs.Jobpulse(dsn) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                if not await work.supported(
                    worker_service_pb2_grpc.WorkerServiceStub(channel), mode, TIMEOUT
                ):
                    return {"name": name, "n": n, "unimplemented": True}
                await _create_jobs(server.address, jobs)
                group_counts, measured = await _workers(server, mode, groups, "peer")
                request = job_service_pb2.ListJobsRequest(page_size=100)
                listed = await job_service_pb2_grpc.JobServiceStub(channel).ListJobs(request, timeout=TIMEOUT)
        counts = work.Counts()
        for c in group_counts:
            counts.add(c)
        left = sum(j.chunks_summary.pending + j.chunks_summary.processing for j in listed.jobs)
        completed = sum(j.chunks_summary.completed for j in listed.jobs)
        if counts.chunks != n or completed != n or left or len(listed.jobs) != len(jobs):
            raise RuntimeError(
                f"{key}: drained {counts.chunks}/{n} (completed {completed}, left {left}, "
                f"{len(listed.jobs)}/{len(jobs)} jobs listed)"
            )
        for (kinds, _), c in zip(groups, group_counts, strict=True):
            if kinds and c.chunks != sum(items for kind, items in jobs if kind in kinds):
                raise RuntimeError(f"{key}: the workers of {kinds} completed {c.chunks} chunks")
        await _recount(key, dsn, listed.jobs, groups)
    measured |= {"mode": mode.key, "jobs": len(jobs), "workers": sum(workers for _, workers in groups)}
    measured |= {"counts": counts.as_dict(), "group_chunks": [c.chunks for c in group_counts]}
    return _row(name, n, measured.pop("seconds"), counts.rpcs, **measured)


async def _recount(key: str, dsn: str, listed: Any, groups: Groups) -> None:
    """Each job's summary (as ListJobs gave it) against its chunk rows counted by state (numbered as the
    proto's ChunkState: ``SUMMARY_FIELDS`` names them), and each chunk's worker against the kinds that
    worker's group claims (worker ids ``peer-<group>-<n>``)."""
    async with procs.connect(dsn) as conn:
        by_state = await conn.fetch("SELECT job_id, state, count(*) AS n FROM chunks GROUP BY 1, 2")
        by_worker = await conn.fetch("SELECT kind, worker_id, count(*) AS n FROM chunks GROUP BY 1, 2")
    recount: dict[str, dict[str, int]] = {}
    for r in by_state:
        recount.setdefault(r["job_id"], {})[SUMMARY_FIELDS[r["state"]]] = r["n"]
    for job in listed:
        counted = recount.pop(job.id, {})
        summary = {f: getattr(job.chunks_summary, f) for f in SUMMARY_FIELDS.values()}
        total = job.chunks_summary.total
        if any(summary[f] != counted.get(f, 0) for f in summary) or total != sum(counted.values()):
            raise RuntimeError(f"{key}: job {job.id}'s summary {summary} but its chunks recount {counted}")
    if recount:
        raise RuntimeError(f"{key}: chunks of jobs ListJobs did not list: {sorted(recount)}")
    for r in by_worker:
        group = int(r["worker_id"].split("-")[1])
        kinds = groups[group][0]
        if kinds and r["kind"] not in kinds:
            raise RuntimeError(f"{key}: {r['worker_id']} completed {r['n']} chunks of kind {r['kind']}")


async def _completed_chunks(dsn: str) -> tuple[int, int]:
    """(chunks completed, chunks in any other state) in the database."""
    from jobpulse_server.domain.model import ChunkState

    sql = "SELECT count(*) FILTER (WHERE state = $1), count(*) FILTER (WHERE state <> $1) FROM chunks"
    async with procs.connect(dsn) as conn:
        row = await conn.fetchrow(sql, int(ChunkState.COMPLETED))
    return int(row[0]), int(row[1])


GRPC_FLOOR_1, GRPC_FLOOR = "grpcfloor1", "grpcfloorb10"
# The floors under gRPC: key -> (name, the worker mode of bench.work).
_ALONE = " under gRPC, the store alone behind it"
GRPC_FLOORS = {
    GRPC_FLOOR_1: ("floor: ClaimChunks(1) + CompleteChunk" + _ALONE, "one_by_one"),
    GRPC_FLOOR: ("floor: CompleteChunks(10) + claim_next(10)" + _ALONE, "batched_complete_chunks"),
}


async def grpc_floor(n: int, workers: int, key: str) -> dict[str, Any]:
    """The jobpulse row's workers against ``bench.grpc_floor``; the jobs are made by a jobpulse server
    (which migrates the database) stopped before the clock starts; every chunk must be completed once."""
    name, mode_key = GRPC_FLOORS[key]
    async with procs.database("postgresql", key) as dsn:
        with procs.Jobpulse(dsn) as server:
            await _create_jobs(server.address, [("bench-work", k) for k in shares(n, JOBS_PER_RUN)])
        with await asyncio.to_thread(floor_server, dsn) as floor:
            [counts], measured = await _workers(floor, work.MODES[mode_key], [((), workers)], "grpc-floor")
        completed, left = await _completed_chunks(dsn)
    if counts.chunks != n or completed != n or left or counts.not_ok:
        raise RuntimeError(
            f"gRPC floor drained {counts.chunks}/{n} ({completed} completed, {left} not, "
            f"{counts.not_ok} declined)"
        )
    return _row(name, n, measured.pop("seconds"), counts.rpcs, **measured)


# --- PgQueuer ----------------------------------------------------------------------------------


async def _pgq_setup(dsn: str, n: int) -> None:
    from pgqueuer import AsyncpgDriver, Queries

    async with procs.connect(dsn) as conn:
        q = Queries(AsyncpgDriver(conn))
        await q.install()
        for start in range(0, n, 5_000):
            k = min(5_000, n - start)
            await q.enqueue([ENTRYPOINT] * k, [f"{start + i}".encode() for i in range(k)], [0] * k)


async def _pgq_check(dsn: str, n: int) -> None:
    async with procs.connect(dsn) as conn:
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        ok = await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    if left or ok != n:
        raise RuntimeError(f"pgqueuer left {left} jobs in the queue, logged {ok}/{n} successful")


async def pgqueuer_managers(n: int, workers: int, batch_size: int) -> dict[str, Any]:
    """W QueueManagers in drain mode, each on its own connection; a no-op entrypoint."""
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async with procs.database("postgresql", f"pgqm{batch_size}") as dsn:
        await _pgq_setup(dsn, n)
        handled = 0
        conns = [await asyncpg.connect(dsn) for _ in range(workers)]
        try:
            managers = []
            for conn in conns:
                qm = QueueManager(Queries(AsyncpgDriver(conn)))

                @qm.entrypoint(ENTRYPOINT)
                async def noop(job: Job) -> None:
                    nonlocal handled
                    handled += 1

                managers.append(qm)
            db0 = postgres_cpu_seconds()
            t0 = time.perf_counter()
            wait, drain = timedelta(seconds=0.2), QueueExecutionMode.drain
            runs = [qm.run(dequeue_timeout=wait, batch_size=batch_size, mode=drain) for qm in managers]
            await asyncio.gather(*runs)
            elapsed = time.perf_counter() - t0
            db1 = postgres_cpu_seconds()
        finally:
            for conn in conns:
                await conn.close()
        await _pgq_check(dsn, n)
    if handled != n:
        raise RuntimeError(f"pgqueuer handled {handled}/{n}")
    name = f"pgqueuer, {workers} QueueManager drain, batch_size={batch_size}"
    return _row(name, n, elapsed, 0, db_cpu_us=_per_unit_us(db0, db1, n))


# --- run and print -----------------------------------------------------------------------------


def render(rows: list[dict[str, Any]], args: argparse.Namespace, results: dict[str, Any]) -> str:
    notes = [
        f"N = {args.n:,} per row, no-op work, a fresh database per row; median of {args.rounds} round(s)"
    ]
    notes.append(f"{results['postgres']} | pgqueuer {results['pgqueuer']}")
    mode = results["settings"]["mode"]
    title = f"Chunk claim + complete on PostgreSQL: jobpulse next to PgQueuer ({mode} run, "
    lines = report.header(f"{title}{results['elapsed_seconds']:.0f} s)", notes, results)
    peer = [r for r in rows if r["key"] not in SCALING_KEYS]
    scaling = [r for r in rows if r["key"] in SCALING_KEYS]
    by = {r["key"]: r.get("per_second") for r in rows}
    if peer:
        what = f"Against PgQueuer: W = {args.workers} workers, jobpulse's chunks over {JOBS_PER_RUN} jobs"
        lines += _table(what, peer)
        ratios, by_round = [], []
        pairs = (("jp1", 1), ("jpcc", 1), (GRPC_FLOOR_1, 1), ("jp10", 10), ("jpb10", 10), (GRPC_FLOOR, 10))
        for key, k in pairs:
            if key in by:
                name = GRPC_FLOORS[key][0] if key in GRPC_FLOORS else JOBPULSE_ROWS[key][1]
                name = name.removeprefix("jobpulse, ")
                ratios.append([f"{name} / batch {k}", _ratio(by[key], by.get(f"qm{k}"))])
                if key != "jp10":
                    by_round.append(f"     {name}: {_by_round(rows, key, f'qm{k}')}")
        if "jpb10d" in by:
            deep = f"same, N = {args.deep:,} / batch 10, N = {args.deep:,}"
            ratios.append([deep, _ratio(by["jpb10d"], by.get("qm10d"))])
        lines += report.table(["ratio jobs/s jobpulse / pgqueuer", "vs QueueManager"], ratios)
        if args.rounds > 1:
            lines += [
                "   round by round, vs QueueManager (the ratios above are of each row's median):",
                *by_round,
            ]
    if scaling:
        lines += _table(
            "Scaling: complete-and-claim (CompleteChunk + claim_next(1)) as workers are added; each job of a "
            "kind of its own, each worker claiming its job's kind only; beside them PgQueuer QueueManagers, "
            "batch_size=1",
            scaling,
        )
        ratios = [
            [label, _ratio(by.get(a), by.get(b)), _ratio(by.get(c), by.get(d)) if c else ""]
            for label, (a, b), (c, d) in (
                ("16 workers / 4 workers, one job", ("sc1x16", "sc1x4"), ("sqm16", "sqm4")),
                ("4 jobs x 4 workers / 4 workers on one job", ("sc4x4", "sc1x4"), ("", "")),
                ("4 jobs x 4 workers / 16 workers on one job", ("sc4x4", "sc1x16"), ("", "")),
            )
        ]
        lines += report.table(["ratio jobs/s", "jobpulse", "pgqueuer QueueManager"], ratios)
        if args.rounds > 1:
            ours, theirs = _by_round(rows, "sc1x16", "sc1x4"), _by_round(rows, "sqm16", "sqm4")
            lines += report.para(
                f"16 / 4 workers on one job, round by round: jobpulse {ours}; PgQueuer {theirs} "
                "(the ratios above are of each row's median)"
            )
        same_w = (("sc1x4", "sqm4"), ("sc1x16", "sqm16"), ("sc4x4", "sqm16"))
        shown = {key: _scaling_name(key).removeprefix("jobpulse complete-and-claim, ") for key, _ in same_w}
        ratios = [[shown[key], _ratio(by.get(key), by.get(peer))] for key, peer in same_w]
        lines += report.table(["ratio jobs/s jobpulse / PgQueuer, same W", "vs QueueManager"], ratios)
    return "\n".join(lines + report.targets("Targets (PostgreSQL)", goals(rows)))


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    cells: list[list[Any]] = []
    for r in rows:
        if r.get("unimplemented"):
            cells.append([r["name"], "n/a (server: UNIMPLEMENTED)"])
            continue
        trips = f"{r['round_trips']:,}" if r["round_trips"] else "-"
        note = f"({n})" if (n := _note(r)) else ""
        cpu = [report._us(r.get(k), "-") for k in ("server_cpu_us", "db_cpu_us")]
        cells.append([r["name"], f"{r['per_second']:,.0f}", f"{r['seconds']:.2f}", trips, *cpu, note])
    head = ["", "jobs/s", "seconds", "round trips", "srv CPU us/job", "db CPU us/job", ""]
    note = "srv CPU: the jobpulse server process; db CPU: every PostgreSQL process on this machine"
    return report.section(title, head, cells, note)


def _by_round(rows: list[dict[str, Any]], a: str, b: str) -> str:
    """The ratio of two rows' jobs/s in each round, e.g. "0.93, 0.88, 0.88"."""
    by = {r["key"]: r.get("per_second_by_round") or [] for r in rows}
    return ", ".join(_ratio(x, y) for x, y in zip(by.get(a, []), by.get(b, []), strict=False)) or "n/a"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _note(row: dict[str, Any]) -> str:
    if row.get("unimplemented"):
        return "server: UNIMPLEMENTED"
    counts = row.get("counts")
    if counts is None:
        return ""
    mode = work.MODES[row["mode"]]
    if mode.claim_next and not counts["claimed_next"]:
        return "claim_next returned no claims"
    if row.get("flusher_busy") is not None:
        return f"flusher busy {row['flusher_busy']:.0%}, {row['per_flush']:.1f} written a flush"
    return ""


_FLUSHER_METRICS = {
    "jobpulse_group_commit_flushes_total": "flushes",
    "jobpulse_group_commit_written_total": "written",
    "jobpulse_group_commit_busy_seconds_total": "busy",
}


def flusher_counts(http_port: int) -> dict[str, float] | None:
    """The group-commit flusher's counts from the server's /metrics (None if unreadable)."""
    found = metric_values(http_port, set(_FLUSHER_METRICS))
    return None if found is None else {_FLUSHER_METRICS[k]: v for k, v in found.items()}


def _flusher(
    before: dict[str, float] | None, after: dict[str, float] | None, seconds: float
) -> dict[str, Any]:
    """A row's share of the flusher's time (its statements in flight: near 1, the row waits on it) and
    what it wrote a flush (completions and claimed chunks)."""
    if before is None or after is None or seconds <= 0 or after["flushes"] <= before["flushes"]:
        return {}
    flushes = after["flushes"] - before["flushes"]
    busy, written = after["busy"] - before["busy"], after["written"] - before["written"]
    return {"flusher_busy": busy / seconds, "per_flush": written / flushes}


def goals(rows: list[dict[str, Any]]) -> list[Goal]:
    """The worker-throughput targets: one by one >= 0.55 of PgQueuer batch 1, complete-and-claim >= 0.65
    (both moonshot 1.0), batches of 10 >= 1.0 (moonshot 2.0), server CPU per chunk <= 1.0 ms; 16 workers
    on one job >= 0.9 of 4."""
    by = {r["key"]: r for r in rows}

    def ratio(a: str, b: str) -> float | None:
        x, y = by.get(a, {}).get("per_second"), by.get(b, {}).get("per_second")
        return x / y if x is not None and y else None

    def note(key: str, *more: str) -> str:
        row = by.get(key)
        first = "not measured" if row is None else _note(row)
        return "; ".join(n for n in (first, *more) if n)

    def floor(key: str, peer: str) -> str:
        r = ratio(key, peer)
        return "" if r is None else f"the store alone under gRPC: {r:.2f}"

    out: list[Goal] = []
    if set(by) - SCALING_KEYS:
        for key, what, floor_note, line in (
            ("jp1", "one by one", floor(GRPC_FLOOR_1, "qm1"), 0.55),
            ("jpcc", "complete-and-claim", "", 0.65),
        ):
            what = f"PostgreSQL {what} / PgQueuer batch 1 (QueueManager)"
            out.append(Goal(what, ratio(key, "qm1"), True, line, 1.0, note=note(key, floor_note)))
        what, batched = "PostgreSQL batched (CompleteChunks) / PgQueuer batch 10 (QueueManager)", "jpb10"
        batched_note = note(batched, floor(GRPC_FLOOR, "qm10"))
        out.append(Goal(what, ratio(batched, "qm10"), True, 1.0, 2.0, note=batched_note))
        if "jpb10d" in by:
            what = f"same, both on a queue of {by['jpb10d'].get('n', 0):,} (QueueManager)"
            out.append(Goal(what, ratio("jpb10d", "qm10d"), True, 1.0, 2.0, note=note("jpb10d")))
        for key, what in (
            ("jp1", "one by one"),
            ("jpcc", "complete-and-claim"),
            ("jpb10", "CompleteChunks of 10"),
        ):
            cpu, what = by.get(key, {}).get("server_cpu_us"), f"PostgreSQL server CPU per chunk, {what}"
            out.append(Goal(what, cpu, False, 1000, 500, "us", note=note(key)))
    if set(by) & SCALING_KEYS:
        theirs = ratio("sqm16", "sqm4")
        pgq = f"PgQueuer 16 / 4 QueueManagers: {theirs:.2f}" if theirs is not None else ""
        what, more = "PostgreSQL complete-and-claim, 16 workers / 4 workers on one job", note("sc1x4")
        out.append(Goal(what, ratio("sc1x16", "sc1x4"), True, 0.9, 1.0, note=note("sc1x16", more, pgq)))
    return out


async def _pg_version() -> str:
    async with procs.connect(procs.PG_ADMIN) as conn:
        return "PostgreSQL " + str(await conn.fetchval("SHOW server_version")).split()[0]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    n, w = args.n, args.workers
    cases: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = []
    if args.only in (None, "peer"):
        for k, jobpulse_keys in ((1, ("jp1", "jpcc")), (10, ("jp10", "jpb10"))):
            for key in jobpulse_keys:
                cases.append((key, functools.partial(jobpulse_drain, n, w, key)))
            if not args.no_floor:
                floor_key = GRPC_FLOOR_1 if k == 1 else GRPC_FLOOR
                cases.append((floor_key, functools.partial(grpc_floor, n, w, floor_key)))
            cases.append((f"qm{k}", functools.partial(pgqueuer_managers, n, w, k)))
    if args.only in (None, "peer") and args.deep:
        # The batches of 10 again on a deeper queue: PgQueuer's cost per job grows with its queue's length
        # (its database CPU per job 142 us at 5,000, 673 at 50,000 in bench/README's fourth pass) and
        # jobpulse's does not, so a ratio at one depth alone says little.
        cases += [
            ("jpb10d", functools.partial(_deep, functools.partial(jobpulse_drain, args.deep, w, "jpb10"))),
            ("qm10d", functools.partial(_deep, functools.partial(pgqueuer_managers, args.deep, w, 10))),
        ]
    if args.only in (None, "scaling"):
        for key in SCALING_ORDER:
            if key in SCALING_PEERS:
                cases.append((key, functools.partial(pgqueuer_managers, n, SCALING_PEERS[key], 1)))
            else:
                cases.append((key, functools.partial(scaling_drain, n, key)))
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):  # rounds interleave the systems, so drift hits all alike
        for key, case in cases:
            row = await case()
            row["key"] = key
            results.setdefault(key, []).append(row)
            rate = "UNIMPLEMENTED" if row.get("unimplemented") else f"{row['per_second']:,.0f}/s"
            print(f"  {row['name']}: {rate}", file=sys.stderr, flush=True)
    out = []
    for key, _ in cases:
        rs = sorted(results[key], key=lambda r: r.get("per_second", 0.0))
        out.append({**rs[len(rs) // 2], "per_second_by_round": [r.get("per_second") for r in results[key]]})
    return out


async def _deep(row: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A row of the deeper queue, its name saying so."""
    out = await row()
    out["name"] = f"{out['name']}, N = {out['n']:,}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = report.arguments("pg", __doc__, "1,000 units of work per row, one round", DEFAULT_JSON)
    p.add_argument("--n", type=int, default=None, help="units of work per row (default 5,000; quick 1,000)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--no-floor", action="store_true", help="skip the floors under gRPC")
    p.add_argument("--only", choices=("peer", "scaling"), default=None, help="one set of rows (default both)")
    p.add_argument("--deep", type=int, default=None, help="queue depth of the deep rows (50,000; 0: none)")
    p.add_argument("--rounds", type=int, default=None, help=f"rounds, median kept ({FULL_ROUNDS}; quick 1)")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 1_000 if args.quick else 5_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else FULL_ROUNDS
    if args.deep is None:
        args.deep = 0 if args.quick else 50_000
    run_ = report.Run()
    settings = {"mode": "quick" if args.quick else "full", "n": args.n, "workers": args.workers}
    results: dict[str, Any] = {"settings": {**settings, "rounds": args.rounds, "only": args.only}}
    results |= {"postgres": asyncio.run(_pg_version()), "pgqueuer": report._version("pgqueuer")}
    rows = asyncio.run(run(args))
    results = run_.stamp({**results, "rows": rows, "targets": [goal.as_dict() for goal in goals(rows)]})
    full = not args.quick and args.only is None  # a full run: its figures are the table's current ones
    return report.publish(results, render(rows, args, results), args.json, "pg" if full else "", goals(rows))
