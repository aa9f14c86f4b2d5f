"""schemathesis against the JSON face, as a user runs it against a running server: ``st run`` on the real
server's own ``GET /v1/openapi.json`` (open mode: no keys), after jobs in every state were made, so that
listings, exports and the ids the fuzzer picks up from responses are real.

Phases: coverage (boundary and type-violating values of every parameter and body), fuzzing (positive and
negative, using ids and tokens seen in earlier responses) and stateful (sequences along the links
schemathesis infers, e.g. CreateJob then GetJob with its id). Every operation is run, the two
Server-Sent Events streams too (read up to one event). Checks: no 5xx, every status answered is
documented, every content type and documented header as the document says, every body (the errors of
refused input included: the ``Error`` schema, as JSON) matches its schema; in the stateful phase a made
resource can be read and a deleted one cannot. The run's JSON report must show every operation tested
and no failure; the server must log no unhandled error meanwhile.

schemathesis runs as its CLI in a child process: its pytest integration for a schema from a fixture
(``schemathesis.pytest.from_fixture``) sets ``request.node._nodeid``, which pytest 9 no longer has. NDJSON
(``GET /v1/jobs:export``), which schemathesis has no reader for, is checked here line by line against the
same document with jsonschema.

Not run: ``positive_data_acceptance`` (the document gives types, not the servicers' ranges: a priority is
any int32 to it, 0..10 to the server, so "schema-valid" input is refused by design).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012

import jobpulse

# The checks of every response (not_a_server_error ... response_schema_conformance) and of the stateful
# phase's sequences (a resource made is there, a deleted one is gone).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "use_after_free",
    "ensure_resource_availability",
    # A verb a path does not have (OPTIONS and TRACE too) is 405 whose Allow names the path's own verbs.
    "unsupported_method",
    "allow_header_conformance",
)
# Examples per operation and phase: about 20 s for the whole run on two cores.
MAX_EXAMPLES = 25
# The same inputs every run, so that CI does not fail on whatever a new draw finds (the draws that found
# bugs so far are fixed, and tested on their own); JOBPULSE_SCHEMATHESIS_SEED=random (or another number)
# explores further.
SEED = "20261129"
_AST_BUG = "SystemError: AST constructor recursion depth mismatch"
_BULK_PATHS = "^/v1/jobs:(cancel|retry|purge)$"
NO_SUCH_JOB = "00000000000000000000000000"
WEBHOOK_SECRET = "whsec_" + "c2NoZW1hdGhlc2lzIHdlYmhvb2sgc2VjcmV0IGtleSE="  # 32 bytes, base64


def _config(job_ids: list[str]) -> str:
    """The run's schemathesis.toml; ``job_ids``: the seeded jobs, offered for ids in paths and bodies."""
    jobs = ", ".join(json.dumps(i) for i in job_ids)
    return f"""
# What the run may take: every request answers within request-timeout; an event stream is read up to
# its first event (WatchJob's snapshot, WatchJobs' heartbeat) and then left.
request-timeout = 10
max-stream-events = 1
workers = 2

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[cache]
enabled = false

# The document has no examples to replay.
[phases.examples]
enabled = false

# Values the servicers accept, offered in place of generated ones (at the probability given, in the
# fuzzing phase), so that positive requests get past validation to the stored jobs more often than
# random ids, int32s and durations let them: half the job ids in paths are the seeded jobs'. Long polls
# (ClaimChunks' wait, WaitOperation's timeout) wait at most 0.1 s: a valid wait of up to 60 s (300 s)
# on a kind nobody makes would outlast request-timeout.
[dictionaries.kinds]
values = ["st-seed", "st-run", "st-kind"]
[dictionaries.counts]
values = ["1", "2", "6"]
[dictionaries.small]
values = [0, 1, 2, 5, 10]
[dictionaries.leases]
values = ["30s", "600s"]
[dictionaries.short]
values = ["0s", "0.1s"]
[dictionaries.none]
values = [""]
[dictionaries.jobs]
values = [{jobs}]

[parameters]
"path.job_id" = {{ dictionary = "jobs", probability = 0.5 }}
"path.operation" = {{ dictionary = "jobs", probability = 0.5 }}
"body.jobId" = {{ dictionary = "jobs", probability = 0.5 }}
"body.after[*]" = {{ dictionary = "jobs", probability = 0.9 }}
"body.kind" = {{ dictionary = "kinds", probability = 0.9 }}
"body.kinds[*]" = {{ dictionary = "kinds", probability = 0.9 }}
"body.totalItems" = {{ dictionary = "counts", probability = 0.9 }}
"body.chunkSize" = {{ dictionary = "counts", probability = 0.9 }}
"body.priority" = {{ dictionary = "small", probability = 0.9 }}
"body.maxAttempts" = {{ dictionary = "small", probability = 0.9 }}
"body.maxChunks" = {{ dictionary = "small", probability = 0.9 }}
"body.ttl" = {{ dictionary = "leases", probability = 0.9 }}
"body.leaseDuration" = {{ dictionary = "leases", probability = 0.9 }}
"body.webhookUrl" = {{ dictionary = "none", probability = 0.9 }}
"body.wait" = {{ dictionary = "short", probability = 1.0 }}
"body.claimNext.wait" = {{ dictionary = "short", probability = 1.0 }}
"body.timeout" = {{ dictionary = "short", probability = 1.0 }}

# WaitOperation without a timeout waits 60 s for a job that is not done (google.longrunning's long poll;
# over HTTP no deadline cuts it shorter), and the coverage phase sends it an empty body: so its path names
# a job that does not exist (every input is still checked, and refused with 400 or 404 as documented).
# tests/clients/test_longrunning.py waits on real operations.
[[operations]]
include-operation-id = "Operations_WaitOperation"
parameters = {{ "path.operation" = "{NO_SUCH_JOB}" }}
"""


