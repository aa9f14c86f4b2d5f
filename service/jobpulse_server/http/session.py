"""Dashboard sessions: the cookie a visitor gets at /login for an API key, and the cross-site check of
every state-changing request.

The cookie holds no key: it names the key (signed with the events-token secrets in the database, so every
replica accepts it) and expires. It is HttpOnly (page scripts cannot read it), SameSite=Strict (a
browser does not send it on requests another site starts) and Secure when the server speaks HTTPS. A
session ends at its expiry, at logout, or when its key is revoked; what it may see and do is what its
key may, checked on every request as the RPCs check the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from jobpulse_server.domain.errors import PermissionDenied, Unauthenticated
from jobpulse_server.domain.principal import Principal
from jobpulse_server.services import auth
from jobpulse_server.services.auth import Authenticator
from jobpulse_server.services.events_tokens import EventsTokens

COOKIE = "jobpulse_session"
SESSION_TTL_US = 12 * 3600 * 1_000_000


class Sessions:
    """Logs visitors in and out, and says who a request's session stands for."""

    def __init__(self, authenticator: Authenticator, tokens: EventsTokens, secure: bool) -> None:
        self.authenticator = authenticator
        self.tokens = tokens
        self.secure = secure

    @property
    def needed(self) -> bool:
        """Whether visitors must log in (API keys exist); open mode needs no session."""
        return not self.authenticator.open

    async def log_in(self, key: str, response: Response) -> Principal:
        """Checks ``key`` as an RPC would (a client or admin key, within its rate limit) and sets the
        session cookie on ``response``."""
        found = self.authenticator.authenticate(
            [("authorization", f"Bearer {key.strip()}")], auth.CLIENT_ROLES, "use the dashboard"
        )
        who = found if isinstance(found, Principal) else await found
        token, _ = self.tokens.mint_session(who, SESSION_TTL_US)
        response.set_cookie(
            COOKIE,
            token,
            max_age=SESSION_TTL_US // 1_000_000,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        return who

    def log_out(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", secure=self.secure, httponly=True, samesite="strict")

    async def principal(self, cookies: Mapping[str, str], method: str) -> Principal:
        """Who the request's session stands for, admitted as ``authenticate`` admits a key.

        Raises:
            Unauthenticated: keys exist and there is no valid session.
            PermissionDenied: the key's role may not use the dashboard.
            RateLimited: the key is over its rate limit.
        """
        if not self.needed:
            who = self.authenticator.open_principal()
            if who is not None:
                return who
        token = cookies.get(COOKIE)
        if not token:
            raise Unauthenticated("log in with an API key to see this page")
        grant = await self.tokens.verify_session(token)
        admitted = self.authenticator.admit(grant.who, auth.CLIENT_ROLES, method)
        return admitted if isinstance(admitted, Principal) else await admitted


class CrossSite(PermissionDenied):
    """A state-changing request that another site's page started."""


def same_origin(request: Request) -> None:
    """Refuses a state-changing request another site's page started: its ``Origin`` (or, from browsers
    that send none, its ``Referer``) must be this server. SameSite=Strict already keeps the cookie off
    such requests; this also covers open mode, which has no cookie to withhold."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        raise CrossSite("a form on another site cannot post here (no Origin or Referer header)")
    parts = urlsplit(source)
    host = request.headers.get("host", "")
    if parts.netloc.lower() != host.lower():
        raise CrossSite(f"a page of {parts.scheme}://{parts.netloc} cannot post to this server")
