"""Lean outbox rows and opt-in batching for destinations (issue 12).

- ``deliveries.event_time``: set on ``event.received`` rows written without a ``body``; the
  delivery process builds the body from the stored event (``msg_<event_id>``, this time
  locates its partition), so the worker writes no payload per event.
- ``destinations.batch_size``: how many messages one request may carry (1: no batching).
- ``deliveries`` loses its foreign keys (to ``tenants`` and ``destinations``), like
  ``events``: their per-row checks were about a third of the outbox's cost in the worker.
  Deleting a destination deletes its deliveries explicitly (read_api/destinations.py), and
  the retention job removes rows a worker wrote for a destination deleted under its
  one-second routing cache (workers/outbox.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns and a constant default: catalog-only changes, no table rewrite.
    op.execute("SET lock_timeout = '5s'")
    op.add_column("deliveries", sa.Column("event_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("destinations", sa.Column("batch_size", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.create_check_constraint(op.f("ck_destinations_batch_size"), "destinations", "batch_size BETWEEN 1 AND 1000")
    op.drop_constraint(op.f("fk_deliveries_destination_id_destinations"), "deliveries", type_="foreignkey")
    op.drop_constraint(op.f("fk_deliveries_tenant_id_tenants"), "deliveries", type_="foreignkey")


def downgrade() -> None:
    op.execute("DELETE FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM destinations x WHERE x.id = d.destination_id)")
    op.create_foreign_key(op.f("fk_deliveries_tenant_id_tenants"), "deliveries", "tenants", ["tenant_id"], ["id"],
                          ondelete="CASCADE")
    op.create_foreign_key(op.f("fk_deliveries_destination_id_destinations"), "deliveries", "destinations",
                          ["destination_id"], ["id"], ondelete="CASCADE")
    op.drop_constraint(op.f("ck_destinations_batch_size"), "destinations", type_="check")
    op.drop_column("destinations", "batch_size")
    op.drop_column("deliveries", "event_time")
