"""PostgreSQL's group-committed paths (store/batch/) against the domain they repeat in SQL, on random
job states: a completion, a claim, a completion with the next claim, a progress report and a retryable
failure leave the job and its chunks exactly as ``Job.move_chunk`` / ``derive_state`` (as WorkerService
applies them) say, and they decline
(None, nothing changed) for a lease that is not current or a job whose change makes a webhook event (it
ends, or a job.progress event is due): what they write for a job with webhooks is a change the outbox
(services/outbox.py ``events_for``) makes no event of.

Each example writes a job in a random but consistent state (chunks in any state, a cancel asked or not,
items done, attempts, revisions, a start time), of a kind of its own so that claims see only it, runs one
fast path, and compares what the database holds with what the domain computes from the same rows."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from jobpulse_server.domain import ids
from jobpulse_server.domain.changes import CHANNEL, decode, own_prefixes
from jobpulse_server.domain.model import (
    TOO_MANY_FAILED_CHUNKS,
    Artifact,
    Attempt,
    AttemptOutcome,
    Chunk,
    ChunkState,
    Job,
    JobState,
    Summary,
    derive_state,
)
from jobpulse_server.domain.work import (
    DECLINED,
    Backoff,
    ClaimRequest,
    Completion,
    Declined,
    Failure,
    ProgressReport,
)
from jobpulse_server.services.outbox import events_for
from jobpulse_server.services.worker_path import backoff_seconds
from jobpulse_server.store import Batch
from jobpulse_server.store.caps import Caps
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.waiting import NEVER

T = TypeVar("T")

NOW = 1_800_000_000_000_000
LEASE = 60_000_000
WORKER = "prop-worker"
INTERVAL = 7_000_000  # the store's least time between a job's job.progress events


@pytest.fixture
def pg(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, SqlStore]]:
    if not database_url.startswith("postgresql"):
        pytest.skip("the group-committed paths are PostgreSQL's")
    loop = asyncio.new_event_loop()
    store = SqlStore(database_url, progress_interval_us=INTERVAL)
    loop.run_until_complete(store.start())
    try:
        yield loop, store
    finally:
        loop.run_until_complete(store.close())
        loop.close()


@st.composite
def jobs(draw: st.DrawFn, *, need: ChunkState, hooked: bool = False) -> tuple[Job, list[Chunk]]:
    """A job in a consistent state with at least one chunk in ``need``; with webhooks if ``hooked``."""
    n = draw(st.integers(1, 7))
    states = [need, *draw(st.lists(st.sampled_from(list(ChunkState)), min_size=n - 1, max_size=n - 1))]
    cancel = draw(st.booleans())
    job_id = ids.new_job_id()
    kind = "prop-" + job_id
    revision = draw(st.integers(1, 40))
    priority = draw(st.integers(0, 10))
    chunks = []
    start = 0
    for i, state in enumerate(states):
        count = draw(st.integers(1, 5))
        done = {ChunkState.COMPLETED: count, ChunkState.PENDING: 0}.get(state, draw(st.integers(0, count)))
        attempt = draw(st.integers(0 if state == ChunkState.PENDING else 1, 3))
        running = state == ChunkState.PROCESSING
        # A pending chunk may wait out a retry backoff that has just ended.
        backoff = draw(st.sampled_from([None, NOW - 1])) if state == ChunkState.PENDING else None
        chunks.append(
            Chunk(
                id=ids.chunk_id(job_id, i),
                job_id=job_id,
                index=i,
                state=state,
                item_start=start,
                item_count=count,
                items_done=done,
                attempt=attempt,
                max_attempts=attempt + draw(st.integers(0, 2)),
                worker_id=WORKER if running else "",
                lease_token=f"tok-{job_id}-{i}" if running else None,
                lease_expire_time=NOW + LEASE if running else None,
                lease_duration=LEASE if running else None,
                next_attempt_time=backoff,
                revision=draw(st.integers(1, revision)),
                priority=priority,
                kind=kind,
                start_time=NOW - 10 if state != ChunkState.PENDING else None,
                end_time=NOW - 5 if state.terminal else None,
            )
        )
        start += count
    summary = Summary.recount([c.state for c in chunks])
    started = any(c.state != ChunkState.PENDING for c in chunks) or draw(st.booleans())
    # A cancel may be a job failed at once (Job.fail_now: FAILED with chunks still running, none pending).
    at_once = cancel and not summary.pending
    error_reason = draw(st.sampled_from(["", TOO_MANY_FAILED_CHUNKS])) if at_once else ""
    state = derive_state(summary, cancel_requested=cancel, started=started, failed_at_once=bool(error_reason))
    job = Job(
        id=job_id,
        owner="prop",
        kind=kind,
        priority=priority,
        total_items=start,
        chunk_size=5,
        max_attempts=3,
        revision=revision,
        summary=summary,
        items_done=sum(c.items_done for c in chunks),
        state=state,
        cancel_requested=cancel,
        cancel_time=NOW - 20 if cancel else None,
        error_reason=error_reason,
        # No limit, one that binds before the lease asked for ends, one that does not (each ending after
        # NOW: a lease capped before it would already have run out, and the fence refuses it).
        attempt_timeout=draw(st.sampled_from([0, 0, LEASE // 2, LEASE * 2])),
        create_time=NOW - 100,
        update_time=NOW - 1,
        start_time=NOW - 50 if started else None,
        end_time=NOW - 1 if state.terminal else None,
        webhook_url="https://hooks.example/prop"
        if hooked
        else draw(st.sampled_from(["", "", "https://hooks.example/prop"])),
        webhook_progress=draw(st.booleans()),
        # No progress event yet, one just now, one just inside the interval, one exactly its length ago.
        last_progress_event=draw(st.sampled_from([None, NOW - 1, NOW - INTERVAL + 1, NOW - INTERVAL])),
    )
    return job, chunks


def _due(job: Job) -> bool:
    """Whether the fast paths see a job.progress event due (asked for, and none in the last INTERVAL)."""
    return job.webhook_progress and (
        job.last_progress_event is None or NOW - job.last_progress_event >= INTERVAL
    )


def _declines(job: Job, asked: int) -> bool:
    """Whether a flush of ``asked`` completions of ``job`` leaves them to the general path for its webhook
    events: the job may end (no more chunks pending or running than completions asked) or a progress
    event is due."""
    return bool(job.webhook_url) and (job.summary.pending + job.summary.processing <= asked or _due(job))


def _no_event(job: Job) -> None:
    """A change the fast paths wrote must be one the outbox makes no webhook event of."""
    assert events_for(copy.deepcopy(job), NOW, INTERVAL) == [], "a webhook event left unwritten"


async def _read(store: Any, job_id: str) -> tuple[Job, list[Chunk]]:
    async with store.read() as tx:
        job = await tx.get_job(job_id, None)
        assert job is not None
        return job, await tx.list_chunks(job_id)


_IGNORED = {"change_seq", "loaded_state", "bumped", "artifacts"}


def _job(job: Job) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(job).items() if k not in _IGNORED}


def _chunk(chunk: Chunk, *, token: bool = True) -> dict[str, Any]:
    out = {k: v for k, v in dataclasses.asdict(chunk).items() if k not in ("artifacts", "ended")}
    if not token:
        out["lease_token"] = bool(out["lease_token"])
    return out


def _ended_attempts(
    run: Callable[[Awaitable[Any]], Any], store: Any, job_id: str, domain: list[Chunk]
) -> None:
    """The attempts the fast path wrote are the ones Job.move_chunk noted on the domain's chunks."""

    async def read() -> list[Attempt]:
        async with store.read() as tx:
            found: list[Attempt] = await tx.list_attempts(job_id, None, (-1, 0), 10_000)
        # The rows written: a running or completed attempt is its chunk's row, not one of these.
        return [a for a in found if a.outcome not in (AttemptOutcome.RUNNING, AttemptOutcome.COMPLETED)]

    expected = sorted((c.ended for c in domain if c.ended is not None), key=lambda a: a.chunk_index)
    assert run(read()) == expected


