"""The profiles lifecycle index leads with ``lifecycle`` (issue 11).

Since 0012 the foreign key from ``profile_identifiers`` checks ``(tenant_id, id)`` on
``profiles``, and ``(tenant_id, lifecycle)`` began with the same column. A worker's
connection plans that check once and keeps the plan; planned while ``profiles`` is small
(a new installation, a new tenant), both indexes cost the same and the planner could take
the lifecycle one, filtering ``id`` row by row: every identifier a worker stored then read
all of the tenant's profiles (seen: 8,701 checks reading 6,000 rows each on average in one
end-to-end bench run, 7.4 s of Postgres time, while the other worker waited on its locks).
With ``(lifecycle, tenant_id)`` no index but the primary key can answer ``tenant_id = $1``,
so the check is always one primary-key probe. The queries that filter on a lifecycle stage
(segments, churn) lead with the stage anyway; the per-stage counts of ``/stats`` read the
tenant's profiles as before. ``tests/test_schema_plans.py`` guards the rule.

Both indexes are built and dropped ``CONCURRENTLY``: no lock that blocks the workers.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 05:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_profiles_lifecycle_tenant_id", "profiles", ["lifecycle", "tenant_id"],
                        postgresql_concurrently=True, if_not_exists=True)
        op.drop_index("ix_profiles_tenant_id_lifecycle", table_name="profiles", postgresql_concurrently=True,
                      if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_profiles_tenant_id_lifecycle", "profiles", ["tenant_id", "lifecycle"],
                        postgresql_concurrently=True, if_not_exists=True)
        op.drop_index("ix_profiles_lifecycle_tenant_id", table_name="profiles", postgresql_concurrently=True,
                      if_exists=True)
