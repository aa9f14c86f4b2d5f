"""Operator actions on PostgreSQL: a bulk cancel of 100,000 pending jobs, the same killed half-way, and
unique jobs on two replicas.

    python -m bench operator [--quick]    # quick: 5,000 jobs, no figures written

- **Bulk cancel**: JOBPULSE_BENCH_BULK_JOBS pending jobs (default 100,000; one chunk each), loaded in SQL
  into a database of their own, are cancelled with one CancelJobs by kind, on a server in its own
  process. Timed from the call to the operation's ``done`` (target at most 15 s). Meanwhile one GetJob
  (FULL) is in flight from this process at a time; its p99 during the cancel is taken over the lower p99
  of the same calls before and after it (target at most 2x).
- **Its floor**: as many more jobs cancelled by bare SQL from another process, in the same batches and
  statements' shape (the jobs and their chunks moved in one transaction a batch), with GetJob timed as
  above: what the database alone takes, and what its load alone does to GetJob on two shared cores.
- **Killed half-way**: as many more jobs, of another kind, cancelled the same way; the server is killed
  with SIGKILL once the operation has done half of them, started again on the same database, and the
  operation must end with every job cancelled once: ``done`` = matched, nothing skipped, and in SQL every
  one of the jobs CANCELLED at revision 2 (created at 1, one cancel).
- **Retry and purge**: the bulk cancel's jobs, run again by one RetryJobs and then deleted by one
  PurgeJobs with force, each timed as the cancel (figures, no target).
- **Unique jobs**: 100 CreateJob calls at once with one unique_key, half on each of two replicas of one
  database: exactly one job, 99 refusals naming it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import threading
import time
from typing import Any

import grpc
from google.longrunning import operations_proto_pb2
from support import sql

from bench import procs, report
from bench.load import percentile
from bench.report import Goal
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.store.tables import chunks, jobs

TOTAL_TARGET_S = 15.0
P99_TARGET = 2.0
QUIET_CALLS = 2000
DONE_TIMEOUT = 600.0
UNIQUE_CALLS = 100
BULK_KIND = "bench-bulk"
_CANCELLED_STATE = int(JobState.CANCELLED)
_OPERATIONS = "google.longrunning.Operations"


def _batch() -> dict[str, Any]:
    """JOBPULSE_BENCH_BULK_BATCH, if set, replaces the server's bulk_batch_size (to compare sizes)."""
    raw = os.environ.get("JOBPULSE_BENCH_BULK_BATCH")
    return {"bulk_batch_size": int(raw)} if raw else {}


def seed(url: str, n: int, kind: str, prefix: str) -> None:
    """``n`` PENDING jobs of ``kind`` with one PENDING chunk each, made in SQL (ids ``prefix`` and a
    number: they sort in the order they were made, as the server's own do), created in the last minute."""
    now = time.time_ns() // 1000
    job_id = f"'{prefix}' || lpad(g::text, 18, '0')"
    both = {"kind": f"'{kind}'", "max_attempts": "3", "revision": "1", "priority": "5"}
    job = {"id": job_id, "owner": "'anonymous'", "display_name": "'bulk ' || g", "labels": "'{}'"}
    job |= {"state": str(int(JobState.PENDING)), "job_metadata": "'{}'", "n_pending": "1"}
    job |= {"total_items": "1", "chunk_size": "1", "create_time": f"{now - 60_000_000} + g"}
    job |= {"update_time": f"{now - 60_000_000} + g"}
    chunk = {"id": f"{job_id} || '-0'", "job_id": job_id, "state": str(int(ChunkState.PENDING))}
    chunk |= {"item_count": "1", "idx": "0"}
    source = sql.series(True, 0, n - 1)
    for table, given in ((jobs, job), (chunks, chunk)):
        sql.fetch(url, sql.insert_generated(table, {**both, **given}, source))
    sql.fetch(url, "ANALYZE")


