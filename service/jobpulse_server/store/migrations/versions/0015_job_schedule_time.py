"""A job may be created to start later (CreateJobRequest.schedule_time): the time is kept with the job.
Its chunks wait out that time as a retry waits out its backoff (``chunks.retry_at``, store/waiting.py),
so nothing else changes in the schema.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: jobs made before, and jobs made to start at once, have none.
    op.add_column("jobs", sa.Column("schedule_time", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "schedule_time")
