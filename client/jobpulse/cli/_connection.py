"""A client command's connection: its flags and ``JOBPULSE_*`` variables resolved, and a ``Client`` on them.

Commands call ``_client`` through this module (``_connection._client``), so that a test replacing
``jobpulse.cli._connection._client`` points every command at its fake server.
"""

from __future__ import annotations

import argparse

from jobpulse import _settings as settings
from jobpulse._sync.client import Client


def _settings(args: argparse.Namespace) -> None:
    """Resolves the connection options: each flag given wins, else its ``JOBPULSE_*`` variable, else its
    default, as the SDK does (``jobpulse._settings``); a bad value raises ``SettingError`` naming the
    flag or variable. Sets ``args.target``, ``args.api_key`` and ``args.connection``."""
    connection = settings.resolve_connection(
        args.target, api_key=args.api_key, secure=args.tls, tls_ca=args.tls_ca
    )
    args.connection = connection
    args.target, args.api_key = connection.target, connection.api_key


def _client(args: argparse.Namespace) -> Client:
    connection: settings.Connection = args.connection
    return Client(
        connection.target,
        api_key=connection.api_key,
        secure=connection.secure,
        root_certificates=connection.root_certificates,
    )
