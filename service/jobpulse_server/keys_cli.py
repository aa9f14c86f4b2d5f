"""``jobpulse keys create|list|revoke``: operate on the database directly (no server needed)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone

from jobpulse_server.store import keys
from jobpulse_server.store.engine import Database


def _when(us: int | None) -> str:
    if us is None:
        return ""
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


async def _run(action: str, database_url: str, name: str, role: str, as_json: bool, webhook_url: str) -> int:
    db = Database(database_url)
    await db.start()
    try:
        if action == "create":
            key = await keys.create_key(db, name, role, webhook_url)
            secret = await keys.webhook_secret(db, name)
            # The key on stdout alone (scripts capture it); the rest on stderr.
            if as_json:
                print(json.dumps({"name": name, "role": role, "key": key, "webhook_secret": secret}))
            else:
                print(key)
                print(f"created {role} key {name!r}: store it now, it cannot be shown again", file=sys.stderr)
                print(f"webhook signing secret of its jobs (Standard Webhooks): {secret}", file=sys.stderr)
            return 0
        if action == "list":
            found = await keys.list_keys(db)
            if as_json:
                print(
                    json.dumps(
                        [
                            {
                                "name": k.name,
                                "role": k.role,
                                "prefix": k.prefix,
                                "created": _when(k.create_time),
                                "revoked": _when(k.revoke_time) or None,
                            }
                            for k in found
                        ]
                    )
                )
                return 0
            rows = [("NAME", "ROLE", "PREFIX", "CREATED", "REVOKED")]
            rows += [
                (k.name, k.role, k.prefix + "…", _when(k.create_time), _when(k.revoke_time)) for k in found
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            return 0
        if action == "revoke":
            if not await keys.revoke_key(db, name):
                print(f"error: no active key named {name!r}", file=sys.stderr)
                return 1
            print(f"revoked key {name!r}; running servers stop accepting it within seconds", file=sys.stderr)
            return 0
        raise AssertionError(action)
    finally:
        await db.close()


def run_keys_command(
    action: str, database_url: str, name: str, role: str, *, as_json: bool = False, webhook_url: str = ""
) -> int:
    """Runs one ``jobpulse keys`` action; returns the exit code."""
    if action in ("create", "revoke") and not name:
        print(f"error: keys {action} needs --name", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(action, database_url, name, role, as_json, webhook_url))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
