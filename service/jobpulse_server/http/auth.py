"""Who is asking on the HTTP side: an API key in ``Authorization: Bearer`` (programs), an events token
in ``?access_token=`` (browsers, whose EventSource cannot send headers), the dashboard's session cookie
(its own pages' EventSources), or nobody in open mode."""

from __future__ import annotations

from jobpulse_server.domain.errors import JobNotFound, PermissionDenied, Unauthenticated
from jobpulse_server.domain.principal import Principal
from jobpulse_server.http.session import COOKIE, Sessions
from jobpulse_server.services import auth
from jobpulse_server.services.auth import Authenticator
from jobpulse_server.services.events_tokens import EventsTokens


class HttpAuth:
    """Resolves a request's credentials to the principal the watch services act for."""

    def __init__(
        self, authenticator: Authenticator, tokens: EventsTokens, sessions: Sessions | None = None
    ) -> None:
        self.authenticator = authenticator
        self.tokens = tokens
        self.sessions = sessions

    async def principal(
        self,
        authorization: str | None,
        access_token: str | None,
        job_id: str,
        cookies: dict[str, str] | None = None,
    ) -> Principal:
        """The caller reading ``job_id``'s events (empty: the caller's feed).

        Raises:
            Unauthenticated: no credentials where keys exist, an unknown key, a bad or expired token.
            JobNotFound: a token made for another job (as if the job did not exist for this caller).
            PermissionDenied: a job's token used for the whole feed, or a worker key.
        """
        if authorization is not None:
            found = self.authenticator.authenticate(
                [("authorization", authorization)], auth.CLIENT_ROLES, "WatchJob" if job_id else "WatchJobs"
            )
            return found if isinstance(found, Principal) else await found
        if access_token is not None:
            grant = await self.tokens.verify(access_token)
            if grant.job_id and grant.job_id != job_id:
                if job_id:
                    raise JobNotFound(job_id)
                raise PermissionDenied("this access_token reads one job's events, not the feed")
            return grant.who
        if cookies and COOKIE in cookies and self.sessions is not None:
            method = "WatchJob" if job_id else "WatchJobs"
            return await self.sessions.principal(cookies, method)
        if self.authenticator.open:
            principal = self.authenticator.open_principal()
            if principal is not None:
                return principal
        raise Unauthenticated(
            "this server needs credentials: 'Authorization: Bearer <API key>', or '?access_token=' "
            "with a token from CreateEventsToken"
        )
