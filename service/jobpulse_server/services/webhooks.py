"""Webhook delivery from the outbox: signed POSTs, at least once, with backoff, then dead letters.

Deliveries follow the Standard Webhooks specification, so off-the-shelf verifiers (the
``standardwebhooks`` packages) check them: each POST carries the event's JSON body and the headers
``webhook-id`` (the delivery id, the same on every retry and redelivery), ``webhook-timestamp``
(unix seconds of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``, keyed with the bytes of the job owner's ``whsec_`` secret (or the
server's, in open mode). A delivery is retried with exponential backoff and jitter until
``webhook_retry_period`` has passed since the event, then marked DEAD. Replicas share the outbox
safely: a batch is claimed with SKIP LOCKED and leased for the attempt.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from jobpulse_server.domain.clock import Clock, now_us
from jobpulse_server.domain.errors import DeliveryNotFound, FieldViolation, InvalidArgument, JobNotFound
from jobpulse_server.domain.principal import Principal
from jobpulse_server.domain.webhooks import DEAD, DELIVERED, PENDING, Delivery, secret_key
from jobpulse_server.events.hub import ChangeHub
from jobpulse_server.platform.config import Config
from jobpulse_server.platform.metrics import Metrics
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.store import Store

# Retry jitter from a generator of our own: the process-wide `random` state is left to the
# application (and to tests that seed it).
_jitter = random.Random()

log = logging.getLogger(__name__)

BATCH = 20
# An attempt in flight holds its delivery this long before another replica may retry it.
_ATTEMPT_LEASE_US = 120_000_000


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value for ``body`` of delivery ``msg_id`` sent at ``timestamp``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers; ValueError if ``secret`` is not a ``whsec_`` secret."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret_key(secret), msg_id, timestamp, body),
    }


def check_server_secret(config: Config) -> None:
    """At start-up: ValueError naming JOBPULSE_WEBHOOK_SECRET unless it is empty or a ``whsec_`` secret
    (a bad one would otherwise surface only as failed deliveries)."""
    if config.webhook_secret:
        try:
            secret_key(config.webhook_secret)
        except ValueError as exc:
            raise ValueError(
                f"JOBPULSE_WEBHOOK_SECRET: {exc}; use 'whsec_' + the base64 of 32 random bytes, "
                "e.g. from: openssl rand -base64 32"
            ) from None


def check_url(url: str, config: Config) -> None:
    """INVALID_ARGUMENT unless ``url`` is an http(s) URL to an allowed host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            [FieldViolation("webhook_url", "must be an http:// or https:// URL with a host")]
        )
    allowed = {h.strip().lower() for h in config.webhook_allowed_hosts.split(",") if h.strip()}
    if allowed and parts.hostname.lower() not in allowed:
        raise InvalidArgument(
            [
                FieldViolation(
                    "webhook_url", f"host {parts.hostname!r} is not in the server's webhook allow-list"
                )
            ]
        )


class Deliverer:
    """Sends due deliveries; woken by new outbox rows, else looks every ``poll_seconds``."""

    def __init__(
        self,
        store: Store,
        hub: ChangeHub,
        config: Config,
        clock: Clock = now_us,
        poll_seconds: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.metrics = metrics

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self.config.webhook_timeout, follow_redirects=False) as http:
            passes = FailingPasses("webhook delivery", log)
            while not stop.is_set():
                try:
                    busy = await self.deliver_due(http)
                    passes.worked()
                except Exception as exc:  # the database may be away; try again later
                    passes.failed(exc)
                    busy = 0
                if busy:
                    continue
                self.hub.webhooks.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.hub.webhooks.wait())]
                try:
                    await asyncio.wait(waits, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """One pass: claims up to BATCH due deliveries, sends them, records the outcomes."""
        now = self.clock()
        claimed = await self.store.write(lambda tx: tx.claim_due_deliveries(now, BATCH, _ATTEMPT_LEASE_US))
        due = [(d, secret or self.config.webhook_secret) for d, secret in claimed]
        if not due:
            return 0
        outcomes = await asyncio.gather(*(self._post(http, d, secret) for d, secret in due))
        recorded = [
            (delivery.id, self._outcome(delivery, status, error))
            for (delivery, _), (status, error) in zip(due, outcomes, strict=True)
        ]
        await self.store.write(lambda tx: tx.record_deliveries(recorded))
        return len(due)

    async def _post(self, http: httpx.AsyncClient, delivery: Delivery, secret: str) -> tuple[int, str]:
        if not secret:
            return 0, "no webhook secret to sign with (set JOBPULSE_WEBHOOK_SECRET)"
        try:
            # Wall-clock time, not self.clock: receivers compare it with their own clocks.
            signed = signed_headers(secret, delivery.id, int(time.time()), delivery.payload)
        except ValueError as exc:
            # Only a secret written into the database by hand gets here (keys and the server's own
            # are checked); the attempt fails and says why, and is retried like any other.
            return 0, f"the owner's webhook secret cannot sign: {exc}"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "jobpulse-webhooks/2",
            **signed,
            "X-Jobpulse-Event": delivery.event_type,
        }
        try:
            response = await http.post(delivery.url, content=delivery.payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"HTTP {response.status_code}"

    def _outcome(self, delivery: Delivery, status: int, error: str) -> dict[str, Any]:
        now = self.clock()
        attempts = delivery.attempts + 1
        if self.metrics is not None:
            self.metrics.webhooks.labels("failed" if error else "delivered").inc()
        if not error:
            # A done delivery's next_attempt_time is its last attempt: retention trims it by that.
            return {"state": DELIVERED, "attempts": attempts, "last_status": status, "last_error": "",
                    "delivered_time": now, "next_attempt_time": now}  # fmt: skip
        ceiling = min(600.0, self.config.webhook_retry_base * 2 ** (attempts - 1))
        delay_us = int((ceiling / 2 + _jitter.random() * ceiling / 2) * 1e6)
        expired = now + delay_us - delivery.create_time > int(self.config.webhook_retry_period * 1e6)
        if expired and self.metrics is not None:
            self.metrics.webhooks_dead.inc()
        log.warning(
            "webhook %s to %s failed (%s)%s", delivery.id, delivery.url, error, "; dead" if expired else ""
        )
        return {
            "state": DEAD if expired else PENDING,
            "attempts": attempts,
            "last_status": status or None,
            "last_error": error,
            "next_attempt_time": now if expired else now + delay_us,
        }


class WebhookService:
    """What callers may do with their jobs' deliveries: list them, and send one again."""

    def __init__(self, store: Store, clock: Clock = now_us) -> None:
        self.store = store
        self.clock = clock

    async def list_deliveries(self, who: Principal, job_id: str) -> list[Delivery]:
        """The job's deliveries, newest first (1,000 at most)."""
        async with self.store.read() as tx:
            found = await tx.deliveries_for_job(job_id, who.owner_filter, 1000)
        if found is None:
            raise JobNotFound(job_id)
        return found

    async def redeliver(self, who: Principal, delivery_id: str) -> Delivery:
        """Makes the delivery due now, whatever its state."""
        now = self.clock()
        delivery = await self.store.write(lambda tx: tx.requeue_delivery(delivery_id, who.owner_filter, now))
        if delivery is None:
            raise DeliveryNotFound(delivery_id)
        return delivery
