"""A profile's identifiers are indexed by ``(profile_id, type)`` instead of ``(profile_id)``.

A segment condition on an identifier type ("has an email") is an ``EXISTS`` over
``profile_identifiers`` by ``profile_id`` and ``type``, probed once per profile the rest of
the rule left in (100,000 probes in the 1M-profile preview of docs/PERFORMANCE.md). With
``type`` in the index the probe is index-only; before, each one also read the row from the
heap to check its type. Every other reader of the old index (a profile's identifiers in
the read API and the outbox, erasure, unmerge, the foreign key's cascade from ``profiles``,
the stats of known profiles) filters on ``profile_id`` first, which the new index leads with.

Replaced, not added: the workers maintain one index here as before, with entries a few
bytes wider. ``type`` never changes on a row (it is in the primary key), so an update that
did not touch an indexed column before (``last_seen``, ``provisional_since``) still does not.

Built and dropped ``CONCURRENTLY``: no lock that blocks the workers. The new index is
complete before the old one goes. A build interrupted earlier leaves an invalid index
under the new name, dropped and rebuilt here.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TABLE = "profile_identifiers"
_NEW = "ix_profile_identifiers_profile_id_type"
_OLD = "ix_profile_identifiers_profile_id"


def _drop_if_invalid(name: str) -> None:
    invalid = op.get_bind().execute(text(
        "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(:name) AND NOT indisvalid"), {"name": name}).first()
    if invalid:
        op.drop_index(name, table_name=_TABLE, postgresql_concurrently=True)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        _drop_if_invalid(_NEW)
        op.create_index(_NEW, _TABLE, ["profile_id", "type"], postgresql_concurrently=True, if_not_exists=True)
        op.drop_index(_OLD, table_name=_TABLE, postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _drop_if_invalid(_OLD)
        op.create_index(_OLD, _TABLE, ["profile_id"], postgresql_concurrently=True, if_not_exists=True)
        op.drop_index(_NEW, table_name=_TABLE, postgresql_concurrently=True, if_exists=True)
