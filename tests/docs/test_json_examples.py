"""The JSON lines of docs/http.md ("Every RPC as JSON"), run with curl as a reader pastes them: the page's
address (``127.0.0.1:8080``, what ``make run`` serves) made the test server's HTTP port, ``$ID`` the job
the first line made. An open server (``make run``, no keys); both databases, like every server-backed
test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
from support.readme_blocks import console_commands, find_block

PAGE_ADDRESS = "http://127.0.0.1:8080"


def _paste(line: str, srv: Any, job_id: str = "") -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env["ID"] = job_id
    done = subprocess.run(
        ["bash", "-c", line.replace(PAGE_ADDRESS, str(srv.app.http_url))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_curl_lines_do_what_the_page_says(make_server: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    block = find_block("docs/http.md", "## Every RPC as JSON", "console", "$ curl -s ")
    lines = [c.line for c in console_commands(block)]
    assert len(lines) == 6 and all(PAGE_ADDRESS in line for line in lines), lines
    create, listing, get, cancel, stats, delete = lines
    srv = make_server()

    job = _paste(create, srv)["job"]
    assert job["kind"] == "thumbnails" and job["totalItems"] == "500" and job["state"] == "JOB_STATE_PENDING"
    listed = _paste(listing, srv, job["id"])
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    full = _paste(get, srv, job["id"])["job"]
    assert len(full["chunks"]) == 10 and full["chunksSummary"]["pending"] == "10"
    assert _paste(cancel, srv, job["id"])["job"]["state"] == "JOB_STATE_CANCELLED"
    assert _paste(stats, srv, job["id"])["stats"]["totalJobs"] == "1"
    assert _paste(delete, srv, job["id"]) == {}
    gone = _paste(get, srv, job["id"])["error"]
    assert (gone["code"], gone["reason"]) == (404, "JOB_NOT_FOUND")
