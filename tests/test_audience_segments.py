"""Segments against real Postgres through the read API: every operator, rule errors that
name the bad part, members pages, static snapshots, and dynamic membership following
processed events (a person who qualifies later, one who leaves) with its history."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from test_read_support import auth, event, ingest_and_drain, profile_by

from stratum.admin import create_tenant_key
from workers.audience_jobs import upkeep_audiences

NOW = datetime.now(UTC)


def _profile(db, tenant, traits: dict, *, lifecycle: str = "known", events: int = 0, revenue: float = 0,
             computed: dict | None = None) -> str:
    pid = str(uuid.uuid4())
    db.execute("INSERT INTO profiles (id, tenant_id, lifecycle, traits, event_count, revenue, computed, first_seen,"
               " last_seen) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, now(), now())",
               (pid, tenant.id, lifecycle, json.dumps(traits), events, revenue, json.dumps(computed or {})))
    return pid


def _preview(read_client, tenant, rules) -> set[str]:
    r = read_client.post("/api/v1/cdp/segments/preview", headers=auth(tenant.api_key),
                         json={"rules": rules, "sample_size": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == len(body["sample"])
    return set(body["sample"])


@pytest.fixture
def people(db, tenant):
    """Five profiles whose traits exercise types: numbers, strings, booleans, arrays, times."""
    recent = (NOW - timedelta(days=2)).isoformat()
    old = (NOW - timedelta(days=400)).isoformat()
    return {
        "ann": _profile(db, tenant, {"age": 31, "plan": "pro", "tags": ["vip", "beta"], "vip": True,
                                     "signup": recent, "city": "Paris%"}, events=12, revenue=250.5,
                        lifecycle="customer"),
        "bob": _profile(db, tenant, {"age": 17, "plan": "free", "tags": ["beta"], "vip": False, "signup": old,
                                     "city": "Berlin"}, events=3),
        "cat": _profile(db, tenant, {"age": "31", "plan": "Pro plan", "signup": "not a time"}, events=0,
                        lifecycle="anonymous"),
        "dan": _profile(db, tenant, {"age": 45.5, "plan": None}, events=7),
        "eve": _profile(db, tenant, {}, events=1, lifecycle="churned"),
    }


def _names(people, ids: set[str]) -> set[str]:
    back = {v: k for k, v in people.items()}
    return {back[i] for i in ids}


@pytest.mark.parametrize(("cond", "expected"), [
    ({"trait": "age", "op": "eq", "value": 31}, {"ann"}),
    ({"trait": "age", "op": "eq", "value": "31"}, {"cat"}),
    ({"trait": "age", "op": "neq", "value": 31}, {"bob", "cat", "dan", "eve"}),
    ({"trait": "age", "op": "gt", "value": 31}, {"dan"}),
    ({"trait": "age", "op": "gte", "value": 31}, {"ann", "dan"}),
    ({"trait": "age", "op": "lt", "value": 31}, {"bob"}),
    ({"trait": "age", "op": "lte", "value": 31}, {"ann", "bob"}),
    ({"trait": "plan", "op": "gt", "value": "free"}, {"ann"}),
    ({"trait": "age", "op": "between", "value": [17, 31]}, {"ann", "bob"}),
    ({"trait": "plan", "op": "between", "value": ["a", "g"]}, {"bob"}),
    ({"trait": "plan", "op": "in", "value": ["pro", "free", 31]}, {"ann", "bob"}),
    ({"trait": "plan", "op": "not_in", "value": ["pro"]}, {"bob", "cat", "dan", "eve"}),
    ({"trait": "plan", "op": "contains", "value": "ro"}, {"ann", "cat"}),
    ({"trait": "city", "op": "contains", "value": "%"}, {"ann"}),
    ({"trait": "tags", "op": "contains", "value": "vip"}, {"ann"}),
    ({"trait": "tags", "op": "not_contains", "value": "vip"}, {"bob", "cat", "dan", "eve"}),
    ({"trait": "plan", "op": "starts_with", "value": "Pro"}, {"cat"}),
    ({"trait": "city", "op": "ends_with", "value": "n"}, {"bob"}),
    ({"trait": "city", "op": "starts_with", "value": "_"}, set()),
    ({"trait": "plan", "op": "exists"}, {"ann", "bob", "cat"}),
    ({"trait": "plan", "op": "not_exists"}, {"dan", "eve"}),
    ({"trait": "vip", "op": "eq", "value": False}, {"bob"}),
    ({"trait": "signup", "op": "after", "value": (NOW - timedelta(days=30)).isoformat()}, {"ann"}),
    ({"trait": "signup", "op": "before", "value": "2026-01-01"}, {"bob"} if NOW.year >= 2026 else set()),
    ({"trait": "signup", "op": "within_last_days", "value": 7}, {"ann"}),
    ({"counter": "events", "op": "gte", "value": 7}, {"ann", "dan"}),
    ({"counter": "revenue", "op": "between", "value": [100, 300]}, {"ann"}),
    ({"counter": "events", "op": "in", "value": [0, 1]}, {"cat", "eve"}),
    ({"counter": "events", "op": "not_in", "value": [0, 1]}, {"ann", "bob", "dan"}),
    ({"counter": "purchases", "op": "eq", "value": 0}, {"ann", "bob", "cat", "dan", "eve"}),
    ({"lifecycle": "customer"}, {"ann"}),
    ({"lifecycle": ["anonymous", "churned"]}, {"cat", "eve"}),
    ({"identifier": "email", "op": "not_exists"}, {"ann", "bob", "cat", "dan", "eve"}),
    ({"consent": "email", "op": "not_exists"}, {"ann", "bob", "cat", "dan", "eve"}),
    ({"event": "Order Completed", "within_days": 30, "count": {"op": "eq", "value": 0}},
     {"ann", "bob", "cat", "dan", "eve"}),
])
def test_every_operator_matches_by_json_type(read_client, tenant, people, cond, expected):
    assert _names(people, _preview(read_client, tenant, {"all": [cond]})) == expected


def test_nested_groups(read_client, tenant, people):
    rules = {"any": [{"all": [{"trait": "age", "op": "gte", "value": 18}, {"lifecycle": "known"}]},
                     {"trait": "tags", "op": "contains", "value": "vip"}]}
    assert _names(people, _preview(read_client, tenant, rules)) == {"ann", "dan"}
    assert _preview(read_client, tenant, {"any": []}) == set()
    assert len(_preview(read_client, tenant, {"all": []})) == 5


@pytest.mark.parametrize(("rules", "code", "field"), [
    ({"all": [{"trait": "a", "op": "eq", "value": 1}, {"trait": "b", "op": "equals", "value": 1}]},
     "invalid_rule", "rules.all[1].op"),
    ({"all": "x"}, "invalid_rule", "rules.all"),
    ({"every": []}, "invalid_rule", "rules.every"),
    ([], "invalid_rule", "rules"),
    ({"any": [{"all": [{"trait": "a", "op": "between", "value": [3, 1]}]}]}, "invalid_rule",
     "rules.any[0].all[0].value"),
    ({"all": [{"counter": "visits", "op": "gt", "value": 1}]}, "invalid_rule", "rules.all[0].counter"),
    ({"all": [{"counter": "events", "op": "contains", "value": 1}]}, "invalid_rule", "rules.all[0].op"),
    ({"all": [{"lifecycle": ["known", "vip"]}]}, "invalid_rule", "rules.all[0].lifecycle[1]"),
    ({"all": [{"event": "Buy", "within_days": 0}]}, "invalid_rule", "rules.all[0].within_days"),
    ({"all": [{"event": "Buy", "within_days": 7, "count": {"op": "gt", "value": "1"}}]}, "invalid_rule",
     "rules.all[0].count.value"),
    ({"all": [{"computed": "nope", "op": "gt", "value": 1}]}, "invalid_rule", "rules.all[0].computed"),
    ({"all": [{"trait": "t", "op": "after", "value": "yesterday"}]}, "invalid_rule", "rules.all[0].value"),
    ({"all": [{"all": [{"all": [{"all": [{"all": [{"all": []}]}]}]}]}]}, "rule_too_complex", None),
    ({"all": [{"trait": "t", "op": "exists"}] * 51}, "rule_too_complex", None),
])
def test_bad_rules_are_400_naming_the_bad_part(read_client, tenant, rules, code, field):
    for path, body in (("/api/v1/cdp/segments/preview", {"rules": rules}),
                       ("/api/v1/cdp/segments", {"name": "s", "kind": "dynamic", "rules": rules})):
        r = read_client.post(path, headers=auth(tenant.api_key), json=body)
        assert r.status_code == 400, r.text
        out = r.json()
        assert out["code"] == code and out["status"] == 400
        if field is not None:
            assert out["errors"][0]["field"] == field and field in out["message"]


def test_crud_members_pages_and_access(read_client, db, tenant, new_tenant, people):
    base = "/api/v1/cdp/segments"
    r = read_client.post(base, headers=auth(tenant.api_key), json={
        "name": "Adults", "kind": "dynamic", "rules": {"all": [{"counter": "events", "op": "gte", "value": 1}]}})
    assert r.status_code == 201, r.text
    seg = r.json()
    assert set(seg) >= {"id", "name", "kind", "rules", "size", "updated_at"} and seg["size"] == 4
    assert read_client.post(base, headers=auth(tenant.api_key), json={
        "name": "Adults", "rules": {"all": []}}).json()["code"] == "name_taken"

    seen, cursor = [], None
    while True:
        page = read_client.get(f"{base}/{seg['id']}/members", params={"limit": 3, **({"cursor": cursor} if cursor
                                                                                        else {})},
                               headers=auth(tenant.api_key)).json()
        seen += page["profiles"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and set(seen) == {people[n] for n in ("ann", "bob", "dan", "eve")}
    assert read_client.get(f"{base}/{seg['id']}/members", params={"cursor": "x"},
                           headers=auth(tenant.api_key)).json()["code"] == "invalid_cursor"

    r = read_client.patch(f"{base}/{seg['id']}", headers=auth(tenant.api_key),
                          json={"rules": {"all": [{"counter": "events", "op": "gte", "value": 7}]}})
    assert r.status_code == 200 and r.json()["size"] == 2
    assert [s["id"] for s in read_client.get(base, headers=auth(tenant.api_key)).json()["segments"]] == [seg["id"]]

    other = new_tenant()
    assert read_client.get(f"{base}/{seg['id']}", headers=auth(other.api_key)).status_code == 404
    assert read_client.get(f"{base}/{seg['id']}/members", headers=auth(other.api_key)).status_code == 404
    assert _preview(read_client, other, {"all": []}) == set()
    with db.transaction():
        read_key = create_tenant_key(db, uuid.UUID(tenant.id), "read").key
    assert read_client.get(f"{base}/{seg['id']}", headers=auth(read_key)).status_code == 200
    assert read_client.delete(f"{base}/{seg['id']}", headers=auth(read_key)).status_code == 403
    assert read_client.delete(f"{base}/{seg['id']}", headers=auth(tenant.api_key)).json()["id"] == seg["id"]
    assert read_client.get(f"{base}/{seg['id']}", headers=auth(tenant.api_key)).status_code == 404


def test_dynamic_membership_follows_events_and_static_is_a_snapshot(read_client, ingest_client, drain, db, tenant):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "u-later"), traits={"plan": "free"}),
                     event("Signed Up", ("external_id", "u-leaver"), traits={"plan": "pro"}))
    later = profile_by(read_client, tenant.api_key, "external_id", "u-later").json()["id"]
    leaver = profile_by(read_client, tenant.api_key, "external_id", "u-leaver").json()["id"]
    upkeep_audiences(db, read_client.app.state.read.settings)  # sets the mark

    rules = {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}
    dyn = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key),
                           json={"name": "Pro", "kind": "dynamic", "rules": rules}).json()
    snap = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key),
                            json={"name": "Pro then", "kind": "static", "rules": rules}).json()
    assert dyn["size"] == snap["size"] == 1

    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Upgraded", ("external_id", "u-later"), traits={"plan": "pro"}),
                     event("Downgraded", ("external_id", "u-leaver"), traits={"plan": "free"}))
    upkeep_audiences(db, read_client.app.state.read.settings)

    def members(seg):
        return read_client.get(f"/api/v1/cdp/segments/{seg['id']}/members", headers=auth(tenant.api_key)).json()

    assert members(dyn)["profiles"] == [later]
    assert members(snap)["profiles"] == [leaver]
    assert read_client.get(f"/api/v1/cdp/segments/{dyn['id']}", headers=auth(tenant.api_key)).json()["size"] == 1
    history = db.execute("SELECT profile_id::text, kind FROM segment_events WHERE segment_id = %s ORDER BY id",
                         (dyn["id"],)).fetchall()
    assert history[0] == (leaver, "entered")
    assert sorted(history[1:]) == sorted([(later, "entered"), (leaver, "exited")])
    # Nothing changed since: the next run records nothing new.
    upkeep_audiences(db, read_client.app.state.read.settings)
    assert db.execute("SELECT count(*) FROM segment_events WHERE segment_id = %s", (dyn["id"],)).fetchone()[0] == 3


def test_first_upkeep_run_catches_changes_since_the_segment_was_created(read_client, ingest_client, drain, db,
                                                                        tenant):
    """A fresh scheduler (no mark yet) must not skip profiles that changed after a segment
    was created: ``stratum scheduler --once`` right after the events is enough."""
    seg = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "VIP", "rules": {"all": [{"trait": "vip", "op": "eq", "value": True}]}}).json()
    assert seg["size"] == 0
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Signed Up", ("external_id", "v-1"),
                                                                   traits={"vip": True}))
    upkeep_audiences(db, read_client.app.state.read.settings)
    pid = profile_by(read_client, tenant.api_key, "external_id", "v-1").json()["id"]
    assert read_client.get(f"/api/v1/cdp/segments/{seg['id']}/members",
                           headers=auth(tenant.api_key)).json()["profiles"] == [pid]


def test_an_erased_member_leaves_the_segment_and_its_size(read_client, ingest_client, drain, tenant):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "gone"), traits={"plan": "pro"}))
    seg = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Pro", "rules": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}}).json()
    assert seg["size"] == 1
    pid = profile_by(read_client, tenant.api_key, "external_id", "gone").json()["id"]
    assert read_client.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key)).status_code == 200
    assert read_client.get(f"/api/v1/cdp/segments/{seg['id']}", headers=auth(tenant.api_key)).json()["size"] == 0
    assert read_client.get(f"/api/v1/cdp/segments/{seg['id']}/members",
                           headers=auth(tenant.api_key)).json()["profiles"] == []


def test_upkeep_mark_never_passes_a_transaction_in_flight(read_client, db, tenant, settings):
    """A worker's profile rows carry its transaction's start time and show only at commit: a
    batch that commits after an upkeep run must still be handled by the next one."""
    from stratum.db.connect import connect

    pid = _profile(db, tenant, {"plan": "free"})
    seg = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Pro", "rules": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}}).json()
    upkeep_audiences(db, settings)
    with connect(settings.database_url) as slow_worker:
        slow_worker.execute("UPDATE profiles SET traits = '{\"plan\": \"pro\"}', updated_at = now() WHERE id = %s",
                            (pid,))
        upkeep_audiences(db, settings)  # runs while the batch is still open
        slow_worker.commit()
    upkeep_audiences(db, settings)
    assert read_client.get(f"/api/v1/cdp/segments/{seg['id']}/members",
                           headers=auth(tenant.api_key)).json()["profiles"] == [pid]
