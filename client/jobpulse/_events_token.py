"""Short-lived read tokens for the server's HTTP events paths, shared by the sync and async clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

from jobpulse.v1 import job_service_pb2

#: The HTTP path of one job's Server-Sent Events (``{job_id}`` URL-quoted).
JOB_EVENTS_PATH = "/v1/jobs/{job_id}/events"
#: The HTTP path of the caller's whole feed.
FEED_EVENTS_PATH = "/v1/events"


def events_path(job_id: str, token: str) -> str:
    """The path and query a browser GETs to read events with ``token``: one job's
    (``/v1/jobs/<job_id>/events?access_token=...``) or, for an empty ``job_id``, the caller's feed
    (``/v1/events?access_token=...``). The job id and the token are URL-quoted."""
    path = JOB_EVENTS_PATH.format(job_id=quote(job_id, safe="")) if job_id else FEED_EVENTS_PATH
    return f"{path}?access_token={quote(token, safe='')}"


def join_url(http_url: str, url_path: str) -> str:
    """``url_path`` (``/v1/...``) under the base ``http_url``, which may end in ``/`` or carry a path
    prefix of its own (a proxy's ``https://example.com/jobpulse``)."""
    return http_url.rstrip("/") + url_path


@dataclass(frozen=True)
class EventsToken:
    """A token that lets a browser read events from the server's HTTP side, without an API key.

    It reads one job's events (or, when made without a job, the caller's whole feed) until
    ``expire_time``, and nothing else; every replica accepts it. Pass it as the ``access_token`` query
    parameter, as ``url_path`` and :meth:`url` do. The token is a credential while it lasts: it is left
    out of ``repr()``.

    Attributes:
        token: The token itself.
        expire_time: When the server stops accepting it (an aware datetime, in UTC).
        url_path: The path and query to GET on the HTTP side, the token included and URL-quoted:
            ``/v1/jobs/<job id>/events?access_token=...``, or ``/v1/events?access_token=...`` for the
            feed.
    """

    token: str = field(repr=False)
    expire_time: datetime
    url_path: str = field(repr=False)

    def url(self, http_url: str) -> str:
        """The full URL of the events under the server's HTTP base URL.

        Args:
            http_url: Where the server's HTTP side answers, e.g. ``http://127.0.0.1:8080`` (a trailing
                ``/`` or a proxy's path prefix is kept as given).

        Returns:
            ``http_url`` followed by ``url_path``, e.g.
            ``http://127.0.0.1:8080/v1/jobs/<job id>/events?access_token=...``.
        """
        return join_url(http_url, self.url_path)


def events_token(job_id: str, response: job_service_pb2.CreateEventsTokenResponse) -> EventsToken:
    """The :class:`EventsToken` of a CreateEventsToken response to a request for ``job_id``."""
    return EventsToken(
        token=response.token,
        expire_time=response.expire_time.ToDatetime(tzinfo=timezone.utc),
        url_path=events_path(job_id, response.token),
    )
