"""The foreign keys from identifiers and consents to profiles are checked at commit (issue 11).

A worker inserts the profiles a batch creates once, with their final counters, traits and
lifecycle, after it has linked their identifiers and recorded their consents in the same
transaction (workers/persist.py). Before, it inserted each new profile bare and rewrote it
at the end of the batch: two row versions and two sets of index entries per new person.
The checks are the same rows at a later point of the same transaction; ``ON DELETE
CASCADE`` still acts at once (Postgres never defers referential actions).

Only the constraints' deferrability changes: a catalog update, no table scan.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 06:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_KEYS = (("profile_identifiers", "fk_profile_identifiers_tenant_id_profiles"),
         ("consents", "fk_consents_tenant_id_profiles"))


def upgrade() -> None:
    for table, name in _KEYS:
        op.execute(f"ALTER TABLE {table} ALTER CONSTRAINT {name} DEFERRABLE INITIALLY DEFERRED")


def downgrade() -> None:
    for table, name in _KEYS:
        op.execute(f"ALTER TABLE {table} ALTER CONSTRAINT {name} NOT DEFERRABLE")
