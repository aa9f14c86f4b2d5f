"""The client settings, declared once in jobpulse._settings and read alike by the SDK and the CLI."""

from __future__ import annotations

import pytest

import jobpulse
from jobpulse import _settings, cli, errors


def test_arguments_win_over_variables_which_win_over_defaults() -> None:
    env = {"JOBPULSE_TARGET": "env:1", "JOBPULSE_API_KEY": "env-key", "JOBPULSE_TLS": "yes"}
    c = _settings.resolve_connection(environ=env)
    assert (c.target, c.api_key, c.secure) == ("env:1", "env-key", True)
    c = _settings.resolve_connection("arg:2", api_key="", secure=False, environ=env)
    assert (c.target, c.api_key, c.secure) == ("arg:2", "", False)  # "" is no key, on purpose
    c = _settings.resolve_connection(environ={})
    assert (c.target, c.api_key, c.secure, c.root_certificates) == ("127.0.0.1:50051", "", False, None)


def test_a_ca_file_implies_tls(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEM")
    c = _settings.resolve_connection(environ={"JOBPULSE_TLS_CA": str(ca)})
    assert (c.secure, c.root_certificates) == (True, b"PEM")
    c = _settings.resolve_connection(tls_ca=str(ca), environ={})
    assert (c.secure, c.root_certificates) == (True, b"PEM")


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"JOBPULSE_TARGET": "http://h:1"},
            "JOBPULSE_TARGET='http://h:1': expected host:port, without a scheme",
        ),
        (
            {"JOBPULSE_TARGET": "h:70000"},
            "JOBPULSE_TARGET='h:70000': the port must be a number from 1 to 65535",
        ),
        ({"JOBPULSE_TLS": "sometimes"}, "JOBPULSE_TLS='sometimes': expected 1/true/yes/on or 0/false/no/off"),
        ({"JOBPULSE_TLS_CA": "/nonexistent.pem"}, "JOBPULSE_TLS_CA='/nonexistent.pem': No such file"),
    ],
)
def test_the_sdk_refuses_a_bad_variable_naming_it(monkeypatch: pytest.MonkeyPatch, env, says) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(errors.SettingError) as raised:
        jobpulse.Client()
    assert str(raised.value).startswith(says)
    assert isinstance(raised.value, ValueError)


def test_a_bad_target_argument_names_the_argument() -> None:
    with pytest.raises(errors.SettingError, match=r"^--target='https://h:1': expected host:port"):
        jobpulse.AsyncClient("https://h:1")


def test_every_client_flag_shows_its_variable_and_default_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["list", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for setting in _settings.CLIENT_SETTINGS:
        assert setting.flag in out
        assert f"(env {setting.env}; default " in out, setting.env
    assert "(env JOBPULSE_TARGET; default 127.0.0.1:50051)" in out
    assert "--limit LIMIT at most this many jobs (default 20)" in out


def test_the_command_quiets_grpc_before_grpc_is_imported() -> None:
    # gRPC reads GRPC_VERBOSITY once, at import: the console script can set it only if importing the
    # package does not import gRPC already (names load on first use).
    import subprocess
    import sys

    probe = (
        "import sys, jobpulse; before = 'grpc' in sys.modules; jobpulse.Client; "
        "print(before, 'grpc' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stderr
