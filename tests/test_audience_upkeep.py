"""Incremental upkeep against real Postgres: after events touch some profiles, the one-statement
upkeep (all computed traits, then every dynamic segment) leaves exactly the members a full
evaluation gives, touches only the profiles that changed, and does not redo its own writes."""

from __future__ import annotations

import random

from test_read_support import auth, event, ingest_and_drain

from workers.audience_jobs import UPKEEP_MARK, upkeep_audiences

TRAITS = (
    {"name": "orders", "function": "count", "event": "Order Completed", "within_days": 30},
    {"name": "spend", "function": "sum", "event": "Order Completed", "property": "total", "within_days": 30},
    {"name": "skus", "function": "unique", "event": "Order Completed", "property": "sku", "within_days": 30},
    {"name": "last_sku", "function": "last", "event": "Order Completed", "property": "sku", "within_days": 30},
    {"name": "viewed", "function": "exists", "event": "Page Viewed", "within_days": 7},
)
SEGMENTS = (
    {"all": [{"computed": "orders", "op": "gte", "value": 2}]},
    {"all": [{"computed": "spend", "op": "gt", "value": 50}]},
    {"any": [{"trait": "plan", "op": "eq", "value": "pro"}, {"computed": "skus", "op": "gte", "value": 3}]},
    {"all": [{"computed": "viewed", "op": "eq", "value": True}, {"computed": "orders", "op": "eq", "value": 0}]},
    {"all": [{"event": "Order Completed", "within_days": 1, "count": {"op": "gte", "value": 1}}]},
    {"all": [{"computed": "last_sku", "op": "eq", "value": "s-1"}]},
)


def _members(db, segment_id: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT profile_id::text FROM segment_members WHERE segment_id = %s",
                                     (segment_id,))}


def _random_events(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        who = ("external_id", f"p-{rng.randrange(12)}")
        roll = rng.random()
        if roll < 0.5:
            out.append(event("Order Completed", who, properties={"total": rng.choice([5, 20, 40]),
                                                                 "sku": f"s-{rng.randrange(4)}"}))
        elif roll < 0.8:
            out.append(event("Page Viewed", who))
        else:
            out.append(event("Plan Changed", who, traits={"plan": rng.choice(["free", "pro"])}))
    return out


def test_incremental_upkeep_matches_full_evaluation(read_client, ingest_client, drain, db, tenant, settings):
    rng = random.Random(13)
    ingest_and_drain(ingest_client, drain, tenant.write_key, *_random_events(rng, 20))
    upkeep_audiences(db, settings)
    for body in TRAITS:
        r = read_client.post("/api/v1/cdp/computed-traits", headers=auth(tenant.api_key), json=body)
        assert r.status_code == 201, r.text
    segments = []
    for i, rules in enumerate(SEGMENTS):
        r = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key),
                             json={"name": f"s{i}", "kind": "dynamic", "rules": rules})
        assert r.status_code == 201, r.text
        segments.append((r.json()["id"], rules))
    changes = 0
    for _ in range(4):
        before = db.execute("SELECT count(*) FROM segment_events").fetchone()[0]
        ingest_and_drain(ingest_client, drain, tenant.write_key, *_random_events(rng, 15))
        upkeep_audiences(db, settings)
        changes += db.execute("SELECT count(*) FROM segment_events").fetchone()[0] - before
        for segment_id, rules in segments:
            r = read_client.post("/api/v1/cdp/segments/preview", headers=auth(tenant.api_key),
                                 json={"rules": rules, "sample_size": 100})
            assert _members(db, segment_id) == set(r.json()["sample"]), rules
    assert changes > 0  # the events did move people in and out

    # The upkeep's own writes lie inside the range it handled: the next run finds nothing.
    mark = db.execute("SELECT mark FROM scheduler_marks WHERE name = %s", (UPKEEP_MARK,)).fetchone()[0]
    assert db.execute("SELECT count(*) FROM profiles WHERE tenant_id = %s AND updated_at >= %s",
                      (tenant.id, mark)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM profiles WHERE tenant_id = %s AND computed <> '{}'",
                      (tenant.id,)).fetchone()[0] > 0


def test_upkeep_handles_only_the_profiles_a_batch_touched(read_client, ingest_client, drain, db, tenant, settings):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     *[event("Page Viewed", ("external_id", f"t-{i}")) for i in range(30)])
    r = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Viewers", "rules": {"all": [{"counter": "events", "op": "gte", "value": 2}]}})
    assert r.status_code == 201 and r.json()["size"] == 0
    upkeep_audiences(db, settings)
    assert upkeep_audiences(db, settings) == 0  # nothing changed since
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Page Viewed", ("external_id", "t-7")))
    assert upkeep_audiences(db, settings) == 1
    assert len(_members(db, r.json()["id"])) == 1


def test_event_count_conditions_at_zero_one_and_more(read_client, ingest_client, drain, tenant):
    """"At least one" and "none" compile to EXISTS / NOT EXISTS (a join at the top level),
    other counts to a count: all agree on people with 0, 1 and 2 orders."""
    orders = {"c-none": 0, "c-one": 1, "c-two": 2}
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     *[event("Page Viewed", ("external_id", who)) for who in orders],
                     *[event("Order Completed", ("external_id", who)) for who, n in orders.items() for _ in range(n)])
    ids = {}
    for who in orders:
        r = read_client.get("/api/v1/cdp/profiles", headers=auth(tenant.api_key),
                            params={"identifier_type": "external_id", "identifier_value": who})
        ids[r.json()["id"]] = who.removeprefix("c-")
    cases = [({"op": "gte", "value": 1}, {"one", "two"}), ({"op": "gt", "value": 0}, {"one", "two"}),
             ({"op": "eq", "value": 0}, {"none"}), ({"op": "lt", "value": 1}, {"none"}),
             ({"op": "lte", "value": 0}, {"none"}), ({"op": "gte", "value": 2}, {"two"}),
             ({"op": "lt", "value": 2}, {"none", "one"}), ({"op": "between", "value": [1, 1]}, {"one"})]
    for count, expected in cases:
        cond = {"event": "Order Completed", "within_days": 7, "count": count}
        for rules in ({"all": [cond]}, {"any": [cond, {"trait": "never", "op": "exists"}]}):
            r = read_client.post("/api/v1/cdp/segments/preview", headers=auth(tenant.api_key),
                                 json={"rules": rules, "sample_size": 100})
            assert {ids[i] for i in r.json()["sample"]} == expected, (count, rules)