def _complete_in_domain(job: Job, chunk: Chunk, now: int) -> None:
    """What WorkerService.complete_many does to a leased chunk."""
    if job.cancel_requested:
        job.move_chunk(chunk, ChunkState.CANCELLED, now)
    else:
        job.move_chunk(chunk, ChunkState.COMPLETED, now, items_done=chunk.item_count)


def _claim_in_domain(job: Job, chunks: list[Chunk], limit: int, now: int) -> list[Chunk]:
    """What WorkerService._claim_in does to the ready chunks of the one job (claim order: index)."""
    ready = [
        c
        for c in chunks
        if c.state == ChunkState.PENDING and (c.next_attempt_time is None or c.next_attempt_time <= now)
    ][:limit]
    for c in ready:
        c.attempt += 1
        c.worker_id = WORKER
        c.start_time = now
        c.end_time = None
        c.next_attempt_time = None
        job.move_chunk(c, ChunkState.PROCESSING, now, items_done=0)
        c.lease_token = "set"
        c.lease_expire_time = job.lease_end(c, now, LEASE)
        c.lease_duration = LEASE
    return ready


def _seeded(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]]
) -> tuple[Callable[[Awaitable[T]], T], Batch, Job, tuple[Job, list[Chunk]]]:
    """Writes the example's job; (a runner of coroutines, the fast paths, the job, the job as read back)."""
    loop, store = pg
    assert store.batch is not None
    job, chunks = case
    run = cast(Callable[[Awaitable[T]], T], loop.run_until_complete)
    run(store.write(lambda tx: tx.insert_job(job, chunks)))
    return run, store.batch, job, run(_read(store, job.id))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PROCESSING), stale=st.booleans())
