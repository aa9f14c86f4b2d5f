"""The jobpulse CLI: argument parsing, rendering, and commands against a scripted fake server."""

from __future__ import annotations

import importlib.metadata
import io
import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from jobpulse import cli, errors
from jobpulse.cli import _render
from jobpulse.v1 import job_pb2, job_service_pb2

RESULT_TIMEOUT = 5.0


def _job_with(summary: job_pb2.ChunksSummary) -> job_pb2.Job:
    job = _job()
    job.chunks_summary.CopyFrom(summary)
    return job


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
    cli._settings(args)  # the variables are read when the command runs, not by the parser
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
        ["create", "--kind", "", "--items", "1"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["create", "--kind", "k", "--items", "abc"], "argument --items: expected a whole number, got 'abc'"),
        (["worker", "--fail-rate", "x"], "argument --fail-rate: expected a number between 0 and 1, got 'x'"),
        (["create", "--kind", " ", "--items", "1"], "argument --kind: must not be empty"),
    ],
)
def test_a_bad_value_is_said_in_words_not_by_a_function_name(argv, said, capsys):
    with pytest.raises(SystemExit):
        cli.main(argv)
    err = capsys.readouterr().err
    [line] = err.splitlines()  # one line: no usage text first
    assert f"error: {said};" in line and "_positive_int" not in err


def test_error_text_says_each_thing_once_on_one_line():
    error = errors.InvalidArgument(
        "invalid request: total_items: must be at least 1",
        reason="INVALID_ARGUMENT",
        field_violations=[("total_items", "must be at least 1")],
    )
    assert cli.format_error(error) == "error: total_items must be at least 1 [INVALID_ARGUMENT]"


def test_exit_codes_are_distinct_and_documented():
    assert (cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE) == (0, 1, 2)
    assert (cli.EXIT_FAILED, cli.EXIT_CANCELLED, cli.EXIT_UNREACHABLE) == (3, 4, 5)
    assert len(set(cli.EXIT_CODES)) == len(cli.EXIT_CODES)
    assert "5 the server could not be reached" in " ".join(cli.build_parser().format_help().split())
    for code in cli.EXIT_CODES:
        assert f"\n{code} " in (cli.__doc__ or "")


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


def test_the_plain_display_prints_a_line_only_when_the_job_changes():
    """Off a terminal: a snapshot of 2,500 chunks (three messages of one revision) is one line, and a
    message that changes nothing the line shows (another chunk's attempt, say) prints nothing."""
    snapshot, change = job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT, job_service_pb2.WATCH_EVENT_TYPE_CHANGE
    job = _job()
    out = io.StringIO()
    plain = _render.ProgressDisplay(out, live=False)
    for part, more in ((1000, True), (1000, True), (500, False)):
        chunks = [job_pb2.Chunk(index=i) for i in range(part)]
        plain.update(
            job_service_pb2.WatchJobResponse(type=snapshot, revision=3, job=job, chunks=chunks, more=more),
            job,
        )
    plain.update(
        job_service_pb2.WatchJobResponse(type=change, revision=4, job=job, chunks=[job_pb2.Chunk(index=7)]),
        job,
    )
    later = _job()
    later.progress.CopyFrom(job_pb2.JobProgress(percent=50.0, items_total=500, items_done=250))
    plain.update(job_service_pb2.WatchJobResponse(type=change, revision=5, job=later), later)
    assert out.getvalue().splitlines() == [
        "rev 3 snapshot state=PROCESSING 42.0% items=210/500 chunks=4/10 done, 2 running, 4 pending"
        " changed_chunks=2500",
        "rev 5 change state=PROCESSING 50.0% items=250/500 chunks=4/10 done, 2 running, 4 pending",
    ]


def test_the_chunk_table_marks_the_finalize_chunk():
    chunks = [
        job_pb2.Chunk(index=0, item_count=1, state=job_pb2.CHUNK_STATE_COMPLETED),
        job_pb2.Chunk(index=1, item_count=1, state=job_pb2.CHUNK_STATE_PENDING, finalize=True),
    ]
    _, first, last = _render.chunks_table(chunks).splitlines()
    assert first.split()[0] == "0" and "finalize" not in first
    assert last.startswith("1 (finalize)"), last


