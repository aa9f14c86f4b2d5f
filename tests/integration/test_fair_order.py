"""Fair share between owners (setting fair_share; domain/model.py ``fair_order`` is the rule) on the real
databases: on random worlds of several owners' jobs (priorities, chunks pending, running or done, paused
jobs and max_running_chunks), a claim takes exactly the first chunks of fair_order, on SQLite
(``SqlTx._fair``) and on PostgreSQL both in a transaction (``statements.pg_claim``) and in the group
commit (``store/batch/sql.py``); with fair_share off, the claim order is today's. Then the rule itself: a
one-chunk job of a second owner is claimed next, ahead of a big job created before it.

Each example's jobs have owners and a kind of their own, so claims see only them and each owner's running
count is the example's."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobpulse_server.domain import ids
from jobpulse_server.domain.model import Chunk, ChunkState, Job, Summary, derive_state, fair_order
from jobpulse_server.domain.work import DECLINED, ClaimRequest
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.owners import REFRESH_S, Owners

NOW = 1_800_000_000_000_000
LEASE = 60_000_000
WORKER = "fair-worker"

World = list[tuple[Job, list[Chunk]]]


@pytest.fixture(params=[True, False], ids=["fair", "off"])
def stores(
    request: pytest.FixtureRequest, database_url: str
) -> Iterator[tuple[asyncio.AbstractEventLoop, SqlStore]]:
    loop = asyncio.new_event_loop()
    store = SqlStore(database_url, fair_share=request.param)
    loop.run_until_complete(store.start())
    try:
        yield loop, store
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@st.composite
def worlds(draw: st.DrawFn) -> tuple[str, World]:
    """Jobs of two or three owners, one kind, each job in a consistent state; (the kind, the jobs)."""
    tag = uuid.uuid4().hex[:10]
    kind = f"fair-{tag}"
    owners = [f"{tag}-{o}" for o in "abc"[: draw(st.integers(2, 3))]]
    world: World = []
    for n in range(draw(st.integers(2, 6))):
        owner = draw(st.sampled_from(owners))
        job_id = ids.new_job_id()
        priority = draw(st.sampled_from([3, 5]))
        states = draw(
            st.lists(
                st.sampled_from(
                    [ChunkState.PENDING, ChunkState.PENDING, ChunkState.PROCESSING, ChunkState.COMPLETED]
                ),
                min_size=1,
                max_size=6,
            )
        )
        chunks = [
            Chunk(
                id=ids.chunk_id(job_id, i),
                job_id=job_id,
                index=i,
                state=state,
                item_start=i,
                item_count=1,
                items_done=1 if state == ChunkState.COMPLETED else 0,
                attempt=0 if state == ChunkState.PENDING else 1,
                worker_id=WORKER if state == ChunkState.PROCESSING else "",
                lease_token=f"tok-{job_id}-{i}" if state == ChunkState.PROCESSING else None,
                lease_expire_time=NOW + LEASE if state == ChunkState.PROCESSING else None,
                lease_duration=LEASE if state == ChunkState.PROCESSING else None,
                priority=priority,
                kind=kind,
                start_time=None if state == ChunkState.PENDING else NOW - 10,
                end_time=NOW - 5 if state.terminal else None,
            )
            for i, state in enumerate(states)
        ]
        summary = Summary.recount(states)
        started = summary.pending < len(states)
        job = Job(
            id=job_id,
            owner=owner,
            kind=kind,
            priority=priority,
            total_items=len(states),
            chunk_size=1,
            max_attempts=3,
            revision=1,
            summary=summary,
            items_done=summary.completed,
            state=derive_state(summary, cancel_requested=False, started=started),
            create_time=NOW - 100 + n,
            update_time=NOW - 1,
            start_time=NOW - 50 if started else None,
            paused=draw(st.sampled_from([False, False, False, True])),
            max_running_chunks=draw(st.sampled_from([0, 0, 1, 2, 3])),
        )
        world.append((job, chunks))
    return kind, world


def _expected(world: World, limit: int, fair: bool, spin: int) -> list[str]:
    """The ids of the chunks the domain says a claim of ``limit`` takes."""
    ready: list[Chunk] = []
    for job, chunks in world:
        room = job.claimable()
        pending = [c for c in chunks if c.state == ChunkState.PENDING]
        ready += pending if room is None else pending[:room]
    ready.sort(key=lambda c: (-c.priority, c.job_id, c.index))
    if fair:
        owner_of = {job.id: job.owner for job, _ in world}
        running: dict[str, int] = {}
        for job, _ in world:
            running[job.owner] = running.get(job.owner, 0) + job.summary.processing
        ready = fair_order(ready, owner_of, running, spin)
    return sorted(c.id for c in ready[:limit])


def _seed(loop: asyncio.AbstractEventLoop, store: SqlStore, world: World) -> None:
    async def insert(tx: Any) -> None:
        for job, chunks in world:
            await tx.insert_job(job, chunks)

    loop.run_until_complete(store.write(insert))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=worlds(), limit=st.integers(1, 5))
def test_a_claim_takes_the_first_chunks_of_fair_order(
    stores: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[str, World], limit: int
) -> None:
    loop, store = stores
    kind, world = case
    _seed(loop, store, world)

    async def in_a_transaction(tx: Any) -> list[str]:
        _, chunks = await tx.claim([kind], NOW, limit, skip_locked=False)
        return sorted(c.id for c in chunks)

    # A transaction's claim reads and locks, and writes nothing: the group commit's then sees the same.
    # Ties between owners go by the claim's time (fair_tie's spin).
    expected = _expected(world, limit, store.fair_share, NOW)
    assert loop.run_until_complete(store.write(in_a_transaction)) == expected
    if store.batch is not None:
        got = loop.run_until_complete(store.batch.claim(ClaimRequest(WORKER, [kind], limit, LEASE), NOW))
        assert got is not DECLINED
        assert sorted(c.id for _, c in got) == expected


def _job(owner: str, kind: str, n: int, create_time: int) -> tuple[Job, list[Chunk]]:
    job_id = ids.new_job_id()
    chunks = [
        Chunk(
            id=ids.chunk_id(job_id, i),
            job_id=job_id,
            index=i,
            state=ChunkState.PENDING,
            item_start=i,
            item_count=1,
            kind=kind,
        )
        for i in range(n)
    ]
    summary = Summary.recount([c.state for c in chunks])
    job = Job(
        id=job_id,
        owner=owner,
        kind=kind,
        total_items=n,
        chunk_size=1,
        max_attempts=3,
        revision=1,
        summary=summary,
        state=derive_state(summary, cancel_requested=False, started=False),
        create_time=create_time,
        update_time=create_time,
    )
    return job, chunks


def test_claims_one_by_one_keep_the_owners_running_counts_within_one(
    stores: tuple[asyncio.AbstractEventLoop, SqlStore],
) -> None:
    """Owner A's 200-chunk job, then owner B's 1-chunk and 3-chunk jobs: with fair share, chunks claimed
    one by one (and kept running) go to the owner with fewer running, so the owners' counts never differ
    by more than one; off, A's job drains first."""
    loop, store = stores
    kind = f"fair-{uuid.uuid4().hex[:10]}"
    big = _job("team-a", kind, 200, NOW - 100)
    small = _job("team-b", kind, 1, NOW - 50)
    later = _job("team-b", kind, 3, NOW - 40)
    _seed(loop, store, [big, small, later])
    got = "".join(loop.run_until_complete(store.write(_claim_one(kind)))[-1] for _ in range(6))
    if not store.fair_share:
        assert got == "aaaaaa"
        return
    # Every claim goes to the team with fewer running (a tie either way): never more than one apart.
    assert all(abs(got[:n].count("a") - got[:n].count("b")) <= 1 for n in range(1, 7)), got