def test_a_completion_is_move_chunk_and_derive_state(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], stale: bool
) -> None:
    _check_completion(pg, case, stale)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PROCESSING, hooked=True))
def test_a_completion_of_a_job_with_webhooks_is_written_here_only_when_it_makes_no_event(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]]
) -> None:
    """Webhook jobs ran every worker change through the general path (a quarter of the throughput);
    now only a change that ends the job or is due a job.progress event does."""
    _check_completion(pg, case, False)


def _check_completion(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], stale: bool
) -> None:
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    target = before_chunks[0]
    token = "not-the-lease" if stale else str(target.lease_token)
    art = [Artifact("out", f"https://results.example/{job.id}/0", "image/png", 7, target.index)]
    done = run(fast.complete(Completion(target.id, token, art), NOW))
    after_job, after_chunks = run(_read(fast.store, job.id))
    if stale or _declines(before_job, 1):
        assert done is DECLINED, "declined: nothing may change"
        assert (_job(after_job), [_chunk(c) for c in after_chunks]) == (
            _job(before_job),
            [_chunk(c) for c in before_chunks],
        )
        return
    assert done is not DECLINED
    expected_job, expected_chunks = before_job, before_chunks
    _complete_in_domain(expected_job, expected_chunks[0], NOW)
    assert (done.job_state, done.revision, done.chunk_state) == (
        expected_job.state,
        expected_job.revision,
        expected_chunks[0].state,
    )
    assert _job(after_job) == _job(expected_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in expected_chunks]
    _ended_attempts(run, fast.store, job.id, expected_chunks)
    _no_event(expected_job)
    if expected_chunks[0].state == ChunkState.COMPLETED:
        assert [a.uri for a in after_chunks[0].artifacts] == [art[0].uri]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PENDING), limit=st.integers(1, 4))
def test_a_claim_is_move_chunk_to_processing(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], limit: int
) -> None:
    _check_claim(pg, case, limit)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PENDING, hooked=True), limit=st.integers(1, 4))
def test_a_claim_of_a_job_with_webhooks_is_written_here_only_when_no_progress_event_is_due(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], limit: int
) -> None:
    _check_claim(pg, case, limit)


def _check_claim(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], limit: int
) -> None:
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    got = run(fast.claim(ClaimRequest(WORKER, [job.kind], limit, LEASE), NOW))
    after_job, after_chunks = run(_read(fast.store, job.id))
    expected = _claim_in_domain(before_job, before_chunks, limit, NOW)
    if job.webhook_url and _due(before_job) and expected:
        assert got is DECLINED, "declined: a progress event is due, the general path claims"
        return
    assert got is not DECLINED
    assert [c.id for _, c in got] == [c.id for c in expected]
    assert all(c.lease_token and len(c.lease_token) >= 40 for _, c in got)
    assert _job(after_job) == _job(before_job)
    _no_event(before_job)
    assert [_chunk(c, token=False) for c in after_chunks] == [_chunk(c, token=False) for c in before_chunks]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.one_of(jobs(need=ChunkState.PROCESSING), jobs(need=ChunkState.PROCESSING, hooked=True)),
    limit=st.integers(1, 3),
)
def test_a_completion_with_the_next_claim_is_the_two_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], limit: int
) -> None:
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    target = before_chunks[0]
    both = run(
        fast.complete_and_claim(
            Completion(target.id, str(target.lease_token), []),
            ClaimRequest(WORKER, [job.kind], limit, LEASE),
            NOW,
        )
    )
    if _declines(before_job, 1):
        assert both is DECLINED, "declined: a webhook event to write"
        after_job, after_chunks = run(_read(fast.store, job.id))
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    assert both is not DECLINED
    done, claims = both
    after_job, after_chunks = run(_read(fast.store, job.id))
    # The completion, then (a change of its own) the claim that sees it.
    _complete_in_domain(before_job, before_chunks[0], NOW)
    before_job.bumped = False
    expected = _claim_in_domain(before_job, before_chunks, limit, NOW)
    assert claims is not DECLINED and [c.id for _, c in claims] == [c.id for c in expected]
    assert done.revision == before_job.revision - (1 if expected else 0)
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c, token=False) for c in after_chunks] == [_chunk(c, token=False) for c in before_chunks]
    _ended_attempts(run, fast.store, job.id, before_chunks)
    _no_event(before_job)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PROCESSING), stale=st.integers(0, 6))
