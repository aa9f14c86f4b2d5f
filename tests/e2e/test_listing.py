"""End-to-end: ListJobs (order, filters, keyset pages, errors) and ListJobChunks through the sync SDK."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from support.e2e import claim_one, run_all

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2


def _ids(jobs: Any) -> list[str]:
    return [j.id for j in jobs]


def _all_pages(client: jobpulse.Client, page_size: int, **filters: Any) -> tuple[list[str], list[Any]]:
    """Fetches every page by hand; returns the ids in order and the raw responses."""
    ids: list[str] = []
    pages = []
    token = ""
    while True:
        page = client.list_jobs_page(page_size=page_size, page_token=token, **filters)
        pages.append(page)
        ids.extend(_ids(page.jobs))
        token = page.next_page_token
        if not token:
            return ids, pages
        assert len(pages) < 1000, "paging does not end"


@pytest.fixture
def catalog(client: jobpulse.Client) -> dict[str, job_pb2.Job]:
    """Seven jobs with varied kinds, priorities, names and labels, created in this order."""
    specs = [
        ("a", "thumbnails", 5, "Nightly THUMBNAILS", {"team": "media", "env": "prod"}),
        ("b", "thumbnails", 9, "thumbnail refresh", {"team": "media", "env": "dev"}),
        ("c", "transcribe", 1, "Podcast transcripts", {"team": "audio", "env": "prod"}),
        ("d", "transcribe", 7, "Meeting notes", {"team": "audio"}),
        ("e", "thumbnails", 0, "Archive thumbs", {}),
        ("f", "index", 10, "Search index rebuild", {"team": "search", "env": "prod"}),
        ("g", "index", 3, "Thumbnail index", {"team": "search", "env": "prod"}),
    ]
    jobs = {}
    for key, kind, priority, name, labels in specs:
        jobs[key] = client.create_job(
            kind, 2, chunk_size=1, priority=priority, display_name=name, labels=labels
        )
    return jobs


def test_default_order_is_newest_first(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    page = client.list_jobs_page()
    assert _ids(page.jobs) == [catalog[k].id for k in "gfedcba"]
    assert page.total_size == 7
    assert page.next_page_token == ""
    assert all(len(j.chunks) == 0 and j.chunks_summary.total == 2 for j in page.jobs)
    assert _ids(client.list_jobs_page(order_by="create_time desc").jobs) == _ids(page.jobs)
    full = client.list_jobs_page(view="full", page_size=1)
    assert [c.index for c in full.jobs[0].chunks] == [0, 1]


def test_order_by_create_time_ascending(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    page = client.list_jobs_page(order_by="create_time")
    assert _ids(page.jobs) == [catalog[k].id for k in "abcdefg"]


def test_order_by_priority_desc(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    page = client.list_jobs_page(order_by="priority desc")
    assert [j.priority for j in page.jobs] == [10, 9, 7, 5, 3, 1, 0]
    ids, _ = _all_pages(client, 3, order_by="priority desc")
    assert ids == _ids(page.jobs)


def test_order_by_update_time_desc(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    client.update_job(catalog["c"].id, display_name="Podcast transcripts v2")
    run_all(client, "index")

    page = client.list_jobs_page(order_by="update_time desc")

    ids = _ids(page.jobs)
    assert set(ids[:2]) == {catalog["f"].id, catalog["g"].id}
    assert ids[2] == catalog["c"].id
    times = [j.update_time.ToNanoseconds() for j in page.jobs]
    assert times == sorted(times, reverse=True)
    paged, _ = _all_pages(client, 2, order_by="update_time desc")
    assert paged == ids


# ListJobsRequest.order_by: each sortable field ascending and descending.
ORDERS = ("create_time desc", "create_time", "update_time desc", "update_time", "priority desc", "priority")


def _sort_key(job: job_pb2.Job, order_by: str) -> tuple[Any, ...]:
    """What ``order_by`` sorts by; ties break by id (create_time order is id order)."""
    field = order_by.split()[0]
    if field == "priority":
        return (job.priority, job.id)
    if field == "update_time":
        return (job.update_time.ToMicroseconds(), job.id)
    return (job.id,)


@pytest.fixture
def tied(client: jobpulse.Client) -> list[job_pb2.Job]:
    """Eleven jobs, ties in priority and in update_time: one ClaimChunks call takes the single
    chunk of four "sort" jobs and so updates all four at the same instant. Returned as they
    stand afterwards."""
    specs = [
        ("sort", 5, "a"),
        ("sort", 5, "b"),
        ("sort", 3, "a"),
        ("sort", 8, "b"),
        ("sort", 5, "a"),
        ("other", 5, "b"),
        ("sort", 3, "b"),
        ("sort", 8, "a"),
        ("other", 3, "a"),
        ("sort", 0, "a"),
        ("other", 5, "a"),
    ]
    made = [
        client.create_job(kind, 1, priority=p, display_name=f"tied {n}", labels={"team": team})
        for n, (kind, p, team) in enumerate(specs)
    ]
    assert len(client.claim_chunks("w-tie", kinds=["sort"], max_chunks=4)) == 4
    jobs = [client.get_job(j.id, view="basic") for j in made]
    times = [j.update_time.ToMicroseconds() for j in jobs if j.state == job_pb2.JOB_STATE_PROCESSING]
    assert len(times) == 4 and len(set(times)) == 1, "one claim should update its four jobs at one instant"
    return jobs


def test_every_order_pages_to_the_fully_sorted_list(client: jobpulse.Client, tied: list[job_pb2.Job]) -> None:
    def matches(job: job_pb2.Job, filters: dict[str, Any]) -> bool:
        return (
            job.kind == filters.get("kind", job.kind)
            and job.priority >= filters.get("min_priority", 0)
            and job.priority <= filters.get("max_priority", 10)
            and all(job.labels.get(k) == v for k, v in filters.get("labels", {}).items())
            and ("states" not in filters or job.state in filters["states"])
            and filters.get("search", "").lower() in job.display_name.lower()
        )

    combined: list[dict[str, Any]] = [
        {},
        {"kind": "sort", "min_priority": 3, "max_priority": 8},
        {"labels": {"team": "a"}, "states": [job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_PROCESSING]},
        {"kind": "sort", "min_priority": 5, "states": [job_pb2.JOB_STATE_PROCESSING], "search": "TIED"},
    ]
    for order_by in ORDERS:
        for filters in combined:
            wanted = sorted(
                (j for j in tied if matches(j, filters)),
                key=lambda j: _sort_key(j, order_by),
                reverse=order_by.endswith(" desc"),
            )
            assert len(wanted) >= 3, filters  # more than one page at every page size below
            for page_size in (2, 3):
                ids, pages = _all_pages(client, page_size, order_by=order_by, **filters)
                where = f"{order_by!r}, {filters}, page_size {page_size}"
                assert ids == [j.id for j in wanted], where
                assert all(p.total_size == len(wanted) for p in pages), where
                assert [len(p.jobs) for p in pages[:-1]] == [page_size] * (len(pages) - 1), where


def test_order_by_is_case_and_space_insensitive_and_takes_asc(
    client: jobpulse.Client, tied: list[job_pb2.Job]
) -> None:
    for field in ("create_time", "update_time", "priority"):
        plain = _ids(client.list_jobs_page(order_by=field).jobs)
        assert _ids(client.list_jobs_page(order_by=f"  {field.upper()}   ASC ").jobs) == plain
        assert _ids(client.list_jobs_page(order_by=f"{field} Desc").jobs) == plain[::-1]


def test_unknown_order_by_is_invalid_argument_naming_order_by(client: jobpulse.Client) -> None:
    client.create_job("k", 1)
    with pytest.raises(errors.InvalidArgument) as info:
        client.list_jobs_page(order_by="display_name desc")
    violations = dict(info.value.field_violations)
    assert set(violations) == {"order_by"}
    assert all(repr(order) in violations["order_by"] for order in ORDERS), violations


def test_filter_by_states(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    client.cancel_job(catalog["a"].id)
    run_all(client, "index")
    claim_one(client, "transcribe")  # d (priority 7) starts processing

    def ids_in(*states: Any) -> set[str]:
        return set(_ids(client.list_jobs_page(states=list(states)).jobs))

    assert ids_in("cancelled") == {catalog["a"].id}
    assert ids_in(job_pb2.JOB_STATE_COMPLETED) == {catalog["f"].id, catalog["g"].id}
    assert ids_in("processing") == {catalog["d"].id}
    assert ids_in("pending") == {catalog[k].id for k in "bce"}
    assert ids_in("cancelled", "completed") == {catalog[k].id for k in "afg"}
    assert client.list_jobs_page(states=["completed"]).total_size == 2


def test_filter_by_kind_and_priority(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    thumbs = client.list_jobs_page(kind="thumbnails")
    assert set(_ids(thumbs.jobs)) == {catalog[k].id for k in "abe"}
    assert thumbs.total_size == 3

    assert set(_ids(client.list_jobs_page(min_priority=7).jobs)) == {catalog[k].id for k in "bdf"}
    assert set(_ids(client.list_jobs_page(max_priority=1).jobs)) == {catalog[k].id for k in "ce"}
    assert set(_ids(client.list_jobs_page(min_priority=3, max_priority=5).jobs)) == {
        catalog[k].id for k in "ag"
    }
    assert set(_ids(client.list_jobs_page(min_priority=5, max_priority=5).jobs)) == {catalog["a"].id}
    assert set(_ids(client.list_jobs_page(kind="transcribe", min_priority=5).jobs)) == {catalog["d"].id}


def test_filter_by_creation_time(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    pivot = catalog["d"].create_time

    after = client.list_jobs_page(created_after=pivot)
    before = client.list_jobs_page(created_before=pivot)

    assert catalog["d"].id in _ids(after.jobs)
    assert catalog["d"].id not in _ids(before.jobs)
    assert set(_ids(after.jobs)) | set(_ids(before.jobs)) == {j.id for j in catalog.values()}
    assert set(_ids(after.jobs)) & set(_ids(before.jobs)) == set()
    assert after.total_size + before.total_size == 7
    both = client.list_jobs_page(created_after=catalog["b"].create_time, created_before=pivot)
    assert set(_ids(both.jobs)) == {catalog["b"].id, catalog["c"].id}


def test_search_is_a_case_insensitive_substring(
    client: jobpulse.Client, catalog: dict[str, job_pb2.Job]
) -> None:
    found = client.list_jobs_page(search="thumbNail")
    assert set(_ids(found.jobs)) == {catalog[k].id for k in "abg"}
    assert found.total_size == 3
    assert _ids(client.list_jobs_page(search="NOTES").jobs) == [catalog["d"].id]
    assert client.list_jobs_page(search="no such name").total_size == 0
    assert client.list_jobs_page(search="%").total_size == 0


def test_labels_must_all_match(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    assert set(_ids(client.list_jobs_page(labels={"team": "media"}).jobs)) == {
        catalog["a"].id,
        catalog["b"].id,
    }
    assert set(_ids(client.list_jobs_page(labels={"env": "prod"}).jobs)) == {catalog[k].id for k in "acfg"}
    assert set(_ids(client.list_jobs_page(labels={"team": "search", "env": "prod"}).jobs)) == {
        catalog["f"].id,
        catalog["g"].id,
    }
    assert _ids(client.list_jobs_page(labels={"team": "media", "env": "prod"}).jobs) == [catalog["a"].id]
    assert client.list_jobs_page(labels={"team": "audio", "env": "dev"}).total_size == 0


def test_paging_by_two_yields_every_job_once(
    client: jobpulse.Client, catalog: dict[str, job_pb2.Job]
) -> None:
    ids, pages = _all_pages(client, 2)

    assert sorted(ids) == sorted(j.id for j in catalog.values())
    assert len(ids) == len(set(ids)) == 7
    assert [len(p.jobs) for p in pages] == [2, 2, 2, 1]
    assert all(p.total_size == 7 for p in pages)

    filtered, fpages = _all_pages(client, 2, kind="thumbnails", order_by="create_time")
    assert filtered == [catalog[k].id for k in "abe"]
    assert all(p.total_size == 3 for p in fpages)

    assert _ids(client.list_jobs(page_size=2)) == [catalog[k].id for k in "gfedcba"]


def test_page_size_above_100_is_lowered_to_100(client: jobpulse.Client) -> None:
    for n in range(105):
        client.create_job("bulk", 1, display_name=f"job {n}")

    page = client.list_jobs_page(page_size=500)
    assert len(page.jobs) == 100
    assert page.next_page_token
    assert page.total_size == 105
    rest = client.list_jobs_page(page_size=500, page_token=page.next_page_token)
    assert len(rest.jobs) == 5
    assert rest.next_page_token == ""
    assert len(client.list_jobs_page().jobs) == 20


def test_invalid_list_arguments_name_the_field(client: jobpulse.Client) -> None:
    client.create_job("k", 1)
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"page_size": -1}, {"page_size"}),
        ({"order_by": "display_name"}, {"order_by"}),
        ({"order_by": "id"}, {"order_by"}),
        ({"order_by": "priority ascending"}, {"order_by"}),
        ({"order_by": "update_time desc desc"}, {"order_by"}),
        ({"order_by": "create_time,priority"}, {"order_by"}),
        ({"min_priority": 8, "max_priority": 2}, {"min_priority", "max_priority"}),
        ({"min_priority": 11}, {"min_priority"}),
        ({"max_priority": -1}, {"max_priority"}),
        (
            {"created_after": "2030-01-02T00:00:00Z", "created_before": "2030-01-01T00:00:00Z"},
            {"created_after", "created_before"},
        ),
    ]
    for kwargs, fields in cases:
        with pytest.raises(errors.InvalidArgument) as info:
            client.list_jobs_page(**kwargs)
        named = {field for field, _ in info.value.field_violations}
        assert named & fields, f"{kwargs}: expected a violation naming {fields}, got {named}"


def test_malformed_page_token_is_invalid(client: jobpulse.Client) -> None:
    client.create_job("k", 1)
    for token in (
        "garbage",
        "bm90IGpzb24",
        "eyJ2IjoxfQ",
        "!!!",
        "eyJ2IjoxLCJ0Ijoiam9icyIsImYiOiJ4IiwiayI6WzFdfQ",
    ):
        with pytest.raises(errors.InvalidArgument) as info:
            client.list_jobs_page(page_token=token)
        assert info.value.reason == "INVALID_PAGE_TOKEN", token


def test_tampered_page_token_is_invalid_not_internal(client: jobpulse.Client) -> None:
    for n in range(3):
        client.create_job("k", 1, display_name=f"j{n}")
    token = client.list_jobs_page(page_size=1).next_page_token
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for key in ([123], [], ["a", "b"], [None], "x"):
        body["k"] = key
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        with pytest.raises(errors.InvalidArgument) as info:
            client.list_jobs_page(page_size=1, page_token=forged)
        assert info.value.reason == "INVALID_PAGE_TOKEN", key


def test_page_token_is_bound_to_its_filters(client: jobpulse.Client, catalog: dict[str, job_pb2.Job]) -> None:
    first = client.list_jobs_page(page_size=1, kind="thumbnails")
    assert first.next_page_token

    for other in (
        {"kind": "index"},
        {"kind": "thumbnails", "min_priority": 1},
        {"kind": "thumbnails", "order_by": "priority desc"},
        {"kind": "thumbnails", "search": "x"},
        {"kind": "thumbnails", "labels": {"team": "media"}},
        {"kind": "thumbnails", "states": ["pending"]},
    ):
        with pytest.raises(errors.InvalidArgument) as info:
            client.list_jobs_page(page_size=1, page_token=first.next_page_token, **other)
        assert info.value.reason == "INVALID_PAGE_TOKEN", other

    same = client.list_jobs_page(page_size=1, kind="thumbnails", page_token=first.next_page_token)
    assert len(same.jobs) == 1


def test_chunk_page_token_is_not_a_job_page_token(client: jobpulse.Client) -> None:
    big = client.create_job("big", 1001, chunk_size=1)
    with pytest.raises(errors.InvalidArgument) as info:
        client.list_jobs_page(page_token=big.chunks_next_page_token)
    assert info.value.reason == "INVALID_PAGE_TOKEN"


def test_paging_is_stable_under_concurrent_inserts(client: jobpulse.Client) -> None:
    original = [client.create_job("k", 1, priority=p % 11, display_name=f"o{p}").id for p in range(9)]
    inserted = 0
    for order_by in ORDERS:
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = client.list_jobs_page(page_size=2, page_token=token, order_by=order_by)
            seen.extend(_ids(page.jobs))
            token = page.next_page_token
            pages += 1
            if not token:
                break
            if pages <= 4:  # insert between the first pages only, so that paging ends
                for _ in range(2):
                    client.create_job("k", 1, priority=5, display_name=f"new{inserted}")
                    inserted += 1
            assert pages < 100, "paging does not end"

        assert len(seen) == len(set(seen)), f"{order_by}: a job was returned twice"
        assert set(original) <= set(seen), f"{order_by}: a job that existed at the start was skipped"


# --- ListJobChunks -----------------------------------------------------------------------------------


def test_list_job_chunks_pages_in_index_order(client: jobpulse.Client, job_stub: Any) -> None:
    job = client.create_job("k", 250, chunk_size=1)

    chunks = list(client.list_job_chunks(job.id, page_size=100))
    assert [c.index for c in chunks] == list(range(250))
    assert all(c.job_id == job.id for c in chunks)

    sizes = []
    token = ""
    while True:
        page = job_stub.ListJobChunks(
            job_service_pb2.ListJobChunksRequest(job_id=job.id, page_size=100, page_token=token)
        )
        sizes.append(len(page.chunks))
        assert page.total_size == 250
        token = page.next_page_token
        if not token:
            break
    assert sizes == [100, 100, 50]
    default_page = job_stub.ListJobChunks(job_service_pb2.ListJobChunksRequest(job_id=job.id))
    assert len(default_page.chunks) == 100


def test_list_job_chunks_filters_by_state(client: jobpulse.Client, job_stub: Any) -> None:
    job = client.create_job("k", 6, chunk_size=1)
    claims = client.claim_chunks("w1", kinds=["k"], max_chunks=3)
    client.complete_chunk(claims[0].chunk.id, claims[0].lease_token)
    client.complete_chunk(claims[1].chunk.id, claims[1].lease_token)

    def indexes(*states: Any) -> list[int]:
        return [c.index for c in client.list_job_chunks(job.id, states=list(states))]

    assert indexes("completed") == [0, 1]
    assert indexes(job_pb2.CHUNK_STATE_PROCESSING) == [2]
    assert indexes("pending") == [3, 4, 5]
    assert indexes("pending", "completed") == [0, 1, 3, 4, 5]
    assert indexes("failed") == []

    page = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(job_id=job.id, states=[job_pb2.CHUNK_STATE_PENDING], page_size=2)
    )
    assert page.total_size == 3
    assert [c.index for c in page.chunks] == [3, 4]
    assert page.next_page_token
    rest = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(
            job_id=job.id, states=[job_pb2.CHUNK_STATE_PENDING], page_size=2, page_token=page.next_page_token
        )
    )
    assert [c.index for c in rest.chunks] == [5]
    assert rest.next_page_token == ""


def test_list_chunks_page_token_is_bound_to_its_filters(client: jobpulse.Client, job_stub: Any) -> None:
    job = client.create_job("k", 5, chunk_size=1)
    page = job_stub.ListJobChunks(job_service_pb2.ListJobChunksRequest(job_id=job.id, page_size=2))
    with pytest.raises(errors.InvalidArgument) as info:
        list(client.list_job_chunks(job.id, states=["pending"], page_token=page.next_page_token))
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(errors.InvalidArgument) as info:
        list(client.list_job_chunks(job.id, page_token="not-a-token"))
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    other = client.create_job("k", 5, chunk_size=1)
    with pytest.raises(errors.InvalidArgument) as info:
        list(client.list_job_chunks(other.id, page_token=page.next_page_token))
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(errors.InvalidArgument) as info:
        list(client.list_job_chunks(job.id, page_size=-1))
    assert "page_size" in {field for field, _ in info.value.field_violations}
    assert len(list(client.list_job_chunks(job.id, page_token=page.next_page_token))) == 3


def test_cli_list_pages_through_every_job_with_its_page_token(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    made = {client.create_job("cli-pages", 1, priority=p % 3 + 4).id for p in range(5)}
    client.create_job("other-kind", 1)
    seen: list[str] = []
    token = ""
    while True:
        argv = ["--target", server.address, "--json", "list", "--kind", "cli-pages", "--limit", "2"]
        argv += ["--min-priority", "4", "--order-by", "priority desc"]
        assert cli.main([*argv, "--page-token", token] if token else argv) == 0
        page = json.loads(capsys.readouterr().out)
        assert page["totalSize"] == "5" and page["watchCursor"]
        seen += [j["id"] for j in page["jobs"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5 and set(seen) == made
