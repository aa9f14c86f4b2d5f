"""The shell lines of docs/http.md ("From a shell"), run with curl as a reader pastes them.

Each ``$`` line runs in ``bash`` with ``$ID`` set to a finished job that went through more than 42
revisions (so ``Last-Event-ID: 42`` resumes in its middle) and the page's address
(``127.0.0.1:8080``, what ``make run`` serves) made the test server's HTTP port. The first three lines
are for an open server (``make run``, no keys); the fourth sends ``$JOBPULSE_API_KEY``, so it runs once
an admin key exists (made with ``jobpulse-server keys create``, as an operator would). The feed of the
third line never ends by itself: it runs with ``--max-time`` added, and must have printed its first event
by then. Both databases, like every server-backed test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.polling import eventually
from support.readme_blocks import console_commands, find_block

import jobpulse

PAGE_ADDRESS = "http://127.0.0.1:8080"
BIN = Path(sys.executable).parent
CHUNKS = 30  # claimed and completed one by one: two revisions each, so the job ends past revision 60


def _events(printed: str) -> list[dict[str, str]]:
    """The SSE events curl printed, each as its fields (``event``, ``id``, ``data``); comments and a
    block with no event or data (the stream's ``retry:`` advice) dropped."""
    found = []
    for raw in re.split(r"\r?\n\r?\n", printed.strip()):
        fields = {}
        for line in raw.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "event" in fields or "data" in fields:
            found.append(fields)
    return found


def _paste(line: str, srv: Any, job_id: str, api_key: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env.update(ID=job_id, JOBPULSE_API_KEY=api_key)
    return subprocess.run(
        ["bash", "-c", line.replace(PAGE_ADDRESS, str(srv.app.http_url))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _finished_job(srv: Any) -> str:
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job("docs", CHUNKS, chunk_size=1)
        for _ in range(CHUNKS):
            [claim] = client.claim_chunks("docs-worker", kinds=["docs"])
            client.complete_chunk(claim.chunk.id, claim.lease_token)
        done = client.get_job(job.id)
    assert done.revision > 42 and done.state == jobpulse.v1.job_pb2.JOB_STATE_COMPLETED
    return job.id


def test_the_curl_lines_print_the_events_the_page_describes(make_server: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    block = find_block("docs/http.md", "## From a shell", "console", "$ curl -N ")
    lines = [c.line for c in console_commands(block)]
    assert len(lines) == 4 and all(PAGE_ADDRESS in line for line in lines), lines
    job_line, resume_line, feed_line, key_line = lines
    assert "Last-Event-ID: 42" in resume_line and "/v1/events?" in feed_line
    assert "$JOBPULSE_API_KEY" in key_line

    srv = make_server(key_refresh_interval=0.2)
    job_id = _finished_job(srv)

    # A finished job's stream: the snapshot, then the end, and the server closes (curl exits 0).
    done = _paste(job_line, srv, job_id)
    assert done.returncode == 0, done.stderr
    events = _events(done.stdout)
    assert [e.get("event") for e in events] == ["snapshot", "end"], done.stdout[:500]
    snapshot = json.loads(events[0]["data"])
    assert snapshot["job"]["id"] == job_id and snapshot["job"]["state"] == "JOB_STATE_COMPLETED"

    # Resuming after revision 42: what changed since, nothing at or before 42, then the end.
    done = _paste(resume_line, srv, job_id)
    assert done.returncode == 0, done.stderr
    events = _events(done.stdout)
    assert events[-1].get("event") == "end", done.stdout[:500]
    changes = [e for e in events if e.get("event") == "change"]
    assert changes and all(int(e["id"]) > 42 for e in changes), done.stdout[:500]
    assert json.loads(changes[-1]["data"])["job"]["state"] == "JOB_STATE_COMPLETED"

    # The feed, filtered by state and label: without a cursor its first event is a heartbeat carrying
    # the current cursor; it goes on until curl's --max-time (exit 28).
    done = _paste(feed_line.replace("curl -N ", "curl -N --max-time 3 ", 1), srv, job_id)
    assert done.returncode == 28, (done.returncode, done.stderr)
    events = _events(done.stdout)
    assert events and events[0].get("event") == "heartbeat" and events[0].get("id"), done.stdout[:500]

    # With API keys: the same stream for a program holding a key (an admin key sees every job).
    made = subprocess.run(
        [str(BIN / "jobpulse-server"), "keys", "create", "--name", "docs-admin", "--role", "admin", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JOBPULSE_DATABASE_URL": srv.config.database_url},
    )
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]

    def keys_apply() -> bool:  # the server re-reads keys every key_refresh_interval: open mode ends
        refused = _paste(job_line, srv, job_id)
        assert '"UNAUTHENTICATED"' in refused.stdout, refused.stdout
        return True

    eventually(keys_apply, timeout=20, what="the key to end open mode", interval=0.2)
    done = _paste(key_line, srv, job_id, api_key=key)
    assert done.returncode == 0, done.stderr
    assert [e.get("event") for e in _events(done.stdout)] == ["snapshot", "end"], done.stdout[:500]