def test_completions_in_one_flush_are_each_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], stale: int
) -> None:
    """Every running chunk of a job completed at once: one flush (store/batch/), and the job and its
    chunks as completing them one after another, in index order, leaves them (each completion a change
    of its own: a revision each). One completion with a stale token is refused alone."""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    running = [c for c in before_chunks if c.state == ChunkState.PROCESSING]
    refused = running[stale % len(running)].id if stale and len(running) > 1 else None
    flushes = fast.group.flushes

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(
                fast.complete(Completion(c.id, "stale" if c.id == refused else str(c.lease_token), []), NOW)
                for c in running
            )
        )

    done = run(all_at_once())
    assert fast.group.flushes == flushes + 1, "one flush for all of them"
    after_job, after_chunks = run(_read(fast.store, job.id))
    if _declines(before_job, len(running)):
        assert done == [DECLINED] * len(running), "declined, every one: a webhook event to write"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    for c in running:
        if c.id != refused:
            _complete_in_domain(before_job, c, NOW)
            before_job.bumped = False
    assert [d is DECLINED for d in done] == [c.id == refused for c in running]
    assert {d.revision for d in done if d is not DECLINED} == {before_job.revision}
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in before_chunks]
    _no_event(before_job)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PENDING), limits=st.lists(st.integers(1, 3), min_size=2, max_size=4))
def test_claims_in_one_flush_are_each_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], limits: list[int]
) -> None:
    """Several workers claiming at once: one flush, the ready chunks handed out in claim order to the
    callers in turn, and the job as the claims one after another leave it (a revision per claim)."""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(
                fast.claim(ClaimRequest(f"{WORKER}-{n}", [job.kind], limit, LEASE), NOW)
                for n, limit in enumerate(limits)
            )
        )

    got = run(all_at_once())
    after_job, after_chunks = run(_read(fast.store, job.id))
    if job.webhook_url and _due(before_job):
        assert got == [DECLINED] * len(limits), "declined, every one: a progress event is due"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    for n, limit in enumerate(limits):
        expected = _claim_in_domain(before_job, before_chunks, limit, NOW)
        for c in expected:
            c.worker_id = f"{WORKER}-{n}"
        before_job.bumped = False
        assert got[n] is not DECLINED and [c.id for _, c in got[n]] == [c.id for c in expected]
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c, token=False) for c in after_chunks] == [_chunk(c, token=False) for c in before_chunks]
    _no_event(before_job)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=jobs(need=ChunkState.PENDING, hooked=False),
    cap=st.integers(1, 6),
    limits=st.lists(st.integers(1, 3), min_size=1, max_size=4),
)
def test_claims_of_a_capped_kind_in_one_flush_take_no_more_than_its_room(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], cap: int, limits: list[int]
) -> None:
    """The job's kind has a max_running_chunks: the flush locks the kind's row first (store/caps.py) and
    hands out, in turn, no more of its ready chunks than the cap less the kind's running ones; with no
    room left, it leaves the claims to the general path."""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    _, store = pg
    run(store.write(lambda tx: tx.update_kind(job.kind, paused=None, max_running_chunks=cap, now=NOW)))
    store.caps = Caps()  # looked up afresh by this flush (the kind is new)

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(
                fast.claim(ClaimRequest(f"{WORKER}-{n}", [job.kind], limit, LEASE), NOW)
                for n, limit in enumerate(limits)
            )
        )

    got = run(all_at_once())
    after_job, after_chunks = run(_read(fast.store, job.id))
    ready = [c for c in before_chunks if c.state == ChunkState.PENDING and (c.next_attempt_time or 0) <= NOW]
    room = cap - before_job.summary.processing
    if (job.webhook_url and _due(before_job)) or (ready and room <= 0):
        assert got == [DECLINED] * len(limits), "declined, every one: the general path claims"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    beyond = {c.id for c in ready[max(room, 0) :]}
    allowed = [c for c in before_chunks if c.id not in beyond]
    for n, limit in enumerate(limits):
        expected = _claim_in_domain(before_job, allowed, limit, NOW)
        for c in expected:
            c.worker_id = f"{WORKER}-{n}"
        before_job.bumped = False
        assert got[n] is not DECLINED and [c.id for _, c in got[n]] == [c.id for c in expected]
    assert sum(c.state == ChunkState.PROCESSING for c in after_chunks) <= max(
        cap, before_job.summary.processing
    )
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c, token=False) for c in after_chunks] == [_chunk(c, token=False) for c in before_chunks]


