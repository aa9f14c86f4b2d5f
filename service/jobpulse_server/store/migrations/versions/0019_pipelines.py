"""Dependencies and the finalize step (CreateJobRequest.after, after_mode, finalize_kind), and an
artifact's role (Artifact.role: a RESULT artifact's uri is Job.result_uri).

A held chunk is a pending chunk with next_attempt_time (and retry_at) at domain.model.HELD: it waits out
of the claim index as a retry does, at a time that never comes, until the completion that frees it.
``jobs.n_held`` counts a job's held chunks (for Job.blocked); ``jobs.pipeline`` marks a job whose
completions free or cancel other chunks. ``job_dependencies`` finds a job's dependants by its primary
key (after_id first), and a dependant's dependencies by ``ix_job_dependencies_job``. PostgreSQL's
``ix_jobs_per_chunk_held`` holds the PER_CHUNK dependants still holding chunks (store/holds.py).

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("after_ids", sa.JSON, nullable=True))
    op.add_column("jobs", sa.Column("after_mode", sa.SmallInteger, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("finalize_kind", sa.String(128), nullable=False, server_default=""))
    op.add_column("jobs", sa.Column("n_held", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("pipeline", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("chunks", sa.Column("finalize", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("artifacts", sa.Column("role", sa.SmallInteger, nullable=False, server_default="0"))
    op.create_table(
        "job_dependencies",
        sa.Column("after_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("after_mode", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_job_dependencies_job", "job_dependencies", ["job_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_jobs_per_chunk_held ON jobs (id) WHERE n_held > 0 AND after_mode = 2")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_jobs_per_chunk_held", table_name="jobs")
    op.drop_index("ix_job_dependencies_job", "job_dependencies")
    op.drop_table("job_dependencies")
    op.drop_column("artifacts", "role")
    op.drop_column("chunks", "finalize")
    for column in ("pipeline", "n_held", "finalize_kind", "after_mode", "after_ids"):
        op.drop_column("jobs", column)
