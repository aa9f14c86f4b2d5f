"""End-to-end: bulk operations over a filter (CancelJobs, RetryJobs, PurgeJobs) on both databases, through
the SDK, google.longrunning.Operations, the CLI and the JSON face: what they match, what they do to each
job, their progress, and that they act on each job at most once, in batches."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import grpc
import httpx
import pytest
from google.longrunning import operations_pb2_grpc, operations_proto_pb2
from support.e2e import assert_summary_matches, run_all
from support.readme_blocks import find_block

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2
from jobpulse_server.domain.bulk import BulkAction
from jobpulse_server.domain.filters import JobFilter
from jobpulse_server.domain.principal import ANONYMOUS
from jobpulse_server.services.bulk import BulkService

PENDING, CANCELLED = job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_CANCELLED
FAILED, COMPLETED = job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_COMPLETED


def _states(client: jobpulse.Client, ids: list[str]) -> list[int]:
    return [j.state for j in client.batch_get_jobs(ids, view="basic")]


def _fail(client: jobpulse.Client, kind: str) -> None:
    for claim in client.claim_chunks("w1", kinds=[kind], max_chunks=100):
        client.fail_chunk(claim.chunk.id, claim.lease_token, reason="BROKEN", retryable=False)


def test_cancel_jobs_cancels_what_matches_and_nothing_else(make_server: Callable[..., Any]) -> None:
    # Batches of 4: the 11 matching jobs take three batches and the cursor between them.
    srv = make_server(bulk_batch_size=4)
    with jobpulse.Client(srv.address, timeout=20) as client:
        hit = [client.create_job("thumbs", 2, chunk_size=1, labels={"batch": "42"}) for _ in range(11)]
        other_label = client.create_job("thumbs", 1, labels={"batch": "7"})
        other_kind = client.create_job("video", 1, labels={"batch": "42"})
        [running] = client.claim_chunks("w1", kinds=["thumbs"])  # one chunk of hit[0] runs

        started = client.cancel_jobs(kind="thumbs", labels={"batch": "42"}, reason="bad input")

        assert started.name.startswith("operations/bulk-") and started.action == "cancel"
        assert started.matched == 11
        final = client.wait_bulk_operation(started.name, timeout=30)
        assert (final.finished, final.cancelled, final.done, final.skipped) == (True, False, 11, 0)
        assert final.progress == 1.0 and final.end_time is not None
        states = _states(client, [j.id for j in hit])
        assert states[0] == job_pb2.JOB_STATE_CANCELLING  # its running chunk is told through its lease
        assert set(states[1:]) == {CANCELLED}
        assert {client.get_job(j.id, view="basic").cancel_reason for j in hit} == {"bad input"}
        assert _states(client, [other_label.id, other_kind.id]) == [PENDING, PENDING]
        client.complete_chunk(running.chunk.id, running.lease_token)
        assert client.get_job(hit[0].id, view="basic").state == CANCELLED
        for job in hit:
            assert_summary_matches(client, job.id)

        # The same filter again: every job has been cancelled already; each is passed over.
        again = client.wait_bulk_operation(client.cancel_jobs(kind="thumbs").name, timeout=30)
        assert (again.matched, again.done, again.skipped) == (12, 1, 11)


def test_validate_only_counts_and_changes_nothing(client: jobpulse.Client) -> None:
    jobs = [client.create_job("count-me", 1) for _ in range(5)]
    counted = client.cancel_jobs(kind="count-me", validate_only=True)
    assert (counted.name, counted.finished, counted.matched, counted.done) == ("", True, 5, 0)
    assert set(_states(client, [j.id for j in jobs])) == {PENDING}
    assert client.purge_jobs(kind="count-me", validate_only=True, force=True).matched == 5
    assert client.retry_jobs(kind="nothing-here", validate_only=True).matched == 0


def test_only_jobs_made_before_the_call_are_matched(make_server: Callable[..., Any]) -> None:
    srv = make_server(bulk_batch_size=1)
    with jobpulse.Client(srv.address, timeout=20) as client:
        before = [client.create_job("moving", 1) for _ in range(3)]
        op = client.cancel_jobs(kind="moving")
        after = client.create_job("moving", 1)
        final = client.wait_bulk_operation(op.name, timeout=30)
        assert (final.matched, final.done) == (3, 3)
        assert set(_states(client, [j.id for j in before])) == {CANCELLED}
        assert client.get_job(after.id, view="basic").state == PENDING


def test_retry_jobs_runs_failed_jobs_again_and_skips_the_others(client: jobpulse.Client) -> None:
    failed = [client.create_job("flaky", 1, max_attempts=1) for _ in range(4)]
    _fail(client, "flaky")
    running = client.create_job("flaky", 1)
    assert set(_states(client, [j.id for j in failed])) == {FAILED}

    final = client.wait_bulk_operation(client.retry_jobs(kind="flaky").name, timeout=30)

    assert (final.matched, final.done, final.skipped) == (5, 4, 1)
    # Back in PROCESSING (they had started), their chunks PENDING again.
    assert set(_states(client, [j.id for j in failed])) == {job_pb2.JOB_STATE_PROCESSING}
    assert client.get_job(running.id, view="basic").state == PENDING
    assert len(client.claim_chunks("w1", kinds=["flaky"], max_chunks=10)) == 5


def _ended_every_way(client: jobpulse.Client, twin: str) -> list[str]:
    """Jobs labelled ``twin`` ended every way a retry meets, made the same way on each call (their kinds
    end in ``twin``): failed after some chunks completed, cancelled half-way, cancelled before any work,
    failed holding a unique key another job holds now (and that job, pending), failed with a timeout,
    failed with a finalize step. The ids in that order."""
    labels = {"twin": twin}
    made = []
    plain = [
        client.create_job(f"plain-{twin}", 2, chunk_size=1, max_attempts=1, labels=labels) for _ in range(3)
    ]
    for claim in client.claim_chunks("w1", kinds=[f"plain-{twin}"], max_chunks=10):
        if claim.chunk.index == 0:
            client.complete_chunk(claim.chunk.id, claim.lease_token)
        else:
            client.fail_chunk(claim.chunk.id, claim.lease_token, reason="BROKEN", retryable=False)
    made += [j.id for j in plain]
    halted = client.create_job(f"halted-{twin}", 3, chunk_size=1, labels=labels)
    [first] = client.claim_chunks("w1", kinds=[f"halted-{twin}"], max_chunks=1)
    client.complete_chunk(first.chunk.id, first.lease_token)
    client.cancel_job(halted.id)
    untouched = client.create_job(f"halted-{twin}", 2, chunk_size=1, labels=labels)
    client.cancel_job(untouched.id)
    made += [halted.id, untouched.id]
    key = client.create_job(f"keyed-{twin}", 1, max_attempts=1, unique_key="k", labels=labels)
    _fail(client, f"keyed-{twin}")
    holder = client.create_job(f"keyed-{twin}", 1, unique_key="k", labels=labels)
    timed = client.create_job(f"timed-{twin}", 1, max_attempts=1, job_timeout=3600, labels=labels)
    _fail(client, f"timed-{twin}")
    final = client.create_job(
        f"steps-{twin}", 2, chunk_size=1, max_attempts=1, finalize_kind=f"fin-{twin}", labels=labels
    )
    _fail(client, f"steps-{twin}")
    made += [key.id, holder.id, timed.id, final.id]
    return made


def _as_retried(client: jobpulse.Client, job_id: str) -> tuple[Any, ...]:
    """What a retry decides of a job and its chunks (no ids, kinds or times)."""
    job = assert_summary_matches(client, job_id)
    chunks = tuple(
        (c.index, c.state, c.items_done, c.attempt, c.max_attempts, c.error.reason, c.revision)
        for c in client.list_job_chunks(job_id, page_size=100)
    )
    summary = job.chunks_summary
    return (
        job.state,
        (summary.pending, summary.processing, summary.completed, summary.failed, summary.cancelled),
        job.progress.items_done,
        job.revision,
        job.error.reason,
        job.cancel_reason,
        job.HasField("deadline_time"),
        chunks,
    )


def test_retry_jobs_leaves_each_job_as_retry_job_does(client: jobpulse.Client) -> None:
    # One twin retried by RetryJobs, in one batch (its plain jobs in one write); the other job by job.
    bulk, one_by_one = _ended_every_way(client, "a"), _ended_every_way(client, "b")
    ended = [_as_retried(client, job_id) for job_id in bulk]
    assert ended == [_as_retried(client, job_id) for job_id in one_by_one]
    assert {g.reason: (g.chunks, g.jobs) for g in client.summarize_failures("plain-a")} == {"BROKEN": (3, 3)}

    final = client.wait_bulk_operation(client.retry_jobs(labels={"twin": "a"}).name, timeout=30)
    refused = []
    for job_id in one_by_one:
        try:
            client.retry_job(job_id)
        except (errors.AlreadyExists, errors.FailedPrecondition) as exc:
            refused.append(type(exc).__name__)

    # The unique key's job (its key taken) and the pending job holding it are passed over.
    assert (final.matched, final.done, final.skipped) == (9, 7, 2)
    assert refused == ["AlreadyExists", "FailedPrecondition"]
    retried = [_as_retried(client, job_id) for job_id in bulk]
    assert retried == [_as_retried(client, job_id) for job_id in one_by_one]
    assert retried != ended
    for twin in ("a", "b"):  # the failures retried are no longer counted (by kind, nor by job's rows)
        for since in (None, datetime(2000, 1, 1, tzinfo=timezone.utc)):
            assert client.summarize_failures(f"plain-{twin}", created_after=since) == []
            assert [g.jobs for g in client.summarize_failures(f"keyed-{twin}", created_after=since)] == [1]
    # Every retried job runs to the end again.
    for kind in ("plain-a", "halted-a", "timed-a", "steps-a", "fin-a"):
        run_all(client, kind)
    states = _states(client, bulk)
    assert states == [COMPLETED] * 5 + [FAILED, PENDING, COMPLETED, COMPLETED]
    purged = client.wait_bulk_operation(client.purge_jobs(labels={"twin": "a"}, force=True).name, timeout=30)
    assert (purged.done, purged.skipped) == (9, 0)
    assert client.summarize_failures("keyed-a") == []


def test_purge_jobs_deletes_ended_jobs_and_with_force_the_rest(client: jobpulse.Client) -> None:
    done = [client.create_job("old", 1) for _ in range(3)]
    for claim in client.claim_chunks("w1", kinds=["old"], max_chunks=10):
        client.complete_chunk(claim.chunk.id, claim.lease_token)
    live = client.create_job("old", 1)

    final = client.wait_bulk_operation(client.purge_jobs(kind="old").name, timeout=30)

    assert (final.matched, final.done, final.skipped) == (4, 3, 1)
    for job in done:
        with pytest.raises(errors.NotFound):
            client.get_job(job.id)
    assert client.get_job(live.id, view="basic").state == PENDING
    forced = client.wait_bulk_operation(client.purge_jobs(kind="old", force=True).name, timeout=30)
    assert (forced.matched, forced.done) == (1, 1)
    with pytest.raises(errors.NotFound):
        client.get_job(live.id)


def test_purge_jobs_cancels_the_dependants_of_what_it_deletes(client: jobpulse.Client) -> None:
    # Two pipelines' first jobs and two plain ones, purged in one batch: the firsts go one at a time
    # (their dependants are cancelled, as DeleteJob does), the plain ones together.
    firsts = [client.create_job("pq-first", 1) for _ in range(2)]
    seconds = [client.create_job("pq-second", 1, after=[f.id]) for f in firsts]
    plain = [client.create_job("pq-first", 1) for _ in range(2)]

    final = client.wait_bulk_operation(client.purge_jobs(kind="pq-first", force=True).name, timeout=30)

    assert (final.matched, final.done, final.skipped) == (4, 4, 0)
    for job in firsts + plain:
        with pytest.raises(errors.NotFound):
            client.get_job(job.id)
    for job in seconds:
        got = client.get_job(job.id, view="basic")
        assert (got.state, got.error.reason) == (CANCELLED, "DEPENDENCY_FAILED")
        assert_summary_matches(client, job.id)


def test_operations_follow_stop_and_forget_a_bulk_operation(make_server: Callable[..., Any]) -> None:
    # One job per batch and a stopped runner between calls would need a hook; instead stop an
    # operation that has ended (nothing to stop) and one cancelled at once after it began.
    srv = make_server(bulk_batch_size=1)
    with jobpulse.Client(srv.address, timeout=20) as client:
        for _ in range(3):
            client.create_job("ops", 1)
        op = client.cancel_jobs(kind="ops")
        raw = client.get_operation(op.name)
        meta = job_service_pb2.BulkJobsMetadata()
        assert raw.metadata.Unpack(meta) and meta.action == job_service_pb2.BULK_ACTION_CANCEL
        waited = client.wait_operation(op.name, 30)
        assert waited.done
        result = job_service_pb2.BulkJobsResult()
        assert waited.response.Unpack(result) and (result.done, result.skipped) == (3, 0)
        client.cancel_operation(op.name)  # done already: changes nothing
        assert not client.get_operation(op.name).HasField("error")

        client.delete_operation(op.name)
        with pytest.raises(errors.NotFound) as info:
            client.get_operation(op.name)
        assert info.value.reason == "OPERATION_NOT_FOUND"
        with pytest.raises(errors.NotFound):
            client.get_operation("operations/bulk-01JDOESNOTEXIST000000000000")


def test_a_stopped_operation_says_so(server: Any) -> None:
    # Stop it before a runner takes it up: started through a BulkService of the test's own on the
    # server's store (which wakes no runner; the server's looks for others' operations every few
    # seconds), then stopped with CancelOperation at once.
    with jobpulse.Client(server.address, timeout=20) as client:
        jobs = [client.create_job("stop-me", 1) for _ in range(2)]
        app = server.app

        async def start() -> str:
            svc = BulkService(app.db, app.jobs, lambda: time.time_ns() // 1000)
            op = await svc.start(ANONYMOUS, BulkAction.CANCEL, JobFilter(kind="stop-me"))
            return "operations/" + op.name

        name = server.call(start())
        client.cancel_operation(name)

        stopped = client.wait_bulk_operation(name, timeout=10)
        assert (stopped.finished, stopped.cancelled, stopped.done) == (True, True, 0)
        assert stopped.raw.error.code == 1  # CANCELLED
        assert set(_states(client, [j.id for j in jobs])) == {PENDING}
        # A running operation cannot be deleted; a stopped one can.
        client.delete_operation(name)


def test_owners_see_and_touch_only_their_own(make_keyed: Callable[..., Any]) -> None:
    srv, keys = make_keyed()
    with (
        jobpulse.Client(srv.address, api_key=keys["alice"], timeout=20) as alice,
        jobpulse.Client(srv.address, api_key=keys["bob"], timeout=20) as bob,
        jobpulse.Client(srv.address, api_key=keys["root"], timeout=20) as root,
    ):
        mine = [alice.create_job("shared-kind", 1) for _ in range(2)]
        theirs = bob.create_job("shared-kind", 1)

        op = alice.cancel_jobs(kind="shared-kind")

        assert op.matched == 2
        assert alice.wait_bulk_operation(op.name, timeout=30).done == 2
        assert bob.get_job(theirs.id, view="basic").state == PENDING
        with pytest.raises(errors.NotFound):
            bob.get_bulk_operation(op.name)
        assert root.get_bulk_operation(op.name).done == 2  # an admin sees every owner's
        assert set(_states(alice, [j.id for j in mine])) == {CANCELLED}
        with pytest.raises(errors.PermissionDenied):
            jobpulse.Client(srv.address, api_key=keys["w"]).cancel_jobs(kind="shared-kind")


def test_list_operations_lists_bulk_operations_newest_first(make_keyed: Callable[..., Any]) -> None:
    srv, keys = make_keyed()
    with (
        jobpulse.Client(srv.address, api_key=keys["alice"], timeout=20) as alice,
        jobpulse.Client(srv.address, api_key=keys["bob"], timeout=20) as bob,
        jobpulse.Client(srv.address, api_key=keys["root"], timeout=20) as root,
    ):
        alice.create_job("listed", 1)
        first = alice.wait_bulk_operation(alice.cancel_jobs(kind="listed").name, timeout=30)
        second = alice.wait_bulk_operation(alice.purge_jobs(kind="listed").name, timeout=30)
        theirs = bob.wait_bulk_operation(bob.retry_jobs(kind="listed").name, timeout=30)

        # Each owner its own, newest first; a key that sees every owner, all of them.
        assert [op.name for op in alice.list_bulk_operations()] == [second.name, first.name]
        assert [(op.action, op.done) for op in alice.list_bulk_operations()] == [("purge", 1), ("cancel", 1)]
        assert [op.name for op in bob.list_bulk_operations()] == [theirs.name]
        assert [op.name for op in root.list_bulk_operations(page_size=1)] == [
            theirs.name,
            second.name,
            first.name,
        ]
        assert list(root.list_bulk_operations(running=True)) == []
        assert len(list(root.list_bulk_operations(running=False))) == 3

    # The raw call: the jobs are still what ListOperations lists by default; pages of one, each token
    # bound to its filter; state and kind are a job's, refused beside type = bulk, as an unknown type is.
    as_root = (("authorization", f"Bearer {keys['root']}"),)
    with grpc.insecure_channel(srv.address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)

        def listed(**fields: Any) -> operations_proto_pb2.ListOperationsResponse:
            request = operations_proto_pb2.ListOperationsRequest(name="operations", **fields)
            return stub.ListOperations(request, metadata=as_root, timeout=10)

        assert not any(op.name.startswith("operations/bulk-") for op in listed().operations)
        page = listed(filter="type = bulk", page_size=1)
        assert [op.name for op in page.operations] == [theirs.name] and page.next_page_token
        assert [
            op.name for op in listed(filter="type = bulk", page_token=page.next_page_token).operations
        ] == [
            second.name,
            first.name,
        ]
        for bad in (
            {"filter": "type = bulk AND done = true", "page_token": page.next_page_token},
            {"filter": "type = bulk AND kind = listed"},
            {"filter": "state = FAILED AND type = bulk"},
            {"filter": "type = batch"},
        ):
            with pytest.raises(grpc.RpcError) as info:
                listed(**bad)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert listed(filter="type = bulk AND type = job").operations == []


def test_the_cli_and_the_dashboard_list_bulk_operations(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", server.address]
    with httpx.Client(base_url=str(server.app.http_url), timeout=20) as page:
        empty = page.get("/operations")
        assert empty.status_code == 200 and 'data-testid="no-operations"' in empty.text
        assert '<a href="/operations" aria-current="page">Operations</a>' in empty.text
        assert cli.main([*target, "operations"]) == 0
        assert "no bulk operations" in capsys.readouterr().out

        for _ in range(3):
            client.create_job("listed-cli", 1)
        cancelled = client.wait_bulk_operation(client.cancel_jobs(kind="listed-cli").name, timeout=30)
        purged = client.wait_bulk_operation(client.purge_jobs(kind="listed-cli").name, timeout=30)

        text = page.get("/operations").text
        rows = re.findall(r'data-testid="operation-row" data-operation="([^"]+)"', text)
        assert rows == [purged.name.removeprefix("operations/"), cancelled.name.removeprefix("operations/")]
        newest, older = text.split('data-testid="operation-row"')[1:]
        assert "Delete" in newest and "Done" in newest and "3 of 3" in newest
        assert "Cancel" in older and f'href="/{cancelled.name}"' in older
        assert page.get(f"/{cancelled.name}").status_code == 200

    assert cli.main([*target, "operations"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ACTION", "STATE", "HANDLED", "DONE", "SKIPPED", "STARTED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        [purged.name, "purge", "done", "3/3"],
        [cancelled.name, "cancel", "done", "3/3"],
    ]
    assert cli.main([*target, "--json", "operations", "--ended", "--limit", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [op["name"] for op in document["operations"]] == [purged.name]
    assert document["operations"][0]["metadata"]["done"] == "3"
    assert cli.main([*target, "operations", "--running"]) == 0
    assert "no bulk operations" in capsys.readouterr().out
    with pytest.raises(SystemExit) as parse_error:
        cli.main([*target, "operations", "--running", "--ended"])
    assert parse_error.value.code == 2


def test_the_operations_page_pages_through_them(server: Any, client: jobpulse.Client) -> None:
    started = {client.cancel_jobs(kind="nothing-here").name.removeprefix("operations/") for _ in range(51)}
    row = re.compile(r'data-testid="operation-row" data-operation="([^"]+)"')
    with httpx.Client(base_url=str(server.app.http_url), timeout=20) as page:
        first = page.get("/operations").text
        link = re.search(r'href="([^"]+)" data-testid="next-page"', first)
        assert link is not None
        second = page.get(link.group(1).replace("&amp;", "&")).text
    assert len(row.findall(first)) == 50 and len(row.findall(second)) == 1
    assert set(row.findall(first) + row.findall(second)) == started
    assert 'data-testid="next-page"' not in second


def test_bad_filters_name_the_field(client: jobpulse.Client) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        client.cancel_jobs(min_priority=7, max_priority=2)
    assert [f for f, _ in info.value.field_violations] == ["min_priority"]
    with pytest.raises(errors.InvalidArgument) as info:
        client.purge_jobs(states=[0])
    assert [f for f, _ in info.value.field_violations] == ["states"]
    with pytest.raises(errors.InvalidArgument) as info:
        client.get_operation("operations/")
    assert [f for f, _ in info.value.field_violations] == ["name"]


def test_the_cli_counts_asks_and_follows(
    server: Any, client: jobpulse.Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [client.create_job("cli-bulk", 1) for _ in range(3)]
    target = ["--target", server.address]

    # Without --yes it asks; an answer other than "y" stops it.
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main([*target, "cancel", "--all", "--kind", "cli-bulk", "--state", "pending"]) == 1
    out = capsys.readouterr()
    assert "3 jobs match" in out.out and "nothing done" in out.err
    assert set(_states(client, [j.id for j in jobs])) == {PENDING}

    assert cli.main([*target, "cancel", "--all", "--kind", "cli-bulk", "--yes", "--reason", "cli"]) == 0
    out = capsys.readouterr().out
    assert "cancelled 3 of 3" in out and "operations/bulk-" in out
    assert set(_states(client, [j.id for j in jobs])) == {CANCELLED}

    assert cli.main([*target, "--json", "purge", "--kind", "cli-bulk", "--yes"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["metadata"]["done"] == "3" and document["done"] is True
    name = document["name"]
    assert cli.main([*target, "wait-operation", name]) == 0
    assert "done" in capsys.readouterr().out
    # An ID and --all do not mix; one of them is needed.
    assert cli.main([*target, "cancel", "--all", jobs[0].id]) == 2
    assert cli.main([*target, "retry"]) == 2


def test_the_json_face_starts_and_follows_a_bulk_operation(server: Any, client: jobpulse.Client) -> None:
    jobs = [client.create_job("json-bulk", 1) for _ in range(2)]
    base = str(server.app.http_url)
    started = httpx.post(f"{base}/v1/jobs:cancel", json={"kind": "json-bulk", "reason": "http"}, timeout=10)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["name"].startswith("operations/bulk-")
    assert body["metadata"]["@type"] == "type.googleapis.com/jobpulse.v1.BulkJobsMetadata"
    assert body["metadata"]["matched"] == "2"
    waited = httpx.post(f"{base}/v1/{body['name']}:wait", json={"timeout": "20s"}, timeout=30).json()
    assert waited["done"] is True and waited["response"]["done"] == "2"
    assert set(_states(client, [j.id for j in jobs])) == {CANCELLED}
    counted = httpx.post(
        f"{base}/v1/jobs:purge", json={"kind": "json-bulk", "validateOnly": True}, timeout=10
    )
    assert counted.json()["metadata"]["matched"] == "2" and counted.json()["done"] is True


def test_one_job_filter_serves_the_listings_the_count_and_the_action(client: jobpulse.Client) -> None:
    hit = sorted(client.create_job("jf-thumbs", 1, labels={"batch": "9"}).id for _ in range(3))
    client.create_job("jf-thumbs", 1, labels={"batch": "8"})
    batch9 = jobpulse.JobFilter(kind="jf-thumbs", labels={"batch": "9"}, states=["pending"])

    assert sorted(j.id for j in client.list_jobs(**batch9)) == hit
    assert client.list_jobs_page(**batch9, page_size=1).total_size == 3
    assert sorted(j.id for j in client.export_jobs(**batch9)) == hit
    assert client.cancel_jobs(**batch9, validate_only=True).matched == 3
    assert client.wait_bulk_operation(client.cancel_jobs(**batch9).name, timeout=30).done == 3
    assert list(client.list_jobs(**batch9)) == []
    # A key the filter does not have is refused before any call, as Python refuses a keyword.
    for call in (client.list_jobs_page, client.export_jobs, client.retry_jobs, client.watch_jobs):
        with pytest.raises(
            TypeError, match=rf"^{call.__name__}\(\) got an unexpected keyword argument 'kinds'"
        ):
            call(kinds=["jf-thumbs"])  # type: ignore[call-arg]


def test_async_client_bulk_calls(server: Any) -> None:
    async def run() -> jobpulse.BulkOperation:
        async with jobpulse.AsyncClient(server.address, timeout=20) as client:
            for _ in range(2):
                await client.create_job("async-bulk", 1)
            mine = jobpulse.JobFilter(kind="async-bulk")
            assert (await client.cancel_jobs(**mine, validate_only=True)).matched == 2
            with pytest.raises(
                TypeError, match=r"^cancel_jobs\(\) got an unexpected keyword argument 'kinds'"
            ):
                await client.cancel_jobs(kinds=["async-bulk"])  # type: ignore[call-arg]
            op = await client.cancel_jobs(**mine)
            seen: list[float] = []
            final = await client.wait_bulk_operation(
                op.name, timeout=30, on_progress=lambda o: seen.append(o.progress)
            )
            assert seen and seen[-1] == 1.0
            listed = [o.name async for o in client.list_bulk_operations(running=False)]
            assert listed == [op.name]
            return final

    final = asyncio.run(run())
    assert (final.done, final.finished) == (2, True)
    assert isinstance(final.raw, operations_proto_pb2.Operation)


def test_the_docs_bulk_example_runs_as_written(server: Any, client: jobpulse.Client) -> None:
    code = find_block("docs/sdk.md", "## Unique jobs and bulk operations", "python", "import jobpulse\n").text
    assert "127.0.0.1:50051" in code
    hit = [client.create_job("thumbnails", 1, labels={"batch": "42"}) for _ in range(3)]
    other = client.create_job("thumbnails", 1, labels={"batch": "7"})
    # The only change: the page's address becomes this test's server.
    out = subprocess.run(
        [sys.executable, "-c", code.replace("127.0.0.1:50051", server.address)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "3 jobs match" and out[-1] == "3 cancelled, 0 skipped" and "100%" in out
    assert set(_states(client, [j.id for j in hit])) == {CANCELLED}
    assert client.get_job(other.id, view="basic").state == PENDING
