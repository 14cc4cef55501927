"""Unmerge (CONTRACT 9): what a merge needs to be undone, and what an undo leaves behind.

- ``events.merged_from``: the stack of absorbed profile ids an event was moved from by
  merges (appended by each merge, popped by its unmerge), so an unmerge finds the events
  the absorbed side had at merge time even after its identifiers moved on;
- ``profile_merges.undone_at``: set by the unmerge (the graph no longer lists the merge;
  repeating the unmerge changes nothing);
- ``identity_blocks``: an identifier that may no longer join a profile (the trigger of an
  undone merge and the survivor it joined), honoured by the identity planner.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 01:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # Nullable columns without a default: catalog-only changes, no table rewrite.
    op.add_column("events", sa.Column("merged_from", postgresql.ARRAY(sa.UUID()), nullable=True))
    op.add_column("profile_merges", sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "identity_blocks",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("merge_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "type", "hash", "profile_id", name=op.f("pk_identity_blocks")),
    )
    op.create_index("ix_identity_blocks_tenant_id_profile_id", "identity_blocks", ["tenant_id", "profile_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_blocks_tenant_id_profile_id", table_name="identity_blocks")
    op.drop_table("identity_blocks")
    op.drop_column("profile_merges", "undone_at")
    op.drop_column("events", "merged_from")