def test_a_capped_claim_counts_the_claims_committed_while_it_waited_for_the_kind(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
) -> None:
    """Another replica's claim holds the kind's row and takes the kind's whole room; the flush's claim
    statement begins meanwhile, waits for that row, and must count the chunks the other claim committed
    (its own snapshot began before that commit, so only a count taken after the lock sees them)."""
    loop, store = pg
    job_id = ids.new_job_id()
    kind = "capped-" + job_id
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
        for i in range(5)
    ]
    job = Job(
        id=job_id,
        owner="prop",
        kind=kind,
        total_items=5,
        chunk_size=1,
        revision=1,
        create_time=NOW,
        update_time=NOW,
        summary=Summary.recount([c.state for c in chunks]),
    )
    loop.run_until_complete(store.write(lambda tx: tx.insert_job(job, chunks)))
    loop.run_until_complete(
        store.write(lambda tx: tx.update_kind(kind, paused=None, max_running_chunks=2, now=NOW))
    )
    store.caps = Caps()  # looked up afresh by the flush (the kind is new)
    url = make_url(store.url)
    assert store.batch is not None
    batch = store.batch

    async def interleaved() -> Any:
        other = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, database=url.database, timeout=10
        )
        watch = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, database=url.database, timeout=10
        )
        try:
            # The other replica: the kind's row, then its room's worth of chunks, not yet committed.
            tx = other.transaction()
            await tx.start()
            await other.execute("SELECT 1 FROM kinds WHERE kind = $1 FOR UPDATE", kind)
            await other.execute(
                "UPDATE chunks SET state = $1, attempt = 1, worker_id = 'other', lease_token = 'x' || idx "
                "WHERE job_id = $2 AND idx < 2",
                int(ChunkState.PROCESSING),
                job_id,
            )
            await other.execute(
                "UPDATE jobs SET n_pending = n_pending - 2, n_processing = n_processing + 2 WHERE id = $1",
                job_id,
            )
            claim = asyncio.ensure_future(batch.claim(ClaimRequest(WORKER, [kind], 3, LEASE), NOW))
            # The flush's statement has begun and waits for a lock the other claim holds.
            deadline = loop.time() + 10
            while not await watch.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%jobpulse_kind_rooms%'"
            ):
                assert loop.time() < deadline, "the claim never waited for the kind's row"
                await asyncio.sleep(0.005)
            await tx.commit()
            got = await claim
            running = await watch.fetchval(
                "SELECT count(*) FROM chunks WHERE kind = $1 AND state = $2", kind, int(ChunkState.PROCESSING)
            )
            return got, running
        finally:
            await other.close()
            await watch.close()

    got, running = loop.run_until_complete(interleaved())
    assert running == 2, f"{running} chunks of a kind capped at 2 running"
    assert got is DECLINED, "no room left: the general path claims (and finds none)"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=jobs(need=ChunkState.PROCESSING),
    limits=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    stale=st.integers(0, 4),
)
def test_completions_with_their_next_claims_in_one_flush_are_each_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
    case: tuple[Job, list[Chunk]],
    limits: list[int],
    stale: int,
) -> None:
    """Several workers each completing a chunk with claim_next at once: one flush, written by one
    statement (store/batch/sql.py ``complete_then_claim``), leaves the job and its chunks as the
    completions one after another and then the claims, to the callers in turn, do. With a stale
    completion among them (``stale`` > 0) that caller gets nothing, and the others still claim after all
    the completions."""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    running = [c for c in before_chunks if c.state == ChunkState.PROCESSING][: len(limits)]
    callers = list(zip(running, limits, strict=False))
    refused = running[stale % len(running)].id if stale else None
    flushes = fast.group.flushes

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(
            *(
                fast.complete_and_claim(
                    Completion(c.id, "stale" if c.id == refused else str(c.lease_token), []),
                    ClaimRequest(f"{WORKER}-{n}", [job.kind], limit, LEASE),
                    NOW,
                )
                for n, (c, limit) in enumerate(callers)
            )
        )

    got = run(all_at_once())
    after_job, after_chunks = run(_read(fast.store, job.id))
    if _declines(before_job, len(callers)):
        assert got == [DECLINED] * len(callers), "declined, every one: a webhook event to write"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    if refused is None:
        assert fast.group.flushes == flushes + 1, "one statement for the completions and the claims"
    for c, _ in callers:
        if c.id != refused:
            _complete_in_domain(before_job, c, NOW)
            before_job.bumped = False
    completed_at = before_job.revision
    for n, (c, limit) in enumerate(callers):
        if c.id == refused:
            assert got[n] is DECLINED
            continue
        expected = _claim_in_domain(before_job, before_chunks, limit, NOW)
        for e in expected:
            e.worker_id = f"{WORKER}-{n}"
        before_job.bumped = False
        done, claims = got[n]
        assert done.revision == completed_at
        assert claims is not DECLINED and [x.id for _, x in claims] == [e.id for e in expected]
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c, token=False) for c in after_chunks] == [_chunk(c, token=False) for c in before_chunks]
    _no_event(before_job)


