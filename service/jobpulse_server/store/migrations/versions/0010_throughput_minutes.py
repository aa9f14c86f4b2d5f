"""Chunks and items completed per minute and job kind, for the dashboard's throughput chart.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key is the only index: flushes add to rows by (minute, kind), the chart reads a
    # range of minutes and the prune deletes the minutes before one.
    op.create_table(
        "throughput_minutes",
        sa.Column("minute", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("chunks", sa.BigInteger, nullable=False),
        sa.Column("items", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("throughput_minutes")
