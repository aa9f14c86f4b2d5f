"""Failures across jobs: SummarizeFailures counts the chunks FAILED for good by reason (chunks, jobs, the
last one's time and message), ListJobChunks over "-" lists them with kind and error_reasons filters a page
at a time, both only over the jobs the caller may see; the CLI's `jobpulse failures` shows and retries
them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import grpc
import pytest

import jobpulse
from jobpulse import cli
from jobpulse.v1 import job_pb2, job_service_pb2


def _fail(client: jobpulse.Client, kind: str, reason: str, message: str, n: int = 1) -> list[Any]:
    """Claims n chunks of ``kind`` and fails each for good with ``reason``."""
    got = client.claim_chunks("w-fail", kinds=[kind], max_chunks=n)
    assert len(got) == n
    for c in got:
        client.fail_chunk(c.chunk.id, c.lease_token, reason, message, retryable=False)
    return got


def test_failures_are_counted_by_reason_the_latest_first(client: jobpulse.Client) -> None:
    client.create_job("fx-decode", 5, chunk_size=1, max_attempts=1)
    b = client.create_job("fx-decode", 3, chunk_size=1, max_attempts=1)
    c = client.create_job("fx-upload", 2, chunk_size=1, max_attempts=1)
    _fail(client, "fx-decode", "DECODE", "frame 1 is corrupt", n=5)  # all of a's
    _fail(client, "fx-upload", "NETWORK", "bucket unreachable")
    _fail(client, "fx-decode", "DECODE", "frame 9 is corrupt")  # one of b's, the last DECODE
    groups = client.summarize_failures()
    assert [(g.reason, g.chunks, g.jobs) for g in groups] == [("DECODE", 6, 2), ("NETWORK", 1, 1)]
    assert groups[0].sample_message == "frame 9 is corrupt"
    assert groups[0].last_time.ToMicroseconds() >= groups[1].last_time.ToMicroseconds()
    # By kind, and by when the jobs were made.
    assert [g.reason for g in client.summarize_failures(kind="fx-upload")] == ["NETWORK"]
    made_c = c.create_time.ToDatetime(tzinfo=timezone.utc)
    assert [g.reason for g in client.summarize_failures(created_after=made_c)] == ["NETWORK"]
    assert [(g.reason, g.jobs) for g in client.summarize_failures(created_before=made_c)] == [("DECODE", 2)]
    # A retried chunk leaves the count.
    one = next(iter(client.list_job_chunks(b.id, ["failed"])))
    client.retry_chunk(b.id, one.id)
    assert [(g.reason, g.chunks, g.jobs) for g in client.summarize_failures(kind="fx-decode")] == [
        ("DECODE", 5, 1)
    ]


def test_the_counts_follow_every_move_out_of_failed(client: jobpulse.Client) -> None:
    """The counts are kept beside the chunks (job_failures): a chunk retried takes its reason's last
    failure with it, RetryJob takes the job's, a delete the rest."""
    job = client.create_job("fz-count", 3, chunk_size=1, max_attempts=1)

    def groups() -> list[tuple[str, int, int, str]]:
        found = client.summarize_failures(kind="fz-count")
        # Asked for a range of creation, the count is made from the jobs' rows: the same.
        ranged = client.summarize_failures(
            kind="fz-count", created_after=datetime(2000, 1, 1, tzinfo=timezone.utc)
        )
        assert ranged == found
        return [(g.reason, g.chunks, g.jobs, g.sample_message) for g in found]

    def ended(index: int) -> int:
        return int(client.get_job(job.id, view="full").chunks[index].end_time.ToMicroseconds())

    first = _fail(client, "fz-count", "DECODE", "first")[0].chunk
    second = _fail(client, "fz-count", "DECODE", "second")[0].chunk
    _fail(client, "fz-count", "NETWORK", "third")
    assert groups() == [("NETWORK", 1, 1, "third"), ("DECODE", 2, 1, "second")]
    client.retry_chunk(job.id, second.id)  # DECODE's last failure goes: the one before is its last
    decode = next(g for g in client.summarize_failures(kind="fz-count") if g.reason == "DECODE")
    assert (decode.chunks, decode.sample_message) == (1, "first")
    assert decode.last_time.ToMicroseconds() == ended(first.index)
    _fail(client, "fz-count", "NETWORK", "fourth")  # the retried chunk, for good again: the job FAILED
    assert groups() == [("NETWORK", 2, 1, "fourth"), ("DECODE", 1, 1, "first")]
    client.retry_job(job.id)
    assert groups() == []
    _fail(client, "fz-count", "BAD", "again", n=3)
    assert groups() == [("BAD", 3, 1, "again")]
    client.delete_job(job.id)
    assert groups() == []


