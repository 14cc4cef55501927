"""Provisional identifiers: a known identifier first linked by an unverified website claim
(CONTRACT 6, verified identity) carries the time of that link until a server-side or verified
event carries it; null for every other identifier.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: a catalog change, no table rewrite; the short
    # lock timeout keeps a busy table from queueing everyone behind this ALTER.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("profile_identifiers", sa.Column("provisional_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("profile_identifiers", "provisional_since")
