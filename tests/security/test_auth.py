"""API keys, roles, ownership, open mode, rate limits and TLS, through the real SDK and server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.tls import self_signed

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.app.startup import open_mode_problem
from jobpulse_server.platform.config import Config
from jobpulse_server.services import keys


def _key(srv: Any, name: str, role: str) -> str:
    key = srv.call(keys.create_key(srv.app.db, name, role))
    srv.call(srv.app.auth.refresh())
    return key


@pytest.fixture
def secured(make_server: Any) -> Any:
    srv = make_server(key_refresh_interval=0.2)
    srv.keys = {
        "alice": _key(srv, "alice", "client"),
        "bob": _key(srv, "bob", "client"),
        "w1": _key(srv, "w1", "worker"),
        "root": _key(srv, "root", "admin"),
    }
    return srv


def _client(srv: Any, name: str | None) -> jobpulse.Client:
    return jobpulse.Client(srv.address, api_key=srv.keys[name] if name else None, timeout=10)


def test_open_mode_on_loopback_needs_no_key(server: Any) -> None:
    assert server.app.auth.open
    with jobpulse.Client(server.address) as client:
        job = client.create_job("k", 1)
        assert job.owner == "anonymous"
        assert client.claim_chunks("w")[0].job_id == job.id


def test_missing_unknown_and_wrong_role_keys(secured: Any) -> None:
    with _client(secured, None) as anonymous:
        with pytest.raises(errors.Unauthenticated):
            anonymous.list_jobs_page()
    with jobpulse.Client(secured.address, api_key="jp_not-a-real-key") as stranger:
        with pytest.raises(errors.Unauthenticated):
            stranger.create_job("k", 1)
    with _client(secured, "w1") as worker:
        with pytest.raises(errors.PermissionDenied) as info:
            worker.create_job("k", 1)
        assert info.value.reason == "PERMISSION_DENIED"
        assert worker.claim_chunks("w1") == []
    with _client(secured, "alice") as alice:
        with pytest.raises(errors.PermissionDenied):
            alice.claim_chunks("w")


def test_a_key_reads_its_own_usage_and_no_other_keys(secured: Any) -> None:
    """GetUsage is an admin's report of every key; a client or worker key gets its own line only."""
    with _client(secured, "alice") as alice, _client(secured, "bob") as bob, _client(secured, "w1") as w1:
        alice.create_job("k", 1)
        bob.create_job("k", 1)
        w1.claim_chunks("w1")
        mine = alice.get_usage().usage
        assert [(u.key_name, u.role) for u in mine] == [("alice", "client")]
        assert mine[0].calls >= 1  # the CreateJob above, counted before this call answered
        assert [u.key_name for u in w1.get_usage().usage] == ["w1"]
    with _client(secured, "root") as root:
        everyone = {u.key_name for u in root.get_usage().usage}
    assert {"alice", "bob", "w1"} <= everyone
    # The command: `jobpulse usage` with a client key prints its own row.
    env = {"PATH": str(Path(sys.executable).parent), "JOBPULSE_TARGET": secured.address}
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("jobpulse")), "usage", "--api-key", secured.keys["alice"]],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split() == ["KEY", "ROLE", "CALLS", "REJECTED"]
    assert [row.split()[:2] for row in rows] == [["alice", "client"]], shown.stdout


def test_another_owners_job_looks_exactly_like_a_missing_one(secured: Any) -> None:
    with _client(secured, "alice") as alice, _client(secured, "bob") as bob, _client(secured, "root") as root:
        job = alice.create_job("k", 2, chunk_size=1, request_id="same")
        assert job.owner == "alice"
        assert bob.create_job("k", 2, chunk_size=1, request_id="same").id != job.id  # keys scope request ids
        for call in (
            lambda: bob.get_job(job.id),
            lambda: bob.cancel_job(job.id),
            lambda: bob.update_job(job.id, priority=9),
            lambda: bob.retry_job(job.id),
            lambda: bob.retry_chunk(job.id, alice.get_job(job.id).chunks[0].id),
            lambda: bob.delete_job(job.id, force=True),
            lambda: list(bob.list_job_chunks(job.id)),
            lambda: bob.batch_get_jobs([job.id]),
            lambda: next(bob.watch_job(job.id)),
        ):
            with pytest.raises(errors.NotFound) as seen:
                call()
            with pytest.raises(errors.NotFound) as missing:
                alice.get_job("01NOSUCHJOB0000000000000000")
            assert (seen.value.reason, seen.value.code) == (missing.value.reason, missing.value.code)
        assert [j.id for j in bob.list_jobs()] != [job.id] and job.id not in {j.id for j in bob.list_jobs()}
        assert bob.get_job_stats().stats.total_jobs == 1
        assert {j.id for j in root.list_jobs()} >= {job.id}
        assert root.get_job(job.id).owner == "alice"