def test_failed_chunks_across_jobs_come_by_reason_and_kind_a_page_at_a_time(
    client: jobpulse.Client, job_stub: Any
) -> None:
    old = client.create_job("fy-a", 3, chunk_size=1, max_attempts=1)
    new = client.create_job("fy-a", 2, chunk_size=1, max_attempts=1)
    other = client.create_job("fy-b", 1, chunk_size=1, max_attempts=1)
    _fail(client, "fy-a", "BAD", "bad input", n=5)
    _fail(client, "fy-b", "BAD", "bad input")
    listed = list(client.list_job_chunks("-", ["failed"], page_size=2, error_reasons=["BAD"], kind="fy-a"))
    # Newest job first, each job's chunks from its last.
    assert [(c.job_id, c.index) for c in listed] == [
        (new.id, 1),
        (new.id, 0),
        (old.id, 2),
        (old.id, 1),
        (old.id, 0),
    ]
    assert all(c.state == job_pb2.CHUNK_STATE_FAILED and c.error.reason == "BAD" for c in listed)
    both = list(client.list_job_chunks("-", ["failed"], error_reasons=["BAD", "NOPE"]))
    assert {c.job_id for c in both} >= {old.id, new.id, other.id}
    assert not list(client.list_job_chunks("-", error_reasons=["NEVER-SEEN"]))
    # The filters work on one job too, with their count.
    page = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(job_id=old.id, error_reasons=["BAD"], page_size=1)
    )
    assert page.total_size == 3 and len(page.chunks) == 1 and page.next_page_token
    # A token is for the filters it was made under.
    first = job_stub.ListJobChunks(
        job_service_pb2.ListJobChunksRequest(job_id="-", error_reasons=["BAD"], page_size=1)
    )
    with pytest.raises(grpc.RpcError) as caught:
        job_stub.ListJobChunks(
            job_service_pb2.ListJobChunksRequest(
                job_id="-", error_reasons=["OTHER"], page_size=1, page_token=first.next_page_token
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_too_many_reasons_are_refused_naming_the_field(job_stub: Any) -> None:
    request = job_service_pb2.ListJobChunksRequest(job_id="-", error_reasons=[f"R{i}" for i in range(21)])
    with pytest.raises(grpc.RpcError) as caught:
        job_stub.ListJobChunks(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "error_reasons" in caught.value.details()


@pytest.fixture
def keyed(make_keyed: Callable[..., tuple[Any, dict[str, str]]]) -> tuple[Any, dict[str, str]]:
    return make_keyed()


def test_a_client_sees_its_own_failures_and_an_admin_everyone_s(keyed: tuple[Any, dict[str, str]]) -> None:
    srv, made = keyed
    with (
        jobpulse.Client(srv.address, api_key=made["alice"]) as alice,
        jobpulse.Client(srv.address, api_key=made["bob"]) as bob,
        jobpulse.Client(srv.address, api_key=made["root"]) as root,
        jobpulse.Client(srv.address, api_key=made["w"]) as worker,
    ):
        alice.create_job("shared-fail", 2, chunk_size=1, max_attempts=1)
        bob.create_job("shared-fail", 1, chunk_size=1, max_attempts=1)
        _fail(worker, "shared-fail", "BROKEN", "no", n=3)
        assert [(g.chunks, g.jobs) for g in alice.summarize_failures()] == [(2, 1)]
        assert [(g.chunks, g.jobs) for g in bob.summarize_failures()] == [(1, 1)]
        assert [(g.chunks, g.jobs) for g in root.summarize_failures()] == [(3, 2)]
        assert len(list(alice.list_job_chunks("-", ["failed"]))) == 2
        assert len(list(root.list_job_chunks("-", ["failed"]))) == 3


def test_the_cli_shows_failures_and_retries_one_reason(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.create_job("cli-fail", 3, chunk_size=1, max_attempts=1)
    _fail(client, "cli-fail", "TIMEOUT", "took too long", n=2)
    target = ["--target", server.address]
    assert cli.main([*target, "failures", "--kind", "cli-fail"]) == 0
    table = capsys.readouterr().out
    assert "TIMEOUT" in table and "took too long" in table
    assert cli.main([*target, "--json", "failures", "--reason", "TIMEOUT"]) == 0
    listed = json.loads(capsys.readouterr().out)["chunks"]
    assert {c["jobId"] for c in listed} == {job.id} and len(listed) == 2
    assert cli.main([*target, "failures", "--reason", "TIMEOUT", "--retry"]) == 0
    assert "retried 2 chunks, skipped 0" in capsys.readouterr().out
    assert client.get_job(job.id, view="basic").chunks_summary.pending == 3
    assert cli.main([*target, "failures", "--kind", "cli-fail"]) == 0
    assert "no chunk has failed for good" in capsys.readouterr().out
