"""Chunks waiting out a retry backoff leave the claim index: ``chunks.retry_at`` holds a pending chunk's
next_attempt_time until a claim finds it due and clears it (store/waiting.py), ``ix_chunks_claim`` holds
only the pending chunks without it, and ``ix_chunks_retry`` the waiting ones by when they come due. Until
now every claim read past each waiting chunk of its job (and its row, for the time): with 10,000 waiting
ahead of 3,000 fresh ones, workers drained the job at 0.14-0.44 of the rate with none waiting
(a study run when this migration landed; git history keeps it).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

PENDING = 1  # ChunkState.PENDING, as the statements write it


def upgrade() -> None:
    op.add_column("chunks", sa.Column("retry_at", sa.BigInteger(), nullable=True))
    # Every chunk still in a backoff waits as before; one already due is found so by the first claim.
    op.execute(
        "UPDATE chunks SET retry_at = next_attempt_time "
        f"WHERE state = {PENDING} AND next_attempt_time IS NOT NULL"
    )
    op.drop_index("ix_chunks_claim", table_name="chunks")
    # Written out: the claim order needs priority DESC in the index itself.
    op.execute(
        "CREATE INDEX ix_chunks_claim ON chunks (priority DESC, job_id, idx) "
        f"WHERE state = {PENDING} AND retry_at IS NULL"
    )
    op.execute(
        f"CREATE INDEX ix_chunks_retry ON chunks (retry_at) WHERE state = {PENDING} AND retry_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_retry", table_name="chunks")
    op.drop_index("ix_chunks_claim", table_name="chunks")
    op.execute(f"CREATE INDEX ix_chunks_claim ON chunks (priority DESC, job_id, idx) WHERE state = {PENDING}")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("retry_at")
