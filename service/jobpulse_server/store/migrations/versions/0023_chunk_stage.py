"""A chunk's own stage and message (Chunk.stage, Chunk.message): set by that chunk's ReportChunkProgress,
while the job's stay the last report of any of its chunks.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("stage", sa.String(256), nullable=False, server_default=""))
    op.add_column("chunks", sa.Column("message", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("chunks", "message")
    op.drop_column("chunks", "stage")
