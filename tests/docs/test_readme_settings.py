"""The README's "Configuration" table against the one declaration of the server's settings (Config):
every setting is documented, no documented variable is stale, and the defaults agree."""

from __future__ import annotations

import re
from pathlib import Path

from jobpulse import _settings
from jobpulse_server.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _documented_variables(section: str) -> dict[str, str]:
    """Each variable of the table (named in full, so it can be searched for), with its row's default."""
    found: dict[str, str] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not row.startswith("|"):
            continue
        names = re.findall(r"`(JOBPULSE_[A-Z_]+)`", cells[1])
        # Several variables in a row: their defaults in the same order, split by " / " or ", ".
        defaults = re.split(r" / |, ", cells[2])
        for n, name in enumerate(names):
            found[name] = defaults[n] if len(defaults) == len(names) else cells[2]
    return found


def test_every_server_setting_is_in_the_configuration_table_with_its_default() -> None:
    documented = _documented_variables(_section("Configuration"))
    declared = {Config.env_name(f.name): f.default for f in Config.settings()}
    assert sorted(set(declared) - set(documented)) == [], "settings missing from the README"
    assert sorted(set(documented) - set(declared)) == [], "README variables the server does not read"
    for variable, default in declared.items():
        cell = documented[variable]
        if isinstance(default, bool):
            words = ("true", "on") if default else ("false", "off")
            assert any(w in cell for w in words), (variable, cell)
        elif default in ("", None):
            assert "none" in cell or "empty" in cell, (variable, cell)
        else:
            shown = str(int(default)) if isinstance(default, float) and default.is_integer() else str(default)
            assert re.search(rf"`{re.escape(shown)}`", cell), (variable, default, cell)


def test_the_client_variables_are_documented() -> None:
    text = README.read_text(encoding="utf-8")
    for setting in _settings.CLIENT_SETTINGS:
        assert setting.env in text and setting.flag in text, setting.env