def _timed(stub: job_service_pb2_grpc.JobServiceStub, request: job_service_pb2.GetJobRequest) -> float:
    t = time.perf_counter()
    stub.GetJob(request, timeout=30)
    return time.perf_counter() - t


def _operation(channel: grpc.Channel, name: str) -> tuple[bool, job_service_pb2.BulkJobsMetadata]:
    get = channel.unary_unary(
        f"/{_OPERATIONS}/GetOperation",
        request_serializer=operations_proto_pb2.GetOperationRequest.SerializeToString,
        response_deserializer=operations_proto_pb2.Operation.FromString,
    )
    op = get(operations_proto_pb2.GetOperationRequest(name=name), timeout=30)
    meta = job_service_pb2.BulkJobsMetadata()
    op.metadata.Unpack(meta)
    return op.done, meta


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "p50_ms": percentile(samples, 50) * 1e3,
        "p99_ms": percentile(samples, 99) * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
    }


def _bulk_cancel(url: str, n: int) -> dict[str, Any]:
    kind = BULK_KIND
    report.log(f"seeding {n:,} pending jobs ...")
    seed(url, n, kind, "BULKA")
    with procs.Jobpulse(url, http=False, rate_limit_client=0, **_batch()).start(120) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            live = job_service_pb2.CreateJobRequest(kind="bench-live", total_items=1000, chunk_size=100)
            request = job_service_pb2.GetJobRequest(job_id=stub.CreateJob(live, timeout=30).job.id)
            for _ in range(200):
                _timed(stub, request)
            before = [_timed(stub, request) for _ in range(QUIET_CALLS)]
            t0 = time.perf_counter()
            op = stub.CancelJobs(job_service_pb2.CancelJobsRequest(kind=kind, reason="bench"), timeout=60)
            started_s = time.perf_counter() - t0
            during: list[float] = []
            while True:
                during += [_timed(stub, request) for _ in range(20)]
                done, meta = _operation(channel, op.name)
                if done:
                    break
                if time.perf_counter() - t0 > DONE_TIMEOUT:
                    raise RuntimeError(f"the bulk cancel did not end within {DONE_TIMEOUT:.0f} s")
            total_s = time.perf_counter() - t0
            after = [_timed(stub, request) for _ in range(QUIET_CALLS)]
    quiet = min(percentile(before, 99), percentile(after, 99))
    return {
        "jobs": n,
        "matched": meta.matched,
        "done": meta.done,
        "skipped": meta.skipped,
        "call_s": started_s,
        "total_s": total_s,
        "jobs_per_s": n / total_s,
        "getjob_before": _stats(before),
        "getjob_during": _stats(during),
        "getjob_after": _stats(after),
        "p99_ratio": percentile(during, 99) / quiet,
    }


def _retry_and_purge(url: str, kind: str, n: int) -> dict[str, Any]:
    """RetryJobs of the ``n`` jobs of ``kind`` the bulk cancel left CANCELLED (each PENDING again), then
    PurgeJobs with force of the same (each deleted): each timed from the call to its ``done``."""
    out: dict[str, Any] = {}
    with procs.Jobpulse(url, http=False, rate_limit_client=0, **_batch()).start(120) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            retry = job_service_pb2.RetryJobsRequest(kind=kind)
            purge = job_service_pb2.PurgeJobsRequest(kind=kind, force=True)
            calls = (
                ("retry", lambda: stub.RetryJobs(retry, timeout=60)),
                ("purge", lambda: stub.PurgeJobs(purge, timeout=60)),
            )
            for action, call in calls:
                report.log(f"bulk {action} of {n:,} jobs ...")
                t0 = time.perf_counter()
                op = call()
                while True:
                    done, meta = _operation(channel, op.name)
                    if done:
                        break
                    if time.perf_counter() - t0 > DONE_TIMEOUT:
                        raise RuntimeError(f"the bulk {action} did not end within {DONE_TIMEOUT:.0f} s")
                    time.sleep(0.05)
                total_s = time.perf_counter() - t0
                out[action] = {"done": meta.done, "skipped": meta.skipped, "total_s": total_s}
                out[action]["jobs_per_s"] = meta.done / total_s
    left = int(sql.value(url, "SELECT count(*) FROM jobs WHERE kind = $1", (kind,)))
    out["ok"] = out["retry"]["done"] == n and out["purge"]["done"] == n and left == 0
    return out