def test_health_and_reflection_stay_open(secured: Any) -> None:
    channel = grpc.insecure_channel(secured.address)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_a_revoked_key_stops_working_within_seconds(secured: Any) -> None:
    with _client(secured, "alice") as alice:
        alice.create_job("k", 1)
        assert secured.call(keys.revoke_key(secured.app.db, "alice"))
        deadline = time.monotonic() + 10
        while True:
            try:
                alice.list_jobs_page()
            except errors.Unauthenticated:
                break
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.05)


def test_keys_are_stored_hashed(secured: Any, database_url: str) -> None:
    rows = secured.call(_dump_keys(secured))
    assert len(rows) == 4
    for row in rows:
        assert all(secured.keys[row["name"]] not in str(v) for v in row.values())
        assert row["key_hash"] == keys.hash_key(secured.keys[row["name"]])


async def _dump_keys(srv: Any) -> list[dict[str, Any]]:
    from support.sql import fetch

    from jobpulse_server.store.tables import api_keys

    names = [c.name for c in api_keys.columns]
    rows = await asyncio.to_thread(fetch, srv.config.database_url, f"SELECT {', '.join(names)} FROM api_keys")
    return [dict(zip(names, r, strict=True)) for r in rows]


def test_no_keys_on_a_public_address_is_refused_unless_insecure() -> None:
    assert open_mode_problem(Config(host="127.0.0.1"), keys_exist=False) is None
    assert open_mode_problem(Config(host="::1"), keys_exist=False) is None
    assert open_mode_problem(Config(host="0.0.0.0"), keys_exist=True) is None
    assert open_mode_problem(Config(host="0.0.0.0", insecure=True), keys_exist=False) is None
    assert "--insecure" in (open_mode_problem(Config(host="0.0.0.0"), keys_exist=False) or "")


def test_serve_refuses_to_start_open_on_a_public_address(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jobpulse.cli", "serve", "--host", "0.0.0.0", "--port", "0",
         "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "refusing to serve 0.0.0.0 with no API keys" in proc.stderr


def test_rate_limits_answer_resource_exhausted_with_retry_info(make_server: Any) -> None:
    srv = make_server(rate_limit_client=5.0)
    srv.keys = {"alice": _key(srv, "alice", "client"), "root": _key(srv, "root", "admin")}
    channel = grpc.insecure_channel(srv.address)
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    metadata = (("authorization", f"Bearer {srv.keys['alice']}"),)
    codes = []
    for _ in range(30):
        try:
            stub.ListJobs(job_service_pb2.ListJobsRequest(), metadata=metadata, timeout=5)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            last = exc
    channel.close()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    error = errors.from_rpc_error(last)
    assert error.reason == "RATE_LIMITED" and error.retry_delay is not None and 0 < error.retry_delay <= 1
    # The SDK waits the advised delay and retries idempotent calls.
    with _client(srv, "alice") as alice:
        for _ in range(15):
            alice.list_jobs_page()
    with _client(srv, "root") as root:
        usage = {u.key_name: u for u in root.get_usage().usage}
    assert usage["alice"].rejected >= codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert usage["alice"].calls >= 15 + codes.count(grpc.StatusCode.OK)


def test_tls(make_server: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    srv = make_server(tls_cert=str(cert), tls_key=str(key))
    with jobpulse.Client(srv.address, secure=True, root_certificates=cert.read_bytes(), timeout=10) as client:
        assert client.create_job("k", 1).chunks_summary.total == 1
    with jobpulse.Client(srv.address, timeout=3) as plaintext:
        with pytest.raises(errors.Unavailable):
            plaintext.list_jobs_page()


def test_tls_from_the_variables_the_cli_reads_too(
    make_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    srv = make_server(tls_cert=str(cert), tls_key=str(key))
    monkeypatch.setenv("JOBPULSE_TARGET", srv.address)
    monkeypatch.setenv("JOBPULSE_TLS_CA", str(cert))  # a CA implies TLS, in the SDK as in the CLI
    with jobpulse.Client(timeout=10) as client:
        assert client.create_job("k", 1).chunks_summary.total == 1
    with jobpulse.Client(secure=False, timeout=3) as plaintext:  # an argument wins over the variables
        with pytest.raises(errors.Unavailable):
            plaintext.list_jobs_page()
    monkeypatch.setenv("JOBPULSE_TLS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(errors.SettingError, match=r"JOBPULSE_TLS_CA=.*No such file"):
        jobpulse.Client()