def test_jobs_table_aligns_wide_names_by_their_width_on_screen():
    names = ["月次レポート", "🚀 launch", "plain", "e\u0301clair"]  # CJK, emoji, ASCII, a combining accent
    jobs = [_job(id=f"j{n}", display_name=name, kind=f"kind{n}") for n, name in enumerate(names)]
    header, *rows = _render.jobs_table(jobs).splitlines()
    # The KIND column starts at the same terminal column on every row (CJK and emoji take two cells).
    columns = {_render.text_width(row[: row.index(f"kind{n}")]) for n, row in enumerate(rows)}
    assert columns == {_render.text_width(header[: header.index("KIND")])}, rows
    assert _render.text_width("月次") == 4 and _render.text_width("🚀") == 2
    assert _render.text_width("e\u0301") == 1


def test_jobs_table_aligns_columns():
    text = _render.jobs_table([_job(), _job(id="j2", display_name="x", state=job_pb2.JOB_STATE_COMPLETED)])
    header, first, second = text.splitlines()
    assert header.split() == ["ID", "NAME", "KIND", "STATE", "PRI", "PROGRESS", "CHUNKS", "CREATED"]
    assert first.index("PROCESSING") == second.index("COMPLETED") == header.index("STATE")
    assert "COMPLETED" in second and "2024-05-01 12:00:00Z" in first


@pytest.fixture
def cli_client(fake, client, monkeypatch):
    """Points CLI commands at the fake server."""
    monkeypatch.setattr(cli._connection, "_client", lambda args: client)
    return fake


def test_get_prints_error_and_exits_1_without_traceback(cli_client, capsys):
    pending = cli_client.run(cli.main, ["get", "nope"])
    cli_client.fail(
        "JobService.GetJob", grpc.StatusCode.NOT_FOUND, "job nope not found", reason="JOB_NOT_FOUND"
    )
    assert pending.result(RESULT_TIMEOUT) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: job nope not found [NOT_FOUND JOB_NOT_FOUND]\n"
    assert "Traceback" not in captured.err + captured.out


def test_get_shows_job_and_chunk_tables(cli_client, capsys):
    job = _job_with(job_pb2.ChunksSummary(total=2, completed=1, processing=1))
    chunks = [
        job_pb2.Chunk(
            index=0, state=job_pb2.CHUNK_STATE_COMPLETED, item_start=0, item_count=50, items_done=50
        ),
        job_pb2.Chunk(
            index=1, state=job_pb2.CHUNK_STATE_PROCESSING, item_start=50, item_count=50, worker_id="w7"
        ),
    ]
    pending = cli_client.run(cli.main, ["get", "j1"])
    request = cli_client.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=job))
    assert request.view == job_pb2.JOB_VIEW_BASIC
    listed = cli_client.answer(
        "JobService.ListJobChunks", job_service_pb2.ListJobChunksResponse(chunks=chunks, total_size=2)
    )
    assert (listed.job_id, list(listed.states), listed.page_size) == ("j1", [], 50)
    assert pending.result(RESULT_TIMEOUT) == 0
    out = capsys.readouterr().out
    assert "state     PROCESSING" in out
    assert "42.0% (210/500 items)" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert rows[0][:4] == ["0", "COMPLETED", "0+50", "50/50"]
    assert rows[1][-1] == "w7"
    assert "left out" not in out  # every chunk shown


