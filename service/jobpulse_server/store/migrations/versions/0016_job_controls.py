"""A job's own controls on the claim: PauseJob/ResumeJob (``paused``) and ``max_running_chunks``. The
claims read both off the job row they lock already (statements.pg_candidate_jobs, tx.claim), so no
index changes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (with its default) on both: a batch table rebuild on SQLite would drop the
    # expression index ix_jobs_own_expiry.
    op.add_column("jobs", sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("jobs", sa.Column("max_running_chunks", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("jobs", "max_running_chunks")
    op.drop_column("jobs", "paused")
