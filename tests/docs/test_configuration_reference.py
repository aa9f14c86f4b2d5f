"""The settings reference (docs/reference/configuration.md) is generated from the declarations the code
reads (``Config`` for the server, ``jobpulse._settings`` for the client): the committed page must be
exactly what the generator writes, so a setting added, renamed or given another default without
``make docs`` fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobpulse import _settings
from jobpulse_server.cli import settings_reference
from jobpulse_server.platform.config import Config

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / settings_reference.PAGE


def test_the_committed_reference_is_what_the_generator_writes() -> None:
    assert PAGE.exists(), f"{settings_reference.PAGE} is missing: run `make docs` to write it"
    committed = PAGE.read_text(encoding="utf-8")
    assert committed == settings_reference.render(), (
        f"{settings_reference.PAGE} is stale (a setting changed since it was written): run `make docs` "
        "(or `python -m jobpulse_server.cli.settings_reference`) and commit the page"
    )


def test_every_setting_has_a_row_with_its_flag_and_help() -> None:
    text = settings_reference.render()
    for f in Config.settings():
        assert f.metadata.get("help"), f"Config.{f.name} has no help text (declare it with _flag or _setting)"
        [row] = [line for line in text.splitlines() if line.startswith(f"| `{Config.env_name(f.name)}` |")]
        flag = "--" + f.name.replace("_", "-")
        assert (f"`{flag}`" in row) == bool(f.metadata.get("flag")), row
    for setting in [*_settings.CLIENT_SETTINGS, _settings.HTTP_URL]:
        [row] = [line for line in text.splitlines() if line.startswith(f"| `{setting.env}` |")]
        assert f"`{setting.flag}`" in row, row


def test_defaults_read_as_one_would_set_them() -> None:
    assert settings_reference.server_default(True) == "`true`"
    assert settings_reference.server_default("") == "empty"
    assert settings_reference.server_default(15.0, "seconds between") == "`15`"
    assert settings_reference.server_default(0.2, "seconds") == "`0.2`"
    assert settings_reference.server_default(604_800.0, "seconds a job") == "`604800` (7 d)"
    assert settings_reference.server_default(20_000, "calls") == "`20000`"


def test_check_mode_says_to_run_make_docs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "configuration.md"
    page.write_text("an old page\n", encoding="utf-8")
    assert settings_reference.main(["--check", str(page)]) == 1
    assert "run `make docs`" in capsys.readouterr().err
    assert settings_reference.main([str(page)]) == 0
    assert settings_reference.main(["--check", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == settings_reference.render()
