"""Events tokens: what a browser page passes as ``?access_token=`` to the HTTP events paths, since an
EventSource cannot send an authorization header.

A backend holding an API key mints one with CreateEventsToken and hands it to its page. A token says
who minted it, which job it reads (or the minter's whole feed) and until when, signed with HMAC-SHA256
under a secret kept in the database, so every replica verifies it. It is no API key in disguise: it is
accepted on the events paths only, and only for what it names; the key that minted it must still be
active when it is used (revoking the key ends its tokens too), and the caller is whoever that key is
now. Secrets rotate (``jobpulse-server keys rotate-events-secret``) without breaking tokens already
handed out: a retired secret verifies until every token it signed has expired.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

from jobpulse_server.domain.clock import Clock
from jobpulse_server.domain.errors import Unauthenticated
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services.auth import Authenticator
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.store import Store

log = logging.getLogger(__name__)

DEFAULT_TTL_US = 600 * 1_000_000
MIN_TTL_US = 1_000_000
MAX_TTL_US = 86_400 * 1_000_000
PREFIX = "jpe1."
# Dashboard session cookies (http/session.py): the same secrets, a prefix of their own.
SESSION_PREFIX = "jps1."
# An unknown secret id sends a replica back to the database at most this often (a rotation made on
# another replica is then seen at once; garbage tokens cannot turn into a query each).
_RELOAD_AT_MOST_EVERY_US = 1_000_000
# The minter of tokens made in open mode (no API keys): valid only while the server stays open.
_OPEN_MODE = ""


@dataclass(frozen=True)
class EventsGrant:
    """What a verified token allows: ``who`` reads ``job_id``'s events (empty: ``who``'s feed)."""

    who: Principal
    job_id: str
    expire_time: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EventsTokens:
    """Mints and verifies events tokens with the secrets in the database."""

    def __init__(self, store: Store, auth: Authenticator, clock: Clock) -> None:
        self.store = store
        self.auth = auth
        self.clock = clock
        self._secrets: dict[int, bytes] = {}
        self._signing: int | None = None
        self._asked_at = 0  # when an unknown secret id last sent us to the database

    async def start(self) -> None:
        """Makes the first secret on a new database, then reads them."""
        now = self.clock()
        await self.store.write(lambda tx: tx.ensure_events_secret(now))
        await self.refresh()

    async def refresh(self) -> None:
        async with self.store.read() as tx:
            found = await tx.events_secrets()
        self._secrets = {kid: secret.encode() for kid, (secret, _) in found.items()}
        signing = [kid for kid, (_, current) in found.items() if current]
        self._signing = max(signing) if signing else None

    async def run(self, stop: asyncio.Event, every: float) -> None:
        """Re-reads the secrets every ``every`` seconds until ``stop`` (a rotation takes effect)."""
        passes = FailingPasses("events token secrets refresh (the last known secrets stay in force)", log)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except asyncio.TimeoutError:
                try:
                    await self.refresh()
                    passes.worked()
                except Exception as exc:
                    passes.failed(exc)

    def mint(self, who: Principal, job_id: str, ttl_us: int) -> tuple[str, int]:
        """A token for ``who`` reading ``job_id`` (empty: the feed) for ``ttl_us``; (token, expire time).
        The caller has checked that ``who`` may see the job."""
        return self._mint(PREFIX, who, job_id, ttl_us)

    def mint_session(self, who: Principal, ttl_us: int) -> tuple[str, int]:
        """A dashboard session for ``who`` (the key just checked at /login), as a cookie value. It has
        a prefix of its own, which is signed too: a session is no events token and no events token is a
        session."""
        return self._mint(SESSION_PREFIX, who, "", ttl_us)

    def _mint(self, prefix: str, who: Principal, job_id: str, ttl_us: int) -> tuple[str, int]:
        kid = self._signing
        if kid is None:  # start() makes one; only a database emptied under a running server lands here
            raise RuntimeError("no events token secret: restart the server or rotate the secret")
        expire = self.clock() + ttl_us
        minter = _OPEN_MODE if self.auth.open else who.name
        body = json.dumps({"k": kid, "o": minter, "j": job_id, "e": expire}, separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{prefix}{payload}.{self._sign(prefix, kid, payload)}", expire

    def _sign(self, prefix: str, kid: int, payload: str) -> str:
        digest = hmac.new(self._secrets[kid], (prefix + payload).encode(), hashlib.sha256).digest()
        return _b64(digest)

    async def verify(self, token: str) -> EventsGrant:
        """The grant of a valid token; Unauthenticated for anything else (malformed, forged, expired,
        or minted by a key that is no longer active)."""
        if not token.startswith(PREFIX) or len(token) > 1024:
            raise Unauthenticated("access_token is not an events token (CreateEventsToken makes them)")
        return await self._verify(PREFIX, token, "access_token")

    async def verify_session(self, token: str) -> EventsGrant:
        """The principal of a valid dashboard session cookie; Unauthenticated for anything else."""
        if not token.startswith(SESSION_PREFIX) or len(token) > 1024:
            raise Unauthenticated("the session cookie is not a jobpulse session: log in again")
        return await self._verify(SESSION_PREFIX, token, "the session")

    async def _verify(self, prefix: str, token: str, what: str) -> EventsGrant:
        payload, _, signature = token[len(prefix) :].partition(".")
        try:
            claims = json.loads(_unb64(payload))
            kid, minter, job_id, expire = claims["k"], claims["o"], claims["j"], claims["e"]
            if not (isinstance(kid, int) and isinstance(minter, str) and isinstance(job_id, str)):
                raise ValueError("bad claims")
            if not isinstance(expire, int):
                raise ValueError("bad expiry")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise Unauthenticated(f"{what} is malformed") from None
        if kid not in self._secrets and self.clock() - self._asked_at >= _RELOAD_AT_MOST_EVERY_US:
            # Rotated on another replica a moment ago? Throttled on its own clock, not on the periodic
            # refresh's: that one runs every key_refresh_interval and would otherwise keep this reload
            # from ever happening, refusing new tokens until the next pass.
            self._asked_at = self.clock()
            await self.refresh()
        if kid not in self._secrets or not hmac.compare_digest(self._sign(prefix, kid, payload), signature):
            raise Unauthenticated(f"{what} is not valid (forged, or its secret was retired long ago)")
        if expire <= self.clock():
            if prefix == SESSION_PREFIX:
                raise Unauthenticated("the session has expired: log in again")
            raise Unauthenticated("access_token has expired: ask the page's backend for a new one")
        if minter == _OPEN_MODE:
            who = self.auth.open_principal()
            if who is None:
                raise Unauthenticated(f"{what} was made in open mode, and this server now needs keys")
        else:
            found = self.auth.principal_named(minter)
            if found is None:
                raise Unauthenticated(f"the API key behind {what} is revoked")
            who = found
        return EventsGrant(who, job_id, expire)
