"""What a committed write changed: the message from the write paths to the change hub, the
PostgreSQL listener and the other replicas."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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


# How changes travel between replicas on PostgreSQL (NOTIFY payloads on one channel).
CHANNEL = "jobpulse_changes"
# NOTIFY payloads must stay under 8000 bytes.
_MAX_PAYLOAD = 7000


def encode(changes: Changes, replica: str) -> list[str]:
    """The changes as one or more NOTIFY payloads."""
    payloads: list[str] = []
    base: dict[str, Any] = {"r": replica}
    if changes.new_work:
        base["w"] = 1
    if changes.work_later:
        base["l"] = sorted(set(round(d, 3) for d in changes.work_later))[:20]
    items = [("j", job_id, rev) for job_id, rev in changes.jobs.items()]
    items += [("d", job_id, 0) for job_id in changes.deleted]
    current: dict[str, Any] = dict(base, j={}, d=[])
    # The payload's size is counted as items are added (an upper bound: the payload is written
    # without the spaces counted here), not measured again per item: that was quadratic, 15 ms of
    # the event loop for the 500 deletions of one expiry batch.
    size = len(json.dumps(current))
    for kind, job_id, rev in items:
        if kind == "j":
            current["j"][job_id] = rev
            size += len(json.dumps(job_id)) + len(str(rev)) + 4
        else:
            current["d"].append(job_id)
            size += len(json.dumps(job_id)) + 2
        if size > _MAX_PAYLOAD:
            payloads.append(json.dumps(current, separators=(",", ":")))
            current = {"r": replica, "j": {}, "d": []}
            size = len(json.dumps(current))
    payloads.append(json.dumps(current, separators=(",", ":")))
    return payloads


def own_prefixes(replica: str) -> tuple[str, ...]:
    """How a payload sent by ``replica`` begins, as ``encode`` writes it and as the store's statements
    write it in SQL (json_build_object's spacing): both put the sender first. A payload beginning with
    one of these was sent by ``replica`` (the closing quote ends the name), so the receiver can drop its
    own without decoding it; one beginning otherwise is decoded."""
    name = json.dumps(replica)
    return '{"r":' + name + ",", '{"r" : ' + name + ","


def decode(payload: str) -> tuple[str, Changes]:
    """(sending replica, changes) from a payload."""
    body = json.loads(payload)
    changes = Changes(
        jobs={str(k): int(v) for k, v in body.get("j", {}).items()},
        deleted=set(body.get("d", [])),
        new_work=bool(body.get("w")),
        work_later=[float(x) for x in body.get("l", [])],
    )
    return str(body.get("r", "")), changes