def _report_in_domain(
    job: Job, chunk: Chunk, now: int, items: int, stage: str, message: str, ext: str, lease_us: int
) -> None:
    """What WorkerService.report_progress does on the general path to a leased chunk."""
    if lease_us:
        chunk.lease_duration = lease_us
    chunk.lease_expire_time = job.lease_end(chunk, now, chunk.lease_duration or lease_us or 60_000_000)
    if ext:
        chunk.external_task_id = ext
    if stage:
        job.stage = chunk.stage = stage
    if message:
        job.message = chunk.message = message
    job.move_chunk(chunk, ChunkState.PROCESSING, now, items_done=max(items, chunk.items_done))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.one_of(jobs(need=ChunkState.PROCESSING), jobs(need=ChunkState.PROCESSING, hooked=True)),
    stale=st.booleans(),
    items=st.integers(0, 6),
    stage=st.sampled_from(["", "resize"]),
    message=st.sampled_from(["", "half way"]),
    ext=st.sampled_from(["", "task-9"]),
    lease=st.sampled_from([0, 30_000_000]),
)
def test_a_progress_report_is_move_chunk_with_its_items_and_lease(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
    case: tuple[Job, list[Chunk]],
    stale: bool,
    items: int,
    stage: str,
    message: str,
    ext: str,
    lease: int,
) -> None:
    """A heartbeat as report_progress makes it: items (never fewer), the lease extended from now, the
    stage and message, a revision. It declines (nothing changed) for a lease not current, items past the
    chunk's count, or a job.progress event due."""
    _check_report(pg, case, stale, items, stage, message, ext, lease)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PROCESSING, hooked=True), items=st.integers(0, 1))
def test_a_progress_report_of_a_job_with_webhooks_is_written_here_only_when_no_progress_event_is_due(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], items: int
) -> None:
    _check_report(pg, case, False, items, "", "", "", 0)


def _check_report(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
    case: tuple[Job, list[Chunk]],
    stale: bool,
    items: int,
    stage: str,
    message: str,
    ext: str,
    lease: int,
) -> None:
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    target = before_chunks[0]
    token = "not-the-lease" if stale else str(target.lease_token)
    got = run(
        fast.report(
            ProgressReport(
                target.id,
                token,
                items_done=items,
                stage=stage,
                message=message,
                external_task_id=ext,
                lease_us=lease,
            ),
            NOW,
        )
    )
    after_job, after_chunks = run(_read(fast.store, job.id))
    if stale or items > target.item_count or (job.webhook_url and _due(before_job)):
        assert got is DECLINED, "declined: nothing may change"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    _report_in_domain(before_job, before_chunks[0], NOW, items, stage, message, ext, lease)
    assert got == (before_job.cancel_requested, before_chunks[0].lease_expire_time)
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in before_chunks]
    _no_event(before_job)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=jobs(need=ChunkState.PROCESSING), stale=st.integers(0, 6), again=st.booleans())
def test_progress_reports_in_one_flush_are_each_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]], stale: int, again: bool
) -> None:
    """Every running chunk of a job reporting at once: one flush, leaving the job and its chunks as the
    reports one after another do (a revision each, the last stage given stays). One with a stale token
    is refused alone; a second report of the same chunk (``again``) waits for the next flush."""
    case[0].webhook_url = ""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    running = [c for c in before_chunks if c.state == ChunkState.PROCESSING]
    refused = running[stale % len(running)].id if stale and len(running) > 1 else None
    twice = running[-1] if again else None
    flushes = fast.group.flushes

    def report(c: Chunk, n: int) -> Awaitable[tuple[bool, int] | Declined]:
        token = "stale" if c.id == refused else str(c.lease_token)
        return fast.report(ProgressReport(c.id, token, items_done=1, stage=f"stage {n}"), NOW)

    async def all_at_once() -> list[Any]:
        more = [report(twice, len(running))] if twice is not None else []
        return await asyncio.gather(*(report(c, n) for n, c in enumerate(running)), *more)

    got = run(all_at_once())
    assert fast.group.flushes == flushes + (2 if twice is not None else 1)
    after_job, after_chunks = run(_read(fast.store, job.id))
    order = [(c, n) for n, c in enumerate(running) if c.id != refused]
    if twice is not None and twice.id != refused:
        order.append((twice, len(running)))
    for c, n in order:
        _report_in_domain(before_job, c, NOW, 1, f"stage {n}", "", "", 0)
        before_job.bumped = False
    assert [g is DECLINED for g in got[: len(running)]] == [c.id == refused for c in running]
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in before_chunks]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=jobs(need=ChunkState.PROCESSING).filter(lambda c: not (c[0].webhook_url or c[0].cancel_requested))
)
def test_each_flush_notice_begins_as_the_listener_knows_its_own(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore], case: tuple[Job, list[Chunk]]
) -> None:
    """The listener drops this replica's notices by their first bytes, undecoded (events/pg_listener.py):
    every statement of the group commit (a completion, a claim, a completion with its next claim) must
    write them so, or each would be decoded for nothing."""
    run, fast, job, (_, before_chunks) = _seeded(pg, case)
    store = pg[1]
    url = make_url(store.url)
    got: asyncio.Queue[str] = asyncio.Queue()

    async def flushes() -> None:
        conn = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, database=url.database, timeout=10
        )
        try:
            await conn.add_listener(CHANNEL, lambda *args: got.put_nowait(args[-1]))
            target = before_chunks[0]
            ask = ClaimRequest(WORKER, [job.kind], 1, LEASE)
            item = Completion(target.id, str(target.lease_token), [])
            done, _ = await fast.complete_many([item], NOW, ask)
            assert done[0] is not DECLINED, "completed: the job has no webhook and the lease is current"
            await fast.claim(ClaimRequest(WORKER, [job.kind], 2, LEASE), NOW)
            await fast.complete(Completion(target.id, "not-the-lease", []), NOW)  # declined: no notice
            # The completion-and-claim's notice, and the claim's when a chunk was left to claim.
            for _ in range(1 if sum(c.state == ChunkState.PENDING for c in before_chunks) < 2 else 2):
                payload = await asyncio.wait_for(got.get(), 10)
                assert payload.startswith(own_prefixes(store.replica_id)), payload
                assert decode(payload)[0] == store.replica_id
                assert job.id in decode(payload)[1].jobs
        finally:
            await conn.close()

    run(flushes())


