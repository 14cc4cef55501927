"""Why an event was refused by a worker (``event_outcomes.reason``, e.g. ``event_too_old``
for an event that was queued within retention but processed past the cut-off).

A nullable column without a default: a catalog-only change, no table rewrite.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("event_outcomes", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("event_outcomes", "reason")
