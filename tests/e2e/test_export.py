"""End-to-end: ExportJobs through the SDK (sync and async) and a plain stub, on SQLite and PostgreSQL.

The export must select, order and render exactly what paging through ListJobs does (BASIC view, whole
messages compared), in batches of at most 500, scoped to the caller's own jobs, and must stop reading
when the client cancels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from support.e2e import claim_one
from support.polling import eventually

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from jobpulse_server.domain.filters import ORDERS
from jobpulse_server.services import export, keys


@pytest.fixture
def catalog(client: jobpulse.Client) -> dict[str, job_pb2.Job]:
    """Seven jobs of varied kinds, priorities, names, labels and states; one with artifacts."""
    specs = [
        ("a", "thumbnails", 5, "Nightly THUMBNAILS", {"team": "media", "env": "prod"}),
        ("b", "thumbnails", 9, "thumbnail refresh", {"team": "media", "env": "dev"}),
        ("c", "transcribe", 1, "Podcast transcripts", {"team": "audio", "env": "prod"}),
        ("d", "transcribe", 7, "Meeting notes", {"team": "audio"}),
        ("e", "thumbnails", 0, "Archive thumbs", {}),
        ("f", "index", 10, "Search index rebuild", {"team": "search", "env": "prod"}),
        ("g", "index", 3, "Thumbnail index", {"team": "search", "env": "prod"}),
    ]
    jobs = {
        key: client.create_job(kind, 1, priority=priority, display_name=name, labels=labels)
        for key, kind, priority, name, labels in specs
    }
    client.cancel_job(jobs["c"].id)
    claim = claim_one(client, "index")  # f: the highest priority of its kind
    assert claim.job_id == jobs["f"].id
    client.complete_chunk(
        claim.chunk.id, claim.lease_token, [{"name": "out", "uri": "s3://b/f.json", "size_bytes": 3}]
    )
    client.update_job(jobs["a"].id, priority=6)  # a changes after the others: update order differs
    return jobs


def _listed(client: jobpulse.Client, **filters: Any) -> list[job_pb2.Job]:
    return list(client.list_jobs(page_size=100, **filters))


def test_export_has_exactly_the_jobs_list_jobs_pages_through(
    client: jobpulse.Client, catalog: dict[str, job_pb2.Job]
) -> None:
    exported = list(client.export_jobs())
    # Whole messages: the same BASIC view as ListJobs, artifacts and all.
    assert exported == _listed(client)
    assert [j.id for j in exported] == [catalog[k].id for k in "gfedcba"]
    (done,) = [j for j in exported if j.id == catalog["f"].id]
    assert done.state == job_pb2.JOB_STATE_COMPLETED and not done.chunks


def test_each_filter_selects_what_list_jobs_selects(
    client: jobpulse.Client, catalog: dict[str, job_pb2.Job]
) -> None:
    created = sorted(catalog.values(), key=lambda j: j.id)
    middle = created[3].create_time.ToDatetime(tzinfo=timezone.utc)
    cases: list[dict[str, Any]] = [
        {"states": ["cancelled"]},
        {"states": ["pending", "completed"]},
        {"kind": "thumbnails"},
        {"min_priority": 6},
        {"max_priority": 3},
        {"min_priority": 3, "max_priority": 7},
        {"created_after": middle},
        {"created_before": middle},
        {"search": "thumb"},
        {"labels": {"env": "prod"}},
        {"labels": {"team": "media", "env": "dev"}},
        {"kind": "index", "search": "INDEX", "labels": {"team": "search"}},
        {"kind": "nothing-of-this-kind"},
    ]
    for filters in cases:
        listed = _listed(client, **filters)
        assert list(client.export_jobs(**filters)) == listed, filters
    # The cases are not vacuous: each of these selects some jobs but not all.
    assert {len(_listed(client, **f)) for f in cases[:-1]} <= set(range(1, len(catalog)))


def test_each_order_is_the_order_of_list_jobs(
    client: jobpulse.Client, catalog: dict[str, job_pb2.Job]
) -> None:
    seen = set()
    for order_by in ORDERS:  # whatever orders the server knows
        exported = [j.id for j in client.export_jobs(order_by=order_by)]
        assert exported == [j.id for j in _listed(client, order_by=order_by)], order_by
        assert sorted(exported) == sorted(j.id for j in catalog.values())
        seen.add(tuple(exported))
    assert len(seen) > 1  # the orders differ on this catalog
    # Spelled loosely, as ListJobs accepts it.
    oldest_first = [j.id for j in client.export_jobs(order_by="  CREATE_TIME   asc ")]
    assert oldest_first == sorted(j.id for j in catalog.values())


def test_more_than_one_batch_each_of_at_most_500(
    client: jobpulse.Client, job_stub: job_service_pb2_grpc.JobServiceStub
) -> None:
    ids = [client.create_job("bulk", 1, priority=i % 11).id for i in range(523)]
    responses = list(job_stub.ExportJobs(job_service_pb2.ExportJobsRequest(order_by="create_time")))
    assert [len(r.jobs) for r in responses] == [500, 23]
    assert [j.id for r in responses for j in r.jobs] == ids
    by_priority = [j.id for j in client.export_jobs(order_by="priority desc")]
    assert by_priority == [j.id for j in _listed(client, order_by="priority desc")]


def test_an_empty_export_ends_at_once(job_stub: job_service_pb2_grpc.JobServiceStub) -> None:
    assert list(job_stub.ExportJobs(job_service_pb2.ExportJobsRequest())) == []


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"order_by": "name"}, "order_by"),
        ({"order_by": "create_time sideways"}, "order_by"),
        ({"min_priority": 11}, "min_priority"),
        ({"max_priority": -1}, "max_priority"),
        ({"min_priority": 8, "max_priority": 2}, "min_priority"),
        ({"kind": "k" * 1000}, "kind"),
        ({"search": "s" * 10_000}, "search"),
        ({"labels": {"": "v"}}, "labels[]"),
        (
            {
                "created_after": datetime(2030, 1, 2, tzinfo=timezone.utc),
                "created_before": datetime(2030, 1, 1, tzinfo=timezone.utc),
            },
            "created_after",
        ),
    ],
)
def test_a_bad_filter_is_invalid_argument_naming_the_field(
    client: jobpulse.Client, filters: dict[str, Any], field: str
) -> None:
    client.create_job("k", 1)
    with pytest.raises(errors.InvalidArgument) as info:
        list(client.export_jobs(**filters))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [name for name, _ in info.value.field_violations]


def test_the_same_bad_filter_names_the_same_field_as_list_jobs(
    job_stub: job_service_pb2_grpc.JobServiceStub,
) -> None:
    bad = {"order_by": "bogus", "min_priority": 12, "kind": "x" * 1000, "states": [42]}
    with pytest.raises(grpc.RpcError) as listing:
        job_stub.ListJobs(job_service_pb2.ListJobsRequest(**bad))
    with pytest.raises(grpc.RpcError) as exporting:
        list(job_stub.ExportJobs(job_service_pb2.ExportJobsRequest(**bad)))
    assert exporting.value.code() == listing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = errors.from_rpc_error(listing.value).field_violations
    exported = errors.from_rpc_error(exporting.value).field_violations
    assert exported == listed and {f for f, _ in exported} == {"order_by", "min_priority", "kind", "states"}


def _key(srv: Any, name: str, role: str) -> str:
    key = srv.call(keys.create_key(srv.app.db, name, role))
    srv.call(srv.app.auth.refresh())
    return key


def test_another_owners_jobs_never_appear(make_server: Any) -> None:
    srv = make_server()
    alice_key, bob_key, root_key = (
        _key(srv, "alice", "client"),
        _key(srv, "bob", "client"),
        _key(srv, "root", "admin"),
    )
    with (
        jobpulse.Client(srv.address, api_key=alice_key) as alice,
        jobpulse.Client(srv.address, api_key=bob_key) as bob,
        jobpulse.Client(srv.address, api_key=root_key) as root,
    ):
        mine = [alice.create_job("k", 1, labels={"team": "a"}).id for _ in range(3)]
        theirs = [bob.create_job("k", 1, labels={"team": "a"}).id for _ in range(2)]
        assert [j.id for j in alice.export_jobs(order_by="create_time")] == mine
        assert [j.id for j in bob.export_jobs(labels={"team": "a"})] == theirs[::-1]
        assert {j.owner for j in alice.export_jobs()} == {"alice"}
        # An admin key sees every owner's jobs, as in ListJobs.
        assert sorted(j.id for j in root.export_jobs()) == sorted(mine + theirs)
    with jobpulse.Client(srv.address, api_key="jp_nope") as stranger:
        with pytest.raises(errors.Unauthenticated):
            list(stranger.export_jobs())


def _cancelled_exports(srv: Any) -> float:
    return (
        srv.app.metrics.registry.get_sample_value(
            "jobpulse_rpcs_total", {"method": "ExportJobs", "code": "CANCELLED"}
        )
        or 0.0
    )


def test_a_cancelled_export_stops_reading_and_the_server_carries_on(
    server: Any, client: jobpulse.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [client.create_job("k", 1).id for _ in range(9)]
    monkeypatch.setattr(export, "EXPORT_BATCH", 2)  # five batches from nine jobs
    jobs = server.app.jobs
    reads: list[str] = []
    gate = server.call(_new_event())  # never set while the export runs: batch 2 waits for it

    original = jobs.list_jobs

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs["page_token"])
        if len(reads) == 2:
            await gate.wait()  # the client cancels while the server waits here
        return await original(*args, **kwargs)

    monkeypatch.setattr(jobs, "list_jobs", counted)
    stream = client.export_jobs(order_by="create_time")
    assert [next(stream).id, next(stream).id] == ids[:2]  # the first batch
    eventually(lambda: len(reads) == 2, what="the server asking for the second batch")
    stream.close()  # cancels the call
    eventually(lambda: _cancelled_exports(server) == 1, what="the export recorded as CANCELLED")
    # The handler has ended (the CANCELLED is recorded as it unwinds): no third batch, ever.
    assert len(reads) == 2
    server.loop.call_soon_threadsafe(gate.set)
    monkeypatch.setattr(jobs, "list_jobs", original)
    # The server carries on: a new export runs to the end.
    assert [j.id for j in client.export_jobs(order_by="create_time")] == ids


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


async def test_the_async_client_exports_and_cancels(server: Any) -> None:
    async with jobpulse.AsyncClient(server.address) as client:
        ids = [(await client.create_job("k", 1, labels={"n": str(i)})).id for i in range(4)]
        exported: AsyncIterator[job_pb2.Job] = client.export_jobs(order_by="create_time")
        assert [j.id async for j in exported] == ids
        assert [j.id async for j in client.export_jobs(labels={"n": "2"})] == [ids[2]]
        async with aclosing(client.export_jobs()) as stream:
            async for job in stream:
                assert job.id == ids[-1]
                break
        with pytest.raises(errors.InvalidArgument) as info:
            async for _ in client.export_jobs(max_priority=11):
                pass
        assert [f for f, _ in info.value.field_violations] == ["max_priority"]
        # A created_after in the future selects nothing.
        later = datetime.now(timezone.utc) + timedelta(days=1)
        assert [j async for j in client.export_jobs(created_after=later)] == []
