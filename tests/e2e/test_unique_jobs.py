"""End-to-end: unique jobs (CreateJobRequest.unique_key) on both databases: at most one live job per owner,
kind and key, held by the database's partial unique index, through the RPCs, the SDK, the CLI and the JSON
face; the key is free again once the job ends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support.e2e import assert_summary_matches

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2


def _refused(client: jobpulse.Client, kind: str, key: str, **kwargs: Any) -> errors.AlreadyExists:
    with pytest.raises(errors.AlreadyExists) as info:
        client.create_job(kind, 1, unique_key=key, **kwargs)
    return info.value


def test_a_second_live_job_with_the_key_is_refused_naming_the_first(client: jobpulse.Client) -> None:
    first = client.create_job("report", 3, chunk_size=1, unique_key="daily-2026-11-29")
    assert first.unique_key == "daily-2026-11-29"

    refused = _refused(client, "report", "daily-2026-11-29")

    assert refused.reason == "JOB_ALREADY_EXISTS"
    assert refused.metadata["job_id"] == first.id
    assert first.id in refused.message
    # Another key, another kind, or no key at all: made as usual.
    assert client.create_job("report", 1, unique_key="daily-2026-11-30").id != first.id
    assert client.create_job("other", 1, unique_key="daily-2026-11-29").id != first.id
    assert client.create_job("report", 1).unique_key == ""
    assert client.get_job(first.id).unique_key == "daily-2026-11-29"


@pytest.mark.parametrize("end", ["complete", "cancel", "fail"])
def test_the_key_is_free_once_the_job_ends(client: jobpulse.Client, end: str) -> None:
    first = client.create_job("once", 1, unique_key="k", max_attempts=1)
    [claim] = client.claim_chunks("w1", kinds=["once"])
    _refused(client, "once", "k")  # running: still live
    if end == "complete":
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    elif end == "fail":
        client.fail_chunk(claim.chunk.id, claim.lease_token, reason="BROKEN", retryable=False)
    else:
        client.cancel_job(first.id)
        _refused(client, "once", "k")  # CANCELLING while its chunk runs: not ended yet
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    assert client.get_job(first.id, view="basic").state in (
        job_pb2.JOB_STATE_COMPLETED,
        job_pb2.JOB_STATE_FAILED,
        job_pb2.JOB_STATE_CANCELLED,
    )

    second = client.create_job("once", 1, unique_key="k")

    assert second.id != first.id
    _refused(client, "once", "k")
    assert_summary_matches(client, second.id)


def test_a_retried_request_id_gets_its_job_back_not_the_key_error(client: jobpulse.Client) -> None:
    first = client.create_job("idem", 1, unique_key="k", request_id="req-1")
    again = client.create_job("idem", 1, unique_key="k", request_id="req-1")
    assert again.id == first.id
    # A different request for the same work is what the key refuses.
    assert _refused(client, "idem", "k", request_id="req-2").metadata["job_id"] == first.id


def test_retry_of_an_ended_job_is_refused_while_another_holds_its_key(client: jobpulse.Client) -> None:
    first = client.create_job("retry-key", 1, unique_key="k")
    client.cancel_job(first.id)
    second = client.create_job("retry-key", 1, unique_key="k")

    with pytest.raises(errors.AlreadyExists) as info:
        client.retry_job(first.id)

    assert info.value.reason == "JOB_ALREADY_EXISTS" and info.value.metadata["job_id"] == second.id
    assert client.get_job(first.id, view="basic").state == job_pb2.JOB_STATE_CANCELLED
    client.cancel_job(second.id)
    assert client.retry_job(first.id).state == job_pb2.JOB_STATE_PENDING
    _refused(client, "retry-key", "k")


def test_keys_are_per_owner(make_keyed: Callable[..., Any]) -> None:
    srv, keys = make_keyed()
    with (
        jobpulse.Client(srv.address, api_key=keys["alice"]) as alice,
        jobpulse.Client(srv.address, api_key=keys["bob"]) as bob,
    ):
        mine = alice.create_job("owned", 1, unique_key="k")
        assert bob.create_job("owned", 1, unique_key="k").id != mine.id
        refused = _refused(alice, "owned", "k")
        assert refused.metadata["job_id"] == mine.id


@pytest.mark.parametrize("key", ["x" * 129, "tab\tkey", "nul\x00"], ids=["too-long", "control", "nul"])
def test_a_bad_key_names_the_field(client: jobpulse.Client, key: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        client.create_job("bad", 1, unique_key=key)
    assert [f for f, _ in info.value.field_violations] == ["unique_key"]


def test_concurrent_creates_with_one_key_make_one_job(server: Any) -> None:
    n = 24
    barrier = threading.Barrier(n)
    made: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        with jobpulse.Client(server.address, timeout=30) as c:
            barrier.wait(10)
            try:
                job = c.create_job("race", 1, unique_key="one", display_name=f"try {i}")
            except errors.AlreadyExists as exc:
                with lock:
                    refused.append(exc.metadata.get("job_id", ""))
            else:
                with lock:
                    made.append(job.id)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert len(made) == 1 and len(refused) == n - 1, (made, refused)
    # Each refusal names the one job (none saw it "just ended": it is still pending).
    assert set(refused) == set(made)


def test_the_cli_and_the_json_face_say_which_job_holds_the_key(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    argv = [*target, "--json", "create", "--kind", "cli-unique", "--items", "1", "--unique-key", "nightly"]
    assert cli.main(argv) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "JOB_ALREADY_EXISTS" in err and job_id in err

    answer = httpx.post(
        f"{server.app.http_url}/v1/jobs",
        json={"kind": "cli-unique", "totalItems": 1, "uniqueKey": "nightly"},
        timeout=10,
    )
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert (error["status"], error["reason"]) == ("ALREADY_EXISTS", "JOB_ALREADY_EXISTS")
    [info] = [d for d in error["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"]["job_id"] == job_id
