"""Who is calling: the identity the services act for, from the API key (or anonymous in open mode)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Principal:
    """Who is calling. ``sees_all`` callers are not limited to their own jobs."""

    name: str
    sees_all: bool = True
    role: str = "admin"
    # The key's default webhook URL, if any.
    webhook_url: str = ""

    @property
    def owner_filter(self) -> str | None:
        return None if self.sees_all else self.name


ANONYMOUS = Principal("anonymous", sees_all=True)


@dataclass(frozen=True)
class KeyInfo:
    """What the server knows of a key (never the key itself)."""

    name: str
    role: str
    prefix: str
    create_time: int
    revoke_time: int | None = None
    webhook_url: str = ""