def _seed(srv: Any) -> dict[str, str]:
    """Jobs in every state (with chunks, progress, artifacts, a failure, labels, metadata, a webhook), made
    through the SDK; returns their ids by state."""
    artifact = {"name": "out.txt", "uri": "s3://bucket/out.txt", "media_type": "text/plain"}
    with jobpulse.Client(srv.address, timeout=20) as client:
        pending = client.create_job(
            "st-seed", 6, chunk_size=2, display_name="pending", priority=3, labels={"team": "ml"},
            metadata={"source": {"bucket": "b", "keys": [1, 2]}},
            webhook_url="http://127.0.0.1:9/hook", webhook_progress=True,
        )  # fmt: skip
        running = client.create_job("st-run", 4, chunk_size=2, display_name="running")
        claim = client.claim_chunks("seeder", ["st-run"])[0]
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=1, stage="resizing")
        done = client.create_job("st-done", 2, chunk_size=1)
        for claim in client.claim_chunks("seeder", ["st-done"], max_chunks=2):
            client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=[artifact])
        failed = client.create_job("st-fail", 1, max_attempts=1)
        claim = client.claim_chunks("seeder", ["st-fail"])[0]
        client.fail_chunk(
            claim.chunk.id, claim.lease_token, "BAD_INPUT", "cannot read it", retryable=False, details="trace"
        )
        cancelled = client.create_job("st-cancel", 3)
        client.cancel_job(cancelled.id, reason="seeded")
        ids = {
            "PENDING": pending.id, "PROCESSING": running.id, "COMPLETED": done.id,
            "FAILED": failed.id, "CANCELLED": cancelled.id,
        }  # fmt: skip
        for state, job_id in ids.items():
            assert client.get_job(job_id).state == jobpulse.JobState.Value(f"JOB_STATE_{state}"), state
    return ids


def _ok_counts(base: str) -> dict[str, float]:
    """How many calls of each RPC answered OK so far, by the server's own counter."""
    metrics = httpx.get(base + "/metrics", timeout=10).text
    found = re.findall(r'^jobpulse_rpcs_total\{code="OK",method="(\w+)"\} ([0-9.e+]+)$', metrics, re.M)
    return {method: float(count) for method, count in found}


@pytest.fixture
def seeded(make_server: Any) -> tuple[Any, dict[str, str]]:
    srv = make_server(heartbeat_interval=0.5, webhook_secret=WEBHOOK_SECRET)
    return srv, _seed(srv)


def _run(reports: Path, config: Path, base: str, select: list[str]) -> dict[str, Any]:
    """One ``st run`` over the operations ``select`` picks; its JSON report, once it found nothing."""
    seed = os.environ.get("JOBPULSE_SCHEMATHESIS_SEED", SEED)
    for attempt in range(2):
        if attempt and seed.isdigit():
            seed = str(int(seed) + 1)  # the same seed draws the same strategies into the same stack
        shutil.rmtree(reports, ignore_errors=True)
        done = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
                "run", base + "/v1/openapi.json", "--checks", ",".join(CHECKS), *select,
                "--report", "json", "--report-dir", str(reports), "--no-color",
                *(["--seed", seed] if seed != "random" else []),
            ],
            cwd=config.parent, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        # CPython 3.11.7's ast.parse can fail with "AST constructor recursion depth mismatch" when
        # hypothesis describes one of its strategies deep in a stack (a CPython bug, fixed in later
        # releases; seen in CI, twice in a row with one seed): that run says nothing of the server, so
        # it is made again, once, with the next seed.
        if done.returncode == 0 or _AST_BUG not in done.stdout:
            break
    said = done.stdout[-20000:] + done.stderr[-5000:]
    report: dict[str, Any] = json.loads(next(reports.glob("json-*.json")).read_text(encoding="utf-8"))
    assert done.returncode == 0 and report["exit_code"] == 0, said
    assert report["failures"] == [] and report["errors"] == [], said
    assert report["stop_reason"] == "completed" and report["complete"] is True, said
    return report


