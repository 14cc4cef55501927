"""The shape of a segment preview's plan on real Postgres: a rule with a trait in a list, an
identifier and an event in a window must leave the statement parallel safe, so the profile
scan and the semi join over the window's events can be shared by parallel workers (the
three-condition preview at 1M profiles, docs/PERFORMANCE.md)."""

from __future__ import annotations

import json

from stratum.audiences import compile_for_tenant

RULES = {"all": [
    {"trait": "country", "op": "in", "value": ["DE", "FR"]},
    {"identifier": "email", "op": "exists"},
    {"event": "Order Completed", "within_days": 30, "count": {"op": "gte", "value": 1}}]}


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_three_condition_preview_scans_profiles_in_parallel(db, tenant):
    compiled = compile_for_tenant(db, tenant.id, RULES)
    with db.transaction():
        # Costs that make any parallel-safe plan parallel on a test-sized table: what is
        # checked is that nothing in the statement forbids it.
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "min_parallel_index_scan_size = 0", "enable_indexscan = off", "enable_bitmapscan = off"):
            db.execute(f"SET LOCAL {setting}")
        plan = db.execute(
            "EXPLAIN (FORMAT JSON) SELECT count(*) FROM profiles p WHERE p.tenant_id = %s"
            f" AND p.merged_into IS NULL AND {compiled.sql}", (tenant.id, *compiled.params)).fetchone()[0]
    nodes = list(_nodes(plan[0]["Plan"]))
    profile_scans = [n for n in nodes if n.get("Relation Name") == "profiles"]
    assert profile_scans and all(n["Parallel Aware"] for n in profile_scans), json.dumps(plan, indent=1)
    assert not [n for n in nodes if n.get("Subplan Name", "").startswith("SubPlan")]
