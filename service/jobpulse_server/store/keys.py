"""API keys: made, listed and revoked by operators (``jobpulse keys``); stored hashed."""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobpulse_server.domain.clock import now_us
from jobpulse_server.domain.principal import KeyInfo
from jobpulse_server.domain.webhooks import new_secret
from jobpulse_server.store.engine import Database
from jobpulse_server.store.tables import api_keys, events_token_secrets

ROLES = ("client", "worker", "admin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(db: Database, name: str, role: str, webhook_url: str = "") -> str:
    """Makes a key and returns it; only its hash is stored, so this is the one time it is seen.

    The key also gets a webhook signing secret (see ``webhook_secret``; a Standard Webhooks
    ``whsec_`` secret) and, optionally, a default webhook URL for the jobs it creates.
    """
    if not _NAME.match(name):
        raise ValueError("name: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = "jp_" + secrets.token_urlsafe(30)
    async with db.write() as uow:
        taken = (await uow.conn.execute(select(api_keys.c.id).where(api_keys.c.name == name))).first()
        if taken is not None:
            raise ValueError(f"a key named {name!r} exists already (revoked keys keep their name)")
        await uow.conn.execute(
            insert(api_keys).values(
                name=name,
                role=role,
                key_hash=hash_key(key),
                key_prefix=key[:10],
                create_time=now_us(),
                webhook_url=webhook_url,
                webhook_secret=new_secret(),
            )
        )
    return key


async def list_keys(db: Database) -> list[KeyInfo]:
    async with db.read() as conn:
        rows = (await conn.execute(select(api_keys).order_by(api_keys.c.name))).all()
    return [
        KeyInfo(r.name, r.role, r.key_prefix, r.create_time, r.revoke_time)
        for r in rows  # type: ignore[attr-defined]
    ]


async def revoke_key(db: Database, name: str) -> bool:
    """Revokes a key by name; False if there is no such active key."""
    async with db.write() as uow:
        result = await uow.conn.execute(
            update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoke_time.is_(None))
            .values(revoke_time=now_us())
        )
    return bool(result.rowcount)


async def active_keys(conn: AsyncConnection) -> dict[str, KeyInfo]:
    """Active keys by hash."""
    rows = (await conn.execute(select(api_keys).where(api_keys.c.revoke_time.is_(None)))).all()
    return {
        r.key_hash: KeyInfo(r.name, r.role, r.key_prefix, r.create_time, None, r.webhook_url)  # type: ignore[attr-defined]
        for r in rows
    }


async def webhook_secret(db: Database, name: str) -> str | None:
    """The secret a key's webhooks are signed with (for its owner's receiver)."""
    async with db.read() as conn:
        q = select(api_keys.c.webhook_secret).where(api_keys.c.name == name)
        value = (await conn.execute(q)).scalar_one_or_none()
    return str(value) if value is not None else None


# --- events token secrets ------------------------------------------------------------

# A retired secret is deleted once every token it can have signed has expired: tokens live at most a
# day, and a replica that has not yet seen the rotation may still sign with it for a few seconds;
# two days cover both with room.
RETIRED_SECRET_KEPT_US = 2 * 86_400 * 1_000_000


async def events_secrets(conn: AsyncConnection) -> dict[int, tuple[str, bool]]:
    """Every events-token secret that still verifies: id -> (secret, whether it signs new tokens)."""
    rows = (await conn.execute(select(events_token_secrets))).all()
    return {r.id: (r.secret, r.retire_time is None) for r in rows}  # type: ignore[attr-defined]


async def ensure_events_secret(conn: AsyncConnection, now: int) -> None:
    """Makes a signing secret if there is none (a server's first start on a new database)."""
    current = (
        await conn.execute(
            select(events_token_secrets.c.id).where(events_token_secrets.c.retire_time.is_(None)).limit(1)
        )
    ).first()
    if current is None:
        await conn.execute(insert(events_token_secrets).values(secret=new_token_secret(), create_time=now))


async def rotate_events_secret(conn: AsyncConnection, now: int) -> int:
    """Retires the signing secret(s), makes a new one and drops secrets retired long enough ago that
    no token they signed is still valid; returns the new secret's id."""
    await conn.execute(
        delete(events_token_secrets).where(events_token_secrets.c.retire_time < now - RETIRED_SECRET_KEPT_US)
    )
    await conn.execute(
        update(events_token_secrets)
        .where(events_token_secrets.c.retire_time.is_(None))
        .values(retire_time=now)
    )
    result = await conn.execute(
        insert(events_token_secrets)
        .values(secret=new_token_secret(), create_time=now)
        .returning(events_token_secrets.c.id)
    )
    return int(result.scalar_one())


def new_token_secret() -> str:
    return secrets.token_hex(32)
