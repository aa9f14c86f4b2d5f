"""``jobpulse keys create|list|revoke|rotate-events-secret``: operate on the database directly (no server
needed)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import make_url

from jobpulse_server.services import keys
from jobpulse_server.store.database import SqlStore
from jobpulse_server.store.diagnose import CannotOpenDatabase, describe_url, startup_problem


def _when(us: int | None) -> str:
    if us is None:
        return ""
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _missing_sqlite_file(database_url: str) -> Path | None:
    """The SQLite file ``database_url`` names, if it does not exist (None: it exists, or not SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database).expanduser().resolve()
    return None if path.exists() else path


async def _run(action: str, database_url: str, name: str, role: str, as_json: bool, webhook_url: str) -> int:
    db = SqlStore(database_url)
    try:
        await db.start()
    except Exception as exc:
        problem = startup_problem(exc, database_url)
        if problem is None:
            raise
        raise CannotOpenDatabase(problem) from exc
    try:
        if action == "create":
            key = await keys.create_key(db, name, role, webhook_url)
            secret = await keys.webhook_secret(db, name)
            # The key on stdout alone (scripts capture it); the rest on stderr.
            if as_json:
                print(json.dumps({"name": name, "role": role, "key": key, "webhook_secret": secret}))
            else:
                print(key)
                print(
                    f"created {role} key {name!r} in {describe_url(database_url)}: store it now, it cannot "
                    "be shown again",
                    file=sys.stderr,
                )
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
        if action == "rotate-events-secret":
            kid = await keys.rotate_events_secret(db)
            if as_json:
                print(json.dumps({"events_secret_id": kid}))
            print(
                f"new events token secret #{kid} in {describe_url(database_url)}: servers sign new tokens "
                "with it within seconds; tokens signed before stay valid until they expire",
                file=sys.stderr,
            )
            return 0
        if action == "revoke":
            if not await keys.revoke_key(db, name):
                print(f"error: no active key named {name!r}", file=sys.stderr)
                return 1
            print(
                f"revoked key {name!r} in {describe_url(database_url)}; servers on that database stop "
                "accepting it within seconds",
                file=sys.stderr,
            )
            return 0
        raise AssertionError(action)
    finally:
        await db.close()


def run_keys_command(
    action: str,
    database_url: str,
    name: str,
    role: str,
    *,
    as_json: bool = False,
    webhook_url: str = "",
    create_database: bool = False,
) -> int:
    """Runs one ``jobpulse keys`` action; returns the exit code. A SQLite file that does not exist is
    not made unless ``create_database``: a key written to a new file next to the caller never reaches
    the server's database, and the server stays open."""
    if action in ("create", "revoke") and not name:
        print(f"error: keys {action} needs --name", file=sys.stderr)
        return 2
    try:
        missing = _missing_sqlite_file(database_url)
    except ValueError as exc:  # not a URL SQLAlchemy can read
        print(f"error: --database-url: {exc}", file=sys.stderr)
        return 2
    if missing is not None and not create_database:
        print(
            f"error: no database at {missing} ({describe_url(database_url)}); give the --database-url "
            "(or JOBPULSE_DATABASE_URL) the server uses, or add --create to make a new database there",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_run(action, database_url, name, role, as_json, webhook_url))
    except (CannotOpenDatabase, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
