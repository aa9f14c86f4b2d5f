"""The encoded-job cache: answers equal to a fresh encoding, bounded in size, ETA never cached."""

from __future__ import annotations

import tracemalloc

import pytest

from jobpulse.v1 import job_pb2
from jobpulse_server.api.encoded_jobs import EncodedJobs
from jobpulse_server.domain.model import Chunk, ChunkState, Job, JobHead, JobState
from jobpulse_server.services.jobs import JobPage
from jobpulse_server.wire.convert import job_pb

NOW = 1_700_000_100_000_000


def _answer(cache: EncodedJobs, page: JobPage, full: bool, now: int) -> job_pb2.Job:
    """What GetJob sends: the cache's bytes (with this moment's ETA appended) parsed as a Job."""
    return job_pb2.Job.FromString(cache.job_bytes(page, full, now))


def _page(revision: int = 3, n: int = 3) -> JobPage:
    job = Job(id="J1", owner="o", kind="k", total_items=10 * n, revision=revision, state=JobState.PROCESSING)
    job.start_time = NOW - 10_000_000
    job.items_done = 5
    chunks = [
        Chunk(id=f"J1-{i}", job_id="J1", index=i, state=ChunkState.PENDING, item_start=10 * i, item_count=10)
        for i in range(n)
    ]
    return JobPage(job, chunks)


def test_a_cached_answer_equals_a_fresh_one_with_a_fresh_eta() -> None:
    cache = EncodedJobs()
    page = _page()
    first = _answer(cache, page, True, NOW)
    assert first == job_pb(page.job, NOW, page.chunks)
    later = NOW + 5_000_000
    assert cache.held_revision(page.job) == page.job.revision
    again = _answer(cache, JobPage(page.job, [], delta_after=page.job.revision), True, later)  # nothing read
    assert again == job_pb(page.job, later, page.chunks)
    assert again.progress.eta != first.progress.eta  # the ETA is computed for each answer
    assert (cache.hits, cache.misses) == (1, 1)


def test_views_and_revisions_are_kept_apart() -> None:
    cache = EncodedJobs()
    page = _page()
    _answer(cache, page, True, NOW)
    basic = _answer(cache, JobPage(page.job), False, NOW)
    assert len(basic.chunks) == 0
    newer = _page(revision=4)
    assert cache.held_revision(newer.job) == 3  # only the chunks changed since 3 need reading
    with pytest.raises(LookupError):  # a FULL answer that read nothing, with nothing kept for it
        _answer(cache, JobPage(newer.job, [], delta_after=4), True, NOW)


def _job_page(job_id: str, revision: int = 3, n: int = 3) -> JobPage:
    page = _page(revision, n)
    page.job.id = job_id
    for c in page.chunks or []:
        c.job_id, c.id = job_id, f"{job_id}-{c.index}"
    return page


def test_the_cache_stays_within_its_budget_and_drops_the_least_recently_used() -> None:
    cache = EncodedJobs(max_bytes=40_000)
    for n in range(100):
        _answer(cache, _job_page(f"J{n:03d}"), True, NOW)
        assert cache.bytes_held <= 40_000
    assert cache.evictions > 0
    # Whole messages go first (rebuilt cheaply from the chunk blocks), then the oldest blocks.
    assert "J099" in cache._blocks.entries and "J000" not in cache._blocks.entries


def test_a_newer_revision_replaces_the_older_at_once() -> None:
    cache = EncodedJobs()
    for revision in range(1, 50):
        _answer(cache, _page(revision=revision), True, NOW)
        _answer(cache, JobPage(_page(revision=revision).job), False, NOW)
    # One message per view and one chunk block for the job, whatever the revisions seen.
    assert cache.entries == 3
    assert set(cache._messages.entries) == {("J1", 49, True), ("J1", 49, False)}
    held = cache.bytes_held
    _answer(cache, _page(revision=48), True, NOW)  # a read from before the last change: not kept
    assert ("J1", 48, True) not in cache._messages.entries and cache.bytes_held == held


def test_entries_are_counted_at_what_they_really_cost() -> None:
    """The budget is memory, not payload: what the cache says it holds is within a fifth of what its
    entries take (tracemalloc), and far more than their payloads' lengths."""
    pages = [_job_page(f"01M{n:023d}", revision=7, n=20) for n in range(2_000)]
    cache = EncodedJobs(max_bytes=1 << 30)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        payload = sum(len(cache.job_bytes(page, True, NOW)) for page in pages)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    took = after - before
    assert abs(cache.bytes_held - took) <= took / 5, (cache.bytes_held, took)
    assert cache.bytes_held > payload * 1.5, (cache.bytes_held, payload)


