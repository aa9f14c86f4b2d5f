"""GetJob while the expiry sweep deletes 200,000 expired jobs, against GetJob on the same server when
nothing is being deleted (SQLite). Sizes: JOBPULSE_BENCH_RETENTION_JOBS (a smoke run: 2000), _LEAD,
_CALLS, _BATCH (replaces the server's retention_batch).

The jobs (COMPLETED, one chunk each, the server's default ttl) are inserted into the migrated file
before the server starts, placed to expire ``LEAD`` seconds after it is up: until then the sweeper
finds nothing (the quiet phase, measured first and checked to have deleted nothing), then it deletes
them all in batches (the deletion phase, measured until the last is gone), then a second quiet phase.
Each phase: one GetJob (FULL) in flight, timed from this process. Figures: the p99 while deleting over
the lower quiet p99 (goal: at most 2x), the deletion's duration from the expiry, and jobs/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from typing import Any

import grpc
from support import sql

from bench import procs, report
from bench.load import percentile
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.store.tables import chunks, jobs

KIND = "bench-expired"

N_JOBS = report.env_size("JOBPULSE_BENCH_RETENTION_JOBS", 200_000)
# The server's default ttl of COMPLETED jobs, and how long after its start the seeded jobs expire.
RETENTION = 3600
LEAD = report.env_size("JOBPULSE_BENCH_RETENTION_LEAD", 25.0, float)
# Timed GetJob calls of the quiet phase (it must end well within LEAD).
QUIET_CALLS = report.env_size("JOBPULSE_BENCH_RETENTION_CALLS", 3000)
DELETION_TIMEOUT = 1800.0


def seed(path: str, n: int, first_end: int) -> list[str]:
    """Inserts ``n`` COMPLETED jobs (one chunk each) that ended from ``first_end`` on, a microsecond
    apart; returns their ids in end order. The rows are made in SQL, a job for each ``g`` of a series."""
    job_id, end = "'BENCHEXP' || printf('%018d', g)", f"({first_end} + g)"
    both = {"kind": f"'{KIND}'", "max_attempts": "3", "revision": "3", "priority": "5", "items_done": "100"}
    both |= {"start_time": f"{end} - 30000000", "end_time": end}
    job = {"id": job_id, "owner": "'anonymous'", "display_name": f"'expired ' || {job_id}", "stage": "'done'"}
    job |= {"state": str(int(JobState.COMPLETED)), "labels": """'{"team": "bench"}'""", "n_completed": "1"}
    job |= {"total_items": "100", "chunk_size": "100", "job_metadata": "'{}'"}
    job |= {"create_time": f"{end} - 60000000", "update_time": end}
    chunk = {"id": f"{job_id} || '-0'", "job_id": job_id, "worker_id": "'bench-worker'", "attempt": "1"}
    chunk |= {"state": str(int(ChunkState.COMPLETED)), "item_count": "100"}
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for table, given in ((jobs, job), (chunks, chunk)):
            conn.execute(sql.insert_generated(table, {**both, **given}, sql.series(False, 0, n - 1)))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return [f"BENCHEXP{i:018d}" for i in range(n)]


def _exists(stub: job_service_pb2_grpc.JobServiceStub, job_id: str) -> bool:
    try:
        stub.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def _timed_get(stub: job_service_pb2_grpc.JobServiceStub, request: job_service_pb2.GetJobRequest) -> float:
    t = time.perf_counter()
    stub.GetJob(request, timeout=30)
    return time.perf_counter() - t


def _line(name: str, samples: list[float]) -> str:
    q = [percentile(samples, 50), percentile(samples, 99), statistics.fmean(samples)]
    p50, p99, mean = (x * 1e3 for x in q)
    calls = f"{name:<28} calls {len(samples):>7,}"
    return f"{calls}   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   mean {mean:7.3f} ms"


def main(argv: list[str] | None = None) -> int:
    report.parser("retention", __doc__).parse_args(argv)  # no options, sizes are variables: --help says so
    with tempfile.TemporaryDirectory(prefix="jobpulse-retention-") as tmp:
        return _run(f"{tmp}/jobs.db")


def _run(path: str) -> int:
    url = f"sqlite:///{path}"

    asyncio.run(procs.migrate(url))
    print(f"seeding {N_JOBS:,} jobs to expire (one chunk each) into {path} ...", flush=True)
    t0 = time.perf_counter()
    ids = seed(path, N_JOBS, 0)
    print(f"seeded in {time.perf_counter() - t0:.1f} s", flush=True)
    # Place the jobs so that the first expires LEAD seconds from now (one UPDATE, before the
    # server starts): the quiet phase is free of deletions however long the seeding took.
    expire_at = time.time() + LEAD
    shift = int((expire_at - RETENTION) * 1e6)
    conn = sqlite3.connect(path, isolation_level=None)
    times = ", ".join(f"{c} = {c} + ?" for c in ("update_time", "end_time", "start_time", "create_time"))
    conn.execute(f"UPDATE jobs SET {times} WHERE kind = '{KIND}'", (shift,) * 4)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()

    # JOBPULSE_BENCH_RETENTION_BATCH, if set, replaces the server's retention_batch (to compare sizes).
    raw = os.environ.get("JOBPULSE_BENCH_RETENTION_BATCH")
    batch: dict[str, Any] = {"retention_batch": int(raw)} if raw else {}
    server = procs.Jobpulse(url, retention_completed=RETENTION, sweep_interval=1.0, **batch)
    with server.start(120), grpc.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        live = job_service_pb2.CreateJobRequest(kind="bench-live", total_items=1000, chunk_size=100)
        request = job_service_pb2.GetJobRequest(job_id=stub.CreateJob(live, timeout=30).job.id)
        for _ in range(200):  # warm-up
            _timed_get(stub, request)

        quiet = [_timed_get(stub, request) for _ in range(QUIET_CALLS)]
        quiet_done = time.time()
        if quiet_done >= expire_at or not _exists(stub, ids[0]):
            print(
                f"the quiet phase ran into the expiry ({quiet_done - expire_at:+.1f} s): raise "
                "JOBPULSE_BENCH_RETENTION_LEAD or lower JOBPULSE_BENCH_RETENTION_CALLS"
            )
            return 1
        print(_line("GetJob, nothing deleted", quiet), flush=True)

        # Wait for the expiry moment without measuring (the sweeper still finds nothing).
        while time.time() < expire_at:
            _timed_get(stub, request)
        during: list[float] = []
        first_gone: float | None = None
        deadline = time.time() + DELETION_TIMEOUT
        while True:
            during += [_timed_get(stub, request) for _ in range(100)]
            now = time.time()
            if first_gone is None and not _exists(stub, ids[0]):
                first_gone = now
            if not _exists(stub, ids[-1]):
                break
            if now > deadline:
                print(f"the deletion did not finish within {DELETION_TIMEOUT:.0f} s")
                return 1
        deletion_s = time.time() - expire_at
        # A second quiet phase once everything is gone: one short phase alone is at the mercy of a
        # noisy moment, so the ratio is taken against the lower (stricter) of the two.
        after = [_timed_get(stub, request) for _ in range(QUIET_CALLS)]
        print(_line("GetJob, while deleting", during), flush=True)
        print(_line("GetJob, after the deletion", after), flush=True)
        ratio = percentile(during, 99) / min(percentile(quiet, 99), percentile(after, 99))
        what = "GetJob p99 while deleting / the lower p99 with nothing deleted (before, after)"
        print(f"{what}: {ratio:.2f}x (goal: at most 2x)")
        print(
            f"deleted {N_JOBS:,} expired jobs (and their chunks) in {deletion_s:.1f} s after they expired "
            f"({N_JOBS / deletion_s:,.0f} jobs/s; first gone {((first_gone or expire_at) - expire_at):.1f} s "
            "after expiry, at the sweeper's next tick)"
        )
        return 0