def _claim_one(kind: str) -> Callable[[Any], Awaitable[str]]:
    """A transaction that claims one chunk of ``kind`` and keeps it running: the owner of its job."""

    async def one(tx: Any) -> str:
        _, chunks = await tx.claim([kind], NOW, 1, skip_locked=False)
        (chunk,) = chunks
        job = await tx.get_job(chunk.job_id, None)
        job.move_chunk(chunk, ChunkState.PROCESSING, NOW)
        await tx.save([job], [chunk])
        return str(job.owner)

    return one


def test_a_second_owner_made_on_another_replica_gets_its_turn_soon(database_url: str) -> None:
    """PostgreSQL runs the fair statements only while several owners have pending chunks, as each process
    last looked (store/owners.py): a second owner's job made through another replica is dealt its turn
    once this one looks again (REFRESH_S), and one made through this replica at once."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite asks on every claim; replicas share only a PostgreSQL database")
    loop = asyncio.new_event_loop()
    here, there = SqlStore(database_url), SqlStore(database_url)
    kind = f"fair-{uuid.uuid4().hex[:10]}"
    try:
        loop.run_until_complete(here.start())
        loop.run_until_complete(there.start())
        big = _job("team-a", kind, 5_000, NOW - 100)  # more than the claims of REFRESH_S take
        _seed(loop, here, [big])

        one = _claim_one(kind)
        assert loop.run_until_complete(here.write(one)) == "team-a"
        assert not here.owners.several  # one owner: the claim order's statements
        _seed(loop, there, [_job("team-b", kind, 1, NOW - 50)])
        # Team A has a chunk running, team B none: B's chunk is next once this replica has looked again.
        deadline = time.monotonic() + 10 * REFRESH_S + 5
        got = loop.run_until_complete(here.write(one))
        while got == "team-a" and time.monotonic() < deadline:
            got = loop.run_until_complete(here.write(one))

        assert got == "team-b" and here.owners.several
        _seed(loop, here, [_job("team-c", kind, 1, NOW - 40)])
        assert here.owners.several
    finally:
        loop.run_until_complete(here.close())
        loop.run_until_complete(there.close())
        loop.close()


def test_the_record_of_owners_sees_a_second_owner_at_once() -> None:
    owners = Owners()
    assert owners.several and owners.stale()  # nothing looked at yet: the fair statements
    owners.settle(None, several=False)
    assert not owners.several and not owners.stale()
    owners.saw("team-a")
    assert not owners.several  # the first owner with pending chunks
    owners.saw("team-a")
    assert not owners.several
    owners.saw("team-b")
    assert owners.several
