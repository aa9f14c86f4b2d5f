"""Exports in the SDK and the CLI: Client.export_jobs against a scripted grpc_testing fake,
AsyncClient.export_jobs against an in-process grpc.aio fake, and ``jobpulse export`` in each format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from support.polling import eventually

import jobpulse
from jobpulse import cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

RESULT_TIMEOUT = 5.0


def _job(job_id: str, **fields: Any) -> job_pb2.Job:
    job = job_pb2.Job(
        id=job_id,
        display_name=f"job {job_id}",
        kind="thumbnails",
        owner="alice",
        state=job_pb2.JOB_STATE_COMPLETED,
        priority=5,
        progress=job_pb2.JobProgress(percent=100.0, items_total=10, items_done=10),
        chunks_summary=job_pb2.ChunksSummary(total=2, completed=2),
    )
    job.create_time.FromJsonString("2024-05-01T12:00:00Z")
    job.update_time.FromJsonString("2024-05-01T12:05:00.250Z")
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(job, name).update(value)
        elif isinstance(value, list):
            getattr(job, name).extend(value)
        elif hasattr(value, "DESCRIPTOR"):
            getattr(job, name).CopyFrom(value)
        else:
            setattr(job, name, value)
    return job


def _batch(*ids: str) -> job_service_pb2.ExportJobsResponse:
    return job_service_pb2.ExportJobsResponse(jobs=[_job(i) for i in ids])


# --- Client.export_jobs (sync) ----------------------------------------------------------------------------


def test_export_jobs_sends_the_filters_and_flattens_the_batches(fake, client):
    after = datetime(2024, 5, 1, tzinfo=timezone.utc)
    pending = fake.run(
        lambda: [
            j.id
            for j in client.export_jobs(
                states=["completed", "FAILED"],
                kind="thumbnails",
                min_priority=2,
                max_priority=9,
                created_after=after,
                search="night",
                labels={"team": "media"},
                order_by="priority desc",
            )
        ]
    )
    metadata, request, stream = fake.take_stream("JobService.ExportJobs")
    stream.send_response(_batch("a", "b"))
    stream.send_response(_batch("c"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT) == ["a", "b", "c"]
    assert list(request.states) == [job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED]
    assert (request.kind, request.search, request.order_by) == ("thumbnails", "night", "priority desc")
    assert (request.min_priority, request.max_priority) == (2, 9)
    assert request.created_after.ToDatetime(tzinfo=timezone.utc) == after
    assert not request.HasField("created_before")
    assert dict(request.labels) == {"team": "media"}
    assert ("authorization", "Bearer s3cret") in metadata


def test_export_jobs_retries_a_stream_that_fails_before_its_first_batch(fake, client):
    pending = fake.run(lambda: [j.id for j in client.export_jobs()])
    _, _, stream = fake.take_stream("JobService.ExportJobs")
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "server starting")
    _, _, stream = fake.take_stream("JobService.ExportJobs")
    stream.send_response(_batch("a"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT) == ["a"]


def test_export_jobs_raises_when_the_stream_breaks_after_a_batch(fake, client):
    # Sending the request again would repeat the jobs already yielded: the break is the caller's to see.
    seen: list[str] = []

    def consume() -> None:
        for job in client.export_jobs():
            seen.append(job.id)

    pending = fake.run(consume)
    _, _, stream = fake.take_stream("JobService.ExportJobs")
    stream.send_response(_batch("a"))
    eventually(lambda: seen == ["a"], RESULT_TIMEOUT, "the first batch to arrive")
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "connection reset")
    with pytest.raises(errors.Unavailable):
        pending.result(RESULT_TIMEOUT)


def test_export_jobs_raises_invalid_argument_with_the_field(fake, client):
    pending = fake.run(lambda: list(client.export_jobs(order_by="name")))
    _, _, stream = fake.take_stream("JobService.ExportJobs")
    message = "invalid request: order_by: must be one of ..."
    violations = (("order_by", "must be one of ..."),)
    trailer = fake.trailer(
        grpc.StatusCode.INVALID_ARGUMENT, message, reason="INVALID_ARGUMENT", violations=violations
    )
    stream.terminate(trailer, grpc.StatusCode.INVALID_ARGUMENT, message)
    with pytest.raises(errors.InvalidArgument) as info:
        pending.result(RESULT_TIMEOUT)
    assert info.value.field_violations == [("order_by", "must be one of ...")]


def test_stopping_the_iteration_cancels_the_stream(fake, client):
    first: list[str] = []

    def take_one() -> None:
        stream = client.export_jobs()
        first.append(next(stream).id)
        stream.close()

    pending = fake.run(take_one)
    _, _, stream = fake.take_stream("JobService.ExportJobs")
    stream.send_response(_batch("a", "b"))
    pending.result(RESULT_TIMEOUT)
    fake.run(stream.cancelled).result(RESULT_TIMEOUT)  # returns once the client has cancelled
    assert first == ["a"]


# --- AsyncClient.export_jobs ------------------------------------------------------------------------------


class FakeExports(job_service_pb2_grpc.JobServiceServicer):
    """ExportJobs from a script of batches; the first call fails with UNAVAILABLE when asked to."""

    def __init__(self) -> None:
        self.requests: list[job_service_pb2.ExportJobsRequest] = []
        self.batches = [["a", "b"], ["c"], ["d"]]
        self.fail_first = False
        self.sent = 0
        self.ended: asyncio.Event = asyncio.Event()
        self.cancelled = False

    async def ExportJobs(self, request, context) -> AsyncIterator[job_service_pb2.ExportJobsResponse]:
        self.requests.append(request)
        if self.fail_first and len(self.requests) == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "starting")
        try:
            for ids in self.batches:
                yield _batch(*ids)
                self.sent += 1
        except (asyncio.CancelledError, GeneratorExit):
            # CancelledError while it awaits; GeneratorExit when grpc closes it, parked at a yield.
            self.cancelled = True
            raise
        finally:
            self.ended.set()


@pytest.fixture
async def exports() -> AsyncIterator[tuple[FakeExports, jobpulse.AsyncClient]]:
    service = FakeExports()
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with jobpulse.AsyncClient(f"127.0.0.1:{port}", timeout=5.0) as client:
        yield service, client
    await server.stop(None)


async def test_async_export_jobs_flattens_the_batches_and_sends_the_filters(exports):
    service, client = exports
    ids = [j.id async for j in client.export_jobs(kind="k", labels={"a": "b"}, order_by="create_time")]
    assert ids == ["a", "b", "c", "d"]
    (request,) = service.requests
    assert (request.kind, dict(request.labels), request.order_by) == ("k", {"a": "b"}, "create_time")


async def test_async_export_jobs_retries_before_the_first_batch(exports):
    service, client = exports
    service.fail_first = True
    assert [j.id async for j in client.export_jobs()] == ["a", "b", "c", "d"]
    assert len(service.requests) == 2


async def test_async_export_closed_early_cancels_the_servers_stream(exports):
    service, client = exports
    service.batches = [[f"{n}-{i}" for i in range(500)] for n in range(100)]  # more than any buffer
    async with aclosing(client.export_jobs()) as stream:
        async for job in stream:
            assert job.id == "0-0"
            break
    await asyncio.wait_for(service.ended.wait(), RESULT_TIMEOUT)
    assert service.cancelled and service.sent < len(service.batches)


# --- jobpulse export --------------------------------------------------------------------------------------


@pytest.fixture
def cli_client(fake, client, monkeypatch):
    """Points CLI commands at the fake server."""
    monkeypatch.setattr(cli._connection, "_client", lambda args: client)
    return fake


def _export(cli_client, argv: list[str], *batches: job_service_pb2.ExportJobsResponse) -> Any:
    """Runs ``jobpulse export`` against the fake, answers with ``batches``; returns the request."""
    pending = cli_client.run(cli.main, ["export", *argv])
    _, request, stream = cli_client.take_stream("JobService.ExportJobs")
    for batch in batches:
        stream.send_response(batch)
    stream.terminate((), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT) == 0
    return request


def _rich_job() -> job_pb2.Job:
    return _job(
        "r",
        display_name='quotes " and, commas',
        labels={"team": "media", "env": "prod=eu"},
        artifacts=[
            job_pb2.Artifact(name="a", uri="s3://bucket/a.json"),
            job_pb2.Artifact(name="b", uri="s3://bucket/b, c.json"),
        ],
        state=job_pb2.JOB_STATE_FAILED,
        error=job_pb2.JobError(reason="CHUNK_FAILED"),
        chunks_summary=job_pb2.ChunksSummary(
            total=5, pending=1, processing=1, completed=1, failed=1, cancelled=1
        ),
    )


def test_export_csv_writes_one_row_per_job(cli_client, capsys):
    request = _export(
        cli_client,
        [
            "--format",
            "csv",
            "--state",
            "completed",
            "--kind",
            "k",
            "--search",
            "nig",
            "--label",
            "team=media",
        ],
        _batch("a"),
        job_service_pb2.ExportJobsResponse(jobs=[_rich_job()]),
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == ["a", "r"]
    a, r = rows
    assert (a["state"], a["priority"], a["owner"], a["percent"]) == ("COMPLETED", "5", "alice", "100.00")
    assert (a["create_time"], a["update_time"]) == ("2024-05-01T12:00:00Z", "2024-05-01T12:05:00.250Z")
    assert a["start_time"] == a["end_time"] == ""
    assert json.loads(a["labels"]) == {} and json.loads(a["artifact_uris"]) == []
    assert r["display_name"] == 'quotes " and, commas'
    assert json.loads(r["labels"]) == {"team": "media", "env": "prod=eu"}
    assert json.loads(r["artifact_uris"]) == ["s3://bucket/a.json", "s3://bucket/b, c.json"]
    counts = [
        r[f"chunks_{s}"] for s in ("total", "pending", "processing", "completed", "failed", "cancelled")
    ]
    assert counts == ["5", "1", "1", "1", "1", "1"]
    assert (r["state"], r["error_reason"]) == ("FAILED", "CHUNK_FAILED")
    assert list(request.states) == [job_pb2.JOB_STATE_COMPLETED]
    assert (request.kind, request.search, dict(request.labels)) == ("k", "nig", {"team": "media"})
    assert request.order_by == "create_time"  # oldest first unless asked otherwise


def test_export_json_is_one_array(cli_client, capsys):
    request = _export(
        cli_client,
        ["--format", "json", "--order-by", "priority desc", "--min-priority", "3", "--max-priority", "8"],
        _batch("a", "b"),
        job_service_pb2.ExportJobsResponse(jobs=[_rich_job()]),
    )
    document = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in document] == ["a", "b", "r"]
    assert document[2]["labels"] == {"team": "media", "env": "prod=eu"}
    assert [a["uri"] for a in document[2]["artifacts"]] == ["s3://bucket/a.json", "s3://bucket/b, c.json"]
    assert document[0]["state"] == "JOB_STATE_COMPLETED"
    assert (request.order_by, request.min_priority, request.max_priority) == ("priority desc", 3, 8)


def test_export_json_of_nothing_is_an_empty_array(cli_client, capsys):
    _export(cli_client, ["--format", "json"])
    assert json.loads(capsys.readouterr().out) == []


def test_export_jsonl_is_one_job_per_line(cli_client, capsys):
    request = _export(
        cli_client,
        [
            "--format",
            "jsonl",
            "--created-after",
            "2024-05-01T00:00:00Z",
            "--created-before",
            "2024-06-01T00:00:00Z",
        ],
        _batch("a"),
        _batch("b", "c"),
    )
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]
    assert request.created_after.ToJsonString() == "2024-05-01T00:00:00Z"
    assert request.created_before.ToJsonString() == "2024-06-01T00:00:00Z"


def test_export_output_goes_to_the_file(cli_client, capsys, tmp_path: Path):
    target = tmp_path / "jobs.csv"
    _export(cli_client, ["--output", str(target)], _batch("a", "b"))
    assert capsys.readouterr().out == ""
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == ["a", "b"]


def test_export_rejected_by_the_server_exits_1_with_the_field(cli_client, capsys):
    pending = cli_client.run(cli.main, ["export", "--kind", "k"])
    _, _, stream = cli_client.take_stream("JobService.ExportJobs")
    message = "invalid request: kind: too long"
    trailer = cli_client.trailer(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        reason="INVALID_ARGUMENT",
        violations=(("kind", "too long"),),
    )
    stream.terminate(trailer, grpc.StatusCode.INVALID_ARGUMENT, message)
    assert pending.result(RESULT_TIMEOUT) == 1
    err = capsys.readouterr().err
    assert err == "error: kind too long [INVALID_ARGUMENT]\n"


def test_export_and_list_take_the_same_filters():
    parser = cli.build_parser()
    filters = [
        "--state", "completed", "--kind", "k", "--search", "s", "--label", "a=b",
        "--min-priority", "1", "--max-priority", "9",
        "--created-after", "2024-05-01T00:00:00Z", "--created-before", "2024-06-01T00:00:00Z",
        "--order-by", "update_time desc",
    ]  # fmt: skip
    listed = parser.parse_args(["list", *filters])
    exported = parser.parse_args(["export", *filters])
    assert cli._filters(listed) == cli._filters(exported)
    assert listed.order_by == exported.order_by == "update_time desc"


def test_export_shows_progress_on_a_terminal(cli_client, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    pending = cli_client.run(cli.main, ["export", "--format", "jsonl", "--kind", "k"])
    counted = cli_client.answer("JobService.ListJobs", job_service_pb2.ListJobsResponse(total_size=3))
    _, request, stream = cli_client.take_stream("JobService.ExportJobs")
    stream.send_response(_batch("a", "b", "c"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert pending.result(RESULT_TIMEOUT) == 0
    captured = capsys.readouterr()
    assert "100.0% | 3/3 jobs exported" in captured.err
    assert len(captured.out.splitlines()) == 3
    assert counted.kind == request.kind == "k"  # the total counts the same jobs


def test_export_with_json_writes_json_and_an_explicit_format_wins(cli_client, capsys):
    _export(cli_client, ["--json"], _batch("a", "b"))
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == ["a", "b"]
    _export(cli_client, ["--json", "--format", "jsonl"], _batch("a", "b"))
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["a", "b"]
