"""Events indexed by ``(tenant_id, event_name, event_time)`` with ``profile_id`` included.

A segment condition "an Order Completed in the last 30 days" is a semi join of the profiles
with the profile ids of that event name in that window. Without this index Postgres reads
the whole window (a seq scan of the month partitions, every event of every name: 2.6M rows
read for 259,000 orders in the 1M-profile preview of docs/PERFORMANCE.md); with it, an
index-only scan of the named events in the window. The computed traits' backfill
(``refresh_computed_trait``) selects the same rows.

The cost is one more index entry per stored event (the workers' COPY), measured in
docs/PERFORMANCE.md ("Preview under 1 s"). ``event_name`` never changes on a stored
event; a merge's move of events to the survivor (``profile_id``) was already a non-HOT
update, so it writes an entry here as in every other index.

Production safety: ``events`` is partitioned, and Postgres cannot build an index on a
partitioned table concurrently. The index is created on the parent alone (``ON ONLY``:
invalid, no partition scanned; a brief lock of the empty parent), each partition's index
is built ``CONCURRENTLY`` (no lock that blocks the workers) and attached; the parent index
becomes valid when the last one is. Partitions created later get theirs from the parent.
A run interrupted midway can be repeated: an invalid leftover of a partition's build is
dropped and rebuilt, attached ones are kept.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 09:10:00.000000
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_INDEX = "ix_events_tenant_id_event_name_event_time"
_COLUMNS = "(tenant_id, event_name, event_time) INCLUDE (profile_id)"


def _partitions() -> list[tuple[str, str | None]]:
    """(partition, the name of its index attached to ours, if any), in name order."""
    return [(r[0], r[1]) for r in op.get_bind().execute(text(
        "SELECT c.relname, ("
        "  SELECT ci.relname FROM pg_inherits ii JOIN pg_class ci ON ci.oid = ii.inhrelid"
        "  JOIN pg_index x ON x.indexrelid = ci.oid"
        "  WHERE ii.inhparent = to_regclass(:index) AND x.indrelid = c.oid)"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"), {"index": _INDEX}).fetchall()]


def upgrade() -> None:
    op.execute(f"CREATE INDEX IF NOT EXISTS {_INDEX} ON ONLY events {_COLUMNS}")
    # autocommit_block commits the parent's catalog entry first, so its lock is released.
    with op.get_context().autocommit_block():
        for partition, attached in _partitions():
            if attached is not None:
                continue
            child = f"{partition}_tenant_id_event_name_event_time_profile_id_idx"  # as Postgres names later ones
            op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{child}"')  # an interrupted build's leftover
            op.execute(f'CREATE INDEX CONCURRENTLY "{child}" ON "{partition}" {_COLUMNS}')
            op.execute(f'ALTER INDEX {_INDEX} ATTACH PARTITION "{child}"')


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {_INDEX}")
