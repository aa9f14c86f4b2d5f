"""Regression tests: minimal reproductions of the server bugs the fuzz found (all fixed).

Each asserts the answer the API promises: NaN metadata, oversized error lists, out-of-range integers
in page tokens and cursors, and NUL characters are all INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from support.fuzz import call, details

from jobpulse.v1 import job_service_pb2 as J

Server = Callable[..., Any]


@pytest.fixture
def channel(make_server: Server) -> Iterator[grpc.Channel]:
    srv = make_server(rate_limit_client=0, rate_limit_worker=0, heartbeat_interval=0.1)
    with grpc.insecure_channel(srv.address) as ch:
        for _ in range(2):
            assert (
                call(ch, "CreateJob", J.CreateJobRequest(total_items=3, chunk_size=1), ()).code.name == "OK"
            )
        yield ch


def _invalid(ch: grpc.Channel, method: str, request: Any, reason: str = "INVALID_ARGUMENT") -> list[str]:
    """Asserts INVALID_ARGUMENT with a jobpulse ErrorInfo of ``reason``; returns the violated fields."""
    outcome = call(ch, method, request, (), timeout=10)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (outcome.code, outcome.message)
    assert outcome.status is not None and not isinstance(outcome.status, str), outcome.message
    found = list(details(outcome.status))
    infos = [d for d in found if isinstance(d, error_details_pb2.ErrorInfo)]
    assert [(i.domain, i.reason) for i in infos] == [("jobpulse", reason)]
    return [v.field for d in found if isinstance(d, error_details_pb2.BadRequest) for v in d.field_violations]


def _token(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _body(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return decoded


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_bug1_create_job_metadata_with_a_non_finite_number_is_invalid_argument(
    channel: grpc.Channel, number: float
) -> None:
    request = J.CreateJobRequest(total_items=1)
    request.metadata.fields["x"].number_value = number
    assert "metadata" in _invalid(channel, "CreateJob", request)


def test_bug2_many_violations_still_reach_a_default_client(channel: grpc.Channel) -> None:
    # 100 out-of-range states: the status message and BadRequest carry 100 violations, and the
    # trailers (about 23 KB) exceed the 16 KiB metadata limit of a default grpc client, which then
    # sees RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" and no details at all.
    assert "states" in _invalid(channel, "ListJobs", J.ListJobsRequest(states=[99] * 100))


def test_bug5_list_jobs_reports_bad_states_once(channel: grpc.Channel) -> None:
    # One violation for the field, naming every bad value (it was one per value, and twice over).
    assert _invalid(channel, "ListJobs", J.ListJobsRequest(states=[99, 98])) == ["states"]


def test_watch_jobs_reports_bad_states_once(channel: grpc.Channel) -> None:
    outcome = call(channel, "WatchJobs", J.WatchJobsRequest(states=[99, 98]), ())
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    bad = [d for d in details(outcome.status) if isinstance(d, error_details_pb2.BadRequest)]
    assert [v.field for v in bad[0].field_violations] == ["states"]
    assert "98, 99" in bad[0].field_violations[0].description


def _first_page_token(ch: grpc.Channel, method: str, request: Any) -> str:
    outcome = call(ch, method, request, ())
    assert outcome.code == grpc.StatusCode.OK
    token: str = outcome.responses[0].next_page_token
    assert token
    return token


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_bug3_list_jobs_token_with_a_total_beyond_int64(channel: grpc.Channel, value: int) -> None:
    body = _body(_first_page_token(channel, "ListJobs", J.ListJobsRequest(page_size=1)))
    body["k"][-1] = value  # the total counted for the first page
    _invalid(
        channel, "ListJobs", J.ListJobsRequest(page_size=1, page_token=_token(body)), "INVALID_PAGE_TOKEN"
    )


def test_bug3_list_jobs_token_with_a_sort_key_beyond_int64(channel: grpc.Channel) -> None:
    order = "update_time desc"
    body = _body(_first_page_token(channel, "ListJobs", J.ListJobsRequest(page_size=1, order_by=order)))
    body["k"][0] = 2**64  # update_time
    request = J.ListJobsRequest(page_size=1, order_by=order, page_token=_token(body))
    _invalid(channel, "ListJobs", request, "INVALID_PAGE_TOKEN")


def test_bug3_watch_jobs_cursor_with_a_seq_beyond_int64(channel: grpc.Channel) -> None:
    listed = call(channel, "ListJobs", J.ListJobsRequest(), ())
    body = _body(listed.responses[0].watch_cursor)
    body["k"][0] = 2**63
    outcome = call(channel, "WatchJobs", J.WatchJobsRequest(cursor=_token(body)), ())
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (outcome.code, outcome.message)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_bug3_list_job_chunks_token_with_an_index_beyond_int64(channel: grpc.Channel, value: int) -> None:
    job_id = call(channel, "ListJobs", J.ListJobsRequest(page_size=1), ()).responses[0].jobs[0].id
    body = _body(
        _first_page_token(channel, "ListJobChunks", J.ListJobChunksRequest(job_id=job_id, page_size=1))
    )
    body["k"] = [value]
    request = J.ListJobChunksRequest(job_id=job_id, page_size=1, page_token=_token(body))
    _invalid(channel, "ListJobChunks", request, "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize("text", ["\x00", "a\x00b"])
def test_bug4_nul_characters_in_strings_are_answered_cleanly(
    request: pytest.FixtureRequest, channel: grpc.Channel, text: str
) -> None:
    for method, request in (
        ("GetJob", J.GetJobRequest(job_id=text)),
        ("CreateJob", J.CreateJobRequest(total_items=1, kind=text, display_name=text, request_id=text)),
        ("ListJobs", J.ListJobsRequest(search=text, kind=text)),
    ):
        outcome = call(channel, method, request, ())
        assert outcome.code in (
            grpc.StatusCode.OK,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        ), (method, outcome.code, outcome.message)
