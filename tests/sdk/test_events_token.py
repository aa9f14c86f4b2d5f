"""CreateEventsToken in the SDK and ``jobpulse events-url``: the request sent, the URL built, the settings
read, and the calls against a real server. What the HTTP side does with the token is the server's tests'."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

import jobpulse
from jobpulse import _events_token, _settings, cli, errors
from jobpulse.v1 import job_service_pb2

RESULT_TIMEOUT = 5.0
EXPIRY = datetime(2030, 5, 1, 12, 10, tzinfo=timezone.utc)


def _response(token: str = "tok-1") -> job_service_pb2.CreateEventsTokenResponse:
    expire_time = Timestamp()
    expire_time.FromDatetime(EXPIRY)
    return job_service_pb2.CreateEventsTokenResponse(token=token, expire_time=expire_time)


def _access_token(url: str) -> str:
    return parse_qs(urlsplit(url).query, strict_parsing=True)["access_token"][0]


# -- the token's paths and URLs ------------------------------------------------------------------------


def test_the_path_is_the_jobs_events_or_the_feed_with_the_token_quoted() -> None:
    assert _events_token.events_path("01J", "abc") == "/v1/jobs/01J/events?access_token=abc"
    assert _events_token.events_path("", "abc") == "/v1/events?access_token=abc"
    quoted = _events_token.events_path("a/b c", "x+y/z=&q")
    assert quoted == "/v1/jobs/a%2Fb%20c/events?access_token=x%2By%2Fz%3D%26q"
    assert _access_token(quoted) == "x+y/z=&q"  # what the server reads back


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/jobs/j1/events?access_token=t"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1/jobs/j1/events?access_token=t"),
        ("https://example.com/jobpulse/", "https://example.com/jobpulse/v1/jobs/j1/events?access_token=t"),
    ],
)
def test_the_url_is_the_path_under_the_base_url_a_proxy_prefix_kept(base: str, url: str) -> None:
    token = _events_token.EventsToken("t", EXPIRY, _events_token.events_path("j1", "t"))
    assert token.url(base) == url


def test_a_token_from_a_response_is_frozen_and_keeps_the_token_out_of_its_repr() -> None:
    token = _events_token.events_token("j1", _response("s3cret-token"))
    assert token == jobpulse.EventsToken(
        "s3cret-token", EXPIRY, "/v1/jobs/j1/events?access_token=s3cret-token"
    )
    assert token.expire_time.tzinfo is not None and token.expire_time == EXPIRY
    assert "s3cret-token" not in repr(token)
    with pytest.raises(AttributeError):
        token.token = "other"  # type: ignore[misc]
    assert "EventsToken" in dir(jobpulse)


# -- the HTTP base URL setting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "secure", "url"),
    [
        ("127.0.0.1:50051", False, "http://127.0.0.1:8080"),
        ("jobs.internal:443", True, "https://jobs.internal:8080"),
        ("localhost", False, "http://localhost:8080"),
        ("[::1]:50051", False, "http://[::1]:8080"),
        ("::1", False, "http://[::1]:8080"),
        ("dns:///jobs:50051", False, "http://jobs:8080"),
        ("dns://8.8.8.8/jobs:50051", False, "http://jobs:8080"),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", False, "http://10.0.0.1:8080"),
        ("ipv6:[::1]:50051", False, "http://[::1]:8080"),
    ],
)
def test_the_default_http_url_is_the_targets_host_on_8080(target: str, secure: bool, url: str) -> None:
    assert _settings.default_http_url(target, secure) == url
    connection = _settings.resolve_connection(target, secure=secure, environ={})
    assert _settings.resolve_http_url(None, connection, environ={}) == url


def test_the_flag_wins_over_the_variable_which_wins_over_the_default() -> None:
    connection = _settings.resolve_connection("jobs:50051", environ={})
    env = {"JOBPULSE_HTTP_URL": "https://from-env"}
    assert _settings.resolve_http_url("http://flag:81", connection, environ=env) == "http://flag:81"
    assert _settings.resolve_http_url(None, connection, environ=env) == "https://from-env"
    assert _settings.resolve_http_url(None, connection, environ={}) == "http://jobs:8080"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1:8080", "expected http(s)://host[:port]"),
        ("grpc://h:1", "expected http(s)://host[:port]"),
        ("http://", "expected http(s)://host[:port]"),
        ("http://h:70000", "the port must be a number from 1 to 65535"),
        ("http://h:web", "the port must be a number from 1 to 65535"),
        ("http://[::1", "expected http(s)://host[:port]"),
        ("http://h:0", "the port must be a number from 1 to 65535"),
        ("http://h:8080/?x=1", "expected a base URL without ?query or #fragment"),
        ("http://h:8080#top", "expected a base URL without ?query or #fragment"),
    ],
)
def test_a_bad_http_url_names_the_flag_or_the_variable(value: str, problem: str) -> None:
    connection = _settings.resolve_connection(environ={})
    with pytest.raises(errors.SettingError) as raised:
        _settings.resolve_http_url(value, connection, environ={})
    assert str(raised.value) == f"--http-url={value!r}: {problem}"
    with pytest.raises(errors.SettingError) as raised:
        _settings.resolve_http_url(None, connection, environ={"JOBPULSE_HTTP_URL": value})
    assert str(raised.value).startswith(f"JOBPULSE_HTTP_URL={value!r}: ")


def test_a_target_without_a_host_asks_for_the_http_url() -> None:
    connection = _settings.resolve_connection("unix:/tmp/jobpulse.sock", environ={})
    with pytest.raises(errors.SettingError, match=r"^--target='unix:/tmp/jobpulse.sock': .*pass --http-url"):
        _settings.resolve_http_url(None, connection, environ={})


# -- the SDK against a scripted fake -------------------------------------------------------------------


def test_create_events_token_sends_the_job_and_ttl_and_returns_the_token(fake, client) -> None:
    pending = fake.run(client.create_events_token, "j1", ttl=90)
    metadata, request, rpc = fake.take_unary("JobService.CreateEventsToken")
    rpc.terminate(_response(), (), grpc.StatusCode.OK, "")
    token = pending.result(RESULT_TIMEOUT)
    assert request.job_id == "j1" and request.ttl.ToTimedelta() == timedelta(seconds=90)
    assert ("authorization", "Bearer s3cret") in metadata
    assert (token.token, token.expire_time) == ("tok-1", EXPIRY)
    assert token.url_path == "/v1/jobs/j1/events?access_token=tok-1"


def test_without_a_job_the_token_is_for_the_feed_and_without_ttl_ttl_is_unset(fake, client) -> None:
    pending = fake.run(client.create_events_token)
    request = fake.answer("JobService.CreateEventsToken", _response())
    token = pending.result(RESULT_TIMEOUT)
    assert request.job_id == "" and not request.HasField("ttl")
    assert token.url_path == "/v1/events?access_token=tok-1"
    pending = fake.run(client.create_events_token, "j1", ttl=timedelta(hours=2))
    request = fake.answer("JobService.CreateEventsToken", _response())
    pending.result(RESULT_TIMEOUT)
    assert request.ttl.ToTimedelta() == timedelta(hours=2)


def test_minting_a_token_is_retried_on_unavailable(fake, client) -> None:
    pending = fake.run(client.create_events_token, "j1")
    fake.fail("JobService.CreateEventsToken", grpc.StatusCode.UNAVAILABLE, "connection reset")
    fake.answer("JobService.CreateEventsToken", _response("tok-2"))
    assert pending.result(RESULT_TIMEOUT).token == "tok-2"


# -- the CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli_client(fake, client, monkeypatch):
    """Points CLI commands at the fake server, with no HTTP URL from the environment."""
    monkeypatch.delenv("JOBPULSE_HTTP_URL", raising=False)
    monkeypatch.setattr(cli._connection, "_client", lambda args: client)
    return fake


def test_events_url_help_shows_the_options_with_their_variable_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["events-url", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--http-url URL base URL of the server's HTTP side (env JOBPULSE_HTTP_URL; default " in out
    assert "http://<host of --target>:8080, https:// with TLS)" in out
    assert "--ttl SECONDS" in out and "(server default 600: 10 minutes)" in out
    assert "--feed" in out and "(env JOBPULSE_TARGET; default 127.0.0.1:50051)" in out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "events-url" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["events-url"], "one of the arguments ID --feed is required"),
        (["events-url", "j1", "--feed"], "argument --feed: not allowed with argument ID"),
        (["events-url", "j1", "--ttl", "soon"], "argument --ttl: expected a number of seconds, got 'soon'"),
        (["events-url", "j1", "--ttl", "0"], "argument --ttl: must be more than 0"),
    ],
)
def test_events_url_usage_errors_exit_2_in_words(argv: list[str], said: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_USAGE
    [line] = capsys.readouterr().err.splitlines()  # one line, no usage text
    assert f"error: {said};" in line, line


def test_events_url_prints_one_url_on_the_targets_host(cli_client, capsys) -> None:
    pending = cli_client.run(cli.main, ["--target", "jobs.internal:50051", "events-url", "j1", "--ttl", "90"])
    request = cli_client.answer("JobService.CreateEventsToken", _response("a+b"))
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert request.job_id == "j1" and request.ttl.ToTimedelta() == timedelta(seconds=90)
    assert capsys.readouterr().out == "http://jobs.internal:8080/v1/jobs/j1/events?access_token=a%2Bb\n"


def test_events_url_feed_over_tls_and_from_the_variable(cli_client, monkeypatch, capsys) -> None:
    pending = cli_client.run(cli.main, ["--target", "jobs:443", "--tls", "events-url", "--feed"])
    request = cli_client.answer("JobService.CreateEventsToken", _response())
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert request.job_id == "" and not request.HasField("ttl")
    assert capsys.readouterr().out == "https://jobs:8080/v1/events?access_token=tok-1\n"
    monkeypatch.setenv("JOBPULSE_HTTP_URL", "https://dash.example.com/jobpulse/")
    pending = cli_client.run(cli.main, ["events-url", "j1"])
    cli_client.answer("JobService.CreateEventsToken", _response())
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    assert (
        capsys.readouterr().out == "https://dash.example.com/jobpulse/v1/jobs/j1/events?access_token=tok-1\n"
    )


def test_events_url_json_is_the_url_token_and_expiry(cli_client, capsys) -> None:
    argv = ["events-url", "j1", "--json", "--http-url", "http://127.0.0.1:9000"]
    pending = cli_client.run(cli.main, argv)
    cli_client.answer("JobService.CreateEventsToken", _response())
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "url": "http://127.0.0.1:9000/v1/jobs/j1/events?access_token=tok-1",
        "token": "tok-1",
        "expireTime": "2030-05-01T12:10:00Z",
    }


def test_events_url_with_a_bad_http_url_exits_2_before_any_call(cli_client, capsys) -> None:
    assert cli.main(["events-url", "j1", "--http-url", "localhost:8080"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "error: --http-url='localhost:8080': expected http(s)://host[:port]\n"


def test_events_url_of_an_unknown_job_is_one_line_exit_1(cli_client, capsys) -> None:
    pending = cli_client.run(cli.main, ["events-url", "nope"])
    not_found = grpc.StatusCode.NOT_FOUND
    cli_client.fail("JobService.CreateEventsToken", not_found, "job nope not found", reason="JOB_NOT_FOUND")
    assert pending.result(RESULT_TIMEOUT) == cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "error: job nope not found [NOT_FOUND JOB_NOT_FOUND]\n")


# -- against a real server -----------------------------------------------------------------------------


def _about(actual: datetime, expected: datetime, slack: float = 10.0) -> bool:
    return abs((actual - expected).total_seconds()) <= slack


@pytest.fixture
def real(server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[jobpulse.Client]:
    for name in ("JOBPULSE_API_KEY", "JOBPULSE_TLS", "JOBPULSE_TLS_CA", "JOBPULSE_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    with jobpulse.Client(server.address, timeout=10.0) as c:
        yield c


def test_a_real_token_lasts_the_ttl_asked_or_ten_minutes(real: jobpulse.Client) -> None:
    job = real.create_job("k", 10)
    token = real.create_events_token(job.id, ttl=90)
    assert token.token and _about(token.expire_time, datetime.now(timezone.utc) + timedelta(seconds=90))
    assert token.url_path == _events_token.events_path(job.id, token.token)
    default = real.create_events_token(job.id)
    assert default.token and default.token != token.token
    assert _about(default.expire_time, datetime.now(timezone.utc) + timedelta(minutes=10))
    longest = real.create_events_token(job.id, ttl=timedelta(hours=24))
    assert _about(longest.expire_time, datetime.now(timezone.utc) + timedelta(hours=24))
    feed = real.create_events_token()
    assert feed.token and feed.url_path.startswith("/v1/events?access_token=")


@pytest.mark.parametrize("ttl", [0.5, 0, -1, 86400 + 1, timedelta(days=2)])
def test_a_ttl_outside_one_second_to_a_day_is_invalid_argument_naming_ttl(real: jobpulse.Client, ttl) -> None:
    job = real.create_job("k", 10)
    with pytest.raises(errors.InvalidArgument) as raised:
        real.create_events_token(job.id, ttl=ttl)
    assert [field for field, _ in raised.value.field_violations] == ["ttl"]


def test_a_token_for_an_unknown_job_is_not_found(real: jobpulse.Client) -> None:
    with pytest.raises(errors.NotFound) as raised:
        real.create_events_token("01J00000000000000000000000")
    assert raised.value.reason == "JOB_NOT_FOUND"


def test_the_async_client_mints_the_same_tokens(server: Any, real: jobpulse.Client) -> None:
    job = real.create_job("k", 10)

    async def mint() -> tuple[jobpulse.EventsToken, BaseException | None]:
        async with jobpulse.AsyncClient(server.address, timeout=10.0) as client:
            token = await client.create_events_token(job.id, ttl=60)
            try:
                await client.create_events_token("01J00000000000000000000000")
            except errors.NotFound as exc:
                return token, exc
            return token, None

    token, missing = asyncio.run(mint())
    assert token.token and _about(token.expire_time, datetime.now(timezone.utc) + timedelta(seconds=60))
    assert token.url_path == _events_token.events_path(job.id, token.token)
    assert isinstance(missing, errors.NotFound)


def test_the_cli_prints_a_url_with_the_job_and_a_token(server: Any, real: jobpulse.Client, capsys) -> None:
    job = real.create_job("k", 10)
    assert cli.main(["--target", server.address, "events-url", job.id, "--ttl", "120"]) == cli.EXIT_OK
    url = capsys.readouterr().out.strip()
    assert url.startswith(f"http://127.0.0.1:8080/v1/jobs/{job.id}/events?access_token=")
    assert _access_token(url)


def test_the_cli_json_carries_the_url_token_and_expiry(server: Any, real: jobpulse.Client, capsys) -> None:
    job = real.create_job("k", 10)
    argv = ["--target", server.address, "events-url", job.id, "--json", "--http-url", "http://h:1"]
    assert cli.main(argv) == cli.EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"url", "token", "expireTime"}
    assert document["token"] and _access_token(document["url"]) == document["token"]
    assert document["url"].startswith(f"http://h:1/v1/jobs/{job.id}/events?")
    expire_time = Timestamp()
    expire_time.FromJsonString(document["expireTime"])
    expected = datetime.now(timezone.utc) + timedelta(minutes=10)
    assert _about(expire_time.ToDatetime(tzinfo=timezone.utc), expected)


def test_the_cli_says_an_unknown_job_is_not_found(server: Any, capsys) -> None:
    assert cli.main(["--target", server.address, "events-url", "nope"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "[NOT_FOUND JOB_NOT_FOUND]" in err and "Traceback" not in err
