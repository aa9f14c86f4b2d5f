"""Operator actions: unique jobs (jobs.unique_key, held unique among live jobs by ux_jobs_unique_key), bulk
operations over a filter (bulk_operations: each one's filter, progress and cursor), and schedules.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

# Jobs that have not ended (states 1-3: PENDING, PROCESSING, CANCELLING) with a unique key.
_LIVE_UNIQUE = sa.text("unique_key IS NOT NULL AND state < 4")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("unique_key", sa.String(128), nullable=True))
    op.create_index(
        "ux_jobs_unique_key",
        "jobs",
        ["owner", "kind", "unique_key"],
        unique=True,
        sqlite_where=_LIVE_UNIQUE,
        postgresql_where=_LIVE_UNIQUE,
    )
    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("sees_all", sa.Boolean, nullable=False),
        sa.Column("action", sa.SmallInteger, nullable=False),
        sa.Column("job_filter", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("force", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("matched", sa.BigInteger, nullable=False),
        sa.Column("done", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("skipped", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cursor", sa.String(32), nullable=False, server_default=""),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.BigInteger, nullable=False),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_bulk_operations_running",
        "bulk_operations",
        ["create_time"],
        sqlite_where=sa.text("end_time IS NULL"),
        postgresql_where=sa.text("end_time IS NULL"),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("cron", sa.String(256), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False, server_default=""),
        sa.Column("job_template", sa.JSON, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("misfire_policy", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("overlap_policy", sa.SmallInteger, nullable=False, server_default="1"),
        sa.Column("next_run_time", sa.BigInteger, nullable=True),
        sa.Column("last_run_time", sa.BigInteger, nullable=True),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_schedules_owner_id", "schedules", ["owner", "id"])
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_run_time"],
        sqlite_where=sa.text("next_run_time IS NOT NULL"),
        postgresql_where=sa.text("next_run_time IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("schedules")
    op.drop_table("bulk_operations")
    op.drop_index("ux_jobs_unique_key", table_name="jobs")
    op.drop_column("jobs", "unique_key")
