"""The server distribution's own command, ``jobpulse-server``: ``serve`` and ``keys`` with the same flags
as ``jobpulse serve`` / ``jobpulse keys``, run as a user would (a console script in a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.servers import free_port, wait_serving

import jobpulse
from jobpulse import cli as sdk_cli
from jobpulse_server.cli import commands as server_cli
from jobpulse_server.platform.config import Config

COMMAND = shutil.which("jobpulse-server", path=str(Path(sys.executable).parent)) or "jobpulse-server"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_offers_serve_and_keys_only() -> None:
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout and "keys" in out.stdout
    for client_command in ("create", "watch", "demo", "export"):
        assert f" {client_command} " not in out.stdout and f"{{{client_command}" not in out.stdout


def test_keys_create_then_list_on_a_database_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    args = ("keys", "create", "--name", "ci-bot", "--role", "worker", "--database-url", url, "--json")
    refused = _run(*args)
    # No such database yet: a key there would never reach a server's database, so it is refused.
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no database at" in refused.stderr and "--create" in refused.stderr, refused.stderr
    assert not (tmp_path / "keys.db").exists()
    created = _run(*args, "--create")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert (key["name"], key["role"]) == ("ci-bot", "worker") and key["key"]
    listed = _run("keys", "list", "--database-url", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert "ci-bot" in listed.stdout


@pytest.mark.timeout(90)
def test_serve_answers_the_sdk_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    proc = subprocess.Popen(
        [COMMAND, "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'serve.db'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_serving(f"127.0.0.1:{port}", 30, proc)  # type: ignore[arg-type]
        with jobpulse.Client(f"127.0.0.1:{port}", timeout=10) as client:
            job = client.create_job("server-command", 4, chunk_size=2)
            assert client.get_job(job.id).chunks_summary.total == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_serve_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBPULSE_HOST", "0.0.0.0")
    monkeypatch.setenv("JOBPULSE_PORT", "6000")
    monkeypatch.setenv("JOBPULSE_DATABASE_URL", "sqlite:///x.db")
    config = server_cli.serve_config(server_cli.build_parser().parse_args(["serve", "--log-level", "debug"]))
    assert (config.host, config.port, config.database_url, config.log_level) == (
        "0.0.0.0",
        6000,
        "sqlite:///x.db",
        "DEBUG",
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("JOBPULSE_PORT", "abc", "JOBPULSE_PORT='abc' is not valid: expected a whole number"),
        ("JOBPULSE_PORT", "99999", "JOBPULSE_PORT / --port: 99999 is not a port"),
        ("JOBPULSE_LOG_LEVEL", "verbose", "JOBPULSE_LOG_LEVEL / --log-level: 'VERBOSE' is not one of"),
        ("JOBPULSE_LOG_FORMAT", "xml", "JOBPULSE_LOG_FORMAT / --log-format: 'xml' is not one of"),
        (
            "JOBPULSE_SWEEP_INTERVAL",
            "often",
            "JOBPULSE_SWEEP_INTERVAL='often' is not valid: expected a number",
        ),
        ("JOBPULSE_INSECURE", "maybe", "JOBPULSE_INSECURE='maybe' is not valid: expected 1/true/yes/on or"),
    ],
)
def test_a_bad_variable_stops_serve_with_one_line_naming_it(
    variable: str, value: str, says: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env[variable] = value
    done = subprocess.run(
        [COMMAND, "serve", "--database-url", f"sqlite:///{tmp_path / 'v.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_jobpulse_serve_help_is_the_servers_and_lists_no_client_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        sdk_cli.main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jobpulse serve")
    assert "--port" in out and "--database-url" in out
    assert "--target" not in out and "--api-key" not in out and "--tls-ca" not in out


def test_serve_help_shows_every_setting_with_its_variable_and_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        server_cli.main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for setting in Config.settings():
        variable = f"JOBPULSE_{setting.name.upper()}"
        if setting.metadata.get("flag"):
            flag = "--" + setting.name.replace("_", "-")
            assert flag in out and f"env {variable};" in out, variable
        else:
            assert variable in out, variable
    assert "(env JOBPULSE_PORT; default 50051)" in out
    assert "JOBPULSE_HEARTBEAT_INTERVAL 15.0" in out


def test_keys_and_migrate_read_only_the_database_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["JOBPULSE_PORT"] = "abc"  # serve's; keys has no use for it
    env["JOBPULSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'keys.db'}"
    done = subprocess.run(
        [COMMAND, "keys", "create", "--name", "ops", "--create"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "keys.db") in done.stderr  # it says which database it wrote to
    migrate = subprocess.run([COMMAND, "migrate"], capture_output=True, text=True, timeout=60, env=env)
    assert migrate.returncode == 0 and "already at" in migrate.stdout, migrate.stderr


def test_jobpulse_keys_through_the_sdk_command_reaches_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert sdk_cli.main(["--json", "keys", "create", "--name", "ops", "--database-url", url, "--create"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ops"
    assert sdk_cli.main(["keys", "list", "--database-url", url, "--json"]) == 0
    assert [k["name"] for k in json.loads(capsys.readouterr().out)] == ["ops"]


def test_migrate_brings_an_empty_database_to_the_newest_schema_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    first = _run("migrate", "--database-url", url, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["before"] is None and report["after"] == report["head"]
    again = _run("migrate", "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert "already at" in again.stdout and report["head"] in again.stdout


def _missing_database_urls(database_url: str, tmp_path: Path) -> list[tuple[str, str]]:
    """Database URLs like ``database_url`` that cannot be opened, each with what its one-line error
    must say."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # A path under a regular file: neither the directory nor the file can be made.
        (tmp_path / "a-file").write_text("not a directory")
        return [(f"sqlite:///{tmp_path}/a-file/jobs.db", "cannot open the SQLite file")]

    def text(u: Any) -> str:
        return str(u.render_as_string(hide_password=False))

    return [
        (text(url.set(database="jobpulse_no_such_database")), "does not exist; create it"),
        (text(url.set(username="jobpulse_no_such_role")), "refused the login"),
        (text(url.set(port=free_port())), "cannot connect"),
    ]


