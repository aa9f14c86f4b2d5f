"""Connection settings shared by the sync and async clients: target, credentials, metadata."""

from __future__ import annotations

from jobpulse._settings import API_KEY, TARGET

DEFAULT_TARGET = TARGET.default
TARGET_ENV = TARGET.env
API_KEY_ENV = API_KEY.env

#: Channel arguments for every channel the SDK opens itself.
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.primary_user_agent", "jobpulse-python/0.1"),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Pings every 30 s while a call is open (a quiet watch stream) keep it alive through proxies and
    # NATs that drop silent connections, and find a dead server within 10 s more; the server allows
    # pings every 10 s. No pings on a connection without calls: nothing to keep alive there.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
]


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    """Returns the metadata sent with every call: a bearer token when an API key is set."""
    if not api_key:
        return None
    return (("authorization", f"Bearer {api_key}"),)
