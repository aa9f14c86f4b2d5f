"""AIP-214 expiry: the ttl a job was created with, the indexes the expiry sweep reads, and the feed's
floor (the newest tombstone trimmed).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing jobs take the server's default ttl for their terminal state.
    op.add_column("jobs", sa.Column("ttl", sa.BigInteger, nullable=True))
    own_ttl = sa.column("ttl") > 0
    op.create_index(
        "ix_jobs_own_expiry",
        "jobs",
        [sa.text("(end_time + ttl)")],
        sqlite_where=own_ttl,
        postgresql_where=own_ttl,
    )
    op.create_index("ix_job_tombstones_delete_time", "job_tombstones", ["delete_time"])
    op.create_table(
        "feed_floor",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("change_seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_floor")
    op.drop_index("ix_job_tombstones_delete_time", table_name="job_tombstones")
    op.drop_index("ix_jobs_own_expiry", table_name="jobs")
    op.drop_column("jobs", "ttl")
