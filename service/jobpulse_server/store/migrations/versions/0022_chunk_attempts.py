"""Attempt history: one row per ended attempt of a chunk (ListChunkAttempts), written in the
transaction that ends it (domain.model.Job.move_chunk notes it; store/tx.py and the group commit's
statements write it). A running attempt, and the completed one that ends a chunk, are the chunk itself
(its attempt, worker, start and end), so claims and completions write nothing here: only the attempts
that fail, lose their lease or are cancelled leave rows. Kept as long as the job: deleted with it.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chunk_attempts",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("chunk_index", sa.BigInteger, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("items_done", sa.BigInteger, nullable=False),
        sa.Column("error_reason", sa.String(128), nullable=False, server_default=""),
        sa.Column("error_message", sa.Text, nullable=False, server_default=""),
        sa.Column("error_details", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("chunk_attempts")
