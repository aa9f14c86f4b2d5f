"""The SDK's blocking half is generated from its async half (scripts/unasync.py), and the check that
``make lint`` runs catches a generated file that is not what the script would write: edited by hand, or
left behind by a change to the source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the script reads: itself, the ruff settings, the source and the generated files.
_COPIED = [
    "scripts/unasync.py",
    "pyproject.toml",
    "client/jobpulse/_async/client.py",
    "client/jobpulse/_async/worker.py",
    "client/jobpulse/_sync/client.py",
    "client/jobpulse/_sync/worker.py",
]


def _unasync(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "unasync.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for name in _COPIED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_blocking_half_is_what_the_script_writes() -> None:
    checked = _unasync(ROOT, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_hand_edit_of_a_generated_file_is_caught_and_named(copy: Path) -> None:
    generated = copy / "client/jobpulse/_sync/client.py"
    generated.write_text(
        generated.read_text().replace("return response.job", "return response.job  # fixed", 1)
    )
    checked = _unasync(copy, "--check")
    assert checked.returncode == 1
    assert "client/jobpulse/_sync/client.py" in checked.stdout
    assert "client/jobpulse/_sync/worker.py" not in checked.stdout


def test_a_source_change_not_regenerated_is_caught_and_make_unasync_mends_it(copy: Path) -> None:
    source = copy / "client/jobpulse/_async/worker.py"
    source.write_text(
        source.read_text().replace('STOPPED_REASON = "WorkerStopped"', 'STOPPED_REASON = "Stopped"')
    )
    checked = _unasync(copy, "--check")
    assert checked.returncode == 1
    assert "client/jobpulse/_sync/worker.py" in checked.stdout
    written = _unasync(copy)
    assert written.returncode == 0, written.stderr
    assert 'STOPPED_REASON = "Stopped"' in (copy / "client/jobpulse/_sync/worker.py").read_text()
    assert _unasync(copy, "--check").returncode == 0


def test_asyncio_used_in_the_source_outside_the_shim_is_refused(copy: Path) -> None:
    source = copy / "client/jobpulse/_async/worker.py"
    source.write_text(source.read_text().replace("await sleep(delay)", "await asyncio.sleep(delay)", 1))
    checked = _unasync(copy, "--check")
    assert checked.returncode != 0
    assert "still reads async" in checked.stdout + checked.stderr
