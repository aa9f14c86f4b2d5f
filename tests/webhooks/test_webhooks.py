"""Webhooks against a real HTTP receiver on 127.0.0.1: signed (Standard Webhooks, checked with the
`standardwebhooks` package a receiver would use), retried, durable, allow-listed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from support.receiver import Receiver
from support.sql import fetch

import jobpulse
from jobpulse import errors
from jobpulse.v1 import job_service_pb2, worker_service_pb2
from jobpulse_server.app.wiring import create_server
from jobpulse_server.domain.webhooks import new_secret, secret_key
from jobpulse_server.platform.config import Config
from jobpulse_server.services import keys
from jobpulse_server.services.webhooks import sign, signed_headers

SECRET = "whsec_" + base64.b64encode(b"the webhooks tests' server secret").decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def verify(secret: str, post: dict[str, Any]) -> dict[str, Any]:
    """What a receiver does (docs/operations.md, SECURITY.md): standardwebhooks checks the signature over
    "<webhook-id>.<webhook-timestamp>.<body>" and refuses timestamps more than 5 minutes off
    (replays); it raises WebhookVerificationError, else returns the parsed body."""
    return dict(Webhook(secret).verify(post["body"], post["headers"]))


def refused(secret: str, body: str, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return True
    return False


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
    body = verify(SECRET, got)
    assert body["type"] == "job.completed"
    assert body["job"]["id"] == job.id and body["job"]["state"] == "JOB_STATE_COMPLETED"
    assert body["id"] == deliveries[0].id and body["created"]
    headers = got["headers"]
    assert headers["webhook-id"] == deliveries[0].id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert "X-Jobpulse-Signature" not in headers, "the old header is gone (SECURITY.md: a clean break)"
    # Another secret, a tampered body, or a timestamp moved (the signature covers it) fail.
    assert refused("whsec_" + base64.b64encode(b"someone else's secret!").decode(), got["body"], headers)
    assert refused(SECRET, got["body"].replace("hook", "hoof"), headers)
    moved = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}
    assert refused(SECRET, got["body"], moved)
    deadline = time.monotonic() + 10
    while deliveries[0].state != job_service_pb2.WEBHOOK_DELIVERY_STATE_DELIVERED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        deliveries = jobpulse.Client(srv.address).list_webhook_deliveries(job.id)
    assert deliveries[0].attempts == 1 and deliveries[0].last_status == 200


def test_workers_racing_on_a_webhook_job_send_each_event_once(
    make_server: Any, receiver: Receiver, database_url: str
) -> None:
    """Four workers drain a job with webhooks in batches (CompleteChunks with claim_next). The job's
    first change is due its first job.progress event, its last makes job.completed; with an hour
    between progress events, no change between them makes any, and on PostgreSQL those go through the
    group-committed path (store/batch/), where webhook jobs once declined every change."""
    srv = make_server(webhook_secret=SECRET, webhook_progress_interval=3600.0)
    total = 120
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("race", total, chunk_size=1, webhook_url=receiver.url, webhook_progress=True)
    done: list[int] = []

    def work(n: int) -> None:
        ask = worker_service_pb2.ClaimChunksRequest(worker_id=f"w{n}", kinds=["race"], max_chunks=5)
        with jobpulse.Client(srv.address) as mine:
            claims = list(mine.claim_chunks(f"w{n}", kinds=["race"], max_chunks=5))
            while claims:
                answer = mine.complete_chunks([(c.chunk.id, c.lease_token) for c in claims], claim_next=ask)
                assert all(r.ok for r in answer.results), answer.results
                done.append(len(answer.results))
                claims = list(answer.claims)

    group = srv.app.store.batch.group if srv.app.store.batch is not None else None
    written = group.items if group is not None else 0
    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(done) == total
    posts = receiver.wait_for(2)
    with jobpulse.Client(srv.address) as client:
        deliveries = client.list_webhook_deliveries(job.id)
        final = client.get_job(job.id)
    assert sorted(d.event_type for d in deliveries) == ["job.completed", "job.progress"]
    bodies = [verify(SECRET, p) for p in posts]
    assert sorted(b["type"] for b in bodies) == ["job.completed", "job.progress"]
    end = next(b for b in bodies if b["type"] == "job.completed")
    assert end["job"]["state"] == "JOB_STATE_COMPLETED" and end["job"]["revision"] == str(final.revision)
    assert final.chunks_summary.completed == total
    if group is not None:
        # Claims and completions the flusher wrote: all but the few the general path took for their
        # events (the first claim, the last completions).
        assert group.items - written >= total, (group.items, written)


def test_server_errors_are_retried_until_accepted(make_server: Any, receiver: Receiver) -> None:
    srv = make_server(webhook_secret=SECRET, webhook_retry_base=0.05)
    receiver.statuses = [500, 503]
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=receiver.url)
        _finish(client)
        posts = receiver.wait_for(3)
    assert [p["status"] for p in posts[:3]] == [500, 503, 200]
    assert len({verify(SECRET, p)["id"] for p in posts}) == 1, "a retry must carry the same event id"
    assert len({p["headers"]["webhook-id"] for p in posts}) == 1, "and the same webhook-id"
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
    assert secret is not None and secret.startswith("whsec_") and len(secret_key(secret)) == 32
    assert verify(secret, got)["type"] == "job.cancelled"
    assert refused(SECRET, got["body"], got["headers"]), "signed with the key's secret, not the server's"


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


def test_a_retry_is_the_same_message_signed_again_at_its_own_time(
    make_server: Any, receiver: Receiver
) -> None:
    # A first retry comes after base/2 to base seconds: 2 s makes it at least a second later, so its
    # webhook-timestamp (whole seconds) must differ.
    srv = make_server(webhook_secret=SECRET, webhook_retry_base=2.0)
    receiver.statuses = [500]
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=receiver.url)
        _finish(client)
        first, retry = receiver.wait_for(2)[:2]
    assert [first["status"], retry["status"]] == [500, 200]
    assert verify(SECRET, first) == verify(SECRET, retry)
    assert verify(SECRET, retry)["job"]["id"] == job.id
    h1, h2 = first["headers"], retry["headers"]
    assert h1["webhook-id"] == h2["webhook-id"], "receivers deduplicate on webhook-id"
    assert int(h2["webhook-timestamp"]) > int(h1["webhook-timestamp"])
    assert h1["webhook-signature"] != h2["webhook-signature"]
    # The first attempt's signature does not vouch for the retry's timestamp.
    assert refused(SECRET, retry["body"], {**h2, "webhook-signature": h1["webhook-signature"]})


def test_an_old_timestamp_is_refused_however_well_signed() -> None:
    # A replayed delivery carries its old timestamp, and the signature covers it: a receiver running
    # standardwebhooks refuses it once it is more than 5 minutes old, though the MAC is right.
    body = json.dumps({"id": "d-1", "type": "job.completed"})
    now = int(time.time())
    assert verify(SECRET, {"body": body, "headers": signed_headers(SECRET, "d-1", now, body)})["id"] == "d-1"
    assert refused(SECRET, body, signed_headers(SECRET, "d-1", now - 600, body))


def test_signatures_match_the_reference_implementation() -> None:
    # The standardwebhooks package's own signer, for fresh and fixed secrets, ids, times and bodies.
    for secret in (SECRET, new_secret(), new_secret()):
        for msg_id, stamp, body in (("d-1", 1_700_000_000, "{}"), ("d-é", 1_800_000_123, '{"a":"ü"}')):
            expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=timezone.utc), body)
            assert sign(secret_key(secret), msg_id, stamp, body) == expected


def test_a_key_secret_from_before_standard_webhooks_still_verifies(
    make_server: Any, receiver: Receiver
) -> None:
    # Keys made before the switch hold "whsec_" + 48 hex digits. Hex digits are base64 too, so such a
    # secret stands for a 36-byte key: the server signs with it as it is, no migration, and a receiver
    # verifies with the secret it already has (only its verifying code changes: docs/operations.md, Webhooks).
    srv = make_server()
    key = srv.call(keys.create_key(srv.app.db, "old-key", "admin", receiver.url))
    legacy = "whsec_" + secrets.token_hex(24)
    srv.call(_set_secret(srv, "old-key", legacy))
    srv.call(srv.app.auth.refresh())
    with jobpulse.Client(srv.address, api_key=key) as client:
        job = client.create_job("hook", 1)
        client.cancel_job(job.id)
        got = receiver.wait_for(1)[0]
    assert verify(legacy, got)["job"]["id"] == job.id


async def _set_secret(srv: Any, name: str, secret: str) -> None:
    # Written by hand, as an operator with SQL might: the server must refuse to sign with it.
    await asyncio.to_thread(
        fetch,
        srv.config.database_url,
        "UPDATE api_keys SET webhook_secret = ? WHERE name = ?",
        (secret, name),
    )


BAD_SECRETS = [
    "a plain password",  # no whsec_ prefix
    "whsec_test_server_secret",  # not base64 ("_")
    "whsec_" + base64.b64encode(b"too short").decode(),  # a key under 16 bytes
]


@pytest.mark.parametrize("bad", BAD_SECRETS)
async def test_a_server_secret_that_is_not_whsec_is_refused_at_start(bad: str, tmp_path: Path) -> None:
    config = Config(port=0, http_port=0, database_url=f"sqlite:///{tmp_path / 'j.db'}", webhook_secret=bad)
    with pytest.raises(ValueError, match=r"JOBPULSE_WEBHOOK_SECRET: .*whsec_"):
        await create_server(config)


def test_the_server_command_says_why_it_will_not_start(tmp_path: Path) -> None:
    env = {
        "JOBPULSE_DATABASE_URL": f"sqlite:///{tmp_path / 'j.db'}",
        "JOBPULSE_PORT": "0",
        "JOBPULSE_WEBHOOK_SECRET": BAD_SECRETS[0],
    }
    done = subprocess.run(
        [sys.executable, "-m", "jobpulse_server"],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "JOBPULSE_WEBHOOK_SECRET" in done.stderr and "whsec_" in done.stderr, done.stderr


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}


@pytest.mark.parametrize(
    "page",
    [("docs/operations.md", "## Webhooks"), ("SECURITY.md", "## Verifying a webhook")],
    ids=["operations", "security"],
)
def test_the_documented_receiver_verifies_a_real_delivery_as_written(
    make_server: Any, receiver: Receiver, page: tuple[str, str]
) -> None:
    from support.readme_blocks import find_block

    block = find_block(*page, "python", "from standardwebhooks import")
    namespace: dict[str, Any] = {"secret": SECRET}
    exec(compile(block.text, block.where(), "exec"), namespace)  # the page's receiver, as written
    receive = namespace["receive"]
    srv = make_server(webhook_secret=SECRET)
    with jobpulse.Client(srv.address) as client:
        job = client.create_job("hook", 1, webhook_url=receiver.url)
        _finish(client)
        got = receiver.wait_for(1)[0]
    event = receive(got["body"].encode(), got["headers"])
    assert event is not None and event["type"] == "job.completed" and event["job"]["id"] == job.id
    tampered = got["body"].replace('"job.completed"', '"job.failed"').encode()
    assert tampered != got["body"].encode()
    assert receive(tampered, got["headers"]) is None  # forged or tampered: refused
