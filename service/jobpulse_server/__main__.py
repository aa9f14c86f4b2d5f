"""``python -m jobpulse_server``: ``jobpulse-server`` (``serve`` when no command is given)."""

import sys

from jobpulse_server.cli import main

sys.exit(main(sys.argv[1:] or ["serve"]))
