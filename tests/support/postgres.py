"""The PostgreSQL server the tests use: JOBPULSE_TEST_POSTGRES_URL, else the local one (trust auth)."""

from __future__ import annotations

import os

POSTGRES_URL = os.environ.get("JOBPULSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
