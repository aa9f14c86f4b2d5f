"""The contract from another language: a Node client (@grpc/grpc-js + @grpc/proto-loader, loading
protos/ at run time, no generated code; clients/node/) creates a job, watches it to completion and
reads it, and decodes the rich error of a missing job, against a real server.

SQLite is enough here: what these tests prove is the wire contract (the .proto files as another
language's loader reads them, the server stream, int64 and enum encoding, the google.rpc.Status
trailer), which the api layer writes the same way over either store; both databases are covered
through the same RPCs by tests/e2e/. They skip only where ``node`` is not installed (CI machines
have it); ``make buf`` (npm install) provides the Node packages.
"""

from __future__ import annotations

import itertools
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2

import jobpulse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clients" / "node" / "contract_check.js"
NODE = shutil.which("node")
# The directory holding google/rpc/status.proto, error_details.proto and google/api/annotations.proto
# (which the contract imports): the installed googleapis-common-protos package, so the Node side loads the
# same files the server's stubs came from.
GOOGLEAPIS = Path(status_pb2.__file__).resolve().parents[2]
ITEMS = 3
KIND = "node-contract"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only, for the reason in the module docstring (overrides the two-database fixture)."""
    return f"sqlite:///{tmp_path / 'jobpulse.db'}"


@pytest.fixture(autouse=True)
def _node_packages() -> None:
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("the Node packages are not installed: run `make buf` (npm install) first")


class NodeRun:
    """``node contract_check.js ...`` with its stdout read line by line on a thread of its own, so
    the test waits for each line with a deadline and never blocks on a silent process."""

    def __init__(self, *args: str) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # end of output

    def next(self, timeout: float = 30) -> dict[str, Any]:
        """The next JSON line; fails with node's stderr if the output ended or nothing came in time."""
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node printed nothing for {timeout:g}s") from None
        if got is None:
            raise AssertionError(f"node's output ended (exit {self.proc.wait(10)}): {self._stderr()}")
        if got["event"] == "failed":
            raise AssertionError(f"node failed: {got['message']}")
        return got

    def _stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def finish(self) -> int:
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def node_runs() -> Iterator[list[NodeRun]]:
    runs: list[NodeRun] = []
    yield runs
    for run in runs:
        run.close()


def test_node_creates_watches_to_completion_and_reads_a_job(
    make_server: Any, node_runs: list[NodeRun]
) -> None:
    srv = make_server(watch_min_interval=0.0)
    node = NodeRun(
        "lifecycle",
        "--target",
        srv.address,
        "--googleapis",
        str(GOOGLEAPIS),
        "--kind",
        KIND,
        "--items",
        str(ITEMS),
    )
    node_runs.append(node)
    created = node.next()
    assert created["event"] == "created" and created["state"] == "JOB_STATE_PENDING"
    job_id = created["job_id"]
    assert node.next()["event"] == "watching"

    # The Python SDK works the chunks meanwhile, one at a time, each only once the Node watcher has
    # seen the one before: so the stream carries every step, not one folded change.
    completed_seen = threading.Condition()
    seen: list[int] = [0]
    problems: list[BaseException] = []

    def work() -> None:
        try:
            with jobpulse.Client(srv.address) as client:
                for step in range(ITEMS):
                    claim = client.claim_chunks("py-worker", kinds=[KIND], max_chunks=1)[0]
                    idx = claim.chunk.index
                    artifact = {"name": f"out-{idx}.txt", "uri": f"s3://o/{idx}", "media_type": "text/plain"}
                    client.complete_chunk(claim.chunk.id, claim.lease_token, artifacts=[artifact])
                    with completed_seen:
                        assert completed_seen.wait_for(lambda s=step: seen[0] >= s + 1, 30), (
                            f"node never saw chunk {idx} complete"
                        )
        except BaseException as exc:
            problems.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    watched: list[dict[str, Any]] = []
    while (line := node.next())["event"] == "watch":
        watched.append(line)
        if "chunks_summary" in line:
            with completed_seen:
                seen[0] = max(seen[0], int(line["chunks_summary"]["completed"]))
                completed_seen.notify_all()
    worker.join(30)
    assert not problems, problems
    assert node.finish() == 0

    result = line
    assert result["event"] == "result" and result["job_id"] == job_id
    assert result["state"] == "JOB_STATE_COMPLETED"
    assert {k: int(v) for k, v in result["chunks_summary"].items()} == {
        "total": ITEMS, "pending": 0, "processing": 0, "completed": ITEMS, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert [c["state"] for c in result["chunks"]] == ["CHUNK_STATE_COMPLETED"] * ITEMS
    assert [(a["uri"], int(a["chunk_index"])) for a in result["artifacts"]] == [
        (f"s3://o/{i}", i) for i in range(ITEMS)
    ]
    assert result["labels"] == {"client": "node"}
    # int64 revisions arrive as strings (no rounding), growing with every step (heartbeats and the
    # parts of a split message repeat theirs), and the last one the stream brought is GetJob's.
    assert result["watched"][0]["type"] == "WATCH_EVENT_TYPE_SNAPSHOT"
    revisions = [
        int(w["revision"])
        for w in result["watched"]
        if w["type"] != "WATCH_EVENT_TYPE_HEARTBEAT" and not w["more"]
    ]
    assert all(a < b for a, b in itertools.pairwise(revisions)), revisions
    assert len(revisions) >= ITEMS + 1 and revisions[-1] == int(result["revision"])
    assert watched[-1]["state"] == "JOB_STATE_COMPLETED"
    with jobpulse.Client(srv.address) as client:
        assert client.get_job(job_id).revision == int(result["revision"])


def test_node_decodes_the_rich_error_of_a_missing_job(make_server: Any, node_runs: list[NodeRun]) -> None:
    srv = make_server()
    node = NodeRun("missing", "--target", srv.address, "--googleapis", str(GOOGLEAPIS), "--job-id", "nope")
    node_runs.append(node)
    got = node.next()
    assert node.finish() == 0
    assert got["event"] == "error" and got["code"] == "NOT_FOUND"
    # The details come from the grpc-status-details-bin trailer, decoded with status.proto and
    # error_details.proto of the installed googleapis-common-protos.
    infos = [d for d in got["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(infos) == 1 and infos[0]["reason"] == "JOB_NOT_FOUND", got
    assert got["status_code"] == 5 and got["status_message"] == got["message"]
