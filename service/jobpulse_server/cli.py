"""The ``jobpulse-server`` command: ``serve``, ``keys`` and ``migrate``.

Its flags and JOBPULSE_* variables are those ``jobpulse serve`` / ``jobpulse keys`` have always had:
the SDK's ``jobpulse`` command hands those two subcommands to this module when the server is
installed, so both spellings behave the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from jobpulse_server.app import run as run_server
from jobpulse_server.config import LOG_LEVELS, Config
from jobpulse_server.keys_cli import run_keys_command
from jobpulse_server.store.engine import Database, current_schema_version, head_schema_version

COMMANDS = ("serve", "keys", "migrate")
DEFAULT_DATABASE_URL = "sqlite:///jobpulse.db"


def _database_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=os.environ.get("JOBPULSE_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="env JOBPULSE_DATABASE_URL (default %(default)s)",
    )


def _json(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print machine-readable JSON",
    )


def build_parser(prog: str = "jobpulse-server") -> argparse.ArgumentParser:
    """The parser of ``jobpulse-server`` (``prog`` is ``jobpulse`` when reached through the SDK)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="jobpulse server: serve the API, manage API keys, migrate the schema"
    )
    _json(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the jobpulse server until SIGTERM or Ctrl-C")
    p.set_defaults(func=_cmd_serve)
    # Flags left unset fall back to their JOBPULSE_* variable, read and checked in one place
    # (Config.from_env: a bad value is one line naming the variable, exit 2), then to the default.
    p.add_argument("--host", default=None, help="env JOBPULSE_HOST (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=None, help="env JOBPULSE_PORT (default 50051; 0: any free port)"
    )
    p.add_argument(
        "--database-url",
        default=None,
        help=f"env JOBPULSE_DATABASE_URL (default {DEFAULT_DATABASE_URL})",
    )
    p.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=LOG_LEVELS,
        help="env JOBPULSE_LOG_LEVEL (default INFO)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve a non-loopback address even with no API keys (env JOBPULSE_INSECURE)",
    )
    p.add_argument("--tls-cert", default=None, metavar="PEM", help="TLS certificate (env JOBPULSE_TLS_CERT)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="TLS private key (env JOBPULSE_TLS_KEY)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics here (env JOBPULSE_METRICS_PORT)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text or JSON (env JOBPULSE_LOG_FORMAT)",
    )

    p = sub.add_parser("keys", help="manage API keys in the database (create, list, revoke)")
    p.set_defaults(func=_cmd_keys)
    p.add_argument("action", choices=("create", "list", "revoke"))
    _database_url(p)
    p.add_argument("--name", default="", help="the key's name (create, revoke); it becomes the owner of jobs")
    p.add_argument("--role", default="client", choices=("client", "worker", "admin"), help="create only")
    p.add_argument("--webhook-url", default="", help="create only: default webhook URL of the key's jobs")
    p.add_argument(
        "--create",
        action="store_true",
        help="make the SQLite database file if it does not exist (refused otherwise: a key in a new "
        "file never reaches the server's database)",
    )
    _json(p, suppress=True)

    p = sub.add_parser(
        "migrate",
        help="bring the database schema to this version's (serve does it at start-up too)",
        description="Applies pending schema migrations and prints the schema version before and after. "
        "Safe to run again, and while servers of this version run.",
    )
    p.set_defaults(func=_cmd_migrate)
    _database_url(p)
    _json(p, suppress=True)
    return parser


def serve_config(args: argparse.Namespace) -> Config:
    """The server's config: ``serve``'s flags, else their JOBPULSE_* variables, else the defaults
    (ValueError, naming the variable or flag, for a bad value)."""
    return Config.from_env(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        log_level=args.log_level,
        insecure=args.insecure,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = serve_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(run_server(config))


def _cmd_keys(args: argparse.Namespace) -> int:
    return run_keys_command(
        args.action,
        args.database_url,
        args.name,
        args.role,
        as_json=args.json,
        webhook_url=args.webhook_url,
        create_database=args.create,
    )


async def _migrate(database_url: str) -> tuple[str | None, str | None]:
    db = Database(database_url)
    await db.start(migrate=False)
    try:
        async with db.engine.connect() as conn:
            before = await conn.run_sync(current_schema_version)
        await db.migrate()
        async with db.engine.connect() as conn:
            after = await conn.run_sync(current_schema_version)
        return before, after
    finally:
        await db.close()


def _cmd_migrate(args: argparse.Namespace) -> int:
    try:
        before, after = asyncio.run(_migrate(args.database_url))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"before": before, "after": after, "head": head_schema_version()}))
    elif before == after:
        print(f"schema already at {after} (the newest this version knows)")
    else:
        print(f"schema migrated from {before or 'empty'} to {after}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "jobpulse-server") -> int:
    """Runs the command and returns its exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
