"""``python -m jobpulse_server``: serve with settings from JOBPULSE_* environment variables."""

import sys

from .app import run
from .config import Config

sys.exit(run(Config.from_env()))
