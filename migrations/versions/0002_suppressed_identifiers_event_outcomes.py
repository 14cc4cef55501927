"""Suppressed identifiers (erasure must not be undone by later events) and event outcomes
(what happened to an event id that is not stored: a late duplicate, or erased).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:20:48.111999
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outcomes",
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("duplicate_of", sa.UUID(), nullable=True),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('duplicate', 'rejected', 'erased')", name=op.f("ck_event_outcomes_status")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_event_outcomes")),
    )
    op.create_table(
        "suppressed_identifiers",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column(
            "erased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_suppressed_identifiers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "type", "hash", name=op.f("pk_suppressed_identifiers")
        ),
    )


def downgrade() -> None:
    op.drop_table("suppressed_identifiers")
    op.drop_table("event_outcomes")
