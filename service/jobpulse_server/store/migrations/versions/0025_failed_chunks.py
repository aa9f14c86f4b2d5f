"""Failures across jobs: the chunks FAILED for good by error reason and job (ix_chunks_failed), which
SummarizeFailures counts from alone and ListJobChunks over "-" pages through by reason, and by reason and
end time (ix_chunks_failed_last), where each reason's last failure is found.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_FAILED = sa.text("state = 4")


def upgrade() -> None:
    op.create_index(
        "ix_chunks_failed",
        "chunks",
        ["error_reason", "job_id", "idx", "end_time", "kind"],
        sqlite_where=_FAILED,
        postgresql_where=_FAILED,
    )
    op.create_index(
        "ix_chunks_failed_last",
        "chunks",
        ["error_reason", "end_time"],
        sqlite_where=_FAILED,
        postgresql_where=_FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_failed_last", table_name="chunks")
    op.drop_index("ix_chunks_failed", table_name="chunks")
