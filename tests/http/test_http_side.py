"""The HTTP side over real HTTP against real servers: probes and /metrics, the feed's SSE, auth with
API keys and events tokens (scope, expiry, revocation, another replica, rotation), CORS, and the
limits that keep bad clients from costing the server."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2, json_format
from support.polling import eventually
from support.sse import Event, read
from support.tls import self_signed

import jobpulse
from jobpulse.v1 import job_service_pb2, job_service_pb2_grpc
from jobpulse_server.services import keys


def _http(srv: Any) -> str:
    return str(srv.app.http_url)


def _error(response: Any) -> dict[str, Any]:
    body = response.body if hasattr(response, "body") else response.content
    found: dict[str, Any] = json.loads(body)["error"]
    assert found["code"] == response.status if hasattr(response, "status") else response.status_code
    return found


def _mint(srv: Any, key: str | None, job_id: str = "", ttl: float | None = None) -> str:
    request = job_service_pb2.CreateEventsTokenRequest(job_id=job_id)
    if ttl is not None:
        request.ttl.CopyFrom(duration_pb2.Duration(seconds=int(ttl), nanos=int(ttl % 1 * 1e9)))
    with grpc.insecure_channel(srv.address) as channel:
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return str(
            job_service_pb2_grpc.JobServiceStub(channel).CreateEventsToken(request, metadata=metadata).token
        )


def test_probes_and_metrics(make_server) -> None:
    srv = make_server()
    assert httpx.get(_http(srv) + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(_http(srv) + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    with jobpulse.Client(srv.address) as client:
        client.list_jobs_page()
    metrics = httpx.get(_http(srv) + "/metrics")
    assert metrics.status_code == 200 and 'jobpulse_rpcs_total{code="OK",method="ListJobs"}' in metrics.text
    assert httpx.post(_http(srv) + "/healthz").status_code == 405


def test_readyz_is_503_while_the_database_is_away(make_server) -> None:
    srv = make_server(health_interval=0.1)
    srv.call(srv.app.health.set_serving(False))  # what the probe does when the database stops answering
    srv.app.hub.database_lost("the database does not answer; retry shortly")
    response = httpx.get(_http(srv) + "/readyz")
    assert response.status_code == 503 and "does not answer" in response.json()["reason"]
    assert httpx.get(_http(srv) + "/healthz").status_code == 200  # alive all the same


def test_feed_heartbeat_first_then_matching_changes_and_resume_by_cursor(make_server) -> None:
    srv = make_server(heartbeat_interval=30)
    with jobpulse.Client(srv.address, timeout=20) as client:
        made: list[str] = []
        maker = threading.Thread(
            target=lambda: made.extend(
                (
                    client.create_job(kind="other", total_items=1).id,
                    client.create_job(kind="feed", total_items=1, labels={"team": "a"}).id,
                )
            ),
            daemon=True,
        )

        def until(event: Event, events: list[Event]) -> bool:
            if event.event == "heartbeat" and len(events) == 1:
                maker.start()
            return event.event == "change"

        stream = read(_http(srv) + "/v1/events?kind=feed&label=team=a&state=JOB_STATE_PENDING", until=until)
        # The change is published at the commit, which may be before CreateJob's answer reaches the maker.
        maker.join(timeout=20)
        assert not maker.is_alive() and len(made) == 2
        first = stream.events[0]
        assert first.event == "heartbeat" and first.id, "the first event is a heartbeat carrying the cursor"
        assert first.json["cursor"] == first.id
        change = json_format.Parse(stream.events[-1].data, job_service_pb2.WatchJobsResponse())
        assert [j.id for j in change.jobs] == [made[1]], "only the job matching every filter"
        assert stream.events[-1].id == change.cursor

        # Changes made while the page was away arrive when it comes back with its last cursor.
        client.cancel_job(made[1])
        missed = client.create_job(kind="feed", total_items=1, labels={"team": "a"})
        back = read(
            _http(srv) + "/v1/events?kind=feed&label=team=a",
            headers={"Last-Event-ID": change.cursor},
            until=lambda e, events: any(missed.id in e.data for e in events if e.event == "change"),
        )
        jobs = [
            j
            for e in back.events
            if e.event == "change"
            for j in json_format.Parse(e.data, job_service_pb2.WatchJobsResponse()).jobs
        ]
        assert {j.id for j in jobs} == {made[1], missed.id}
        assert back.events[0].event in ("change", "heartbeat")

    bad = read(_http(srv) + "/v1/events?state=SLEEPING&min_priority=x")
    assert bad.status == 400
    assert "state" in _error(bad)["message"] and "min_priority" in _error(bad)["message"]
    assert _error(read(_http(srv) + "/v1/events?cursor=nonsense"))["reason"] == "INVALID_PAGE_TOKEN"


@pytest.fixture
def keyed(make_server) -> Any:
    """A server with API keys: `alice` and `bob` (clients), their jobs, and a worker key."""
    srv = make_server(key_refresh_interval=0.1)
    made = {
        name: srv.call(keys.create_key(srv.app.db, name, role))
        for name, role in (("alice", "client"), ("bob", "client"), ("w", "worker"))
    }
    srv.call(srv.app.auth.refresh())
    with jobpulse.Client(srv.address, api_key=made["alice"]) as alice:
        a_job = alice.create_job(kind="k", total_items=1)
    with jobpulse.Client(srv.address, api_key=made["bob"]) as bob:
        b_job = bob.create_job(kind="k", total_items=1)
    return srv, made, a_job.id, b_job.id


def test_keys_and_tokens(keyed: Any) -> None:
    srv, made, a_job, b_job = keyed
    url = _http(srv) + "/v1/jobs/{}/events"

    def first(target: str, headers: dict[str, str] | None = None) -> Any:
        return read(target, headers=headers, until=lambda e, events: True)

    no_credentials = first(url.format(a_job))
    assert no_credentials.status == 401 and _error(no_credentials)["reason"] == "UNAUTHENTICATED"
    assert no_credentials.headers["www-authenticate"].startswith("Bearer")
    assert (
        first(url.format(a_job), {"Authorization": f"Bearer {made['alice']}"}).events[0].event == "snapshot"
    )
    # Another owner's job looks like no job at all.
    other = first(url.format(b_job), {"Authorization": f"Bearer {made['alice']}"})
    assert other.status == 404 and _error(other)["reason"] == "JOB_NOT_FOUND"
    worker = first(url.format(a_job), {"Authorization": f"Bearer {made['w']}"})
    assert worker.status == 403 and _error(worker)["reason"] == "PERMISSION_DENIED"

    token = _mint(srv, made["alice"], a_job)
    assert first(url.format(a_job) + f"?access_token={token}").events[0].event == "snapshot"
    assert first(url.format(b_job) + f"?access_token={token}").status == 404, (
        "a job's token reads that job only"
    )
    assert first(_http(srv) + f"/v1/events?access_token={token}").status == 403, "not the feed either"
    feed_token = _mint(srv, made["alice"])
    feed = first(_http(srv) + f"/v1/events?access_token={feed_token}")
    assert feed.status == 200 and feed.events[0].event == "heartbeat"

    # No API key in disguise: gRPC does not take a token.
    with (
        jobpulse.Client(srv.address, api_key=token) as impostor,
        pytest.raises(jobpulse.errors.Unauthenticated),
    ):
        impostor.get_job(a_job)
    # Minting for another owner's job is NOT_FOUND, as GetJob says.
    with pytest.raises(grpc.RpcError) as caught:
        _mint(srv, made["alice"], b_job)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for ttl in (0.5, 86_401):
        with pytest.raises(grpc.RpcError) as caught:
            _mint(srv, made["alice"], a_job, ttl=ttl)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert first(url.format(a_job) + f"?access_token={forged}").status == 401
    assert first(url.format(a_job) + "?access_token=jp_not_a_token").status == 401

    # Expiry: a one-second token stops working (polled with a deadline, no sleep).
    short = _mint(srv, made["alice"], a_job, ttl=1)
    assert first(url.format(a_job) + f"?access_token={short}").status == 200
    eventually(
        lambda: first(url.format(a_job) + f"?access_token={short}").status == 401,
        timeout=10,
        what="the one-second token to expire",
    )
    # Revoking the key that minted a token ends the token too.
    srv.call(keys.revoke_key(srv.app.db, "alice"))
    srv.call(srv.app.auth.refresh())
    revoked = first(url.format(a_job) + f"?access_token={token}")
    assert revoked.status == 401 and "revoked" in _error(revoked)["message"]


def test_tokens_work_on_another_replica_and_survive_rotation(make_server) -> None:
    one = make_server(key_refresh_interval=0.1)
    # Replica two never re-reads the secrets on its own: it must learn a new one from the first token
    # that names it.
    two = make_server(key_refresh_interval=3600)
    with jobpulse.Client(one.address) as client:
        job = client.create_job(kind="k", total_items=1)
    token = _mint(one, None, job.id)
    for srv in (one, two):
        got = read(f"{_http(srv)}/v1/jobs/{job.id}/events?access_token={token}", until=lambda e, events: True)
        assert got.status == 200, f"replica refused a token minted by the other: {got.body!r}"
    # Rotation (jobpulse-server keys rotate-events-secret): old tokens keep working until they expire,
    # and new ones are signed with the new secret, which the other replica learns on first sight.
    new_id = one.call(_rotate(one))
    one.call(one.app.tokens.refresh())  # what its refresh loop does within key_refresh_interval
    after = _mint(one, None, job.id)
    assert after != token
    for srv, tok in ((two, token), (two, after), (one, token)):
        got = read(f"{_http(srv)}/v1/jobs/{job.id}/events?access_token={tok}", until=lambda e, events: True)
        assert got.status == 200, (new_id, got.body)


async def _rotate(srv: Any) -> int:
    return await keys.rotate_events_secret(srv.app.db)


def test_cors_only_for_configured_origins(make_server) -> None:
    srv = make_server(http_cors_origins="https://app.example.com")
    with jobpulse.Client(srv.address) as client:
        job = client.create_job(kind="k", total_items=1)
    url = f"{_http(srv)}/v1/jobs/{job.id}/events"
    preflight = httpx.options(
        url,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = httpx.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    got = read(url, headers={"Origin": "https://app.example.com"}, until=lambda e, events: True)
    assert got.headers["access-control-allow-origin"] == "https://app.example.com"
    # Nothing is allowed by default.
    plain = make_server()
    got = read(
        f"{_http(plain)}/v1/jobs/{job.id}/events",
        headers={"Origin": "https://app.example.com"},
        until=lambda e, events: True,
    )
    assert "access-control-allow-origin" not in got.headers


def _raw(srv: Any) -> socket.socket:
    port = srv.app.http_port
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _response(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_oversized_requests_and_header_floods_are_refused(make_server) -> None:
    srv = make_server()
    with _raw(srv) as sock:
        sock.sendall(b"GET /v1/events?search=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock).startswith(b"HTTP/1.1 414")
    with _raw(srv) as sock:
        flood = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + flood + b"\r\n")
        reply = _response(sock)
        assert reply.startswith(b"HTTP/1.1 431") and b"REQUEST_TOO_LARGE" in reply
    assert httpx.get(_http(srv) + "/healthz").status_code == 200, "the server serves on"


def test_connections_that_never_finish_a_request_are_closed(make_server) -> None:
    srv = make_server(http_header_timeout=0.5)
    idle, slow = _raw(srv), _raw(srv)
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
        for sock in (idle, slow):
            sock.settimeout(10)
            assert sock.recv(100) == b"", "the server kept a connection that never sent a whole request"
    finally:
        idle.close()
        slow.close()
    assert httpx.get(_http(srv) + "/healthz").status_code == 200


def test_tls_with_the_grpc_certificate(make_server, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    srv = make_server(tls_cert=str(cert), tls_key=str(key))
    assert _http(srv).startswith("https://")
    trusted = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(_http(srv) + "/healthz", verify=trusted).json() == {"status": "ok"}
    with pytest.raises(httpx.HTTPError):
        httpx.get(_http(srv).replace("https://", "http://") + "/healthz", timeout=5)


def test_a_reader_that_stalls_then_reads_again_gets_every_change_to_the_end(make_server) -> None:
    """A client that reads nothing while the whole job runs, then reads: revisions only grow, the last
    is the final one, then `end`. (Whether its changes fold depends on how much the kernel buffers for
    it: on loopback everything fits, so folding itself is checked on the watch loop, which SSE shares
    with WatchJob: tests/watch/test_watch_slow.py.)"""
    srv = make_server(watch_min_interval=0.0)
    chunks = 300
    with jobpulse.Client(srv.address, timeout=20) as client:
        job = client.create_job(kind="stall", total_items=chunks, chunk_size=1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.settimeout(20)
        sock.connect(("127.0.0.1", srv.app.http_port))
        sock.sendall(f"GET /v1/jobs/{job.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # Every chunk is completed, one commit each, while the client reads nothing.
        for _ in range(chunks // 100):
            for claim in client.claim_chunks("stall-worker", ["stall"], max_chunks=100):
                client.complete_chunk(claim.chunk.id, claim.lease_token)
        final = client.get_job(job.id, view="basic")
        data = _response(sock)
        sock.close()
    ids = [int(line[4:]) for line in data.split(b"\n") if line.startswith(b"id: ")]
    assert ids == sorted(set(ids)), "revisions repeated or went back"
    assert ids[-1] == final.revision and data.rstrip(b"\r\n0").endswith(b"event: end\ndata: {}")
