"""PostgreSQL: jobpulse_kind_rooms, the room of capped kinds counted after their rows are locked.

A group-committed claim that may take chunks of a kind with a max_running_chunks calls it before it
locks any job (store/batch/sql.py ``_kind_rooms_first``): it locks the kinds' rows in kind order, the
lock every claim that counts a kind's running chunks takes (store/tx.py ``SqlTx._capped_rooms``), then
counts them in a query of its own. A VOLATILE function's queries each take a fresh snapshot, so that
count holds every claim of the kind committed before the lock was given, though the calling statement
began earlier: the claim stays one statement, with no BEGIN and COMMIT round trips. SQLite has one
writer and needs none of this.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# tables.RUNNING (ChunkState.PROCESSING), written in as the statements write it.
_RUNNING = 2

KIND_ROOMS = f"""
CREATE OR REPLACE FUNCTION jobpulse_kind_rooms(wanted text[])
RETURNS TABLE (kind_name text, room bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM kinds AS lk WHERE lk.kind = ANY(wanted) AND lk.max_running_chunks > 0
        ORDER BY lk.kind FOR UPDATE;
    RETURN QUERY SELECT ck.kind::text, ck.max_running_chunks - (
        SELECT count(*) FROM chunks AS rc WHERE rc.state = {_RUNNING} AND rc.kind = ck.kind)
        FROM kinds AS ck WHERE ck.kind = ANY(wanted) AND ck.max_running_chunks > 0;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(KIND_ROOMS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS jobpulse_kind_rooms(text[])")
