"""Webhook deliveries: one event for one receiver, kept in the outbox until delivered or dead."""

from __future__ import annotations

from dataclasses import dataclass

# Delivery states (the contract's WebhookDeliveryState numbers).
PENDING, DELIVERED, DEAD = 1, 2, 3


@dataclass
class Delivery:
    """One row of the outbox."""

    id: str
    job_id: str
    owner: str
    event_type: str
    url: str
    payload: str
    state: int
    attempts: int
    next_attempt_time: int
    last_status: int | None
    last_error: str
    create_time: int
    delivered_time: int | None
