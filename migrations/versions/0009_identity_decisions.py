"""The identity decision log (CONTRACT 9): every link, merge and refusal, per profile.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 23:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table: no lock on anything busy.
    op.create_table(
        "identity_decisions",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("identifiers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_identity_decisions")),
    )
    op.create_index("ix_identity_decisions_tenant_id_profile_id_id", "identity_decisions",
                    ["tenant_id", "profile_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_identity_decisions_tenant_id_profile_id_id", table_name="identity_decisions")
    op.drop_table("identity_decisions")
