"""A chunk's error details (ChunkError.details: what a worker sent to explain its failure, such as the
handler's traceback; at most 8 KiB, domain.model.MAX_ERROR_DETAILS).

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("error_details", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("chunks", "error_details")
