"""The jobpulse CLI: argument parsing, rendering, and commands against a scripted fake server."""

from __future__ import annotations

import io
import json

import grpc
import pytest
from google.protobuf import duration_pb2

from jobpulse import _render, cli, errors
from jobpulse.v1 import job_pb2, job_service_pb2

RESULT_TIMEOUT = 5.0


def _job(**fields: object) -> job_pb2.Job:
    job = job_pb2.Job(
        id="j1",
        display_name="nightly thumbnails",
        kind="thumbnails",
        state=job_pb2.JOB_STATE_PROCESSING,
        priority=5,
        progress=job_pb2.JobProgress(percent=42.0, items_total=500, items_done=210),
        chunks_summary=job_pb2.ChunksSummary(total=10, completed=4, processing=2, pending=4),
    )
    job.create_time.FromJsonString("2024-05-01T12:00:00Z")
    for name, value in fields.items():
        if isinstance(value, dict):
            getattr(job, name).update(value)
        else:
            setattr(job, name, value)
    return job


def test_create_arguments_parse_labels_metadata_and_global_options_after_the_command():
    args = cli.build_parser().parse_args(
        [
            "create",
            "--kind",
            "thumbnails",
            "--items",
            "2500",
            "--chunk-size",
            "500",
            "--label",
            "team=media",
            "--label",
            "env=prod=eu",
            "--metadata",
            '{"bucket": "b"}',
            "--json",
            "--target",
            "jobs.internal:443",
        ]
    )
    assert (args.kind, args.items, args.chunk_size) == ("thumbnails", 2500, 500)
    assert dict(args.label) == {"team": "media", "env": "prod=eu"}
    assert args.metadata == {"bucket": "b"}
    assert args.json is True
    assert args.target == "jobs.internal:443"


def test_global_options_before_the_command_and_environment_defaults(monkeypatch):
    monkeypatch.setenv("JOBPULSE_TARGET", "from-env:1234")
    monkeypatch.setenv("JOBPULSE_API_KEY", "k")
    args = cli.build_parser().parse_args(
        ["--json", "list", "--state", "completed", "--state", "JOB_STATE_FAILED"]
    )
    assert (args.target, args.api_key, args.json) == ("from-env:1234", "k", True)
    assert args.state == [job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED]


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--state", "done"],
        ["create", "--kind", "k", "--items", "0"],
        ["create", "--kind", "k", "--items", "1", "--label", "novalue"],
        ["create", "--kind", "k", "--items", "1", "--metadata", "[1, 2]"],
        ["stats", "--created-after", "yesterday"],
        ["worker", "--fail-rate", "1.5"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_error_text_names_code_reason_message_and_field_violations():
    error = errors.InvalidArgument(
        "1 field is invalid",
        reason="INVALID_ARGUMENT",
        field_violations=[("total_items", "must be at least 1")],
    )
    assert cli.format_error(error) == (
        "error: INVALID_ARGUMENT INVALID_ARGUMENT: 1 field is invalid\n  total_items: must be at least 1"
    )


@pytest.mark.parametrize(
    ("state", "code"),
    [(job_pb2.JOB_STATE_COMPLETED, 0), (job_pb2.JOB_STATE_FAILED, 1), (job_pb2.JOB_STATE_CANCELLED, 2)],
)
def test_watch_exit_codes(state, code):
    assert cli.exit_code_for(state) == code


def test_progress_line_shows_bar_percent_counts_eta_and_stage():
    job = _job(stage="resizing")
    job.progress.eta.FromSeconds(75)
    line = _render.progress_line(job, bar_width=10, unicode=False)
    assert line.startswith("####------  42.0%")
    assert "210/500 items" in line
    assert "4/10 done, 2 running, 4 pending" in line
    assert "ETA 1m15s" in line
    assert "stage: resizing" in line


def test_live_display_rewrites_one_line_and_plain_display_appends_lines():
    event = job_service_pb2.WatchJobResponse(
        type=job_service_pb2.WATCH_EVENT_TYPE_CHANGE, revision=7, job=_job()
    )
    heartbeat = job_service_pb2.WatchJobResponse(type=job_service_pb2.WATCH_EVENT_TYPE_HEARTBEAT, revision=7)

    live_out = io.StringIO()
    live = _render.ProgressDisplay(live_out, live=True)
    live.update(event, event.job)
    live.update(heartbeat, event.job)
    live.finish()
    assert live_out.getvalue().count("\r") == 2
    assert live_out.getvalue().endswith("\n") and live_out.getvalue().count("\n") == 1

    plain_out = io.StringIO()
    plain = _render.ProgressDisplay(plain_out, live=False)
    plain.update(event, event.job)
    plain.update(heartbeat, event.job)
    assert plain_out.getvalue().splitlines() == [
        "rev 7 change state=PROCESSING 42.0% items=210/500 chunks=4/10 done, 2 running, 4 pending"
    ]


def test_jobs_table_aligns_columns():
    text = _render.jobs_table([_job(), _job(id="j2", display_name="x", state=job_pb2.JOB_STATE_COMPLETED)])
    header, first, second = text.splitlines()
    assert header.split() == ["ID", "NAME", "KIND", "STATE", "PRI", "PROGRESS", "CHUNKS", "CREATED"]
    assert first.index("PROCESSING") == second.index("COMPLETED") == header.index("STATE")
    assert "COMPLETED" in second and "2024-05-01 12:00:00Z" in first


@pytest.fixture
def cli_client(fake, client, monkeypatch):
    """Points CLI commands at the fake server."""
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return fake


def test_get_prints_error_and_exits_1_without_traceback(cli_client, capsys):
    pending = cli_client.run(cli.main, ["get", "nope"])
    cli_client.fail(
        "JobService.GetJob", grpc.StatusCode.NOT_FOUND, "job nope not found", reason="JOB_NOT_FOUND"
    )
    assert pending.result(RESULT_TIMEOUT) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: NOT_FOUND JOB_NOT_FOUND: job nope not found\n"
    assert "Traceback" not in captured.err + captured.out


def test_get_shows_job_and_chunk_tables(cli_client, capsys):
    job = _job()
    job.chunks.add(index=0, state=job_pb2.CHUNK_STATE_COMPLETED, item_start=0, item_count=50, items_done=50)
    job.chunks.add(
        index=1, state=job_pb2.CHUNK_STATE_PROCESSING, item_start=50, item_count=50, worker_id="w7"
    )
    pending = cli_client.run(cli.main, ["get", "j1"])
    cli_client.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=job))
    assert pending.result(RESULT_TIMEOUT) == 0
    out = capsys.readouterr().out
    assert "state     PROCESSING" in out
    assert "42.0% (210/500 items)" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert rows[0][:4] == ["0", "COMPLETED", "0+50", "50/50"]
    assert rows[1][-1] == "w7"