def test_serve_on_a_database_it_cannot_open_says_why_in_one_line(database_url: str, tmp_path: Path) -> None:
    for url, says in _missing_database_urls(database_url, tmp_path):
        done = _run("serve", "--port", "0", "--database-url", url)
        assert done.returncode == 2, (url, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and "cannot start:" in errors[0], done.stderr
        assert says in errors[0] and "--database-url (JOBPULSE_DATABASE_URL)" in errors[0], errors[0]


def test_keys_say_which_database_they_wrote_to(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    assert _run("migrate", "--database-url", url).returncode == 0  # the server's database exists
    created = _run("keys", "create", "--name", "alice", "--database-url", url)
    assert created.returncode == 0, created.stderr
    assert f"created client key 'alice' in {url}" in created.stderr
    revoked = _run("keys", "revoke", "--name", "alice", "--database-url", url)
    assert revoked.returncode == 0 and f"revoked key 'alice' in {url}" in revoked.stderr


def test_metrics_port_0_logs_the_port_it_got(tmp_path: Path) -> None:
    import re

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    proc = subprocess.Popen(
        [
            COMMAND,
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--database-url",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_serving(f"127.0.0.1:{port}", 30, proc)  # type: ignore[arg-type]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    found = re.search(r"metrics on (http://127\.0\.0\.1:(\d+)/metrics)", err)
    assert found is not None and int(found.group(2)) > 0, err


def test_a_port_in_use_is_one_line_saying_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'p.db'}")
    assert done.returncode == 2, done.stderr
    assert "the port is in use" in done.stderr and "Traceback" not in done.stderr, done.stderr
