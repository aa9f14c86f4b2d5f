"""The encoded-job cache: answers equal to a fresh encoding, bounded in size, ETA never cached."""

from __future__ import annotations

import pytest

from jobpulse.v1 import job_pb2
from jobpulse_server.api.encoded_jobs import EncodedJobs
from jobpulse_server.domain.model import Chunk, ChunkState, Job, JobState
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


def test_the_cache_stays_within_its_byte_budget() -> None:
    size = len(job_pb(_page().job, None, _page().chunks).SerializeToString())
    cache = EncodedJobs(max_bytes=size * 10)
    for revision in range(1, 50):
        _answer(cache, _page(revision=revision), True, NOW)
    assert cache.bytes_held <= size * 10
    assert (_page().job.id, 49, True) in cache._messages.entries  # the newest stay
    assert (_page().job.id, 1, True) not in cache._messages.entries  # the oldest went first


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
