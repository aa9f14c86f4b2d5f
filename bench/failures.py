"""SummarizeFailures at scale on PostgreSQL: 1,000,000 chunks FAILED for good, in two layouts.

    python -m bench failures [--quick]    # 1,000,000 failed chunks a layout (quick: 20,000)

The failed chunks are bulk-loaded (COPY, the secondary indexes made again afterwards, then VACUUM
ANALYZE) into the migrated schema of a database of its own (JOBPULSE_BENCH_PG), in two layouts: 1,000
jobs of 1,000 failed chunks, and 100,000 jobs of 10; eight reasons, four kinds, each job a tenth of
completed chunks beside its failed ones. The server's counts of them (job_failures, a row per job, kind
and reason; failure_counts, a row per owner, kind and reason) are made from the loaded chunks by its own
statements, as its migration makes them. A jobpulse server in its own process is asked SummarizeFailures
30 times in a row (all kinds; one kind; jobs made in the newer half, which reads job_failures) and one
reason's first page of ListJobChunks over "-"; beside each, the server's own statement run in SQL on one
connection (what the database takes), and its plan printed; and a bare count of the failed chunks, what
any read of them all would take. The target: SummarizeFailures p50 at most 200 ms.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from bench import procs, report
from bench.listing_scale import _ulid, table_row
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from jobpulse_server.domain.model import ChunkState, JobState
from jobpulse_server.store import statements
from jobpulse_server.store.tables import chunks as chunks_table
from jobpulse_server.store.tables import jobs as jobs_table

REASONS = ("DECODE_ERROR", "TIMEOUT", "OUT_OF_MEMORY", "BAD_INPUT", "NETWORK", "QUOTA", "CORRUPT", "UNKNOWN")
KINDS = ("thumbnails", "transcode", "ocr", "export")
CALLS = 30
TARGET_MS = 200.0


def _rows(n_jobs: int, per_job: int, now_us: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Jobs (FAILED, each with ``per_job`` failed chunks and a tenth as many completed) and their chunks."""
    rng = random.Random(11)
    jobs, chunks = [], []
    span = 30 * 86_400 * 1_000_000
    done = max(1, per_job // 10)
    for j in range(n_jobs):
        create = now_us - span + j * (span // n_jobs)
        job_id = _ulid(create // 1000, rng)
        kind = KINDS[j % len(KINDS)]
        total = per_job + done
        end = create + 60_000_000
        jobs.append(
            table_row(
                jobs_table,
                {
                    "id": job_id, "owner": "anonymous", "kind": kind, "state": int(JobState.FAILED),
                    "display_name": f"{kind} {j}", "priority": 5, "max_attempts": 1, "labels": "{}",
                    "job_metadata": "{}", "total_items": total, "chunk_size": 1, "items_done": done,
                    "revision": 1 + 2 * total, "n_pending": 0, "n_processing": 0, "n_completed": done,
                    "n_failed": per_job, "n_cancelled": 0, "error_reason": REASONS[j % len(REASONS)],
                    "error_message": "a chunk failed", "error_chunk_index": 0, "cancel_requested": False,
                    "create_time": create, "update_time": end, "start_time": create + 1_000, "end_time": end,
                },
                j,
            )
        )  # fmt: skip
        for i in range(total):
            failed = i < per_job
            reason = REASONS[(j * 7 + i) % len(REASONS)] if failed else ""
            chunks.append(
                table_row(
                    chunks_table,
                    {
                        "id": f"{job_id}-{i}", "job_id": job_id, "idx": i,
                        "state": int(ChunkState.FAILED if failed else ChunkState.COMPLETED),
                        "item_start": i, "item_count": 1, "items_done": 0 if failed else 1, "attempt": 1,
                        "max_attempts": 1, "worker_id": f"w-{i % 16}", "external_task_id": "",
                        "error_reason": reason,
                        "error_message": f"{reason.lower()} in item {i} of job {j}" if failed else "",
                        "revision": 1 + i, "priority": 5, "kind": kind, "start_time": create + i,
                        "end_time": create + 2_000 + i, "finalize": False, "error_details": "",
                        "stage": "", "message": "",
                    },
                )
            )  # fmt: skip
    return jobs, chunks


async def _load(url: str, n_jobs: int, per_job: int) -> dict[str, float]:
    now_us = time.time_ns() // 1000
    t0 = time.perf_counter()
    async with procs.connect(url) as conn:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename IN ('jobs', 'chunks') AND indexname NOT LIKE '%_pkey'"
        )
        for r in indexes:
            await conn.execute(f'DROP INDEX "{r["indexname"]}"')
        step = max(1, 50_000 // per_job)
        for first in range(0, n_jobs, step):
            jobs, chunks = _rows(min(step, n_jobs - first), per_job, now_us - first * 1_000_000)
            await conn.copy_records_to_table(
                "jobs", records=jobs, columns=[c.name for c in jobs_table.columns]
            )
            await conn.copy_records_to_table(
                "chunks", records=chunks, columns=[c.name for c in chunks_table.columns]
            )
        for r in indexes:
            await conn.execute(r["indexdef"])
        # The counts the server keeps as chunks fail (job_failures), made from the loaded chunks by the
        # server's own statement (as migration 0026 makes them from a database's failed chunks).
        await conn.execute(statements.count_job_failures())
        await conn.execute(statements.COUNT_FAILURE_COUNTS)
        for table in ("jobs", "chunks", "job_failures", "failure_counts"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        failed = await conn.fetchval(f"SELECT count(*) FROM chunks WHERE state = {int(ChunkState.FAILED)}")
        size = await conn.fetchval("SELECT pg_relation_size('ix_chunks_failed')")
        rows = await conn.fetchval("SELECT count(*) FROM job_failures")
        keys = await conn.fetchval("SELECT count(*) FROM failure_counts")
        kept = await conn.fetchval("SELECT pg_total_relation_size('job_failures')")
    return {
        "load_s": time.perf_counter() - t0,
        "failed": failed,
        "index_mb": size / 1e6,
        "count_rows": rows,
        "count_mb": kept / 1e6,
        "keys": keys,
    }


def _ts(us: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromMicroseconds(us)
    return t


async def _time(call: Any, n: int = CALLS) -> list[float]:
    """``n`` calls in a row after one to warm up; seconds each."""
    await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


def _summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50_ms": statistics.median(xs) * 1e3, "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3}


async def _measure(url: str, address: str) -> dict[str, Any]:
    async with procs.connect(url) as conn:
        first, last = await conn.fetchrow("SELECT min(create_time), max(create_time) FROM jobs")
    middle = (first + last) // 2
    asks: dict[str, tuple[job_service_pb2.SummarizeFailuresRequest, tuple[str, dict[str, Any]]]] = {
        "all kinds": (
            job_service_pb2.SummarizeFailuresRequest(),
            statements.failure_groups(None, "", None, None, 100),
        ),
        "one kind": (
            job_service_pb2.SummarizeFailuresRequest(kind=KINDS[1]),
            statements.failure_groups(None, KINDS[1], None, None, 100),
        ),
        "newer half": (
            job_service_pb2.SummarizeFailuresRequest(created_after=_ts(middle)),
            statements.failure_groups(None, "", middle, None, 100),
        ),
    }  # fmt: skip
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address) as channel, procs.connect(url) as conn:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for name, (request, (sql, params)) in asks.items():
            served = await _time(lambda request=request: stub.SummarizeFailures(request, timeout=120))
            groups = (await stub.SummarizeFailures(request, timeout=120)).groups
            text, values = _positional(sql, params)
            floor = await _time(lambda text=text, values=values: conn.fetch(text, *values))
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + text, *values)
            out[name] = {
                "served": _summary(served),
                "sql": _summary(floor),
                "groups": len(groups),
                "chunks": sum(g.chunks for g in groups),
                "plan": [r[0] for r in plan],
            }
        page = job_service_pb2.ListJobChunksRequest(
            job_id="-", states=[job_pb2.CHUNK_STATE_FAILED], error_reasons=[REASONS[2]], page_size=100
        )
        listed = await _time(lambda: stub.ListJobChunks(page, timeout=120))
        out["list one reason"] = {"served": _summary(listed)}
        # The floor: reading the failed chunks' index and nothing else (no grouping).
        count = f"SELECT count(*) FROM chunks WHERE state = {int(ChunkState.FAILED)}"
        out["floor"] = {"sql": _summary(await _time(lambda: conn.fetchval(count), 10))}
    return out


def _positional(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """A named-parameter statement as asyncpg runs it ($1, $2, ...), as the store's driver would."""
    values: list[Any] = []
    for name in sorted(params, key=len, reverse=True):
        if f":{name}" in sql:
            values.append(params[name])
            sql = sql.replace(f":{name}", f"${len(values)}")
    return sql, values


def goals(results: dict[str, Any]) -> list[report.Goal]:
    out = []
    for layout, r in results.items():
        row = r["calls"]["all kinds"]
        what = f"postgresql, {layout}: SummarizeFailures p50 over {r['load']['failed']:,} failed chunks"
        floor = r["calls"]["floor"]["sql"]["p50_ms"]
        note = f"the statement alone {row['sql']['p50_ms']:.0f} ms; a bare count of them {floor:.0f} ms"
        out.append(report.Goal(what, row["served"]["p50_ms"], False, TARGET_MS, TARGET_MS / 2, "ms", note))
    return out


def main(argv: list[str] | None = None) -> int:
    args = report.arguments(
        "failures", __doc__, "20,000 failed chunks a layout; no figures written"
    ).parse_args(argv)
    layouts = {"1,000 jobs x 1,000": (1_000, 1_000), "100,000 jobs x 10": (100_000, 10)}
    if args.quick:
        layouts = {"100 jobs x 200": (100, 200), "2,000 jobs x 10": (2_000, 10)}

    async def run() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for layout, (n_jobs, per_job) in layouts.items():
            async with procs.database("postgresql", "failures") as url:
                await procs.migrate(url)
                report.log(f"{layout}: loading")
                load = await _load(url, n_jobs, per_job)
                report.log(f"{layout}: {load['failed']:,} failed chunks loaded in {load['load_s']:.0f} s")
                with procs.Jobpulse(url, http=False) as server:
                    results[layout] = {"load": load, "calls": await _measure(url, server.address)}
        return results

    results = asyncio.run(run())
    lines = []
    for layout, r in results.items():
        load = r["load"]
        lines.append(f"postgresql, {layout} ({load['failed']:,} failed chunks, ix_chunks_failed "
                     f"{load['index_mb']:.0f} MB; job_failures {load['count_rows']:,} rows, "
                     f"{load['count_mb']:.1f} MB; failure_counts {load['keys']:,} rows):")  # fmt: skip
        for name, row in r["calls"].items():
            sql = row.get("sql")
            floor = f"; the statement alone p50 {sql['p50_ms']:.1f} ms" if sql else ""
            if name == "floor":
                lines.append(f"   floor, count(*) of the failed chunks: p50 {row['sql']['p50_ms']:.1f} ms")
                continue
            what = "ListJobChunks over '-', one reason, 100" if name == "list one reason" else name
            served = row["served"]
            lines.append(
                f"   {what}: p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms{floor}"
                + (f" ({row['groups']} reasons, {row['chunks']:,} chunks)" if "groups" in row else "")
            )
        plan = r["calls"]["all kinds"]["plan"]
        lines += ["   plan (all kinds):", *(f"      {p}" for p in plan)]
    text = "\n".join(lines + report.targets("targets", goals(results)))
    return report.publish(results, text, args.json, "" if args.quick else "failures", goals(results))
