"""A stored identifier's tenant is checked through its profile only (issue 11).

``profile_identifiers`` carried two foreign keys: ``(tenant_id) -> tenants`` and
``(tenant_id, profile_id) -> profiles``. The second implies the first (a profile's tenant
must exist), and deleting a tenant still reaches its identifiers, through its profiles'
``ON DELETE CASCADE``. The first cost a check per identifier a worker stores (a lookup
and a ``FOR KEY SHARE`` lock of the tenant's row, queued per row of the COPY): 5,000
identifiers copied and committed took 14.1 us per row with it and 10.9 without
(docs/PERFORMANCE.md, "One worker's round taken apart").

A catalog change: dropping the constraint scans nothing. The downgrade adds it back
``NOT VALID`` and then validates it, which reads the table without blocking writers.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 15:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_NAME = "fk_profile_identifiers_tenant_id_tenants"


def upgrade() -> None:
    op.execute(f"ALTER TABLE profile_identifiers DROP CONSTRAINT IF EXISTS {_NAME}")


def downgrade() -> None:
    op.execute(f"ALTER TABLE profile_identifiers ADD CONSTRAINT {_NAME} FOREIGN KEY (tenant_id)"
               " REFERENCES tenants (id) ON DELETE CASCADE NOT VALID")
    op.execute(f"ALTER TABLE profile_identifiers VALIDATE CONSTRAINT {_NAME}")
