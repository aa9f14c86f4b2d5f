"""The ``jobpulse`` command against a server of the other TLS kind, as a user runs it (the installed
console script, a real server): one line saying which way it is wrong, exit 5, and none of gRPC's own
log lines (finding 5 of the first-hour issue)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.tls import self_signed


def _jobpulse(*args: str) -> subprocess.CompletedProcess[str]:
    command = str(Path(sys.executable).with_name("jobpulse"))  # the installed console script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBPULSE_", "GRPC_"))}
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=60, env=env)


def test_tls_against_a_plaintext_server_is_one_line_without_grpc_log_lines(server: Any) -> None:
    done = _jobpulse("--target", server.address, "--tls", "list")
    assert done.returncode == 5, done.stderr  # unreachable
    lines = done.stderr.strip().splitlines()
    # gRPC logs "ssl_transport_security.cc:... Handshake failed" lines at its default verbosity; the
    # command's own line already says it, with what to do.
    assert len(lines) == 1 and "ssl_transport_security" not in done.stderr, done.stderr
    assert lines[0].startswith("error: ") and "drop --tls" in lines[0]


def test_plaintext_against_a_tls_server_says_add_tls(make_server: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    srv = make_server(tls_cert=str(cert), tls_key=str(key))
    done = _jobpulse("--target", srv.address, "list")
    assert done.returncode == 5, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "add --tls" in lines[0], done.stderr
    trusted = _jobpulse("--target", srv.address, "--tls-ca", str(cert), "list")
    assert trusted.returncode == 0 and trusted.stdout.strip() == "no jobs", trusted.stderr
