"""Worker throughput on PostgreSQL as dead row versions pile up between vacuums.

    python -m bench.dead_tuples                          # one by one, 4 rounds of 6 s, twice
    python -m bench.dead_tuples --mode batched_complete_chunks --rounds 6

Every claim and every completion writes a new version of its chunk row; the old one stays, with its
index entries, until VACUUM. A claim leaves the claim index's entry of its chunk dead, and job ids
sort by creation, so the dead entries of every older job come before the pending chunks of a newer
one: the claim statements read past them until a vacuum takes them away. Autovacuum looks at a
database once an ``autovacuum_naptime`` (60 s by default) and only past its thresholds; the first line
printed gives the server's settings (the PostgreSQL of these machines runs with autovacuum off).

One jobpulse server on a fresh database runs ``--rounds`` rounds; each is bench.scenarios'
chunk_throughput row (a fresh job of ``--backlog`` one-item chunks, 4 workers for ``--seconds``, the
rest cancelled). The whole run is made twice, on fresh databases: first as the server's autovacuum
settings leave it, then with ``VACUUM chunks`` between rounds. Each round prints chunks/s, the
server's CPU per chunk, the chunks table's live and dead row versions (pg_stat_user_tables) and the
claim index's pages. The last line: the last round against the first, for each run. Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench import scenarios, work
from bench.pg_peer import fresh_database
from bench.procs import ServerProcess


async def run(vacuum: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    import asyncpg  # the bench extra

    rounds: list[dict[str, Any]] = []
    async with fresh_database("dead_tuples") as dsn:
        server = ServerProcess("jobpulse", dsn)
        try:
            await asyncio.to_thread(server.wait_ready)
            conn = await asyncpg.connect(dsn)
            try:
                for n in range(args.rounds):
                    row = await scenarios.chunk_throughput(
                        server,
                        mode=work.MODES[args.mode],
                        workers=args.workers,
                        backlog=args.backlog,
                        seconds=args.seconds,
                    )
                    stats = await conn.fetchrow(
                        "SELECT n_live_tup, n_dead_tup, autovacuum_count FROM pg_stat_user_tables "
                        "WHERE relname = 'chunks'"
                    )
                    pages = await conn.fetchval("SELECT pg_relation_size('ix_chunks_claim') / 8192")
                    rounds.append(
                        {
                            "round": n,
                            "chunks_per_second": row["chunks_per_second"],
                            "cpu_us": row["server_cpu_us_per_chunk"],
                            "live": stats["n_live_tup"],
                            "dead": stats["n_dead_tup"],
                            "autovacuums": stats["autovacuum_count"],
                            "claim_index_pages": pages,
                        }
                    )
                    r = rounds[-1]
                    run_name = "VACUUM between rounds" if vacuum else "as the settings leave it"
                    print(
                        f"  {run_name}, round {n + 1}: "
                        f"{r['chunks_per_second']:,.0f} chunks/s, {r['cpu_us']:,.0f} us server CPU a chunk; "
                        f"chunks {r['live']:,} live, {r['dead']:,} dead; autovacuums so far "
                        f"{r['autovacuums']}; claim index {r['claim_index_pages']:,} pages",
                        flush=True,
                    )
                    if vacuum:
                        await conn.execute("VACUUM chunks")
            finally:
                await conn.close()
        finally:
            server.stop()
    return rounds


async def settings() -> str:
    """The server's autovacuum settings, as the run found them (the machines here run with it off)."""
    import asyncpg

    from bench.pg_peer import PG_ADMIN

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        names = ("autovacuum", "autovacuum_naptime", "autovacuum_vacuum_scale_factor")
        return ", ".join([f"{n} = {await conn.fetchval(f'SHOW {n}')}" for n in names])
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"PostgreSQL, {args.mode}, {args.workers} workers, {args.rounds} rounds of {args.seconds:g} s, "
        f"a job of {args.backlog:,} chunks each; {await settings()}"
    )
    plain = await run(False, args)
    vacuumed = await run(True, args)
    for name, rounds in (("as the settings leave it", plain), ("VACUUM between rounds", vacuumed)):
        first, last = rounds[0]["chunks_per_second"], rounds[-1]["chunks_per_second"]
        print(f"{name}: last round / first {last / first:.2f} ({first:,.0f} -> {last:,.0f} chunks/s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.dead_tuples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=sorted(work.MODES), default="one_by_one")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--backlog", type=int, default=50_000)
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be at least 2")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
