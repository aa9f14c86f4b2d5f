"""The ``jobpulse-server`` command: ``serve`` and ``keys``, with the same flags and JOBPULSE_* variables
as ``jobpulse serve`` / ``jobpulse keys`` (which stay as aliases where the server is installed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobpulse import cli as client_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jobpulse-server`` command and returns its exit status."""
    parser = client_cli.build_parser(
        only=client_cli.SERVER_COMMANDS,
        prog="jobpulse-server",
        description="jobpulse server: serve the API, manage API keys",
    )
    return client_cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