# What random.random() gives (the service's jitter): a multiple of 2**-53 in [0, 1).
_JITTER = st.integers(0, 2**53 - 1).map(lambda k: k / 2**53)


def _fail_in_domain(
    job: Job,
    chunk: Chunk,
    now: int,
    reason: str,
    message: str,
    jitter: float,
    base: float,
    cap: float,
    details: str = "",
) -> None:
    """What WorkerService.fail does on the general path to a leased chunk with an attempt left, retried."""
    chunk.error_reason = reason
    chunk.error_message = message
    chunk.error_details = details
    attempt = chunk.attempt - (chunk.max_attempts - job.max_attempts)
    chunk.next_attempt_time = now + int(backoff_seconds(attempt, base, cap, jitter) * 1e6)
    job.move_chunk(chunk, ChunkState.PENDING, now, items_done=0)


def _fail_declines(job: Job, chunk: Chunk) -> bool:
    """Whether a retryable failure of ``chunk`` is left to the general path: no attempt left (it fails for
    good), a cancel asked (it is cancelled), or a job.progress event due."""
    return chunk.attempt >= chunk.max_attempts or job.cancel_requested or bool(job.webhook_url and _due(job))


async def _retry_at(store: SqlStore, chunk_id: str) -> Any:
    async with store.read() as tx:
        return (await tx.conn.fetchrow("SELECT retry_at FROM chunks WHERE id = :id", {"id": chunk_id}))[0]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.one_of(jobs(need=ChunkState.PROCESSING), jobs(need=ChunkState.PROCESSING, hooked=True)),
    stale=st.booleans(),
    jitter=_JITTER,
    backoff=st.sampled_from([(0.0, 0.0), (2.0, 60.0), (0.25, 1.0), (1.5, 3.7), (0.001, 600.0)]),
    message=st.sampled_from(["", "decoder crashed"]),
    details=st.sampled_from(["", "Traceback (most recent call last):\n  ...\nValueError: ünïcode"]),
)
def test_a_retryable_failure_is_move_chunk_to_pending_with_its_backoff(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
    case: tuple[Job, list[Chunk]],
    stale: bool,
    jitter: float,
    backoff: tuple[float, float],
    message: str,
    details: str,
) -> None:
    """A retry as WorkerService.fail makes it: the chunk back to PENDING with no items done, its error, a
    revision, and its next attempt after the backoff of its attempt (counted from the job's last manual
    retry) with this jitter, to the microsecond; it waits out of the claim index (retry_at). It declines
    (nothing changed) for a lease not current, a chunk with no attempt left, a cancel asked, or a
    job.progress event due."""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    target = before_chunks[0]
    token = "not-the-lease" if stale else str(target.lease_token)
    base, cap = backoff
    fast.store.waiting.due = NEVER  # as if nothing waited: the retry must say when the next one is due
    got = run(
        fast.fail(
            Failure(target.id, token, "DECODE_ERROR", message, True, details), NOW, Backoff(base, cap, jitter)
        )
    )
    after_job, after_chunks = run(_read(fast.store, job.id))
    if stale or _fail_declines(before_job, target):
        assert got is DECLINED, "declined: nothing may change"
        assert (_job(after_job), after_chunks) == (_job(before_job), before_chunks)
        return
    _fail_in_domain(before_job, before_chunks[0], NOW, "DECODE_ERROR", message, jitter, base, cap, details)
    assert got is not DECLINED
    assert (got.next_attempt_time, got.revision) == (before_chunks[0].next_attempt_time, before_job.revision)
    assert (got.index, got.attempt, got.kind) == (target.index, target.attempt, job.kind)
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in before_chunks]
    _ended_attempts(run, fast.store, job.id, before_chunks)
    assert run(_retry_at(fast.store, target.id)) == before_chunks[0].next_attempt_time
    assert fast.store.waiting.due == before_chunks[0].next_attempt_time  # the next claims look then
    _no_event(before_job)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=jobs(need=ChunkState.PROCESSING).filter(lambda c: not c[0].cancel_requested),
    stale=st.integers(0, 6),
    again=st.booleans(),
    jitters=st.lists(_JITTER, min_size=8, max_size=8),
)
def test_failures_in_one_flush_are_each_in_turn(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
    case: tuple[Job, list[Chunk]],
    stale: int,
    again: bool,
    jitters: list[float],
) -> None:
    """Every running chunk of a job failing at once: one flush, leaving the job and its chunks as the
    failures one after another do (a revision each). One with a stale token is refused alone, as is one
    with no attempt left; a second failure of the same chunk (``again``) waits for the next flush, where
    its lease is found spent."""
    case[0].webhook_url = ""
    run, fast, job, (before_job, before_chunks) = _seeded(pg, case)
    running = [c for c in before_chunks if c.state == ChunkState.PROCESSING]
    refused = running[stale % len(running)].id if stale and len(running) > 1 else None
    twice = running[-1] if again else None
    flushes = fast.group.flushes

    def fail(c: Chunk, n: int) -> Awaitable[Any]:
        token = "stale" if c.id == refused else str(c.lease_token)
        return fast.fail(Failure(c.id, token, f"E{n}", "", True), NOW, Backoff(2.0, 60.0, jitters[n]))

    async def all_at_once() -> list[Any]:
        more = [fail(twice, len(running))] if twice is not None else []
        return await asyncio.gather(*(fail(c, n) for n, c in enumerate(running)), *more)

    got = run(all_at_once())
    assert fast.group.flushes == flushes + (2 if twice is not None else 1)
    after_job, after_chunks = run(_read(fast.store, job.id))
    retried = []
    for n, c in enumerate(running):
        if c.id != refused and c.attempt < c.max_attempts:
            _fail_in_domain(before_job, c, NOW, f"E{n}", "", jitters[n], 2.0, 60.0)
            before_job.bumped = False
            retried.append(c.id)
    assert [g is not DECLINED for g in got[: len(running)]] == [c.id in retried for c in running]
    if twice is not None:
        assert got[-1] is DECLINED, "the second failure of a chunk finds its lease spent"
    assert _job(after_job) == _job(before_job)
    assert [_chunk(c) for c in after_chunks] == [_chunk(c) for c in before_chunks]


