"""Initial schema: jobs, chunks, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("stage", sa.String(256), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("job_metadata", sa.JSON, nullable=False),
        sa.Column("total_items", sa.BigInteger, nullable=False),
        sa.Column("chunk_size", sa.BigInteger, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("n_pending", sa.BigInteger, nullable=False),
        sa.Column("n_processing", sa.BigInteger, nullable=False),
        sa.Column("n_completed", sa.BigInteger, nullable=False),
        sa.Column("n_failed", sa.BigInteger, nullable=False),
        sa.Column("n_cancelled", sa.BigInteger, nullable=False),
        sa.Column("items_done", sa.BigInteger, nullable=False),
        sa.Column("error_reason", sa.String(128), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("error_chunk_index", sa.BigInteger, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=False),
        sa.Column("cancel_time", sa.BigInteger, nullable=True),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("update_time", sa.BigInteger, nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("change_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_jobs_owner_request_id", "jobs", ["owner", "request_id"], unique=True)
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.create_index("ix_jobs_kind_id", "jobs", ["kind", "id"])
    op.create_index("ix_jobs_priority_id", "jobs", ["priority", "id"])
    op.create_index("ix_jobs_update_time_id", "jobs", ["update_time", "id"])
    op.create_index("ix_jobs_state_priority_id", "jobs", ["state", "priority", "id"])
    op.create_index("ix_jobs_state_update_time_id", "jobs", ["state", "update_time", "id"])
    op.create_index("ix_jobs_create_time", "jobs", ["create_time"])
    op.create_index("ix_jobs_change_seq", "jobs", ["change_seq", "id"])

    op.create_table(
        "chunks",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("item_start", sa.BigInteger, nullable=False),
        sa.Column("item_count", sa.BigInteger, nullable=False),
        sa.Column("items_done", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("external_task_id", sa.String(256), nullable=False),
        sa.Column("error_reason", sa.String(128), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expire_time", sa.BigInteger, nullable=True),
        sa.Column("lease_duration", sa.BigInteger, nullable=True),
        sa.Column("next_attempt_time", sa.BigInteger, nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
    )
    op.create_index("ux_chunks_job_idx", "chunks", ["job_id", "idx"], unique=True)
    op.create_index("ix_chunks_job_revision", "chunks", ["job_id", "revision"])
    # Written out: the claim order needs priority DESC in the index itself.
    op.execute("CREATE INDEX ix_chunks_claim ON chunks (state, priority DESC, job_id, idx)")
    op.create_index("ix_chunks_lease", "chunks", ["state", "lease_expire_time"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("chunk_index", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_artifacts_job_chunk", "artifacts", ["job_id", "chunk_index"])


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_table("chunks")
    op.drop_table("jobs")
