"""The shape of a segment preview's plan on real Postgres: a rule with a trait in a list, an
identifier and an event in a window must leave the statement parallel safe, so the profile
scan and the semi join over the window's events can be shared by parallel workers (the
three-condition preview at 1M profiles, docs/PERFORMANCE.md)."""

from __future__ import annotations

import json

import pytest

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


# Values whose text forms collide across JSON types, or differ only in case, spacing,
# escapes or normalization: string equality read on the text first must match exactly
# what jsonb equality matches.
_TRAIT_VALUES = ["DE", "de", "DE ", 5, "5", 5.0, True, "true", None, "null", ["DE"], {"DE": 1}, '{"DE": 1}',
                 "Zoë", "Zoe\u0308", 'a"b', "a\\b", "", "\u00e9"]


@pytest.mark.parametrize(("op", "value"), [
    ("in", ["DE", "5", "true", "null"]), ("in", ["Zoë", 'a"b', "a\\b", "", '{"DE": 1}']), ("in", ["é", "x"]),
    ("not_in", ["DE", "5", "true", ""]), ("eq", "DE"), ("eq", "5"), ("eq", "Zoe\u0308"), ("eq", ""), ("eq", "true")])
def test_string_equality_matches_exactly_what_jsonb_equality_matches(db, tenant, op, value):
    ids = {}
    for i, v in enumerate([*_TRAIT_VALUES, "missing"]):
        traits = {} if v == "missing" else {"k": v}
        ids[i] = str(db.execute(
            "INSERT INTO profiles (id, tenant_id, traits, computed, first_seen, last_seen)"
            " VALUES (gen_random_uuid(), %s, %s::jsonb, %s::jsonb, now(), now()) RETURNING id",
            (tenant.id, json.dumps(traits), json.dumps(traits))).fetchone()[0])
    values = value if isinstance(value, list) else [value]
    reference = ("coalesce((p.{col} -> 'k') = ANY(%s::jsonb[]), false)", [[json.dumps(v) for v in values]])
    for col, rule in (("traits", {"trait": "k", "op": op, "value": value}),
                      ("computed", {"computed": "k", "op": op, "value": value})):
        compiled = compile_for_tenant(db, tenant.id, {"all": [rule]})
        assert "->>" in compiled.sql, compiled.sql
        sql, params = reference[0].format(col=col), reference[1]
        if op == "not_in":
            sql = f"NOT {sql}"
        matched = {r[0] for r in db.execute(
            f"SELECT p.id::text FROM profiles p WHERE p.tenant_id = %s AND {compiled.sql}",
            (tenant.id, *compiled.params))}
        expected = {r[0] for r in db.execute(
            f"SELECT p.id::text FROM profiles p WHERE p.tenant_id = %s AND {sql}", (tenant.id, *params))}
        assert matched == expected, (col, sorted(k for k, v in ids.items() if v in matched ^ expected))
        assert op == "not_in" or expected, "a value list that matches nobody tests nothing"
