"""Fair share between owners (setting fair_share; domain/model.py fair_order): ix_jobs_fair, the owners
with pending chunks and each one's jobs in claim order, on both databases; ix_jobs_running, the jobs
with running chunks by owner, on PostgreSQL (SQLite counts an owner's running chunks from the chunks).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE UNIQUE INDEX ix_jobs_fair ON jobs (owner, priority DESC, id) WHERE n_pending > 0")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_jobs_running ON jobs (owner) WHERE n_processing > 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_jobs_running", table_name="jobs")
    op.drop_index("ix_jobs_fair", table_name="jobs")
