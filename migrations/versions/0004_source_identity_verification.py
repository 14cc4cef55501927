"""Verified identity for website sources (CONTRACT 6): each source's
``identity_verification`` setting (``protect`` for website sources, ``off`` for the others),
its ``identity_secret`` (encrypted with STRATUM_SECRET_KEY, see stratum/secret_storage.py)
and, for 24 h after a rotation, the previous one.

Existing website sources get ``protect`` and no secret: their claims stay unverified until an
admin calls ``POST /api/v1/cdp/sources/{id}/rotate-identity-secret``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 22:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sources", sa.Column("identity_verification", sa.Text(), server_default=sa.text("'off'"),
                                       nullable=False))
    op.add_column("sources", sa.Column("identity_secret", sa.Text(), nullable=True))
    op.add_column("sources", sa.Column("previous_identity_secret", sa.Text(), nullable=True))
    op.add_column("sources", sa.Column("identity_secret_rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE sources SET identity_verification = 'protect' WHERE type = 'website'")
    op.create_check_constraint(
        op.f("ck_sources_identity_verification"), "sources",
        "identity_verification IN ('protect', 'off') AND (type = 'website' OR identity_verification = 'off')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_sources_identity_verification"), "sources", type_="check")
    op.drop_column("sources", "identity_secret_rotated_at")
    op.drop_column("sources", "previous_identity_secret")
    op.drop_column("sources", "identity_secret")
    op.drop_column("sources", "identity_verification")
