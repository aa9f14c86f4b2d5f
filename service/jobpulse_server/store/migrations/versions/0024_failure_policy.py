"""The failure policy and timeouts of a job (CreateJobRequest.max_failed_chunks, attempt_timeout,
timeout): written once by CreateJob; the sweep finds jobs past their deadline by ix_jobs_deadline.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_PENDING_DEADLINES = sa.text("deadline_time IS NOT NULL AND end_time IS NULL")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("max_failed_chunks", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("attempt_timeout", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("deadline_time", sa.BigInteger, nullable=True))
    op.create_index(
        "ix_jobs_deadline",
        "jobs",
        ["deadline_time"],
        sqlite_where=_PENDING_DEADLINES,
        postgresql_where=_PENDING_DEADLINES,
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_deadline", table_name="jobs")
    op.drop_column("jobs", "deadline_time")
    op.drop_column("jobs", "attempt_timeout")
    op.drop_column("jobs", "max_failed_chunks")
