"""What a committed write changed: the message from the write paths to the change hub, the
PostgreSQL listener and the other replicas."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Changes:
    """What a committed write changed, for the change hub."""

    jobs: dict[str, int] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    new_work: bool = False
    # Seconds from now at which retried chunks become claimable.
    work_later: list[float] = field(default_factory=list)
    # Webhook events were written to the outbox.
    webhooks: bool = False
