"""The claim and lease indexes of chunks hold only the chunks they are for: pending chunks (claim order)
and running ones (by lease end). Over every state, each chunk a worker completed or claimed moved its
entries within both indexes; now a completion leaves the claim index alone and a claim removes one entry,
so a SQLite complete-and-claim writes 9-10 pages instead of 14 and PostgreSQL writes no index entry for
a finished chunk's new row version in either.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Chunk states (jobpulse_server.domain.model.ChunkState), as the statements write them.
PENDING = 1
RUNNING = 2


def upgrade() -> None:
    op.drop_index("ix_chunks_claim", table_name="chunks")
    op.drop_index("ix_chunks_lease", table_name="chunks")
    # Written out: the claim order needs priority DESC in the index itself.
    op.execute(f"CREATE INDEX ix_chunks_claim ON chunks (priority DESC, job_id, idx) WHERE state = {PENDING}")
    op.execute(f"CREATE INDEX ix_chunks_lease ON chunks (lease_expire_time) WHERE state = {RUNNING}")


def downgrade() -> None:
    op.drop_index("ix_chunks_claim", table_name="chunks")
    op.drop_index("ix_chunks_lease", table_name="chunks")
    op.execute("CREATE INDEX ix_chunks_claim ON chunks (state, priority DESC, job_id, idx)")
    op.create_index("ix_chunks_lease", "chunks", ["state", "lease_expire_time"])
