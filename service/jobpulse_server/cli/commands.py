"""The ``jobpulse-server`` command: ``serve``, ``keys`` and ``migrate``.

Its flags and JOBPULSE_* variables are those ``jobpulse serve`` / ``jobpulse keys`` have always had:
the SDK's ``jobpulse`` command hands those two subcommands to this module when the server is
installed, so both spellings behave the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from jobpulse_server.app.wiring import run as run_server
from jobpulse_server.cli.keys import run_keys_command
from jobpulse_server.platform.config import FAIR_SHARE, LOG_LEVELS, Config
from jobpulse_server.store import schema
from jobpulse_server.store.schema import current_schema_version, head_schema_version

COMMANDS = ("serve", "keys", "migrate")
DEFAULT_DATABASE_URL = Config.database_url
# The settings ``serve`` takes as flags (platform/config.py marks them); each is also a JOBPULSE_* variable.
SERVE_FLAGS = tuple(f.name for f in Config.settings() if f.metadata.get("flag"))
SERVE_FLAG_EXTRAS: dict[str, dict[str, Any]] = {
    "log_level": {"type": str.upper, "choices": LOG_LEVELS},
    "log_format": {"choices": ("text", "json")},
    "fair_share": {"choices": FAIR_SHARE},
    "tls_cert": {"metavar": "PEM"},
    "tls_key": {"metavar": "PEM"},
}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "none"
    return str(value)


def _config_flag(p: argparse.ArgumentParser, name: str, **extra: Any) -> None:
    """Adds ``--<name>`` for the Config setting ``name``, its text, variable and default taken from the
    setting's one declaration (platform/config.py). Left unset, the flag is None: the variable or default
    applies, read when the command runs."""
    setting = next(f for f in Config.settings() if f.name == name)
    text = setting.metadata.get("help", "")
    kwargs: dict[str, Any] = {
        "default": None,
        "help": f"{text} (env {Config.env_name(name)}; default {_shown(setting.default)})".replace("%", "%%"),
    }
    if isinstance(setting.default, bool):
        kwargs["action"] = "store_true"
    elif not isinstance(setting.default, str):
        kwargs["type"] = type(setting.default)
    kwargs.update(extra)
    p.add_argument("--" + name.replace("_", "-"), **kwargs)


def _other_settings() -> str:
    """``serve --help``'s epilog: every setting that has no flag, with its variable and default."""
    lines = [
        f"  {Config.env_name(f.name):<38} {_shown(f.default)}"
        for f in Config.settings()
        if not f.metadata.get("flag")
    ]
    return (
        "Every other setting is a JOBPULSE_* variable (flags win over variables;\n"
        "docs/reference/configuration.md says what each does). Variable, default:\n" + "\n".join(lines)
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

    p = sub.add_parser(
        "serve",
        help="run the jobpulse server until SIGTERM or Ctrl-C",
        description="Runs the jobpulse server until SIGTERM or Ctrl-C.",
        epilog=_other_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_cmd_serve)
    # Flags left unset fall back to their JOBPULSE_* variable, read and checked in one place
    # (Config.from_env: a bad value is one line naming the variable, exit 2), then to the default.
    for name in SERVE_FLAGS:
        _config_flag(p, name, **SERVE_FLAG_EXTRAS.get(name, {}))

    p = sub.add_parser(
        "keys",
        help="manage API keys in the database (create, list, revoke), and rotate the events token secret",
        description="create/list/revoke API keys. rotate-events-secret: a new secret signs events tokens "
        "(CreateEventsToken) from now on; tokens signed before stay valid until they expire.",
    )
    p.set_defaults(func=_cmd_keys)
    p.add_argument("action", choices=("create", "list", "revoke", "rotate-events-secret"))
    _config_flag(p, "database_url")
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
    _config_flag(p, "database_url")
    _json(p, suppress=True)
    return parser


def serve_config(args: argparse.Namespace) -> Config:
    """The server's config: ``serve``'s flags, else their JOBPULSE_* variables, else the defaults
    (ValueError, naming the variable or flag, for a bad value)."""
    return Config.from_env(**{name: getattr(args, name) for name in SERVE_FLAGS})


def database_url(args: argparse.Namespace) -> str:
    """``--database-url``, else ``JOBPULSE_DATABASE_URL``, else the default (keys, migrate): the one
    setting those commands use, the only variable they read."""
    given: str | None = args.database_url
    if given:
        return given
    from_env: str | None = Config.read("database_url")
    return from_env or DEFAULT_DATABASE_URL


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
        database_url(args),
        args.name,
        args.role,
        as_json=args.json,
        webhook_url=args.webhook_url,
        create_database=args.create,
    )


async def _migrate(database_url: str) -> tuple[str | None, str | None]:
    url = schema.normalize_url(database_url)
    if url.startswith("sqlite"):
        schema.create_sqlite_file(url)
    async with schema.schema_connection(url) as run:
        before = await run(current_schema_version)
    await schema.migrate(url)
    async with schema.schema_connection(url) as run:
        after = await run(current_schema_version)
    return before, after


def _cmd_migrate(args: argparse.Namespace) -> int:
    try:
        before, after = asyncio.run(_migrate(database_url(args)))
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
