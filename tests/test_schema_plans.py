"""Foreign-key checks are always one primary-key probe (migration 0013).

A connection plans a foreign key's check once and keeps the plan. If another index of the
referenced table starts with the same column as the referenced key, a plan made while the
table is small may take that index and filter the rest row by row: every inserted row then
reads all of the tenant's rows. The lint reads the live catalog, so an index added later
that reopens the trap fails here."""

from __future__ import annotations

import psycopg
import pytest

from stratum.db.connect import connect

# For each foreign key: the other indexes of the referenced table whose first column is the
# referenced key's first column.
_SHADOWING_INDEXES = """
SELECT c.conname, c.confrelid::regclass::text, i.indexrelid::regclass::text
FROM pg_constraint c
JOIN pg_index i ON i.indrelid = c.confrelid AND i.indexrelid <> c.conindid
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace AND i.indkey[0] = c.confkey[1]
ORDER BY 1, 3
"""


def shadowing_indexes(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute(_SHADOWING_INDEXES).fetchall()]


@pytest.fixture
def scratch(settings):
    with connect(settings.database_url) as conn:
        yield conn
        conn.rollback()


# A tenant has a few dozen segments: reading them all is no worse than a probe.
ALLOWED = {"uq_segments_tenant_id_name"}


def test_no_index_shares_the_leading_column_of_a_referenced_key(scratch):
    assert [row for row in shadowing_indexes(scratch) if row[2] not in ALLOWED] == []


def test_lint_catches_an_index_that_shadows_a_referenced_key(scratch):
    scratch.execute("CREATE INDEX lint_profiles_tenant_id_lifecycle ON profiles (tenant_id, lifecycle)")
    found = [row for row in shadowing_indexes(scratch) if row[2] not in ALLOWED]
    assert [(table, index) for _, table, index in found] == [("profiles", "lint_profiles_tenant_id_lifecycle")] * len(
        found)
    assert {name for name, _, _ in found} == {c for (c,) in scratch.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' AND confrelid = 'profiles'::regclass")}


def test_the_identifier_check_plan_probes_the_primary_key_on_an_empty_table(scratch):
    """The plan a worker's connection keeps, made while ``profiles`` holds nothing."""
    scratch.execute("CREATE TEMP TABLE plan_profiles (LIKE profiles INCLUDING INDEXES)")
    scratch.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    scratch.execute("PREPARE fk_check (uuid, uuid) AS SELECT 1 FROM ONLY plan_profiles x"
                    " WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE OF x")
    plan = "\n".join(r[0] for r in scratch.execute(
        "EXPLAIN EXECUTE fk_check ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002')"))
    scratch.execute("DEALLOCATE fk_check")
    assert "Index Cond: ((tenant_id = $1) AND (id = $2))" in plan, plan
    assert "Filter" not in plan, plan
