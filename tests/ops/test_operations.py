"""Operations: Prometheus metrics, the detailed health report, JSON logs, stats throughput, export."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.servers import free_port

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.store.schema import head_schema_version


def _metrics(srv: Any) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _complete_all(client: jobpulse.Client, kind: str) -> None:
    for claim in client.claim_chunks("w", kinds=[kind], max_chunks=50):
        client.complete_chunk(claim.chunk.id, claim.lease_token)


def test_metrics_count_rpcs_chunks_jobs_and_streams(make_server: Any) -> None:
    srv = make_server(metrics_port=0)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("m", 3, chunk_size=1)
        _complete_all(client, "m")
        try:
            client.get_job("01NOSUCHJOB0000000000000000")
        except errors.NotFound:
            pass
        stream = client.watch_job(client.create_job("m2", 1).id, timeout=30)
        next(stream)
        text = _metrics(srv)
        assert _value(text, "jobpulse_rpcs_total", method="CreateJob", code="OK") == 2
        assert _value(text, "jobpulse_rpcs_total", method="GetJob", code="NOT_FOUND") == 1
        assert _value(text, "jobpulse_rpc_duration_seconds_count", method="CompleteChunk", code="OK") == 3
        assert _value(text, "jobpulse_chunks_total", event="claimed") == 3
        assert _value(text, "jobpulse_chunks_total", event="completed") == 3
        assert _value(text, "jobpulse_open_streams") == 1
        stream.close()
        deadline = time.monotonic() + 15
        while _value(_metrics(srv), "jobpulse_jobs", state="COMPLETED") != 1:
            assert time.monotonic() < deadline, "jobs-by-state gauge never showed the completed job"
            time.sleep(0.1)
        assert client.get_job(job.id).state == jobpulse.JobState.JOB_STATE_COMPLETED


def test_the_group_commit_flusher_says_what_it_wrote_and_how_busy_it_was(
    make_server: Any, database_url: str
) -> None:
    srv = make_server(metrics_port=0)
    with jobpulse.Client(srv.address) as client:
        client.create_job("gc", 3, chunk_size=1)
        before = _metrics(srv)
        _complete_all(client, "gc")
        text = _metrics(srv)
    if not database_url.startswith("postgresql"):
        # SQLite writes each claim and completion in a transaction of its own: no flusher to describe.
        assert "jobpulse_group_commit" not in text
        return
    # One claim of the 3 chunks and 3 completions, each of them written by a flush.
    assert (
        _value(text, "jobpulse_group_commit_written_total")
        - _value(before, "jobpulse_group_commit_written_total")
        == 6
    )
    flushes = _value(text, "jobpulse_group_commit_flushes_total") - _value(
        before, "jobpulse_group_commit_flushes_total"
    )
    assert 2 <= flushes <= 4  # the claim's flush, then each completion's (those made one after another)
    assert _value(text, "jobpulse_group_commit_busy_seconds_total") > _value(
        before, "jobpulse_group_commit_busy_seconds_total"
    )
    assert _value(text, "jobpulse_group_commit_queued") == 0


def test_the_encoded_job_cache_says_what_it_holds_and_how_it_does(make_server: Any) -> None:
    srv = make_server(metrics_port=0, encoded_cache_bytes=50_000)
    with jobpulse.Client(srv.address) as client:
        jobs = [client.create_job("c", 5, chunk_size=1).id for _ in range(40)]
        for job_id in jobs:
            client.get_job(job_id)  # a miss: encoded and kept
        client.get_job(jobs[-1])  # a hit
        text = _metrics(srv)
    assert _value(text, "jobpulse_encoded_cache_misses_total") >= 40
    assert _value(text, "jobpulse_encoded_cache_hits_total") >= 1
    assert _value(text, "jobpulse_encoded_cache_evictions_total") > 0  # 40 FULL jobs do not fit in 50 kB
    assert 0 < _value(text, "jobpulse_encoded_cache_bytes") <= 50_000
    assert _value(text, "jobpulse_encoded_cache_entries") > 0


def _cache_counts(srv: Any) -> tuple[float, float]:
    text = _metrics(srv)
    return _value(text, "jobpulse_encoded_cache_hits_total"), _value(
        text, "jobpulse_encoded_cache_misses_total"
    )


def test_listjobs_basic_encodes_only_the_jobs_whose_encodings_are_not_kept(make_server: Any) -> None:
    srv = make_server(metrics_port=0)
    with jobpulse.Client(srv.address) as client:
        for _ in range(5):
            client.create_job("lk", 2, chunk_size=1)
        first = list(client.list_jobs(kind="lk", view="basic"))
        hits, misses = _cache_counts(srv)
        again = list(client.list_jobs(kind="lk", view="basic"))
        assert again == first  # none started: no ETA, nothing moves
        assert _cache_counts(srv) == (hits + 5, misses)  # every job from its kept encoding
        claim = client.claim_chunks("w", kinds=["lk"])[0]
        client.complete_chunk(claim.chunk.id, claim.lease_token)
        third = {j.id: j for j in client.list_jobs(kind="lk", view="basic")}
        assert _cache_counts(srv) == (hits + 9, misses + 1)  # only the job that changed is read again
        changed = claim.chunk.job_id
        assert third[changed].revision > {j.id: j for j in first}[changed].revision
        assert third[changed].chunks_summary.completed == 1
        assert {i: j for i, j in third.items() if i != changed} == {j.id: j for j in first if j.id != changed}


def test_listjobs_basic_reads_again_whole_when_its_kept_encodings_go_while_it_answers(
    make_server: Any,
) -> None:
    """A cache that holds about a third of the page: the second listing finds the oldest jobs kept, but
    encoding the newer ones (first in the page) evicts them before their turn; the listing is read
    again whole, and the answer is the same."""
    srv = make_server(metrics_port=0, encoded_cache_bytes=8_000)
    with jobpulse.Client(srv.address) as client:
        for _ in range(30):
            client.create_job("ev", 1)
        first = list(client.list_jobs(kind="ev", view="basic", page_size=30))
        hits, misses = _cache_counts(srv)
        again = list(client.list_jobs(kind="ev", view="basic", page_size=30))
        assert again == first
        hits_after, misses_after = _cache_counts(srv)
    # Without the second read the page would have cost 30 - kept misses; with it, 30 more.
    assert misses_after - misses > 30
    assert hits_after == hits  # the kept ones went before they could be used


def test_an_encoded_job_cache_of_zero_bytes_keeps_nothing(make_server: Any) -> None:
    srv = make_server(metrics_port=0, encoded_cache_bytes=0)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("z", 3, chunk_size=1)
        assert client.get_job(job.id) == client.get_job(job.id)
        text = _metrics(srv)
    assert _value(text, "jobpulse_encoded_cache_entries") == 0
    assert _value(text, "jobpulse_encoded_cache_hits_total") == 0


def test_detailed_health_reports_database_schema_streams_and_disk(
    make_server: Any, database_url: str
) -> None:
    srv = make_server(sweep_interval=0.05)
    with jobpulse.Client(srv.address) as client:
        stream = client.watch_job(client.create_job("h", 1).id, timeout=30)
        next(stream)
        deadline = time.monotonic() + 10
        while not (report := client.get_server_health()).HasField("sweeper_lag"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stream.close()
    assert report.serving and report.database_reachable
    assert report.schema_version == head_schema_version()
    assert report.database_kind == ("sqlite" if database_url.startswith("sqlite") else "postgresql")
    assert report.open_streams == 1
    assert report.sweeper_lag.seconds < 5
    assert report.outbox_pending == 0
    assert (report.free_disk_bytes > 0) == database_url.startswith("sqlite")


def test_json_logs_have_one_object_per_rpc(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobpulse.cli", "serve", "--port", str(port), "--log-format", "json",
         "--database-url", f"sqlite:///{tmp_path / 'logs.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JOBPULSE_DRAIN_SECONDS": "0"},
    )  # fmt: skip
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = stub.CreateJob(job_service_pb2.CreateJobRequest(kind="log", total_items=1), timeout=10).job
        stub.GetJob(
            job_service_pb2.GetJobRequest(job_id=job.id), metadata=(("x-request-id", "req-42"),), timeout=10
        )
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in err.splitlines() if x.strip()]), "a log line was not JSON"
    rpc = [x for x in lines if x.get("method") == "GetJob"]
    assert rpc, err
    assert rpc[0]["code"] == "OK" and rpc[0]["job_id"] == job.id and rpc[0]["request_id"] == "req-42"
    assert isinstance(rpc[0]["duration_ms"], float)


def test_stats_report_items_and_throughput_per_kind(server: Any) -> None:
    with jobpulse.Client(server.address) as client:
        for kind in ("a", "b"):
            client.create_job(kind, 4, chunk_size=2)
            _complete_all(client, kind)
        stats = client.get_job_stats()
    assert stats.stats.items_done == 8 and stats.stats.items_per_second > 0
    assert [k.kind for k in stats.kinds] == ["a", "b"]
    assert all(k.items_done == 4 and k.success_rate == 1.0 for k in stats.kinds)


def test_export_streams_every_matching_job(server: Any) -> None:
    with jobpulse.Client(server.address) as client:
        ids = [client.create_job("x", 1).id for _ in range(230)]  # more than two pages of 100
        client.create_job("other", 1)
    run = [sys.executable, "-m", "jobpulse.cli", "--target", server.address, "export", "--kind", "x"]
    out = subprocess.run(
        [*run, "--format", "csv"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][0] == "id" and [r[0] for r in rows[1:]] == ids
    out = subprocess.run(
        [*run, "--format", "jsonl"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids
    out = subprocess.run(
        [*run, "--format", "json"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert [job["id"] for job in json.loads(out)] == ids


async def test_the_async_client_reaches_admin_and_webhook_rpcs(server: Any) -> None:
    async with jobpulse.AsyncClient(server.address) as client:
        job = await client.create_job("a", 1)
        assert await client.list_webhook_deliveries(job.id) == []
        report = await client.get_server_health()
        assert report.database_reachable and report.serving
        assert (await client.get_usage()).usage == []  # open mode: no keys, nothing counted
        with pytest.raises(errors.NotFound):
            await client.redeliver_webhook("no-such-delivery")
