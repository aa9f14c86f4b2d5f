"""Who is calling: API keys in ``authorization: Bearer <key>`` metadata, roles, open mode.

Keys are read from the database and refreshed every few seconds, so a key
created or revoked with ``jobpulse keys`` takes effect on running servers
(every replica) within ``key_refresh_interval``. With no active key at all the
server is in open mode: every caller is the anonymous admin (allowed only on a
loopback address unless ``--insecure``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from jobpulse_server.domain.errors import PermissionDenied, Unauthenticated
from jobpulse_server.domain.principal import ANONYMOUS, KeyInfo, Principal
from jobpulse_server.services import keys
from jobpulse_server.services.background import FailingPasses
from jobpulse_server.services.ratelimit import Limiter
from jobpulse_server.store import Store

log = logging.getLogger(__name__)

CLIENT_ROLES = frozenset({"client", "admin"})
WORKER_ROLES = frozenset({"worker", "admin"})
ADMIN_ROLES = frozenset({"admin"})


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Checks each call's key and role, and applies the rate limits."""

    def __init__(self, store: Store, limiter: Limiter, refresh_seconds: float = 2.0) -> None:
        self.store = store
        self.limiter = limiter
        self.refresh_seconds = refresh_seconds
        self._keys: dict[str, KeyInfo] = {}
        self._by_name: dict[str, KeyInfo] = {}

    @property
    def open(self) -> bool:
        return not self._keys

    def principal_named(self, name: str) -> Principal | None:
        """The caller an active key named ``name`` stands for (events tokens); None if there is none."""
        info = self._by_name.get(name)
        if info is None:
            return None
        return _principal(info)

    def open_principal(self) -> Principal | None:
        """The anonymous admin while the server is in open mode; None once keys exist."""
        return ANONYMOUS if self.open else None

    async def refresh(self) -> None:
        async with self.store.read() as tx:
            found = await tx.active_keys()
        if bool(found) != bool(self._keys):
            log.warning(
                "API keys %s: %s",
                "present" if found else "gone",
                "calls now need a key" if found else "open mode",
            )
        self._keys = found
        self._by_name = {info.name: info for info in found.values()}

    async def run(self, stop: asyncio.Event) -> None:
        passes = FailingPasses("API key refresh (the last known keys stay in force)", log)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.refresh_seconds)
            except asyncio.TimeoutError:
                try:
                    await self.refresh()
                    passes.worked()
                except Exception as exc:  # keep the last known keys while the database is away
                    passes.failed(exc)

    def authenticate(
        self, metadata: Iterable[Any] | None, roles: frozenset[str], method: str
    ) -> Principal | Awaitable[Principal]:
        """The caller for these metadata, if it holds one of ``roles`` and is within its rate limit;
        an awaitable of it when the rate limiter has to ask the database first (shared limits)."""
        if self.open:
            principal = ANONYMOUS
        else:
            token = ""
            for key, value in metadata or ():
                if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
                    token = value[7:].strip()
            if not token:
                raise Unauthenticated("this server needs an API key: send 'authorization: Bearer <key>'")
            info = self._keys.get(keys.hash_key(token))
            if info is None:
                raise Unauthenticated("unknown or revoked API key")
            if info.role not in roles:
                raise PermissionDenied(
                    f"a {info.role} key may not call {method}; it needs one of: {', '.join(sorted(roles))}",
                    role=info.role,
                )
            principal = _principal(info)
            pending = self.limiter.admit(info.name, info.role)
            if pending is not None:
                return _once(pending, principal)
        return principal

    def admit(self, who: Principal, roles: frozenset[str], method: str) -> Principal | Awaitable[Principal]:
        """``who`` (a dashboard session's key, already known to be active) checked as ``authenticate``
        checks a key: one of ``roles``, and within its key's rate limit."""
        if self.open:
            return who
        if who.role not in roles:
            raise PermissionDenied(
                f"a {who.role} key may not {method}; it needs one of: {', '.join(sorted(roles))}",
                role=who.role,
            )
        pending = self.limiter.admit(who.name, who.role)
        if pending is not None:
            return _once(pending, who)
        return who


def _principal(info: KeyInfo) -> Principal:
    return Principal(info.name, sees_all=info.role == "admin", role=info.role, webhook_url=info.webhook_url)


async def _once(pending: Awaitable[None], principal: Principal) -> Principal:
    await pending
    return principal
