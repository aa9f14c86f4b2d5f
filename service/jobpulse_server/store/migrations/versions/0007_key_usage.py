"""Usage per API key, kept across restarts and summed over replicas, and the shared rate-limit buckets.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
# 0006 is another change of the same phase; whoever merges both chains this one after it.
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_name", sa.String(63), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key_name", sa.String(63), primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("refill_time", sa.BigInteger, nullable=False),
        sa.Column("granted", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("key_usage")
