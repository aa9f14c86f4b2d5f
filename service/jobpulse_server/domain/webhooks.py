"""Webhook deliveries: one event for one receiver, kept in the outbox until delivered or dead."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

# Delivery states (the contract's WebhookDeliveryState numbers).
PENDING, DELIVERED, DEAD = 1, 2, 3

# Standard Webhooks secrets: "whsec_" + the base64 of the HMAC key, so off-the-shelf verifiers
# (the `standardwebhooks` packages) take them as they are.
SECRET_PREFIX = "whsec_"
# Shorter keys than 128 bits are refused: an HMAC key is only as strong as its length. New secrets
# get 256 bits, the middle of the 24-64 bytes the specification recommends.
_MIN_KEY_BYTES = 16
_NEW_KEY_BYTES = 32


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_NEW_KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the bytes its base64 stands for.

    Raises ValueError saying what is wrong when ``secret`` is not such a secret. Secrets made by
    ``jobpulse keys create`` before Standard Webhooks ("whsec_" + 48 hex digits) pass: hex digits
    are base64 too, so they stand for a 36-byte key, which is what standardwebhooks decodes them to.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r} (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a webhook secret must be {SECRET_PREFIX!r} + base64 ({exc})") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(
            f"a webhook secret's key must be at least {_MIN_KEY_BYTES} bytes (this one is {len(key)})"
        )
    return key


@dataclass
class Delivery:
    """One row of the outbox."""

    id: str
    job_id: str
    owner: str
    event_type: str
    url: str
    payload: str
    state: int
    attempts: int
    next_attempt_time: int
    last_status: int | None
    last_error: str
    create_time: int
    delivered_time: int | None