def test_a_budget_of_zero_keeps_nothing_and_still_answers() -> None:
    cache = EncodedJobs(max_bytes=0)
    page = _page()
    assert _answer(cache, page, True, NOW) == job_pb(page.job, NOW, page.chunks)
    assert (cache.entries, cache.bytes_held, cache.held_revision(page.job)) == (0, 0, None)


def _head(job: Job) -> JobHead:
    return JobHead(
        job.id,
        job.revision,
        job.state,
        job.start_time,
        job.items_done,
        job.total_items,
        job.update_time,
        job.priority,
        job.schedule_time,
        job.n_held,
        job.summary.pending,
        job.summary.processing,
    )


def test_a_head_is_answered_from_the_kept_basic_encoding_with_the_eta_of_its_moment() -> None:
    cache = EncodedJobs()
    page = _page()
    with pytest.raises(LookupError):  # nothing kept yet
        cache.kept_bytes(_head(page.job), NOW)
    _answer(cache, JobPage(page.job), False, NOW)
    later = NOW + 7_000_000
    kept = job_pb2.Job.FromString(cache.kept_bytes(_head(page.job), later))
    assert kept == job_pb(page.job, later)
    assert kept.progress.eta != _answer(cache, JobPage(page.job), False, NOW).progress.eta
    newer = _page(revision=4)
    with pytest.raises(LookupError):  # another revision is not the one kept
        cache.kept_bytes(_head(newer.job), NOW)
    full_only = EncodedJobs()
    _answer(full_only, page, True, NOW)
    with pytest.raises(LookupError):  # nor is the FULL view
        full_only.kept_bytes(_head(page.job), NOW)
    assert cache.held_revision(_head(page.job), full=False) == page.job.revision
    assert cache.held_revision(_head(newer.job), full=False) is None


def test_eta_is_absent_when_it_cannot_be_estimated() -> None:
    cache = EncodedJobs()
    page = _page()
    page.job.start_time = None
    msg = _answer(cache, page, False, NOW)
    assert not msg.progress.HasField("eta")
    assert isinstance(msg, job_pb2.Job)


def test_a_newer_revision_reencodes_only_the_chunks_that_changed() -> None:
    cache = EncodedJobs()
    page = _page(revision=3, n=5)
    _answer(cache, page, True, NOW)
    # Revision 4 changed chunk 2 only: the answer must equal a full fresh encoding.
    newer = _page(revision=4, n=5)
    newer.chunks[2].state = ChunkState.COMPLETED  # type: ignore[index]
    newer.chunks[2].items_done = 10  # type: ignore[index]
    newer.chunks[2].revision = 4  # type: ignore[index]
    assert cache.held_revision(newer.job) == 3
    delta = JobPage(newer.job, [newer.chunks[2]], delta_after=3)  # type: ignore[index]
    assert _answer(cache, delta, True, NOW) == job_pb(newer.job, NOW, newer.chunks)
    # A delta against a revision no longer kept is refused, never answered wrong.
    with pytest.raises(LookupError):
        _answer(cache, JobPage(_page(revision=6, n=5).job, [], delta_after=3), True, NOW)


def test_entries_unread_for_idle_seconds_are_dropped_and_read_ones_stay() -> None:
    """The cache follows what is being read: an entry read again stays, one left unread past
    ``idle_seconds`` goes when the next entry is kept, and its bytes with it."""
    clock = [1000.0]
    cache = EncodedJobs(idle_seconds=60, clock=lambda: clock[0])
    hot, cold = _job_page("HOT"), _job_page("COLD")
    _answer(cache, hot, True, NOW)
    _answer(cache, cold, True, NOW)
    both = cache.bytes_held
    for _ in range(3):  # the hot job is read every 30 s, the cold one never again
        clock[0] += 30
        _answer(cache, JobPage(hot.job, [], delta_after=hot.job.revision), True, NOW)
    assert cache.expired == 0, "nothing is dropped before the next entry is kept"
    clock[0] += 1
    _answer(cache, _job_page("WARM"), True, NOW)
    assert ("COLD", 3, True) not in cache._messages.entries and "COLD" not in cache._blocks.entries
    assert ("HOT", 3, True) in cache._messages.entries and "HOT" in cache._blocks.entries
    assert cache.expired == 2  # COLD's message and its chunk block
    assert cache.bytes_held == both, "COLD's bytes went, WARM's came: the same shape"
    assert cache.evictions == 0


def test_idle_seconds_zero_keeps_entries_until_the_budget_needs_room() -> None:
    clock = [0.0]
    cache = EncodedJobs(idle_seconds=0, clock=lambda: clock[0])
    _answer(cache, _job_page("OLD"), True, NOW)
    clock[0] += 86_400
    _answer(cache, _job_page("NEW"), True, NOW)
    assert "OLD" in cache._blocks.entries and cache.expired == 0