def test_get_shows_a_limited_number_of_chunks_of_the_states_asked_and_says_how_many_more(cli_client, capsys):
    # 10,016 chunks, 16 of them failed: `get` shows what fits a screen, and counts the rest.
    summary = job_pb2.ChunksSummary(total=10016, completed=9000, pending=1000, failed=16)
    failed = [
        job_pb2.Chunk(index=i, state=job_pb2.CHUNK_STATE_FAILED, item_start=i, item_count=1)
        for i in range(0, 160, 10)
    ]
    pending = cli_client.run(cli.main, ["get", "j1", "--chunk-state", "failed", "--chunks", "5"])
    cli_client.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=_job_with(summary)))
    listed = cli_client.answer(
        "JobService.ListJobChunks",
        job_service_pb2.ListJobChunksResponse(chunks=failed[:5], next_page_token="more", total_size=16),
    )
    assert (list(listed.states), listed.page_size) == ([job_pb2.CHUNK_STATE_FAILED], 5)
    assert pending.result(RESULT_TIMEOUT) == 0  # no second page asked for: five were enough
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line[:1].isdigit()]
    assert [r[:2] for r in rows] == [[str(i), "FAILED"] for i in (0, 10, 20, 30, 40)]
    assert lines[-1] == (
        "(5 of 16 FAILED chunks shown, 11 left out: --chunks N shows more, --chunk-state STATE picks a state)"
    )

    # The default is a screenful, not every chunk: 50 of the 10,016.
    pending = cli_client.run(cli.main, ["get", "j1"])
    cli_client.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=_job_with(summary)))
    many = [job_pb2.Chunk(index=i, item_start=i, item_count=1) for i in range(50)]
    listed = cli_client.answer(
        "JobService.ListJobChunks",
        job_service_pb2.ListJobChunksResponse(chunks=many, next_page_token="more", total_size=10016),
    )
    assert listed.page_size == 50
    assert pending.result(RESULT_TIMEOUT) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line[:1].isdigit() for line in lines) == 50
    assert lines[-1].startswith("(50 of 10016 chunks shown, 9966 left out:")


def test_a_bad_chunk_state_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["get", "j1", "--chunk-state", "done"])
    assert caught.value.code == cli.EXIT_USAGE
    assert "argument --chunk-state:" in capsys.readouterr().err


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
    assert err == (
        "error: chunk j1-0 is COMPLETED; only a FAILED chunk can be retried"
        " [FAILED_PRECONDITION CHUNK_NOT_RETRYABLE]\n"
    )
    assert "Traceback" not in err


# -- errors said once, exit codes, variables, --version, no traceback (issue 16) ----------------------------

# A limit of the server's own configuration, which the command cannot know: the server says it.
TOO_MANY = "makes 1000000 chunks of 1; at most 100000 chunks per job (raise chunk_size)"
TOO_MANY_MESSAGE = f"invalid request: total_items: {TOO_MANY}"


TOO_MANY_ARGV = ["create", "--kind", "k", "--items", "1000000", "--chunk-size", "1"]


def _refuse_too_many_chunks(fake):
    return fake.fail(
        "JobService.CreateJob",
        grpc.StatusCode.INVALID_ARGUMENT,
        TOO_MANY_MESSAGE,
        reason="INVALID_ARGUMENT",
        violations=(("total_items", TOO_MANY),),
    )


def test_a_rejected_field_is_one_line_naming_it_once(cli_client, capsys):
    pending = cli_client.run(cli.main, TOO_MANY_ARGV)
    _refuse_too_many_chunks(cli_client)
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.err == f"error: total_items {TOO_MANY} [INVALID_ARGUMENT]\n"
    assert captured.out == ""


def test_with_json_an_error_is_one_json_object_on_stderr(cli_client, capsys):
    pending = cli_client.run(cli.main, ["--json", *TOO_MANY_ARGV])
    _refuse_too_many_chunks(cli_client)
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err) == {
        "code": "INVALID_ARGUMENT",
        "reason": "INVALID_ARGUMENT",
        "message": TOO_MANY_MESSAGE,
        "field_violations": [{"field": "total_items", "description": TOO_MANY}],
    }


def test_unauthenticated_points_at_the_api_key_flag_and_variable(cli_client, capsys):
    pending = cli_client.run(cli.main, ["get", "j1"])
    cli_client.fail(
        "JobService.GetJob",
        grpc.StatusCode.UNAUTHENTICATED,
        "this server needs an API key: send 'authorization: Bearer <key>'",
        reason="UNAUTHENTICATED",
    )
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("UNAUTHENTICATED") == 1
    assert err.rstrip().endswith("[UNAUTHENTICATED]; pass a valid key with --api-key or JOBPULSE_API_KEY")


