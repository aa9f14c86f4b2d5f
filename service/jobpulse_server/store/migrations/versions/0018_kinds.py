"""A kind's controls on the claim (UpdateKind, ListKinds): ``paused`` and ``max_running_chunks`` per kind,
one row for each kind ever updated. The primary key is the only index: UpdateKind writes one row, the
claims look rows up by kind, and ListKinds reads them in kind order.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kinds",
        sa.Column("kind", sa.String(128), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_running_chunks", sa.Integer, nullable=False, server_default="0"),
        sa.Column("update_time", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kinds")