def test_list_json_is_one_document_with_total(cli_client, capsys):
    pending = cli_client.run(cli.main, ["list", "--json", "--limit", "1"])
    request = cli_client.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job()], next_page_token="t", total_size=9),
    )
    assert pending.result(RESULT_TIMEOUT) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["totalSize"] == "9"
    assert [j["id"] for j in document["jobs"]] == ["j1"]
    assert request.page_size == 1


def test_list_json_carries_the_next_page_token_and_watch_cursor(cli_client, capsys):
    pending = cli_client.run(cli.main, ["list", "--json", "--limit", "1"])
    cli_client.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(
            jobs=[_job()], next_page_token="next-1", total_size=9, watch_cursor="cur-1"
        ),
    )
    assert pending.result(RESULT_TIMEOUT) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["nextPageToken"], document["watchCursor"]) == ("next-1", "cur-1")


def test_list_sends_every_filter_and_continues_from_a_page_token(cli_client, capsys):
    argv = [
        "list",
        "--min-priority", "3",
        "--max-priority", "7",
        "--created-after", "2024-05-01T00:00:00Z",
        "--created-before", "2024-06-01T00:00:00Z",
        "--kind", "encode",
        "--search", "march",
        "--label", "team=media",
        "--state", "completed",
        "--order-by", "priority desc",
        "--page-token", "from-before",
        "--limit", "1",
    ]  # fmt: skip
    pending = cli_client.run(cli.main, argv)
    request = cli_client.answer(
        "JobService.ListJobs",
        job_service_pb2.ListJobsResponse(jobs=[_job()], next_page_token="after-this", total_size=5),
    )
    assert pending.result(RESULT_TIMEOUT) == 0
    assert request.page_token == "from-before"
    assert (request.min_priority, request.max_priority) == (3, 7)
    assert request.created_after.ToJsonString() == "2024-05-01T00:00:00Z"
    assert request.created_before.ToJsonString() == "2024-06-01T00:00:00Z"
    assert (request.kind, request.search, dict(request.labels)) == ("encode", "march", {"team": "media"})
    assert list(request.states) == [job_pb2.JOB_STATE_COMPLETED]
    assert request.order_by == "priority desc"
    assert "--page-token after-this" in capsys.readouterr().out


def test_stats_text_shows_processing_time_overall_and_per_kind() -> None:
    def seconds(n: int) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=n)

    response = job_service_pb2.GetJobStatsResponse(
        stats=job_service_pb2.JobStats(
            total_jobs=4,
            processed_jobs=3,
            processing_time_total=seconds(3723),
            processing_time_avg=seconds(1241),
        ),
        kinds=[job_service_pb2.JobStats(kind="encode", total_jobs=4, processing_time_avg=seconds(185))],
    )

    text = _render.stats_text(response)

    assert "processing    3 finished jobs that started: total 1h02m, average 20m41s" in text
    header, row = text.splitlines()[-2:]
    assert header.split()[-2:] == ["PROCESSING", "AVG"]
    assert row.split()[0] == "encode" and row.split()[-1] == "3m05s"


def test_retry_with_a_chunk_retries_that_chunk_only(cli_client, capsys):
    pending = cli_client.run(cli.main, ["retry", "j1", "--chunk", "j1-3"])
    request = cli_client.answer("JobService.RetryChunk", job_service_pb2.RetryChunkResponse(job=_job()))
    assert pending.result(RESULT_TIMEOUT) == 0
    assert (request.job_id, request.chunk_id) == ("j1", "j1-3")
    assert capsys.readouterr().out.startswith("job j1 PROCESSING")


def test_retry_chunk_refused_prints_the_reason_without_traceback(cli_client, capsys):
    pending = cli_client.run(cli.main, ["retry", "j1", "--chunk", "j1-0"])
    cli_client.fail(
        "JobService.RetryChunk",
        grpc.StatusCode.FAILED_PRECONDITION,
        "chunk j1-0 is COMPLETED; only a FAILED chunk can be retried",
        reason="CHUNK_NOT_RETRYABLE",
    )
    assert pending.result(RESULT_TIMEOUT) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: FAILED_PRECONDITION CHUNK_NOT_RETRYABLE: chunk j1-0 is COMPLETED")
    assert "Traceback" not in err