def _watch_to(fake, state):
    pending = fake.run(cli.main, ["watch", "j1"])
    _, _, stream = fake.take_stream("JobService.WatchJob")
    stream.send_response(
        job_service_pb2.WatchJobResponse(
            type=job_service_pb2.WATCH_EVENT_TYPE_SNAPSHOT, revision=3, job=_job(state=state)
        )
    )
    stream.terminate((), grpc.StatusCode.OK, "")
    return pending.result(RESULT_TIMEOUT)


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (job_pb2.JOB_STATE_COMPLETED, cli.EXIT_OK),
        (job_pb2.JOB_STATE_FAILED, cli.EXIT_FAILED),
        (job_pb2.JOB_STATE_CANCELLED, cli.EXIT_CANCELLED),
    ],
)
def test_watch_exits_with_the_code_of_the_final_state(cli_client, capsys, state, code):
    assert _watch_to(cli_client, state) == code
    name = job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")
    assert capsys.readouterr().out.splitlines()[-1] == f"job j1 {name}"


def test_watch_of_an_unreachable_server_exits_5_with_a_hint(cli_client, client, monkeypatch, capsys):
    # A connect timeout of 0 instead of the default's 20 s: the test sees the CLI's side only.
    watch = client.watch_job
    monkeypatch.setattr(client, "watch_job", lambda job_id, **kw: watch(job_id, connect_timeout=0, **kw))
    pending = cli_client.run(cli.main, ["--target", "127.0.0.1:50999", "watch", "j1"])
    _, _, stream = cli_client.take_stream("JobService.WatchJob")
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_UNREACHABLE
    assert capsys.readouterr().err == (
        "error: failed to connect to all addresses [UNAVAILABLE]; "
        "is the jobpulse server running at 127.0.0.1:50999? (--target / JOBPULSE_TARGET)\n"
    )


def test_unavailable_sent_by_the_server_itself_is_an_error_not_unreachable(cli_client, capsys):
    pending = cli_client.run(cli.main, ["create", "--kind", "k", "--items", "1"])
    cli_client.fail(
        "JobService.CreateJob",
        grpc.StatusCode.UNAVAILABLE,
        "the database is unreachable",
        reason="DATABASE_UNAVAILABLE",
    )
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_ERROR
    assert (
        capsys.readouterr().err == "error: the database is unreachable [UNAVAILABLE DATABASE_UNAVAILABLE]\n"
    )


def test_a_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["watch"])
    assert caught.value.code == cli.EXIT_USAGE
    assert "error: the following arguments are required: ID" in capsys.readouterr().err


