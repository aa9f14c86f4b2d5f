"""The chunks FAILED for good, counted by job, kind and error reason (job_failures) and by owner, kind and
reason (failure_counts), which SummarizeFailures reads instead of every failed chunk; both counted here
from the chunks already failed.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_failures",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(128), primary_key=True),
        sa.Column("error_reason", sa.String(128), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.BigInteger, nullable=False),
        sa.Column("last_time", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_job_failures_key", "job_failures", ["owner", "kind", "error_reason", "last_time"])
    op.create_table(
        "failure_counts",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(128), primary_key=True),
        sa.Column("error_reason", sa.String(128), primary_key=True),
        sa.Column("chunks", sa.BigInteger, nullable=False),
        sa.Column("jobs", sa.BigInteger, nullable=False),
        sa.Column("last_time", sa.BigInteger, nullable=False),
    )
    # state 4: FAILED.
    op.execute(
        "INSERT INTO job_failures (job_id, kind, error_reason, owner, create_time, chunks, last_time) "
        "SELECT c.job_id, c.kind, c.error_reason, j.owner, j.create_time, count(*), "
        "coalesce(max(c.end_time), 0) "
        "FROM chunks AS c JOIN jobs AS j ON j.id = c.job_id WHERE c.state = 4 "
        "GROUP BY c.job_id, c.kind, c.error_reason, j.owner, j.create_time"
    )
    op.execute(
        "INSERT INTO failure_counts (owner, kind, error_reason, chunks, jobs, last_time) "
        "SELECT owner, kind, error_reason, sum(chunks), count(*), max(last_time) FROM job_failures "
        "GROUP BY owner, kind, error_reason"
    )


def downgrade() -> None:
    op.drop_table("failure_counts")
    op.drop_table("job_failures")
