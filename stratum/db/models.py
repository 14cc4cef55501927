"""The schema as SQLAlchemy metadata. Alembic migrations are written by hand to match it,
and ``alembic check`` (run by the test suite) fails if the two drift apart.

Runtime code uses psycopg with plain SQL on the hot paths; these models are the schema's
single description.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

NOW = text("now()")

tenants = Table(
    "tenants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    # Identity-rule overrides: per-type limits, extra blocked values (CONTRACT section 6).
    Column("settings", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

operators = Table(
    "operators",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("operator_id", UUID(as_uuid=True), ForeignKey("operators.id", ondelete="CASCADE")),
    Column("role", Text, nullable=False),
    # SHA-256 hex of the key; the key itself is shown once and never stored.
    Column("key_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('admin', 'read', 'operator')", name="role"),
    CheckConstraint("(tenant_id IS NULL) <> (operator_id IS NULL)", name="owner"),
)

sources = Table(
    "sources",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("write_key_hash", Text, nullable=False, unique=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("phone_region", Text),
    Column("rate_limit", Integer),
    Column("allowed_origins", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # protect (website sources' default) or off; other source types are trusted: always off.
    Column("identity_verification", Text, nullable=False, server_default=text("'off'")),
    # The HMAC key of verified identity (CONTRACT 6), encrypted with STRATUM_SECRET_KEY
    # (stratum/secret_storage.py); the previous one stays valid 24 h after a rotation.
    Column("identity_secret", Text),
    Column("previous_identity_secret", Text),
    Column("identity_secret_rotated_at", DateTime(timezone=True)),
    Column("events_received", BigInteger, nullable=False, server_default=text("0")),
    Column("events_rejected", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("type IN ('website', 'server', 'sgtm', 'import', 'crm')", name="type"),
    CheckConstraint("identity_verification IN ('protect', 'off') AND (type = 'website' OR identity_verification = 'off')",
                    name="identity_verification"),
)

profiles = Table(
    "profiles",
    metadata,
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("lifecycle", Text, nullable=False, server_default=text("'anonymous'")),
    Column("traits", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Per trait key, the event time of the value kept: merges keep the newest value per key.
    Column("trait_times", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("event_count", BigInteger, nullable=False, server_default=text("0")),
    Column("purchase_count", BigInteger, nullable=False, server_default=text("0")),
    Column("revenue", Numeric(18, 4), nullable=False, server_default=text("0")),
    Column("identifier_count", Integer, nullable=False, server_default=text("0")),
    Column("merge_count", Integer, nullable=False, server_default=text("0")),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("merged_into", UUID(as_uuid=True)),
    Column("merged_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # Computed trait values by name (CONTRACT 8), kept by the scheduler's audience upkeep.
    Column("computed", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint("lifecycle IN ('anonymous', 'known', 'customer', 'churned')", name="lifecycle"),
    PrimaryKeyConstraint("tenant_id", "id"),
    # Not (tenant_id, lifecycle): the foreign key check on (tenant_id, id) must only ever
    # match the primary key (migration 0013).
    Index("ix_profiles_lifecycle_tenant_id", "lifecycle", "tenant_id"),
    # The audience upkeep reads "profiles changed since the last run" through this index.
    Index("ix_profiles_updated_at", "updated_at"),
    Index("ix_profiles_merged_into", "merged_into", postgresql_where=text("merged_into IS NOT NULL")),
)

profile_identifiers = Table(
    "profile_identifiers",
    metadata,
    # Its tenant through its profile's key below only (migration 0017).
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("type", Text, primary_key=True),
    # SHA-256 hex of the normalized value; raw values are never stored.
    Column("hash", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    # Set while only unverified website claims carried the identifier (when one linked it):
    # a trusted event may move it, or displace it at a type limit (CONTRACT 6).
    Column("provisional_since", DateTime(timezone=True)),
    CheckConstraint("type IN ('external_id', 'email', 'phone', 'device_id', 'anonymous_id')", name="type"),
    ForeignKeyConstraint(["tenant_id", "profile_id"], ["profiles.tenant_id", "profiles.id"], ondelete="CASCADE",
                         deferrable=True, initially="DEFERRED"),  # checked at commit (0014)
    # A profile's identifiers; with the type, a segment's "has an email" probe is index-only (0015).
    Index("ix_profile_identifiers_profile_id_type", "profile_id", "type"),
)

identity_links = Table(
    "identity_links",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("from_type", Text, nullable=False),
    Column("from_hash", Text, nullable=False),
    Column("to_type", Text, nullable=False),
    Column("to_hash", Text, nullable=False),
    Column("link_type", Text, nullable=False),
    Column("event_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Index("ix_identity_links_profile_id", "profile_id"),
)

profile_merges = Table(
    "profile_merges",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Column("survivor_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("absorbed_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("trigger_type", Text, nullable=False),
    Column("trigger_hash", Text, nullable=False),
    Column("event_id", UUID(as_uuid=True)),
    # Both sides as they were (identifiers, traits with their times, counters, consents):
    # what an unmerge restores (core/unmerge.py). Merges recorded before 0010 hold the
    # absorbed side only.
    Column("snapshot", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("undone_at", DateTime(timezone=True)),  # set by the unmerge
)

# An identifier that may not join a profile again: the trigger of an undone merge and the
# survivor it had joined (CONTRACT 9). The identity planner loads these with its snapshot.
identity_blocks = Table(
    "identity_blocks",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("type", Text, primary_key=True),
    Column("hash", Text, primary_key=True),
    Column("profile_id", UUID(as_uuid=True), primary_key=True),
    Column("merge_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Index("ix_identity_blocks_tenant_id_profile_id", "tenant_id", "profile_id"),
)

consents = Table(
    "consents",
    metadata,
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("consent_type", Text, nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "profile_id", "consent_type"),
    Column("granted", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("source_id", UUID(as_uuid=True)),
    ForeignKeyConstraint(["tenant_id", "profile_id"], ["profiles.tenant_id", "profiles.id"], ondelete="CASCADE",
                         deferrable=True, initially="DEFERRED"),  # checked at commit (0014)
)

consent_history = Table(
    "consent_history",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Column("profile_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("consent_type", Text, nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("source_id", UUID(as_uuid=True)),
    Column("event_id", UUID(as_uuid=True)),
    Column("ip", Text),
    Column("user_agent", Text),
)

# One row per stored event, outside the partitioned table: Postgres only enforces unique
# indexes that include the partition key, so "once per (tenant, dedupe scope, key) forever"
# lives here. Workers insert here first (ON CONFLICT DO NOTHING) and COPY only the winners
# into ``events``, in the same transaction. See docs/SCHEMA.md. ``key_hash``: SHA-256 of the
# scoped key (core/dedupe.py), 32 bytes: keys are never stored, and the hottest index stays lean.
event_keys = Table(
    "event_keys",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("key_hash", LargeBinary, primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant_id", "event_id"),
)

# Partitioned by month on event_time (PARTITION BY RANGE); partitions are created by the
# scheduler ahead of time and by workers on demand, with a DEFAULT partition as last resort.
events = Table(
    "events",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source_id", UUID(as_uuid=True), nullable=False),
    Column("profile_id", UUID(as_uuid=True)),
    # hex SHA-256 of the scoped dedupe key (event_keys.key_hash), never the key itself
    Column("dedupe_key", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("event_name", Text, nullable=False),
    Column("properties", JSONB, nullable=False),
    Column("context", JSONB, nullable=False),
    Column("identifiers", JSONB, nullable=False),
    Column("emq", SmallInteger, nullable=False),
    Column("decisions", JSONB),
    # Absorbed profiles this event was moved from by merges, oldest first (an unmerge pops
    # its own): which events the absorbed side had when it was merged.
    Column("merged_from", ARRAY(UUID(as_uuid=True))),
    Index("ix_events_tenant_id_profile_id_event_time", "tenant_id", "profile_id", text("event_time DESC"), text("event_id DESC")),
    Index("ix_events_tenant_id_event_time", "tenant_id", "event_time"),
    # Segment conditions on an event name in a window: index-only, profile ids included (0016).
    Index("ix_events_tenant_id_event_name_event_time", "tenant_id", "event_name", "event_time",
          postgresql_include=["profile_id"]),
    # event_time: Postgres requires the partition key in every unique key. After event_id,
    # so that timelines' keyset pages keep using the profile index above.
    PrimaryKeyConstraint("tenant_id", "event_id", "event_time"),
    postgresql_partition_by="RANGE (event_time)",
)

# Identifiers of erased people: events carrying them never link them again (CONTRACT 5).
suppressed_identifiers = Table(
    "suppressed_identifiers",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("type", Text, primary_key=True),
    Column("hash", Text, primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# What happened to events that are not (or no longer) stored: a copy that arrived after
# the ingest window and lost to the stored one, or an erased event.
event_outcomes = Table(
    "event_outcomes",
    metadata,
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "event_id"),
    Column("duplicate_of", UUID(as_uuid=True)),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("reason", Text),  # rejected: the code (event_too_old)
    CheckConstraint("status IN ('duplicate', 'rejected', 'erased')", name="status"),
)

# Audiences (CONTRACT 8): segments, their members and membership history, computed trait
# definitions, volume anomalies. See docs/SCHEMA.md.
segments = Table(
    "segments",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("rules", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("kind IN ('dynamic', 'static')", name="kind"),
    UniqueConstraint("tenant_id", "name"),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("segment_id", UUID(as_uuid=True), primary_key=True),
    Column("profile_id", UUID(as_uuid=True), primary_key=True),
    Column("entered_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    ForeignKeyConstraint(["tenant_id", "segment_id"], ["segments.tenant_id", "segments.id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["tenant_id", "profile_id"], ["profiles.tenant_id", "profiles.id"], ondelete="CASCADE"),
    Index("ix_segment_members_profile_id", "profile_id"),
)

# Membership history; rows with emitted_at NULL are the segment.entered / segment.exited
# messages not yet handed to the destinations outbox.
segment_events = Table(
    "segment_events",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Column("segment_id", UUID(as_uuid=True), nullable=False),
    Column("profile_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("emitted_at", DateTime(timezone=True)),
    CheckConstraint("kind IN ('entered', 'exited')", name="kind"),
    ForeignKeyConstraint(["tenant_id", "segment_id"], ["segments.tenant_id", "segments.id"], ondelete="CASCADE"),
    Index("ix_segment_events_tenant_id_segment_id_at", "tenant_id", "segment_id", "at"),
    Index("ix_segment_events_pending", "id", postgresql_where=text("emitted_at IS NULL")),
)

computed_traits = Table(
    "computed_traits",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("function", Text, nullable=False),
    Column("event_name", Text, nullable=False),
    Column("property", Text),
    Column("within_days", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # Last full recount (the window slides: an order 91 days old leaves a 90-day count).
    Column("refreshed_at", DateTime(timezone=True)),
    UniqueConstraint("tenant_id", "name"),
)

anomalies = Table(
    "anomalies",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("source_id", UUID(as_uuid=True), primary_key=True),
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("kind", Text, primary_key=True),
    Column("observed", BigInteger, nullable=False),
    Column("expected", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # NULL until handed to the destinations outbox as anomaly.detected (once per row).
    Column("emitted_at", DateTime(timezone=True)),
    CheckConstraint("kind IN ('drop', 'spike')", name="kind"),
    Index("ix_anomalies_tenant_id_hour", "tenant_id", "hour"),
)

# Progress marks of periodic jobs (e.g. the audience upkeep's "profiles changed since").
scheduler_marks = Table(
    "scheduler_marks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("mark", DateTime(timezone=True), nullable=False),
)

# The identity decision log (CONTRACT 9): links, merges and refusals, read per profile in
# id order (keyset pages) by /profiles/{id}/decisions and /identity/explain.
identity_decisions = Table(
    "identity_decisions",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("profile_id", UUID(as_uuid=True)),  # null: a refusal on an event stored without a profile
    Column("event_id", UUID(as_uuid=True)),
    Column("kind", Text, nullable=False),
    Column("identifiers", JSONB, nullable=False),  # [{"type", "hash"}]
    Column("rule", Text),
    Column("message", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Index("ix_identity_decisions_tenant_id_profile_id_id", "tenant_id", "profile_id", "id"),
)

# Webhook destinations of a tenant (CONTRACT 7): a directory (reference) table. ``secret``
# and ``previous_secret`` are encrypted with STRATUM_SECRET_KEY (stratum/secret_storage.py). A replay in
# progress is its range and a keyset cursor (time, event id) that the delivery process
# advances page by page, so a crash resumes where it stopped.
destinations = Table(
    "destinations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False, server_default=text("'webhook'")),
    Column("url", Text, nullable=False),
    Column("topics", ARRAY(Text), nullable=False),
    Column("event_names", ARRAY(Text)),
    Column("consent", Text),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("secret_rotated_at", DateTime(timezone=True)),
    Column("replay_to", DateTime(timezone=True)),
    Column("replay_cursor_time", DateTime(timezone=True)),
    Column("replay_cursor_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # Messages one request may carry (1: one message per request, the default).
    Column("batch_size", Integer, nullable=False, server_default=text("1")),
    CheckConstraint("type IN ('webhook')", name="type"),
    CheckConstraint("batch_size BETWEEN 1 AND 1000", name="batch_size"),
    CheckConstraint("consent IN ('analytics', 'ads', 'email', 'sms')", name="consent"),
    Index("uq_destinations_tenant_id_name", "tenant_id", "name", unique=True),
)

# The outbox and the delivery record in one: workers insert rows in the transaction that
# stores the events, the delivery process claims due rows (FOR UPDATE SKIP LOCKED) and
# records each attempt on the row. ``body`` is the exact bytes sent (identical on every
# attempt), or NULL on lean ``event.received`` rows (``event_time`` set: the body is built
# from the stored event, workers/delivery_claims.py); erasure sets both to NULL.
deliveries = Table(
    "deliveries",
    metadata,
    # No foreign keys, like ``events``: their per-row checks cost the hot path a third of the
    # outbox write. Deleting a destination deletes its rows; retention removes stragglers.
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("destination_id", UUID(as_uuid=True), nullable=False),
    Column("message_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("profile_id", UUID(as_uuid=True)),
    Column("body", Text),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("delivered_at", DateTime(timezone=True)),
    Column("skip_reason", Text),
    # Set on ``event.received`` rows written without a body: the body is built from the
    # stored event (id in ``message_id``, this time locates its partition) at each attempt.
    Column("event_time", DateTime(timezone=True)),
    CheckConstraint("status IN ('pending', 'delivered', 'failed', 'dead', 'skipped')", name="status"),
    Index("ix_deliveries_destination_id_id", "destination_id", "id"),
    Index("ix_deliveries_due", "destination_id", "next_attempt_at",
          postgresql_where=text("status IN ('pending', 'failed')")),
    Index("ix_deliveries_tenant_id_profile_id", "tenant_id", "profile_id"),
    Index("ix_deliveries_created_at", "created_at"),
)
