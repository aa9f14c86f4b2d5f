"""Jobs with pending chunks, in claim order (priority DESC, id): a claim finds its candidate jobs here
and then descends ix_chunks_claim to each one's own entries, instead of reading ix_chunks_claim from its
start, where the entries of older jobs' claimed chunks stay, dead, until a vacuum. PostgreSQL only:
SQLite drops an index entry when its row changes.

A pending chunk carries its job's priority (Job.move_chunk; UpdateJob moves its pending chunks'), which
the claim relies on to find a job's entries; any pending chunk that disagrees is brought in line here.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

PENDING = 1  # ChunkState.PENDING, as the statements write it


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite drops an index entry when its row changes: claims scan ix_chunks_claim there
    op.execute(
        "UPDATE chunks AS c SET priority = j.priority FROM jobs AS j "
        f"WHERE j.id = c.job_id AND c.state = {PENDING} AND c.priority <> j.priority"
    )
    op.execute("CREATE INDEX ix_jobs_claimable ON jobs (priority DESC, id) WHERE n_pending > 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_jobs_claimable", table_name="jobs")
