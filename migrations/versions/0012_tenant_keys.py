"""Tenant-scoped keys everywhere (CONTRACT 10): every table holding tenant data has
``tenant_id`` first in its primary key, in every unique key and in every foreign key to
another tenant table, so Citus can distribute it by tenant (docs/SCALING.md). Directory
tables (tenants, operators, API keys, sources, destinations) and ``scheduler_marks`` stay
as they are: they become reference tables.

Changed keys:

- primary keys ``(id)`` -> ``(tenant_id, id)``: profiles, identity_links, profile_merges,
  consent_history, segment_events;
- consents ``(profile_id, consent_type)`` -> ``(tenant_id, profile_id, consent_type)``;
- event_outcomes ``(event_id)`` -> ``(tenant_id, event_id)``;
- event_keys unique ``(event_id)`` -> ``(tenant_id, event_id)``;
- events gets a primary key ``(tenant_id, event_id, event_time)`` (the partition key is in
  it, as Postgres requires). Not ``(tenant_id, event_time, event_id)``, which could have
  replaced ``ix_events_tenant_id_event_time``: the planner then prefers it to the profile
  index for a timeline's keyset pages (the row comparison on (event_time, event_id) becomes
  its index condition), and a profile's page turns into a scan of the tenant's time range;
- the foreign keys to ``profiles(id)`` (profile_identifiers, consents, segment_members)
  become ``(tenant_id, profile_id) -> profiles(tenant_id, id)``.

Production safety: the new unique indexes are built ``CONCURRENTLY`` (no write lock), per
events partition too; the swap itself only renames indexes and drops or adds constraints
(``USING INDEX``, foreign keys ``NOT VALID``), under the ``lock_timeout`` of
migrations/env.py, in one short transaction; foreign keys are validated afterwards, which
takes no lock that blocks reads or writes. A failed run can be retried: leftover invalid
indexes of an interrupted concurrent build are dropped first, and a run interrupted after
the swap only validates the foreign keys. Existing rows already
satisfy the new keys (every old key was unique on its own), except for ``events`` on
installations where something other than the workers inserted the same event id twice for
a tenant at the same time: the build of its index then fails and names the duplicates.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 01:40:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# table -> (constraint, old columns, new columns, is the primary key)
_KEYS = {
    "profiles": ("pk_profiles", "id", "tenant_id, id", True),
    "identity_links": ("pk_identity_links", "id", "tenant_id, id", True),
    "profile_merges": ("pk_profile_merges", "id", "tenant_id, id", True),
    "consent_history": ("pk_consent_history", "id", "tenant_id, id", True),
    "segment_events": ("pk_segment_events", "id", "tenant_id, id", True),
    "consents": ("pk_consents", "profile_id, consent_type", "tenant_id, profile_id, consent_type", True),
    "event_outcomes": ("pk_event_outcomes", "event_id", "tenant_id, event_id", True),
    "event_keys": ("uq_event_keys_event_id", "event_id", "tenant_id, event_id", False),
}
_NEW_UNIQUE = {"event_keys": "uq_event_keys_tenant_id_event_id"}
# Tables whose profile_id references profiles(id) (ON DELETE CASCADE): old and new names.
_PROFILE_FKS = {
    "profile_identifiers": ("fk_profile_identifiers_profile_id_profiles", "fk_profile_identifiers_tenant_id_profiles"),
    "consents": ("fk_consents_profile_id_profiles", "fk_consents_tenant_id_profiles"),
    "segment_members": ("fk_segment_members_profile_id_profiles", "fk_segment_members_tenant_id_profiles"),
}
_EVENTS_KEY = "tenant_id, event_id, event_time"


def _tmp(table: str) -> str:
    return f"tmp_{table}_tenant_key"


def _event_partitions() -> list[str]:
    rows = op.get_bind().execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname")).fetchall()
    return [r[0] for r in rows]


def _build_concurrently(index: str, table: str, columns: str) -> None:
    op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"')  # an interrupted build's leftover
    op.execute(f'CREATE UNIQUE INDEX CONCURRENTLY "{index}" ON "{table}" ({columns})')


def _swapped() -> bool:
    """Whether an earlier, interrupted run already committed the swap (only the validation
    of the foreign keys was left)."""
    return op.get_bind().execute(text(
        "SELECT 1 FROM pg_constraint WHERE conname = 'pk_events' AND conrelid = 'events'::regclass")).first() is not None


def upgrade() -> None:
    if not _swapped():
        _build_and_swap()
    with op.get_context().autocommit_block():
        for table, (_, new_fk) in _PROFILE_FKS.items():
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {new_fk}")


def _build_and_swap() -> None:
    partitions = _event_partitions()
    with op.get_context().autocommit_block():
        for table, (_, _, columns, _) in _KEYS.items():
            _build_concurrently(_tmp(table), table, columns)
        for part in partitions:
            _build_concurrently(f"{part}_pkey", part, _EVENTS_KEY)

    # One short transaction of catalog changes: no table is scanned or rewritten here.
    for table, (old_fk, _) in _PROFILE_FKS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {old_fk}")
    for table, (name, _, _, primary) in _KEYS.items():
        new_name = name if primary else _NEW_UNIQUE[table]
        kind = "PRIMARY KEY" if primary else "UNIQUE"
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name},"
                   f" ADD CONSTRAINT {new_name} {kind} USING INDEX {_tmp(table)}")
    for table, (_, new_fk) in _PROFILE_FKS.items():
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {new_fk} FOREIGN KEY (tenant_id, profile_id)"
                   " REFERENCES profiles (tenant_id, id) ON DELETE CASCADE NOT VALID")
    for part in partitions:
        op.execute(f'ALTER TABLE "{part}" ADD CONSTRAINT "{part}_pkey" PRIMARY KEY USING INDEX "{part}_pkey"')
    # Attaches the partitions' primary keys built above instead of building new ones.
    op.execute(f"ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY ({_EVENTS_KEY})")


def downgrade() -> None:
    op.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
    for table, (_, new_fk) in _PROFILE_FKS.items():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {new_fk}")
    for table, (name, columns, _, primary) in _KEYS.items():
        new_name = name if primary else _NEW_UNIQUE[table]
        kind = "PRIMARY KEY" if primary else "UNIQUE"
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {new_name}, ADD CONSTRAINT {name} {kind} ({columns})")
    for table, (old_fk, _) in _PROFILE_FKS.items():
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {old_fk} FOREIGN KEY (profile_id)"
                   " REFERENCES profiles (id) ON DELETE CASCADE")
