"""What each request_id was first sent with, so a reuse with another request can be refused (AIP-155).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_requests",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_requests")
