"""`make install` installs both distributions editable as plain path entries in a .pth file (no import
hook), so a user's mypy, run from anywhere with no configuration, follows ``import jobpulse`` into the
SDK's sources and their types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jobpulse

SCRIPT = """
import jobpulse

def progress(client: jobpulse.Client, job_id: str) -> float:
    job = client.get_job(job_id)
    return job.progress.percent
"""


def test_the_sdk_is_a_plain_path_entry_that_mypy_follows(tmp_path: Path) -> None:
    source = Path(jobpulse.__file__).resolve().parent
    assert source == Path(__file__).resolve().parents[2] / "client" / "jobpulse"  # the checkout, not a copy
    user = tmp_path / "user_script.py"
    user.write_text(SCRIPT)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "/dev/null"]
    done = subprocess.run([*mypy, str(user)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # And mypy does read the SDK's types: a wrong one is caught.
    user.write_text(SCRIPT.replace("-> float", "-> str"))
    done = subprocess.run([*mypy, str(user)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (
        done.returncode == 1 and 'Incompatible return value type (got "float", expected "str")' in done.stdout
    )
