"""Initial schema: tenants, keys, sources, profiles, identifiers, links, merges,
consents, event keys (cross-partition dedupe) and the monthly-partitioned events table.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:19:35.967036
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_history",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("consent_type", sa.Text(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=True),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
    )
    op.create_index(
        op.f("ix_consent_history_profile_id"), "consent_history", ["profile_id"], unique=False
    )
    op.create_table(
        "event_keys",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "dedupe_key", name=op.f("pk_event_keys")),
        sa.UniqueConstraint("event_id", name=op.f("uq_event_keys_event_id")),
    )
    op.create_table(
        "events",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("properties", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("context", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("identifiers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("emq", sa.SmallInteger(), nullable=False),
        sa.Column("decisions", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        postgresql_partition_by="RANGE (event_time)",
    )
    op.create_index(
        "ix_events_tenant_id_event_time", "events", ["tenant_id", "event_time"], unique=False
    )
    op.create_index(
        "ix_events_tenant_id_profile_id_event_time",
        "events",
        [
            "tenant_id",
            "profile_id",
            sa.literal_column("event_time DESC"),
            sa.literal_column("event_id DESC"),
        ],
        unique=False,
    )
    # Last resort for rows outside every monthly partition (CONTRACT section 6): events
    # are never failed for their time. Monthly partitions are created at run time.
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    op.create_table(
        "identity_links",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("from_type", sa.Text(), nullable=False),
        sa.Column("from_hash", sa.Text(), nullable=False),
        sa.Column("to_type", sa.Text(), nullable=False),
        sa.Column("to_hash", sa.Text(), nullable=False),
        sa.Column("link_type", sa.Text(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_links")),
    )
    op.create_index("ix_identity_links_profile_id", "identity_links", ["profile_id"], unique=False)
    op.create_table(
        "operators",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operators")),
    )
    op.create_table(
        "profile_merges",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("survivor_id", sa.UUID(), nullable=False),
        sa.Column("absorbed_id", sa.UUID(), nullable=False),
        sa.Column("trigger_type", sa.Text(), nullable=False),
        sa.Column("trigger_hash", sa.Text(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=True),
        sa.Column("snapshot", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_merges")),
    )
    op.create_index(
        op.f("ix_profile_merges_absorbed_id"), "profile_merges", ["absorbed_id"], unique=False
    )
    op.create_index(
        op.f("ix_profile_merges_survivor_id"), "profile_merges", ["survivor_id"], unique=False
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("operator_id", sa.UUID(), nullable=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'read', 'operator')", name=op.f("ck_api_keys_role")),
        sa.CheckConstraint(
            "(tenant_id IS NULL) <> (operator_id IS NULL)", name=op.f("ck_api_keys_owner")
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_api_keys_operator_id_operators"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "profiles",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("lifecycle", sa.Text(), server_default=sa.text("'anonymous'"), nullable=False),
        sa.Column(
            "traits",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "trait_times",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("event_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("purchase_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "revenue",
            sa.Numeric(precision=18, scale=4),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("identifier_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("merge_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_into", sa.UUID(), nullable=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "lifecycle IN ('anonymous', 'known', 'customer', 'churned')",
            name=op.f("ck_profiles_lifecycle"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_profiles_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
    )
    op.create_index(
        "ix_profiles_merged_into",
        "profiles",
        ["merged_into"],
        unique=False,
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.create_index(
        "ix_profiles_tenant_id_lifecycle", "profiles", ["tenant_id", "lifecycle"], unique=False
    )
    op.create_table(
        "sources",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("write_key_hash", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("phone_region", sa.Text(), nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column(
            "allowed_origins",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("events_received", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("events_rejected", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "type IN ('website', 'server', 'sgtm', 'import', 'crm')", name=op.f("ck_sources_type")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_sources_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("write_key_hash", name=op.f("uq_sources_write_key_hash")),
    )
    op.create_index(op.f("ix_sources_tenant_id"), "sources", ["tenant_id"], unique=False)
    op.create_table(
        "consents",
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("consent_type", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_consents_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "consent_type", name=op.f("pk_consents")),
    )
    op.create_table(
        "profile_identifiers",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("profile_id", sa.UUID(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "type IN ('external_id', 'email', 'phone', 'device_id', 'anonymous_id')",
            name=op.f("ck_profile_identifiers_type"),
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_profile_identifiers_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_profile_identifiers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "type", "hash", name=op.f("pk_profile_identifiers")),
    )
    op.create_index(
        op.f("ix_profile_identifiers_profile_id"),
        "profile_identifiers",
        ["profile_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_profile_identifiers_profile_id"), table_name="profile_identifiers")
    op.drop_table("profile_identifiers")
    op.drop_table("consents")
    op.drop_index(op.f("ix_sources_tenant_id"), table_name="sources")
    op.drop_table("sources")
    op.drop_index("ix_profiles_tenant_id_lifecycle", table_name="profiles")
    op.drop_index(
        "ix_profiles_merged_into",
        table_name="profiles",
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.drop_table("profiles")
    op.drop_table("api_keys")
    op.drop_table("tenants")
    op.drop_index(op.f("ix_profile_merges_survivor_id"), table_name="profile_merges")
    op.drop_index(op.f("ix_profile_merges_absorbed_id"), table_name="profile_merges")
    op.drop_table("profile_merges")
    op.drop_table("operators")
    op.drop_index("ix_identity_links_profile_id", table_name="identity_links")
    op.drop_table("identity_links")
    op.drop_index("ix_events_tenant_id_profile_id_event_time", table_name="events")
    op.drop_index("ix_events_tenant_id_event_time", table_name="events")
    op.drop_table("events")
    op.drop_table("event_keys")
    op.drop_index(op.f("ix_consent_history_profile_id"), table_name="consent_history")
    op.drop_table("consent_history")
