"""Webhooks against a real HTTP receiver on 127.0.0.1: signed, retried, durable, allow-listed."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_service_pb2
from jobpulse_server.store import keys

SECRET = "whsec_test_server_secret"


class Receiver:
    """An HTTP server that records POSTs and answers with scripted status codes."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append({"body": body, "headers": dict(self.headers), "status": status})
                    receiver.cond.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.received) >= count, timeout), (
                f"got {len(self.received)} POSTs, wanted {count}"
            )
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def verify(secret: str, header: str, body: str, tolerance: float = 300) -> bool:
    """What a receiver does: check the HMAC over "<t>.<body>" and reject stale timestamps (replays)."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.{body}".encode(), hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) <= tolerance
    return fresh and hmac.compare_digest(expected, parts["v1"])


def _finish(client: jobpulse.Client, kind: str = "hook") -> None:
    for claim in client.claim_chunks("w", kinds=[kind], max_chunks=10):
        client.complete_chunk(claim.chunk.id, claim.lease_token)


def test_completion_is_posted_signed_with_the_job(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(webhook_secret=SECRET)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 2, chunk_size=1, webhook_url=receiver.url)
        assert job.webhook_url == receiver.url
        _finish(client)
        got = receiver.wait_for(1)[0]
        deliveries = client.list_webhook_deliveries(job.id)
    body = json.loads(got["body"])
    assert body["type"] == "job.completed"
    assert body["job"]["id"] == job.id and body["job"]["state"] == "JOB_STATE_COMPLETED"
    assert body["id"] == deliveries[0].id and body["created"]
    assert verify(SECRET, got["headers"]["X-Jobpulse-Signature"], got["body"])
    assert not verify("another secret", got["headers"]["X-Jobpulse-Signature"], got["body"])
    assert not verify(SECRET, got["headers"]["X-Jobpulse-Signature"], got["body"].replace("hook", "hoof"))
    deadline = time.monotonic() + 10
    while deliveries[0].state != job_service_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        deliveries = jobpulse.Client(srv.address).list_webhook_deliveries(job.id)
    assert deliveries[0].attempts == 1 and deliveries[0].last_status == 200


def test_server_errors_are_retried_until_accepted(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(webhook_secret=SECRET, webhook_retry_base=0.05)
    receiver.statuses = [500, 503]
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=receiver.url)
        _finish(client)
        posts = receiver.wait_for(3)
    assert [p["status"] for p in posts[:3]] == [500, 503, 200]
    assert len({json.loads(p["body"])["id"] for p in posts}) == 1, "a retry must carry the same event id"
    with jobpulse.Client(srv.address) as client:
        deadline = time.monotonic() + 10
        while (
            d := client.list_webhook_deliveries(job.id)[0]
        ).state != job_service_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert d.attempts == 3


def test_a_receiver_that_was_down_gets_the_event_when_back(make_server: Any) -> None:
    srv = make_server(webhook_secret=SECRET, webhook_retry_base=0.05)
    down = Receiver()
    url = down.url
    port = down.server.server_address[1]
    down.close()  # nothing listens there now
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=url)
        _finish(client)
        deadline = time.monotonic() + 10
        while client.list_webhook_deliveries(job.id)[0].attempts < 2:
            assert time.monotonic() < deadline, "no retries while the receiver was down"
            time.sleep(0.05)
        failed = client.list_webhook_deliveries(job.id)[0]
        assert failed.state == job_service_pb2.WEBHOOK_DELIVERY_STATE_PENDING and failed.last_error
    back = _receiver_on(port)
    try:
        got = back.wait_for(1, timeout=30)
        assert json.loads(got[0]["body"])["job"]["id"] == job.id
    finally:
        back.close()


def _receiver_on(port: int) -> Receiver:
    """A receiver on a given port (where an earlier one was)."""
    r = Receiver()
    handler = r.server.RequestHandlerClass
    r.close()
    r.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    r.thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    r.thread.start()
    return r


def test_an_event_survives_a_restart_right_after_the_commit(make_server: Any, receiver: Receiver) -> None:
    # No deliverer runs when the job completes: the event exists only as an outbox row, committed
    # with the completion, until a restarted server sends it.
    srv = make_server(webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1")
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=receiver.url)
        srv.call(_stop_deliverer(srv))
        _finish(client)
    srv.restart()
    got = receiver.wait_for(1)
    assert json.loads(got[0]["body"])["job"]["id"] == job.id


async def _stop_deliverer(srv: Any) -> None:
    for task in srv.app._background:
        if task.get_name() == "jobpulse-webhooks":
            task.cancel()


def test_disallowed_and_malformed_urls_are_rejected_at_create(make_server: Any) -> None:
    srv = make_server(webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1,hooks.internal")
    with jobpulse.Client(srv.address) as client:
        for url in ("http://evil.example.com/x", "ftp://127.0.0.1/x", "not a url"):
            with pytest.raises(errors.InvalidArgument) as info:
                client.create_job("hook", 1, webhook_url=url)
            assert info.value.field_violations[0][0] == "webhook_url"
        assert client.list_jobs_page().total_size == 0


def test_open_mode_without_a_secret_refuses_webhooks(server: Any, receiver: Receiver) -> None:
    with jobpulse.Client(server.address) as client:
        with pytest.raises(errors.FailedPrecondition) as info:
            client.create_job("hook", 1, webhook_url=receiver.url)
    assert info.value.reason == "WEBHOOK_SECRET_MISSING"


def test_a_key_signs_with_its_own_secret_and_supplies_a_default_url(
    make_server: Any, receiver: Receiver
) -> None:
    srv = make_server()
    key = srv.call(keys.create_key(srv.app.db, "team-a", "admin", receiver.url))
    secret = srv.call(keys.webhook_secret(srv.app.db, "team-a"))
    srv.call(srv.app.auth.refresh())
    with jobpulse.Client(srv.address, api_key=key) as client:
        job = client.create_job("hook", 1)
        assert job.webhook_url == receiver.url
        client.cancel_job(job.id, reason="changed my mind")
        got = receiver.wait_for(1)[0]
    assert json.loads(got["body"])["type"] == "job.cancelled"
    assert secret and verify(secret, got["headers"]["X-Jobpulse-Signature"], got["body"])


def test_progress_events_are_opt_in_and_redelivery_resends(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(webhook_secret=SECRET, webhook_progress_interval=0.0)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 2, chunk_size=1, webhook_url=receiver.url, webhook_progress=True)
        claim = client.claim_chunks("w", kinds=["hook"])[0]
        client.report_chunk_progress(claim.chunk.id, claim.lease_token, items_done=1)
        posts = receiver.wait_for(1)
        assert json.loads(posts[0]["body"])["type"] == "job.progress"
        first = client.list_webhook_deliveries(job.id)[-1]
        assert first.event_type == "job.progress"
        before = sum(json.loads(p["body"])["id"] == first.id for p in receiver.wait_for(1))
        client.redeliver_webhook(first.id)
        with receiver.cond:
            assert receiver.cond.wait_for(
                lambda: sum(json.loads(p["body"])["id"] == first.id for p in receiver.received) > before, 20
            ), "the redelivered event never came"
