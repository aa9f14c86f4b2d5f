"""The JSON face from TypeScript, as its users would call it: types made by openapi-typescript from the
committed protos/openapi.json, openapi-fetch on top, the program in clients/ts/seed_calls.ts type-checked
and compiled by tsc (strict, with exactOptionalPropertyTypes and noUncheckedIndexedAccess), then run with
node against a real server: the seeds' calls (create, list by state, get with chunks, cancel, stats,
delete), each printed as a JSON line this test checks, and crossed with what the Python SDK made and
sees over gRPC.

The types are generated here, into a temporary directory, never committed: protos/openapi.json is the one
generated file to keep current (``make openapi``; tests/http/test_openapi.py fails when it is stale), and
types made from it on every run cannot go stale beside it. The program's ``wrongCalls`` holds calls the
types must refuse (an int64 as a number, an unknown field, a path or an enum value that does not exist),
each under ``@ts-expect-error``: tsc fails if one of them type-checks.

Skipped where node or the npm packages (openapi-typescript, openapi-fetch, typescript: the root
package.json's devDependencies, ``npm install``) are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import jobpulse

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "clients" / "ts"
DOCUMENT = ROOT / "protos" / "openapi.json"
BIN = ROOT / "node_modules" / ".bin"
NODE = shutil.which("node")
PACKAGES = ("openapi-typescript", "openapi-fetch", "typescript")
KIND = "ts-seed"

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not all((ROOT / "node_modules" / p / "package.json").exists() for p in PACKAGES),
        reason=f"the npm packages {', '.join(PACKAGES)} are not installed: run `npm install` at the root",
    ),
]


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_COLOR="1")
    env.pop("JOBPULSE_API_KEY", None)  # open mode here: the program sends a key only if one is set
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/ts/ copied to a temporary directory, the types generated beside seed_calls.ts, and the
    whole compiled by tsc; returns the compiled program."""
    build = tmp_path_factory.mktemp("ts-client")
    for name in ("seed_calls.ts", "tsconfig.json", "package.json"):
        shutil.copy(SOURCE / name, build / name)
    (build / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    made = _run([str(BIN / "openapi-typescript"), str(DOCUMENT), "-o", "jobpulse.d.ts"], build)
    assert made.returncode == 0, made.stdout + made.stderr
    types = (build / "jobpulse.d.ts").read_text(encoding="utf-8")
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    missing = [path for path in document["paths"] if f'"{path}": {{' not in types]
    assert missing == [], f"openapi-typescript left out {missing}"
    compiled = _run([str(BIN / "tsc"), "-p", "tsconfig.json"], build)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return build / "build" / "seed_calls.js"


def test_the_generated_client_makes_the_seeds_calls(make_server: Any, program: Path) -> None:
    srv = make_server()
    with jobpulse.Client(srv.address, timeout=20) as client:
        waiting = client.create_job(KIND, 4, chunk_size=2, display_name="made by the Python SDK")
        gone_before = client.create_job(KIND, 1)
        client.cancel_job(gone_before.id, reason="not pending: not listed")
        assert NODE is not None
        done = _run([NODE, str(program), str(srv.app.http_url), KIND], program.parent, timeout=60)
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert done.returncode == 0, done.stdout + done.stderr
        assert [line["event"] for line in lines] == [
            "created", "listed", "got", "cancelled", "stats", "deleted", "gone",
        ]  # fmt: skip
        seen = {line["event"]: line for line in lines}

        created = seen["created"]
        job_id = created["id"]
        assert created["state"] == "JOB_STATE_PENDING" and created["totalItems"] == "6"  # int64: a string
        assert created["summary"] == {"total": "3", "pending": "3"}  # zero counts left out
        # Listed by state: the pending jobs of the kind, the SDK's too; not the cancelled one.
        assert set(seen["listed"]["ids"]) == {job_id, waiting.id}
        assert set(seen["listed"]["states"]) == {"JOB_STATE_PENDING"}
        # FULL view: the three chunks of two items, in order (index 0, the default, left out and
        # filled in by the program).
        got = seen["got"]
        assert got["id"] == job_id
        assert got["chunks"] == [{"index": str(i), "itemCount": "2", "jobId": job_id} for i in range(3)]
        assert got["chunkStates"] == ["CHUNK_STATE_PENDING"] * 3
        assert seen["cancelled"]["state"] == "JOB_STATE_CANCELLED"
        assert seen["cancelled"]["reason"] == "the TypeScript seed is done with it"
        # Stats of the kind, counted before the delete: the SDK's two jobs and the program's.
        stats = seen["stats"]
        assert stats["totalJobs"] == "3"
        assert stats["counts"]["JOB_STATE_PENDING"] == "1" and stats["counts"]["JOB_STATE_CANCELLED"] == "2"
        assert seen["deleted"]["id"] == job_id
        # After the delete, the JSON error of the document: 404, JOB_NOT_FOUND, its ErrorInfo.
        assert seen["gone"] == {
            "event": "gone", "status": 404, "code": 404, "reason": "JOB_NOT_FOUND",
            "details": ["type.googleapis.com/google.rpc.ErrorInfo"],
        }  # fmt: skip

        # What the program did, as gRPC sees it: its job is gone, the SDK's are as they were.
        with pytest.raises(jobpulse.errors.NotFound):
            client.get_job(job_id)
        assert client.get_job(waiting.id).state == jobpulse.JobState.Value("JOB_STATE_PENDING")
        assert client.get_job(gone_before.id).state == jobpulse.JobState.Value("JOB_STATE_CANCELLED")


def test_the_program_says_what_failed(make_server: Any, program: Path) -> None:
    """A call the server refuses ends the program with exit 1 and a "failed" line naming the call and the
    JSON error's reason: here every call needs a key and the program has none."""
    from jobpulse_server.services import keys

    srv = make_server()
    srv.call(keys.create_key(srv.app.db, "someone", "client"))
    srv.call(srv.app.auth.refresh())
    assert NODE is not None
    done = _run([NODE, str(program), str(srv.app.http_url), KIND], program.parent, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = json.loads(done.stdout.splitlines()[-1])
    assert failed["event"] == "failed"
    assert failed["message"].startswith("CreateJob: HTTP 401 UNAUTHENTICATED"), failed