def _floor_cancel(dsn: str, kind: str, batch: int, done: Any) -> None:
    """The database's part of a bulk cancel and nothing else (in a process of its own): batches of
    ``batch`` jobs after a cursor, locked, their pending chunks and the jobs themselves moved to
    CANCELLED by one statement each, one transaction a batch, as the server's batches write them."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        cursor = ""
        try:
            while True:
                now = time.time_ns() // 1000
                async with conn.transaction():
                    ids = [
                        r[0]
                        for r in await conn.fetch(
                            "SELECT id FROM jobs WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE",
                            kind,
                            cursor,
                            batch,
                        )
                    ]
                    if not ids:
                        break
                    await conn.execute(
                        "UPDATE chunks SET state = $1, revision = revision + 1, end_time = $2, "
                        "next_attempt_time = NULL, retry_at = NULL WHERE job_id = ANY($3) AND state = $4",
                        int(ChunkState.CANCELLED),
                        now,
                        ids,
                        int(ChunkState.PENDING),
                    )
                    await conn.execute(
                        "UPDATE jobs SET state = $1, n_cancelled = n_cancelled + n_pending, n_pending = 0, "
                        "cancel_requested = true, cancel_reason = 'bench', cancel_time = $2, "
                        "revision = revision + 1, update_time = $2, end_time = $2, "
                        "change_seq = pg_current_xact_id()::text::bigint WHERE id = ANY($3)",
                        _CANCELLED_STATE,
                        now,
                        ids,
                    )
                cursor = ids[-1]
        finally:
            await conn.close()

    asyncio.run(run())
    done.set()


def _floor(url: str, n: int) -> dict[str, Any]:
    """The same cancel done by bare SQL from another process (``_floor_cancel``), with GetJob timed on
    the server meanwhile as during the server's own: what the database alone takes, and what its load
    alone does to GetJob on two shared cores."""
    kind = "bench-bulk-floor"
    report.log(f"seeding {n:,} pending jobs for the floor ...")
    seed(url, n, kind, "BULKF")
    batch = _batch().get("bulk_batch_size", 500)
    with procs.Jobpulse(url, http=False, rate_limit_client=0).start(120) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            live = job_service_pb2.CreateJobRequest(kind="bench-live", total_items=1000, chunk_size=100)
            request = job_service_pb2.GetJobRequest(job_id=stub.CreateJob(live, timeout=30).job.id)
            for _ in range(200):
                _timed(stub, request)
            before = [_timed(stub, request) for _ in range(QUIET_CALLS)]
            ctx = multiprocessing.get_context("spawn")
            done = ctx.Event()
            proc = ctx.Process(target=_floor_cancel, args=(url, kind, batch, done))
            t0 = time.perf_counter()
            proc.start()
            during: list[float] = []
            while not done.is_set():
                during += [_timed(stub, request) for _ in range(20)]
                if time.perf_counter() - t0 > DONE_TIMEOUT:
                    proc.kill()
                    raise RuntimeError("the floor's cancel did not end")
            total_s = time.perf_counter() - t0
            proc.join(30)
            after = [_timed(stub, request) for _ in range(QUIET_CALLS)]
    quiet = min(percentile(before, 99), percentile(after, 99))
    return {
        "jobs": n,
        "total_s": total_s,
        "getjob_during": _stats(during),
        "p99_ratio": percentile(during, 99) / quiet if during else 0.0,
    }


def _killed_half_way(url: str, n: int) -> dict[str, Any]:
    kind = "bench-bulk-killed"
    report.log(f"seeding {n:,} more pending jobs ...")
    seed(url, n, kind, "BULKB")
    server = procs.Jobpulse(url, http=False, rate_limit_client=0, **_batch()).start(120)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            op = stub.CancelJobs(job_service_pb2.CancelJobsRequest(kind=kind, reason="bench"), timeout=60)
            while True:
                done, meta = _operation(channel, op.name)
                if done:
                    raise RuntimeError("the operation ended before the kill: raise JOBPULSE_BENCH_BULK_JOBS")
                if meta.done >= n // 2:
                    break
                time.sleep(0.01)
        server.kill()
        at_kill = meta.done
        t0 = time.perf_counter()
        server.proc = None  # started again on the same port and database
        server.start(120)
        with grpc.insecure_channel(server.address) as channel:
            while True:
                done, meta = _operation(channel, op.name)
                if done:
                    break
                if time.perf_counter() - t0 > DONE_TIMEOUT:
                    raise RuntimeError("the operation did not end after the restart")
                time.sleep(0.05)
        resumed_s = time.perf_counter() - t0
    finally:
        server.close()
    once = sql.value(
        url,
        "SELECT count(*) FROM jobs WHERE kind = $1 AND state = $2 AND revision = 2",
        (kind, _CANCELLED_STATE),
    )
    return {
        "jobs": n,
        "done_at_kill": at_kill,
        "matched": meta.matched,
        "done": meta.done,
        "skipped": meta.skipped,
        "cancelled_once": int(once),
        "restart_to_done_s": resumed_s,
        "ok": meta.done == n and meta.skipped == 0 and int(once) == n,
    }


def _unique(url: str) -> dict[str, Any]:
    with (
        procs.Jobpulse(url, http=False, rate_limit_client=0, **_batch()).start(120) as a,
        procs.Jobpulse(url, http=False, rate_limit_client=0, **_batch()).start(120) as b,
    ):
        channels = [grpc.insecure_channel(s.address) for s in (a, b)]
        stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in channels]
        barrier = threading.Barrier(UNIQUE_CALLS)
        made: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            request = job_service_pb2.CreateJobRequest(kind="bench-unique", total_items=1, unique_key="k")
            barrier.wait(30)
            try:
                job = stubs[i % 2].CreateJob(request, timeout=30).job
            except grpc.RpcError as exc:
                with lock:
                    refused.append(exc.code().name)
            else:
                with lock:
                    made.append(job.id)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(UNIQUE_CALLS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in channels:
            c.close()
    in_db = sql.value(url, "SELECT count(*) FROM jobs WHERE kind = 'bench-unique'")
    return {"calls": UNIQUE_CALLS, "made": len(made), "refused": sorted(set(refused)), "in_db": int(in_db)}


def goals(results: dict[str, Any]) -> list[Goal]:
    bulk, killed, unique = results["bulk"], results["killed"], results["unique"]
    n = bulk["jobs"]
    return [
        Goal(
            f"bulk cancel of {n:,} pending jobs (PostgreSQL): seconds",
            bulk["total_s"],
            False,
            TOTAL_TARGET_S,
            TOTAL_TARGET_S / 2,
            "s",
            f"{bulk['jobs_per_s']:,.0f} jobs/s; the same in bare SQL {results['floor']['total_s']:.1f} s",
        ),
        Goal(
            "GetJob p99 during the bulk cancel / the lower quiet p99",
            bulk["p99_ratio"],
            False,
            P99_TARGET,
            1.2,
            "x",
            f"{bulk['getjob_during']['p99_ms']:.2f} ms during; "
            f"during bare SQL {results['floor']['p99_ratio']:.2f}x",
        ),
        Goal(
            "bulk cancel killed half-way: jobs not cancelled exactly once after the restart",
            killed["jobs"] - killed["cancelled_once"] + killed["skipped"],
            False,
            0,
            None,
            "",
            f"{killed['done_at_kill']:,} done at the kill",
        ),
        Goal(
            f"unique jobs: jobs made by {unique['calls']} creates with one key on 2 replicas",
            unique["in_db"],
            False,
            1,
            None,
            "",
            f"{unique['made']} made, refused {', '.join(unique['refused'])}",
        ),
    ]


def render(results: dict[str, Any]) -> str:
    bulk, killed, unique = results["bulk"], results["killed"], results["unique"]
    lines = [f"jobpulse operator actions on PostgreSQL, {bulk['jobs']:,} jobs"]
    lines.append(
        f"   bulk cancel: {bulk['done']:,} of {bulk['matched']:,} cancelled ({bulk['skipped']} skipped) in "
        f"{bulk['total_s']:.1f} s, {bulk['jobs_per_s']:,.0f} jobs/s (the call answered in "
        f"{bulk['call_s'] * 1e3:.0f} ms)"
    )
    for phase in ("before", "during", "after"):
        s = bulk[f"getjob_{phase}"]
        times = f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms"
        lines.append(f"   GetJob {phase:<6}: {s['calls']:>6,} calls, {times}")
    lines.append(f"   GetJob p99 during / the lower quiet one: {bulk['p99_ratio']:.2f}x")
    floor = results["floor"]
    lines.append(
        "   floor (the same cancel in bare SQL from another process, batches alike): "
        f"{floor['total_s']:.1f} s; GetJob p99 during it {floor['getjob_during']['p99_ms']:.2f} ms, "
        f"{floor['p99_ratio']:.2f}x quiet"
    )
    lines.append(
        f"   killed at {killed['done_at_kill']:,} of {killed['jobs']:,} done; after the restart: done "
        f"{killed['done']:,}, skipped {killed['skipped']}, cancelled once (SQL) {killed['cancelled_once']:,} "
        f"in {killed['restart_to_done_s']:.1f} s from the restart: {'OK' if killed['ok'] else 'WRONG'}"
    )
    rp = results["retry_purge"]
    lines.append(
        "   then the same jobs: "
        + "; ".join(
            f"bulk {a} {rp[a]['done']:,} done, {rp[a]['skipped']} skipped in {rp[a]['total_s']:.1f} s, "
            f"{rp[a]['jobs_per_s']:,.0f} jobs/s"
            for a in ("retry", "purge")
        )
        + ("" if rp["ok"] else ": WRONG")
    )
    lines.append(
        f"   unique: {unique['calls']} creates with one key on 2 replicas: {unique['in_db']} job in the "
        f"database, {unique['made']} made, the others refused ({', '.join(unique['refused'])})"
    )
    return "\n".join(lines + report.targets("targets", goals(results)))


def main(argv: list[str] | None = None) -> int:
    args = report.arguments("operator", __doc__, "5,000 jobs; no figures written").parse_args(argv)
    n = report.env_size("JOBPULSE_BENCH_BULK_JOBS", 5_000 if args.quick else 100_000)

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with procs.database("postgresql", "operator") as url:
            await procs.migrate(url)
            out["bulk"] = await asyncio.to_thread(_bulk_cancel, url, n)
            out["retry_purge"] = await asyncio.to_thread(_retry_and_purge, url, BULK_KIND, n)
            out["floor"] = await asyncio.to_thread(_floor, url, n)
            out["killed"] = await asyncio.to_thread(_killed_half_way, url, n)
            out["unique"] = await asyncio.to_thread(_unique, url)
        return out

    results = asyncio.run(run())
    scenario = "" if args.quick else "operator"
    status = report.publish(results, render(results), args.json, scenario, goals(results))
    ok = results["killed"]["ok"] and results["unique"]["in_db"] == 1 and results["retry_purge"]["ok"]
    return status or (0 if ok else 1)