def test_a_retry_notice_says_when_the_retry_comes_due(
    pg: tuple[asyncio.AbstractEventLoop, SqlStore],
) -> None:
    """Another replica's claims waiting for work wake when a retry comes due: the flush's notice carries
    the backoff ('l', seconds from now), as domain/changes.py encode writes it for the general path; and
    this replica's own change hub hears it at once."""
    loop, store = pg
    job_id = ids.new_job_id()
    chunk = Chunk(
        id=ids.chunk_id(job_id, 0),
        job_id=job_id,
        index=0,
        state=ChunkState.PROCESSING,
        item_start=0,
        item_count=1,
        items_done=0,
        attempt=1,
        max_attempts=3,
        worker_id=WORKER,
        lease_token="tok",
        lease_expire_time=NOW + LEASE,
        lease_duration=LEASE,
        revision=1,
        priority=0,
        kind="prop-notice",
        start_time=NOW - 10,
    )
    job = Job(
        id=job_id,
        owner="prop",
        kind="prop-notice",
        priority=0,
        total_items=1,
        chunk_size=1,
        max_attempts=3,
        revision=1,
        summary=Summary.recount([ChunkState.PROCESSING]),
        state=JobState.PROCESSING,
        create_time=NOW - 100,
        update_time=NOW - 1,
        start_time=NOW - 50,
    )
    url = make_url(store.url)
    got: asyncio.Queue[str] = asyncio.Queue()
    published: list[Any] = []

    async def fail_once() -> Any:
        await store.write(lambda tx: tx.insert_job(job, [chunk]))
        conn = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, database=url.database, timeout=10
        )
        real_publish = store.publish
        store.publish = lambda changes: (published.append(changes), real_publish(changes))  # type: ignore[method-assign]
        try:
            await conn.add_listener(CHANNEL, lambda *args: got.put_nowait(args[-1]))
            assert store.batch is not None
            done = await store.batch.fail(
                Failure(chunk.id, "tok", "E", "", True), NOW, Backoff(2.0, 60.0, 0.5)
            )
            return done, await asyncio.wait_for(got.get(), 10)
        finally:
            store.publish = real_publish  # type: ignore[method-assign]
            await conn.close()

    done, payload = loop.run_until_complete(fail_once())
    assert done is not DECLINED
    # Attempt 1 of 3, base 2 s: ceiling 2 s, jitter 0.5 -> 1.5 s.
    assert done.next_attempt_time == NOW + 1_500_000
    assert payload.startswith(own_prefixes(store.replica_id)), payload
    sender, changes = decode(payload)
    assert sender == store.replica_id
    assert changes.jobs == {job_id: done.revision}
    assert changes.work_later == [1.5]
    assert [(p.jobs, p.work_later) for p in published] == [({job_id: done.revision}, [1.5])]
