"""The server's commands (``serve``, ``keys``, ``migrate``), handed to ``jobpulse-server``'s own CLI."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# The commands of the server distribution (jobpulse-server): ``jobpulse serve ...`` runs
# ``jobpulse-server serve ...`` where the server is installed.
SERVER_COMMANDS = {
    "serve": "run the jobpulse server until SIGTERM or Ctrl-C",
    "keys": "manage API keys in the database (create, list, revoke)",
    "migrate": "bring the database schema to the server's version",
}
SERVER_MODULE = "jobpulse_server.cli"


def _server_command(argv: Sequence[str]) -> int:
    """Hands a server subcommand to ``jobpulse-server``'s own parser. The server is looked up by name,
    so the SDK neither depends on it nor imports it unless a server command is asked for."""
    try:
        server_cli = importlib.import_module(SERVER_MODULE)
    except ImportError as exc:
        print(
            f"error: the jobpulse server is not installed ({exc}); pip install jobpulse-server",
            file=sys.stderr,
        )
        return 1
    return int(server_cli.main(list(argv), prog="jobpulse"))


def _cmd_server(args: argparse.Namespace) -> int:
    return _server_command([args.command, *args.rest])
