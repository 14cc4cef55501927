"""Lean outbox rows and opt-in batching for destinations (issue 12).

- ``deliveries.event_time``: set on ``event.received`` rows written without a ``body``; the
  delivery process builds the body from the stored event (``msg_<event_id>``, this time
  locates its partition), so the worker writes no payload per event.
- ``destinations.batch_size``: how many messages one request may carry (1: no batching).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns and a constant default: catalog-only changes, no table rewrite.
    op.execute("SET lock_timeout = '5s'")
    op.add_column("deliveries", sa.Column("event_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("destinations", sa.Column("batch_size", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_check_constraint(op.f("ck_destinations_batch_size"), "destinations", "batch_size BETWEEN 1 AND 1000")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_destinations_batch_size"), "destinations", type_="check")
    op.drop_column("destinations", "batch_size")
    op.drop_column("deliveries", "event_time")
