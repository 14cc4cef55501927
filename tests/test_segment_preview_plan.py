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


def _plan_nodes(db, tenant, compiled, *settings: str) -> list[dict]:
    with db.transaction():
        for setting in settings:
            db.execute(f"SET LOCAL {setting}")
        plan = db.execute(
            "EXPLAIN (FORMAT JSON) SELECT count(*) FROM profiles p WHERE p.tenant_id = %s"
            f" AND p.merged_into IS NULL AND {compiled.sql}", (tenant.id, *compiled.params)).fetchone()[0]
    return list(_nodes(plan[0]["Plan"]))


def _with_events_of_ten_names(db, tenant) -> dict:
    """Rules as RULES, over 5,000 events of ten names in 60 days (analyzed, so the planner
    sees what one name selects)."""
    db.execute("INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key,"
               " event_type, event_name, properties, context, identifiers, emq)"
               " SELECT %s, gen_random_uuid(), now() - (g %% 60) * interval '1 day', now(), %s, gen_random_uuid(),"
               " 'k' || g, 'track', 'Event ' || g %% 10, '{}', '{}', '[]', 0 FROM generate_series(1, 5000) g",
               (tenant.id, tenant.source_id))
    db.execute("ANALYZE events")
    return {"all": [*RULES["all"][:2], {**RULES["all"][2], "event": "Event 3"}]}


# The shapes of the 1M-profile plan, whatever a small table would make cheapest: heap scans
# ruled out, then the window's events read once and hashed, or identifiers probed per profile.
_NO_HEAP_SCANS = ("enable_seqscan = off", "enable_bitmapscan = off")
_HASHED = (*_NO_HEAP_SCANS, "enable_nestloop = off", "enable_mergejoin = off")
_PROBED = (*_NO_HEAP_SCANS, "enable_hashjoin = off", "enable_mergejoin = off")


def test_identifier_probe_is_index_only(db, tenant):
    """A "has an email" probe reads ``type`` from the index (migration 0015), not the heap:
    with the old ``(profile_id)`` index each probe filtered on the row."""
    compiled = compile_for_tenant(db, tenant.id, _with_events_of_ten_names(db, tenant))
    scans = [n for n in _plan_nodes(db, tenant, compiled, *_PROBED) if n.get("Relation Name") == "profile_identifiers"]
    assert [(n["Node Type"], n["Index Name"]) for n in scans] == [
        ("Index Only Scan", "ix_profile_identifiers_profile_id_type")], scans


def test_event_window_is_read_from_the_name_index_alone(db, tenant):
    """The profiles with an event of one name in a window come from an index-only scan of
    ``(tenant_id, event_name, event_time) INCLUDE (profile_id)`` (migration 0016), in every
    partition; without it, the window's events of every name are read from the heap."""
    compiled = compile_for_tenant(db, tenant.id, _with_events_of_ten_names(db, tenant))
    ours = {r[0] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass('ix_events_tenant_id_event_name_event_time')")}
    # Partitions prepared ahead and still empty cost the same by any index: judged are the
    # ones holding the events.
    holding = {r[0] for r in db.execute("SELECT DISTINCT tableoid::regclass::text FROM events")}
    scans = [n for n in _plan_nodes(db, tenant, compiled, *_HASHED) if n.get("Relation Name") in holding]
    assert scans and all(n["Node Type"] == "Index Only Scan" and n["Index Name"] in ours for n in scans), scans


def test_profile_identifiers_keep_one_index_besides_the_key(db):
    """(profile_id, type) replaced (profile_id): the workers maintain one index there, as before."""
    indexes = db.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
                         " WHERE indrelid = 'profile_identifiers'::regclass AND NOT indisprimary").fetchall()
    assert [(name, definition.split(" USING ")[1]) for name, definition in indexes] == [
        ("ix_profile_identifiers_profile_id_type", "btree (profile_id, type)")]


def test_event_name_index_covers_every_partition(db):
    """Valid on the parent (so partitions created later get it too) and present on each one."""
    row = db.execute("SELECT indisvalid, pg_get_indexdef(indexrelid) FROM pg_index"
                     " WHERE indexrelid = to_regclass('ix_events_tenant_id_event_name_event_time')").fetchone()
    assert row is not None and row[0], row
    assert row[1].endswith("(tenant_id, event_name, event_time) INCLUDE (profile_id)"), row[1]
    unindexed = db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass AND NOT EXISTS ("
        "  SELECT 1 FROM pg_inherits x JOIN pg_index ix ON ix.indexrelid = x.inhrelid"
        "  WHERE x.inhparent = 'ix_events_tenant_id_event_name_event_time'::regclass AND ix.indrelid = c.oid)").fetchall()
    assert unindexed == []


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