def test_a_variable_the_client_commands_do_not_read_does_not_break_them(cli_client, monkeypatch, capsys):
    monkeypatch.setenv("JOBPULSE_PORT", "abc")  # the server's variable; `list` has no use for it
    pending = cli_client.run(cli.main, ["list"])
    cli_client.answer("JobService.ListJobs", job_service_pb2.ListJobsResponse())
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert capsys.readouterr().out == "no jobs\n"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("JOBPULSE_TARGET", "127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("JOBPULSE_TARGET", "http://127.0.0.1:50051", "expected host:port, without a scheme"),
        ("JOBPULSE_TLS_CA", "/nonexistent/ca.pem", "No such file or directory"),
        ("JOBPULSE_DEBUG", "maybe", "expected 1/true/yes/on or 0/false/no/off"),
        ("JOBPULSE_TLS", "maybe", "expected 1/true/yes/on or 0/false/no/off"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_exits_2(monkeypatch, capsys, variable, value, problem):
    monkeypatch.setenv(variable, value)
    assert cli.main(["list"]) == cli.EXIT_USAGE  # refused before any connection is made
    err = capsys.readouterr().err
    assert err.startswith(f"error: {variable}={value!r}: ") and problem in err
    assert err.count("\n") == 1


def test_a_bad_flag_value_names_the_flag(capsys):
    assert cli.main(["--target", "jobs:0", "list"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.startswith("error: --target='jobs:0': the port must be")


def test_version_prints_the_installed_sdk_version(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"jobpulse {importlib.metadata.version('jobpulse')}\n"


def _boom(args):
    raise RuntimeError("boom")


def test_an_unexpected_exception_is_one_line_pointing_at_debug(monkeypatch, capsys):
    monkeypatch.setattr(cli._jobs, "_cmd_get", _boom)
    assert cli.main(["get", "j1"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "error: unexpected RuntimeError: boom (run with --debug for the traceback)\n"


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    monkeypatch.setattr(cli._jobs, "_cmd_get", _boom)
    argv = ["get", "j1"]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("JOBPULSE_DEBUG", "1")
    assert cli.main(argv) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom")' in err
    assert err.rstrip().endswith("error: unexpected RuntimeError: boom")


def test_the_documented_exit_code_table_lists_exactly_the_cli_codes():
    page = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = page.split("Exit codes, the same for every command:", 1)[1].split("\n\n", 2)[1]
    codes = {int(row.split("|")[1]) for row in table.splitlines() if row.split("|")[1].strip().isdigit()}
    assert codes == set(cli.EXIT_CODES)


def test_with_json_usage_errors_bad_variables_and_bugs_are_json_too(monkeypatch, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--json", "create", "--kind", "k", "--items", "abc"])
    assert caught.value.code == cli.EXIT_USAGE
    usage = json.loads(capsys.readouterr().err)
    assert (usage["code"], usage["reason"]) == (None, "USAGE")
    assert usage["message"].startswith("argument --items:")

    monkeypatch.setenv("JOBPULSE_TARGET", "http://x:1")
    assert cli.main(["list", "--json"]) == cli.EXIT_USAGE
    bad = json.loads(capsys.readouterr().err)
    assert bad["reason"] == "BAD_SETTING"
    assert bad["message"].startswith("JOBPULSE_TARGET='http://x:1': ")

    monkeypatch.delenv("JOBPULSE_TARGET")
    monkeypatch.setattr(cli._jobs, "_cmd_get", _boom)
    assert cli.main(["get", "j1", "--json"]) == cli.EXIT_ERROR
    bug = json.loads(capsys.readouterr().err)
    assert (bug["reason"], bug["message"]) == ("UNEXPECTED", "unexpected RuntimeError: boom")
    assert bug["hint"] == "run with --debug for the traceback"


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:50051", "jobs.internal:443", "[::1]:50051", "unix:/tmp/jobpulse.sock", "dns:///jobs:50051"],
)
def test_targets_grpc_understands_pass_the_check(target):
    args = cli.build_parser().parse_args(["--target", target, "list"])
    cli._settings(args)
    assert args.target == target


@pytest.mark.parametrize(
    ("flags", "details", "hint"),
    [
        # The messages gRPC gives for each TLS mismatch (measured against a real server).
        (
            [],
            "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            "the server at 127.0.0.1:1 may use TLS: add --tls (or --tls-ca PEM)",
        ),
        (
            ["--tls"],
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake failed"
            " (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
            "WRONG_VERSION_NUMBER: Invalid certificate verification context: OK",
            "the server at 127.0.0.1:1 does not seem to use TLS: drop --tls / --tls-ca (JOBPULSE_TLS_CA)",
        ),
    ],
)
def test_a_tls_mismatch_says_which_way(cli_client, capsys, flags, details, hint):
    pending = cli_client.run(
        cli.main, ["--target", "127.0.0.1:1", *flags, "create", "--kind", "k", "--items", "1"]
    )
    _, _, rpc = cli_client.take_unary("JobService.CreateJob")
    rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, details)
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.endswith(f"[UNAVAILABLE]; {hint}\n") and err.count("\n") == 1


def test_json_keeps_zero_values_a_script_reads(cli_client, capsys):
    pending = cli_client.run(cli.main, ["stats", "--json"])
    stats = job_service_pb2.JobStats(
        total_jobs=1,
        state_counts=[
            job_service_pb2.JobStateCount(state=job_pb2.JOB_STATE_PENDING, count=1),
            job_service_pb2.JobStateCount(state=job_pb2.JOB_STATE_FAILED, count=0),
        ],
    )
    cli_client.answer("JobService.GetJobStats", job_service_pb2.GetJobStatsResponse(stats=stats))
    assert pending.result(RESULT_TIMEOUT) == 0
    document = json.loads(capsys.readouterr().out)
    counts = {c["state"]: c["count"] for c in document["stats"]["stateCounts"]}
    assert counts == {"JOB_STATE_PENDING": "1", "JOB_STATE_FAILED": "0"}  # not a state without a count
    assert document["stats"]["successRate"] == 0

    pending = cli_client.run(cli.main, ["get", "j1", "--json", "--basic"])
    cli_client.answer("JobService.GetJob", job_service_pb2.GetJobResponse(job=_job()))
    assert pending.result(RESULT_TIMEOUT) == 0
    job = json.loads(capsys.readouterr().out)
    assert (
        job["chunksSummary"]["failed"] == "0" and job["chunksSummary"]["cancelled"] == "0"
    )  # int64: strings
    assert "endTime" not in job  # an unset timestamp stays absent: it means "not yet", not zero


def test_an_output_file_that_cannot_be_written_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-dir" / "jobs.csv"
    assert cli.main(["export", "--output", str(missing)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == f"error: {missing}: No such file or directory\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["create", "--kind", "k", "--items", "1", "--priority", "99"],
            "--priority: must be between 0 and 10",
        ),
        (["create", "--kind", "k", "--items", "-5"], "--items: must be at least 1"),
        (["create", "--kind", "k", "--items", "1", "--chunk-size", "0"], "--chunk-size: must be at least 1"),
        (
            ["create", "--kind", "k", "--items", "1", "--max-attempts", "101"],
            "--max-attempts: must be between",
        ),
        (["create", "--kind", "k", "--items", "1", "--ttl", "-1"], "--ttl: must be between 0 (for ever)"),
        (["create", "--kind", "k", "--items", "1", "--ttl", "400000000"], "--ttl: must be between 0"),
        (["create", "--kind", "k", "--items", "1", "--webhook-url", "ftp://x"], "--webhook-url: expected"),
        (["list", "--min-priority", "-1"], "--min-priority: must be between 0 and 10"),
        (["export", "--max-priority", "11"], "--max-priority: must be between 0 and 10"),
        (["events-url", "--feed", "--ttl", "86401"], "--ttl: must be between 1 and 86400"),
    ],
)
def test_every_range_the_contract_fixes_is_a_one_line_usage_error_before_any_call(argv, said, capsys):
    # No fake server: the command must refuse before it connects anywhere.
    with pytest.raises(SystemExit) as caught:
        cli.main(["--target", "127.0.0.1:1", *argv])
    assert caught.value.code == cli.EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"jobpulse {argv[0]}: error: argument ") and said in line, line
    assert line.endswith(f"; `jobpulse {argv[0]} --help` lists the flags"), line


def test_create_sends_the_webhook_url_and_ttl(cli_client, capsys):
    argv = ["create", "--kind", "k", "--items", "1", "--webhook-url", "https://hooks.example/jp"]
    pending = cli_client.run(cli.main, [*argv, "--webhook-progress", "--ttl", "90.5"])
    request = cli_client.answer("JobService.CreateJob", job_service_pb2.CreateJobResponse(job=_job()))
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert (request.webhook_url, request.webhook_progress) == ("https://hooks.example/jp", True)
    assert (request.HasField("ttl"), request.ttl.seconds, request.ttl.nanos) == (True, 90, 500_000_000)
    # Without the flags: no webhook, and no ttl at all (the server's default), not a ttl of 0 (for ever).
    pending = cli_client.run(cli.main, ["create", "--kind", "k", "--items", "1"])
    request = cli_client.answer("JobService.CreateJob", job_service_pb2.CreateJobResponse(job=_job()))
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert (request.webhook_url, request.HasField("ttl")) == ("", False)
    forever = cli_client.run(cli.main, ["create", "--kind", "k", "--items", "1", "--ttl", "0"])
    request = cli_client.answer("JobService.CreateJob", job_service_pb2.CreateJobResponse(job=_job()))
    assert forever.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert (request.HasField("ttl"), request.ttl.seconds) == (True, 0)
