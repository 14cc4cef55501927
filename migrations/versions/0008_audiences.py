"""Audiences: segments, memberships with history, computed traits (definitions, and values
on profiles.computed), volume anomalies, scheduler progress marks, and
``stratum_try_timestamptz`` for time comparisons in segment rules.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NOW = sa.text("now()")

# Segment rules compare trait strings as times; a cast that fails must not fail the query.
_TRY_TIMESTAMPTZ = """
CREATE OR REPLACE FUNCTION stratum_try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF value IS NULL OR value !~ '^\\d{4}-\\d{2}-\\d{2}' THEN
        RETURN NULL;
    END IF;
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # A constant default: a catalog change, no table rewrite (Postgres 11+).
    op.add_column("profiles", sa.Column("computed", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"),
                                        nullable=False))
    op.execute(_TRY_TIMESTAMPTZ)
    op.create_table(
        "segments",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("rules", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint("kind IN ('dynamic', 'static')", name=op.f("ck_segments_kind")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_segments_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_segments")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_segments_tenant_id_name")),
    )
    op.create_table(
        "segment_members",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("segment_id", sa.UUID(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["profile_id"], ["profiles.id"], name=op.f("fk_segment_members_profile_id_profiles"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id", "segment_id"], ["segments.tenant_id", "segments.id"],
                                name=op.f("fk_segment_members_tenant_id_segments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "segment_id", "profile_id", name=op.f("pk_segment_members")),
    )
    op.create_index("ix_segment_members_profile_id", "segment_members", ["profile_id"])
    op.create_table(
        "segment_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("segment_id", sa.UUID(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('entered', 'exited')", name=op.f("ck_segment_events_kind")),
        sa.ForeignKeyConstraint(["tenant_id", "segment_id"], ["segments.tenant_id", "segments.id"],
                                name=op.f("fk_segment_events_tenant_id_segments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_events")),
    )
    op.create_index("ix_segment_events_tenant_id_segment_id_at", "segment_events", ["tenant_id", "segment_id", "at"])
    op.create_index("ix_segment_events_pending", "segment_events", ["id"],
                    postgresql_where=sa.text("emitted_at IS NULL"))
    op.create_table(
        "computed_traits",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("function", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("property", sa.Text(), nullable=True),
        sa.Column("within_days", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_computed_traits_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_computed_traits")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_computed_traits_tenant_id_name")),
    )
    op.create_table(
        "anomalies",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("observed", sa.BigInteger(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('drop', 'spike')", name=op.f("ck_anomalies_kind")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_anomalies_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "source_id", "hour", "kind", name=op.f("pk_anomalies")),
    )
    op.create_index("ix_anomalies_tenant_id_hour", "anomalies", ["tenant_id", "hour"])
    op.create_table(
        "scheduler_marks",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("mark", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_marks")),
    )
    # Built without blocking the workers' profile writes on a large table.
    with op.get_context().autocommit_block():
        op.create_index("ix_profiles_updated_at", "profiles", ["updated_at"], postgresql_concurrently=True,
                        if_not_exists=True)


def downgrade() -> None:
    op.drop_table("scheduler_marks")
    op.drop_table("anomalies")
    op.drop_table("computed_traits")
    op.drop_table("segment_events")
    op.drop_table("segment_members")
    op.drop_table("segments")
    op.execute("DROP FUNCTION IF EXISTS stratum_try_timestamptz(text)")
    op.drop_index("ix_profiles_updated_at", table_name="profiles")
    op.drop_column("profiles", "computed")
