"""``python -m jobpulse_server``: serve with settings from JOBPULSE_* environment variables."""

import sys

from jobpulse_server.app import run
from jobpulse_server.config import Config

sys.exit(run(Config.from_env()))
