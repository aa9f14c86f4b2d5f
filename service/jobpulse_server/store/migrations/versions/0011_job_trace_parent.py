"""A job keeps the trace context of the request that created it (W3C traceparent, and tracestate if
any), so the spans of its chunks' claims, completions and failures can link to that request.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: jobs made before, and jobs made while the server does not trace, have none.
    op.add_column("jobs", sa.Column("trace_parent", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "trace_parent")
