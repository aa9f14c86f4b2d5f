"""API keys: made, listed and revoked by operators (``jobpulse-server keys``); stored hashed. The key
policy (names, roles, the key's form, hashing) lives here; each operation is one transaction of the store
(``Tx.create_key`` and the others hold the statements)."""

from __future__ import annotations

import hashlib
import re
import secrets

from jobpulse_server.domain.clock import now_us
from jobpulse_server.domain.principal import KeyInfo
from jobpulse_server.domain.webhooks import new_secret
from jobpulse_server.store import Store, Tx

ROLES = ("client", "worker", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(store: Store, name: str, role: str, webhook_url: str = "") -> str:
    """Makes a key and returns it; only its hash is stored, so this is the one time it is seen.

    The key also gets a webhook signing secret (a Standard Webhooks ``whsec_`` secret, see
    ``webhook_secret``) and, optionally, a default webhook URL for the jobs it creates.
    """
    if not _NAME.match(name):
        raise ValueError("name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = "jp_" + secrets.token_urlsafe(30)
    now = now_us()

    async def body(tx: Tx) -> bool:
        return await tx.create_key(name, role, hash_key(key), key[:10], now, webhook_url, new_secret())

    if not await store.write(body):
        raise ValueError(f"a key named {name!r} exists already (revoked keys keep their name)")
    return key


async def list_keys(store: Store) -> list[KeyInfo]:
    async with store.read() as tx:
        return await tx.list_keys()


async def revoke_key(store: Store, name: str) -> bool:
    """Revokes a key by name; False if there is no such active key."""
    now = now_us()
    return await store.write(lambda tx: tx.revoke_key(name, now))


async def webhook_secret(store: Store, name: str) -> str | None:
    """The secret a key's webhooks are signed with (for its owner's receiver)."""
    async with store.read() as tx:
        return await tx.webhook_secret(name)


async def rotate_events_secret(store: Store) -> int:
    """Retires the events-token signing secret for a new one; the new secret's id."""
    now = now_us()
    return await store.write(lambda tx: tx.rotate_events_secret(now))