def test_schemathesis_finds_nothing(
    seeded: tuple[Any, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv, job_ids = seeded
    base = str(srv.app.http_url)
    document = httpx.get(base + "/v1/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in document["paths"].values())
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(list(job_ids.values())), encoding="utf-8")
    caplog.set_level(logging.ERROR, logger="jobpulse_server")
    before = _ok_counts(base)
    # Two runs: every operation but the bulk ones, then the bulk ones (CancelJobs, RetryJobs, PurgeJobs)
    # alone, since one of those with no filter cancels or deletes every seeded job, and the reads of the
    # first run are to find them there.
    report = _run(tmp_path / "rest", config, base, ["--exclude-path-regex", _BULK_PATHS])
    bulk = _run(tmp_path / "bulk", config, base, ["--include-path-regex", _BULK_PATHS])
    # Every operation of the document, none skipped or in error; every phase run and passed.
    assert report["operations"]["tested"] + bulk["operations"]["tested"] == operations, (
        report["operations"],
        bulk["operations"],
    )
    assert bulk["operations"]["tested"] == 3 and bulk["operations"]["errored"] == 0, bulk["operations"]
    assert report["operations"]["errored"] == 0, report["operations"]
    phases = {name: phase["status"] for name, phase in report["phases"].items()}
    assert phases == {"examples": "skip", "coverage": "success", "fuzzing": "success", "stateful": "success"}
    assert {bulk["phases"][name]["status"] for name in ("coverage", "fuzzing")} == {"success"}
    generated = report["test_cases"]["generated"] + bulk["test_cases"]["generated"]
    assert generated >= operations * MAX_EXAMPLES, (report["test_cases"], bulk["test_cases"])
    # The run got past validation to the stored jobs: the RPCs that answered OK during the run.
    after = _ok_counts(base)
    ok = sorted(m for m, n in after.items() if n > before.get(m, 0))
    reads = {"GetJob", "ListJobs", "ListJobChunks", "ExportJobs", "GetJobStats", "ListKinds"}
    assert reads | {"CancelJob", "ClaimChunks"} <= set(ok), ok
    assert len(ok) >= 15, ok
    unhandled = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert unhandled == [], unhandled


def test_the_export_s_ndjson_lines_match_the_document(seeded: tuple[Any, dict[str, str]]) -> None:
    """What schemathesis cannot read (it has no NDJSON deserializer): each line of GET /v1/jobs:export is
    an ExportJobsResponse as the served document describes it."""
    srv, ids = seeded
    base = str(srv.app.http_url)
    document = httpx.get(base + "/v1/openapi.json", timeout=10).json()
    operation = document["paths"]["/v1/jobs:export"]["get"]
    schema = operation["responses"]["200"]["content"]["application/x-ndjson"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:jobpulse", DRAFT202012.create_resource(document))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:jobpulse" + schema["$ref"]},
        registry=registry,
        format_checker=jsonschema.FormatChecker(),
    )
    exported = httpx.get(base + "/v1/jobs:export", timeout=10)
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    for line in lines:
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(line)]
        assert problems == [], problems
    jobs = {job["id"]: job for line in lines for job in line["jobs"]}
    assert set(ids.values()) <= set(jobs)
    # Something the schema could have refused is there to check: artifacts, the failure, progress.
    assert jobs[ids["COMPLETED"]]["artifacts"] and jobs[ids["FAILED"]]["state"] == "JOB_STATE_FAILED"
    broken = dict(lines[0], jobs=[dict(lines[0]["jobs"][0], totalItems=6)])  # an int64 as a number
    assert not validator.is_valid(broken), "the validator would pass anything"


def test_another_verb_on_an_event_stream_path_is_405(server: Any) -> None:
    """What schemathesis' unsupported_method check found: PUT /v1/events answered 404 "no such path"
    (the JSON face skipped the watches' rules, served as Server-Sent Events by routes.py); the path
    exists, so another verb is 405 naming GET."""
    base = str(server.app.http_url)
    for verb, path in (("PUT", "/v1/events"), ("POST", "/v1/jobs/some-job/events")):
        refused = httpx.request(verb, base + path, timeout=10)
        assert refused.status_code == 405, (verb, path, refused.text)
        assert refused.headers["allow"] == "GET"
        assert refused.json()["error"]["reason"] == "METHOD_NOT_ALLOWED"
    assert httpx.put(base + "/v1/no-such-thing", timeout=10).status_code == 404
