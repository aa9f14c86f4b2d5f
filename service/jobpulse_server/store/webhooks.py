"""The webhook outbox's statements: due deliveries claimed for an attempt, outcomes recorded,
deliveries listed and re-queued, and the backlog the health report shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobpulse_server.domain.webhooks import DEAD, DELIVERED, PENDING, Delivery
from jobpulse_server.store.tables import api_keys, jobs, webhook_deliveries


def _delivery(row: Any) -> Delivery:
    m = row._mapping
    return Delivery(**{k: m[k] for k in Delivery.__dataclass_fields__})


async def add(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Adds events to the outbox."""
    await conn.execute(insert(webhook_deliveries), list(rows))


async def claim_due(
    conn: AsyncConnection, now: int, limit: int, hold_us: int
) -> list[tuple[Delivery, str | None]]:
    """Up to ``limit`` deliveries due at ``now``, oldest first, each with its owner's webhook secret
    (None for owners without a key); holds them for ``hold_us`` so no other replica sends them
    meanwhile. Rows another transaction holds are skipped on PostgreSQL."""
    q = (
        select(webhook_deliveries, api_keys.c.webhook_secret)
        .outerjoin(api_keys, api_keys.c.name == webhook_deliveries.c.owner)
        .where(webhook_deliveries.c.state == PENDING, webhook_deliveries.c.next_attempt_time <= now)
        .order_by(webhook_deliveries.c.next_attempt_time)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True, of=webhook_deliveries)
    rows = (await conn.execute(q)).all()
    due = [(_delivery(r), r._mapping["webhook_secret"]) for r in rows]
    if due:
        await conn.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id.in_([d.id for d, _ in due]))
            .values(next_attempt_time=now + hold_us)
        )
    return due


async def record(conn: AsyncConnection, outcomes: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Writes each delivery's outcome (delivery id, the columns to set)."""
    for delivery_id, values in outcomes:
        await conn.execute(
            update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values)
        )


async def for_job(conn: AsyncConnection, job_id: str, owner: str | None, limit: int) -> list[Delivery] | None:
    """A job's deliveries, newest first; None when the job does not exist (or is not ``owner``'s)."""
    q = select(jobs.c.id).where(jobs.c.id == job_id)
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    if (await conn.execute(q)).first() is None:
        return None
    rows = (
        await conn.execute(
            select(webhook_deliveries)
            .where(webhook_deliveries.c.job_id == job_id)
            .order_by(webhook_deliveries.c.create_time.desc(), webhook_deliveries.c.id.desc())
            .limit(limit)
        )
    ).all()
    return [_delivery(r) for r in rows]


async def requeue(conn: AsyncConnection, delivery_id: str, owner: str | None, now: int) -> Delivery | None:
    """Makes a delivery due again at ``now``; None when it does not exist (or is not ``owner``'s)."""
    q = select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
    if owner is not None:
        q = q.where(webhook_deliveries.c.owner == owner)
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    await conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(state=PENDING, next_attempt_time=now)
    )
    delivery = _delivery(row)
    delivery.state, delivery.next_attempt_time = PENDING, now
    return delivery


async def backlog(conn: AsyncConnection, now: int) -> tuple[int, int | None]:
    """(deliveries pending, create time of the oldest one that is due)."""
    pending = int(
        (
            await conn.execute(
                select(func.count())
                .select_from(webhook_deliveries)
                .where(webhook_deliveries.c.state == PENDING)
            )
        ).scalar_one()
    )
    oldest = (
        await conn.execute(
            select(func.min(webhook_deliveries.c.create_time)).where(
                webhook_deliveries.c.state == PENDING, webhook_deliveries.c.next_attempt_time <= now
            )
        )
    ).scalar_one_or_none()
    return pending, int(oldest) if oldest is not None else None


async def trim(conn: AsyncConnection, before: int, limit: int) -> int:
    """Deletes up to ``limit`` deliveries that are done (delivered or dead) and whose last attempt was
    before ``before``; returns how many. Read from the (state, next_attempt_time) index: a done
    delivery's next_attempt_time is when its last attempt was made (services/webhooks.py)."""
    found = 0
    for state in (DELIVERED, DEAD):
        q = (
            select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.state == state, webhook_deliveries.c.next_attempt_time < before)
            .limit(limit - found)
        )
        ids = [r[0] for r in (await conn.execute(q)).all()]
        if ids:
            await conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(ids)))
        found += len(ids)
        if found >= limit:
            break
    return found
