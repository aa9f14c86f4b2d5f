"""The server's commands: ``jobpulse-server serve | keys | migrate`` (``main``), the key operations they
run on the database, and the settings reference written from the settings' declarations."""

from jobpulse_server.cli.commands import main

__all__ = ["main"]
