"""Dedupe keys scoped and stored only as SHA-256 hashes (CONTRACT 4.5).

``event_keys`` is keyed by (tenant_id, key_hash), where ``key_hash`` is the 32-byte
SHA-256 of ``scope || '\\n' || key`` and the scope is ``t`` (the tenant) for server-side
sources and ``s:<source id>`` for website sources (core/dedupe.py computes the same in
Python). ``events.dedupe_key`` keeps the hex of that hash instead of the raw key.

Existing rows: each key takes the scope of its stored event's source; keys whose event is
gone (none today: erasure and retention delete both) take the tenant scope. Both tables are
rewritten once (the events table in full): run it in a quiet hour on large installations.
Downgrade keeps the hashes (the raw keys are gone by design): ``event_keys.dedupe_key``
comes back holding the hex of the hash.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SCOPE_OF_SOURCE = "CASE WHEN s.type = 'website' THEN 's:' || s.id::text ELSE 't' END"


def upgrade() -> None:
    # Events first: their source tells the scope; the key table then copies the digest.
    op.execute(
        "UPDATE events e SET dedupe_key = encode(sha256(convert_to("
        f"coalesce((SELECT {_SCOPE_OF_SOURCE} FROM sources s WHERE s.id = e.source_id), 't')"
        " || E'\\n' || e.dedupe_key, 'UTF8')), 'hex')"
    )
    op.add_column("event_keys", sa.Column("key_hash", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE event_keys k SET key_hash = decode(e.dedupe_key, 'hex') FROM events e"
        " WHERE e.tenant_id = k.tenant_id AND e.event_time = k.event_time AND e.event_id = k.event_id"
    )
    op.execute(
        "UPDATE event_keys SET key_hash = sha256(convert_to('t' || E'\\n' || dedupe_key, 'UTF8'))"
        " WHERE key_hash IS NULL"
    )
    op.drop_constraint("pk_event_keys", "event_keys", type_="primary")
    op.drop_column("event_keys", "dedupe_key")
    op.alter_column("event_keys", "key_hash", nullable=False)
    op.create_primary_key("pk_event_keys", "event_keys", ["tenant_id", "key_hash"])


def downgrade() -> None:
    op.add_column("event_keys", sa.Column("dedupe_key", sa.Text(), nullable=True))
    op.execute("UPDATE event_keys SET dedupe_key = encode(key_hash, 'hex')")
    op.drop_constraint("pk_event_keys", "event_keys", type_="primary")
    op.drop_column("event_keys", "key_hash")
    op.alter_column("event_keys", "dedupe_key", nullable=False)
    op.create_primary_key("pk_event_keys", "event_keys", ["tenant_id", "dedupe_key"])
