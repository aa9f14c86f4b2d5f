"""A ListJobs page token is bound to every filter and to the order it was made under.

Property: for any request (filters and order) whose first page has a next_page_token, that
token replayed with exactly one thing changed (a filter given another value, dropped or added,
or another order) is INVALID_ARGUMENT / INVALID_PAGE_TOKEN naming page_token; replayed with the
same filters spelled otherwise (states in another order, order_by in other case or with " asc")
and another page_size it continues the listing (AIP-158: page_size may change between pages).

Every request that makes a token matches all the seeded jobs, so a token is always made; the
replays need not match anything: the binding is to the filter values, not to what they select.
tests/conformance/test_store_listings.py pages through each listing with its own tokens; this test is about
the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_pb2

ORDERS = ("create_time desc", "create_time", "update_time desc", "update_time", "priority desc", "priority")
PENDING, PROCESSING, COMPLETED, FAILED = (
    job_pb2.JOB_STATE_PENDING,
    job_pb2.JOB_STATE_PROCESSING,
    job_pb2.JOB_STATE_COMPLETED,
    job_pb2.JOB_STATE_FAILED,
)
PRIORITIES = (3, 5, 7, 4)  # of the seeded jobs: min 3, max 7
FAR = timedelta(days=3650)


def _values(t0: datetime, t_last: datetime) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per filter: (the values a token-making request may take, all of them matching every seeded
    job; every value a replay may take). None stands for the filter not given."""
    return {
        "states": (
            [None, [PENDING], [PENDING, PROCESSING], [PENDING, COMPLETED, FAILED]],
            [None, [PENDING], [PENDING, PROCESSING], [PENDING, COMPLETED, FAILED], [COMPLETED]],
        ),
        "kind": ([None, "bind"], [None, "bind", "other"]),
        "min_priority": ([None, 0, 3], [None, 0, 3, 4, 10]),
        "max_priority": ([None, 7, 10], [None, 0, 6, 7, 10]),
        "created_after": ([None, t0 - FAR, t0], [None, t0 - FAR, t0, t0 + timedelta(microseconds=1), t_last]),
        "created_before": (
            [None, t_last + timedelta(microseconds=1), t_last + FAR],
            [None, t0, t_last + FAR],
        ),
        "search": ([None, "bind"], [None, "bind", "BIND ", "nothing"]),
        "labels": (
            [None, {"team": "t"}, {"team": "t", "env": "e"}],
            [None, {"team": "t"}, {"team": "t", "env": "e"}, {"env": "e"}, {"team": "u"}],
        ),
    }


def _kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """SDK keyword arguments; a filter not given is left out."""
    out = {k: v for k, v in request.items() if v is not None}
    if "states" in out:
        out["states"] = list(out["states"])
    return out


def _valid(request: dict[str, Any]) -> bool:
    """False for replays the server refuses for another reason (a range the wrong way round)."""
    lo, hi = request.get("min_priority"), request.get("max_priority")
    after, before = request.get("created_after"), request.get("created_before")
    return not (lo is not None and hi is not None and lo > hi) and not (
        after is not None and before is not None and after > before
    )


def _variations(
    request: dict[str, Any], values: dict[str, tuple[list[Any], list[Any]]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what changed, the request with exactly one filter changed, dropped or added, or with
    another order)."""
    for name, (_, replays) in values.items():
        for value in replays:
            if value != request[name]:
                yield f"{name}: {request[name]!r} -> {value!r}", {**request, name: value}
    for order in ORDERS:
        if order != request["order_by"]:
            yield f"order_by: {request['order_by']!r} -> {order!r}", {**request, "order_by": order}


@pytest.fixture
def seeded(server: Any) -> Iterator[tuple[jobpulse.Client, dict[str, tuple[list[Any], list[Any]]]]]:
    """Four pending jobs of kind "bind", priorities 3 to 7, names containing "bind", labels
    team=t and env=e; and the filter values, built around their creation times."""
    with jobpulse.Client(server.address, timeout=20.0) as client:
        made = [
            client.create_job(
                "bind", 1, priority=p, display_name=f"Bind job {n}", labels={"team": "t", "env": "e"}
            )
            for n, p in enumerate(PRIORITIES)
        ]
        times = [j.create_time.ToDatetime(tzinfo=timezone.utc) for j in made]
        yield client, _values(min(times), max(times))


def _request(data: st.DataObject, values: dict[str, tuple[list[Any], list[Any]]]) -> dict[str, Any]:
    request = {name: data.draw(st.sampled_from(makers), label=name) for name, (makers, _) in values.items()}
    request["order_by"] = data.draw(st.sampled_from(ORDERS), label="order_by")
    return request


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=False,
)
@given(data=st.data())
def test_a_page_token_is_refused_under_any_other_filter_or_order(
    seeded: tuple[jobpulse.Client, dict[str, tuple[list[Any], list[Any]]]], data: st.DataObject
) -> None:
    client, values = seeded
    request = _request(data, values)
    first = client.list_jobs_page(page_size=1, **_kwargs(request))
    assert len(first.jobs) == 1 and first.total_size == len(PRIORITIES), request
    token = first.next_page_token
    assert token, request

    accepted = []
    for change, other in _variations(request, values):
        if not _valid(other):
            continue
        try:
            client.list_jobs_page(page_size=1, page_token=token, **_kwargs(other))
        except errors.InvalidArgument as exc:
            assert exc.reason == "INVALID_PAGE_TOKEN", change
            assert [field for field, _ in exc.field_violations] == ["page_token"], change
        else:
            accepted.append(change)
    assert not accepted, f"a token made under {request} was taken with {accepted}"

    # The same listing spelled otherwise, and a bigger page: the token carries on from job 2.
    same = _kwargs(request)
    if "states" in same:
        same["states"] = same["states"][::-1]
    same["order_by"] = " " + request["order_by"].upper() + ("" if " " in request["order_by"] else " asc")
    rest = client.list_jobs_page(page_size=10, page_token=token, **same)
    assert len(rest.jobs) == len(PRIORITIES) - 1, request
    assert first.jobs[0].id not in {j.id for j in rest.jobs}, request
    assert rest.next_page_token == "", request
