"""Unmerge (CONTRACT 9) against real services: the absorbed profile comes back with its
identifiers, events, counters, traits and consents; a repeat changes nothing; unknown
merges are 404, held profiles 409; the trigger identifier does not join the survivor again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_identity_concurrency import (
    assert_queue_drained,
    post_batches,
    start_worker,
    stop,
    wait_all,
    wait_until,
)
from test_read_support import auth, event, ingest_and_drain, profile_by

import read_api.unmerge as unmerge_module


def ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def build_merge(ingest_client, read_client, drain, tenant, tag: str) -> dict:
    """Two people (an anonymous visitor with a purchase, a known customer), merged by one
    event, then one more event each; returns ids of what was made."""
    anon, email = f"{tag}-anon", f"{tag}@example.com"
    (a1,) = ingest_and_drain(ingest_client, drain, tenant.write_key, event(
        "Order Completed", ("anonymous_id", anon), at=ago(50), properties={"revenue": 10},
        traits={"name": "Ann"}, consent={"email": False}))
    (s1,) = ingest_and_drain(ingest_client, drain, tenant.write_key, event(
        "Signed Up", ("email", email), at=ago(40), traits={"plan": "pro"}, consent={"email": True}))
    a_id = profile_by(read_client, tenant.api_key, "anonymous_id", anon).json()["id"]
    s_id = profile_by(read_client, tenant.api_key, "email", email).json()["id"]
    (m,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                            event("Login", ("email", email), ("anonymous_id", anon), at=ago(30)))
    a2, s2 = ingest_and_drain(ingest_client, drain, tenant.write_key,
                              event("Page", ("anonymous_id", anon), at=ago(20), consent={"sms": True}),
                              event("Purchase", ("email", email), at=ago(10), properties={"revenue": 5}))
    return {"anon": anon, "email": email, "a": a_id, "s": s_id, "a1": a1, "s1": s1, "m": m, "a2": a2, "s2": s2}


def merge_id_of(read_client, tenant, profile_id: str) -> str:
    merges = read_client.get(f"/api/v1/cdp/profiles/{profile_id}/graph", headers=auth(tenant.api_key)).json()["merges"]
    assert len(merges) == 1, merges
    return merges[0]["id"]


def event_ids(read_client, tenant, profile_id: str) -> set[str]:
    r = read_client.get(f"/api/v1/cdp/profiles/{profile_id}/events", params={"limit": 100}, headers=auth(tenant.api_key))
    return {e["event_id"] for e in r.json()["events"]}


def test_unmerge_restores_both_sides_and_repeats_change_nothing(ingest_client, read_client, drain, tenant, db):
    x = build_merge(ingest_client, read_client, drain, tenant, "um")
    merged = profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()
    assert merged["id"] == x["s"] and merged["counters"] == {"events": 5, "purchases": 2, "revenue": 15.0}
    merge_id = merge_id_of(read_client, tenant, x["s"])
    # The absorbed side's first event has left retention: the merge's snapshot still counts it.
    db.execute("DELETE FROM events WHERE tenant_id = %s AND event_id = %s", (tenant.id, x["a1"]))

    r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                         headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["merge_id"], body["survivor"], body["absorbed"]) == (merge_id, x["s"], x["a"])

    a = profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()
    s = profile_by(read_client, tenant.api_key, "email", x["email"]).json()
    assert a["id"] == x["a"] and s["id"] == x["s"]
    assert a["counters"] == {"events": 2, "purchases": 1, "revenue": 10.0}  # a1 (snapshot) + a2
    assert s["counters"] == {"events": 3, "purchases": 1, "revenue": 5.0}  # s1, the merge's event, s2
    assert a["traits"] == {"name": "Ann"} and s["traits"] == {"plan": "pro"}
    assert {k: v["granted"] for k, v in a["consents"].items()} == {"email": False, "sms": True}
    assert {k: v["granted"] for k, v in s["consents"].items()} == {"email": True}
    assert a["lifecycle"] == "customer" and s["lifecycle"] == "customer"
    assert [i["type"] for i in a["identifiers"]] == ["anonymous_id"]
    assert [i["type"] for i in s["identifiers"]] == ["email"]
    assert event_ids(read_client, tenant, x["a"]) == {x["a2"]}
    assert event_ids(read_client, tenant, x["s"]) == {x["s1"], x["m"], x["s2"]}
    assert read_client.get(f"/api/v1/cdp/profiles/{x['a']}", headers=auth(tenant.api_key)).json()["merged_from"] is None
    assert read_client.get(f"/api/v1/cdp/profiles/{x['s']}/graph", headers=auth(tenant.api_key)).json()["merges"] == []
    for pid in (x["a"], x["s"]):
        decisions = read_client.get(f"/api/v1/cdp/profiles/{pid}/decisions", headers=auth(tenant.api_key)).json()
        assert [d["kind"] for d in decisions["decisions"]].count("unmerge") == 1, decisions

    # A repeat (from either side) answers the same and changes nothing.
    before = db.execute("SELECT id, event_count, revenue, traits, updated_at FROM profiles WHERE id IN (%s, %s)"
                        " ORDER BY id", (x["a"], x["s"])).fetchall()
    for pid in (x["s"], x["a"]):
        again = read_client.post(f"/api/v1/cdp/profiles/{pid}/unmerge", json={"merge_id": int(merge_id)},
                                 headers=auth(tenant.api_key))
        assert again.status_code == 200 and again.json() == body
    assert db.execute("SELECT id, event_count, revenue, traits, updated_at FROM profiles WHERE id IN (%s, %s)"
                      " ORDER BY id", (x["a"], x["s"])).fetchall() == before


def test_the_trigger_does_not_join_the_two_again(ingest_client, read_client, drain, tenant):
    x = build_merge(ingest_client, read_client, drain, tenant, "blk")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    assert read_client.post(f"/api/v1/cdp/profiles/{x['a']}/unmerge", json={"merge_id": merge_id},
                            headers=auth(tenant.api_key)).status_code == 200
    (again,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                event("Login", ("email", x["email"]), ("anonymous_id", x["anon"])))
    a = profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()
    s = profile_by(read_client, tenant.api_key, "email", x["email"]).json()
    assert a["id"] == x["a"] and s["id"] == x["s"]
    assert read_client.get(f"/api/v1/cdp/profiles/{x['s']}/graph", headers=auth(tenant.api_key)).json()["merges"] == []
    status = read_client.get(f"/api/v1/cdp/events/{again}", headers=auth(tenant.api_key)).json()
    assert status["profile_id"] == x["s"]  # the email decides; the anonymous id is left out
    decisions = read_client.get(f"/api/v1/cdp/profiles/{x['s']}/decisions", headers=auth(tenant.api_key)).json()
    refusals = [d for d in decisions["decisions"] if d["event_id"] == again]
    assert [(d["kind"], d["rule"]) for d in refusals] == [("unmerge", "unmerge_block")]
    explain = read_client.get("/api/v1/cdp/identity/explain", headers=auth(tenant.api_key), params={
        "a_type": "email", "a_value": x["email"], "b_type": "anonymous_id", "b_value": x["anon"]}).json()
    assert explain["same_profile"] is False
    assert {d["kind"] for d in explain["blocking_decisions"]} == {"unmerge"}
    # Another anonymous id of the absorbed side still joins it alone; the block holds for
    # any event that would put the trigger's profile with the survivor.
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Page", ("anonymous_id", x["anon"]), ("device_id", "blk-dev")))
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Page", ("email", x["email"]), ("device_id", "blk-dev")))
    assert profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()["id"] == x["a"]
    assert profile_by(read_client, tenant.api_key, "email", x["email"]).json()["id"] == x["s"]


def test_unknown_merges_are_404_and_bad_ids_400(ingest_client, read_client, drain, tenant, new_tenant):
    x = build_merge(ingest_client, read_client, drain, tenant, "nf")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    other = new_tenant()
    ingest_and_drain(ingest_client, drain, other.write_key, event("A", ("email", "nf-other@example.com")))
    other_pid = profile_by(read_client, other.api_key, "email", "nf-other@example.com").json()["id"]
    cases = [
        (x["s"], {"merge_id": "999999999"}, tenant, 404),
        (other_pid, {"merge_id": merge_id}, other, 404),  # another tenant's merge
        (str(uuid.uuid4()), {"merge_id": merge_id}, tenant, 404),
        (x["s"], {"merge_id": "abc"}, tenant, 400),
        (x["s"], {}, tenant, 400),
    ]
    for pid, body, who, status in cases:
        r = read_client.post(f"/api/v1/cdp/profiles/{pid}/unmerge", json=body, headers=auth(who.api_key))
        assert r.status_code == status, (body, r.text)
        assert r.json()["code"]
    # a profile not part of the merge
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "nf-third@example.com")))
    third = profile_by(read_client, tenant.api_key, "email", "nf-third@example.com").json()["id"]
    r = read_client.post(f"/api/v1/cdp/profiles/{third}/unmerge", json={"merge_id": merge_id},
                         headers=auth(tenant.api_key))
    assert r.status_code == 404 and r.json()["code"] == "merge_not_found"


def test_read_keys_may_not_unmerge(ingest_client, read_client, drain, tenant, db):
    from stratum.admin import create_tenant_key

    x = build_merge(ingest_client, read_client, drain, tenant, "ro")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    with db.transaction():
        key = create_tenant_key(db, uuid.UUID(tenant.id), "read").key
    r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id}, headers=auth(key))
    assert r.status_code == 403


def test_held_profiles_are_409_profile_busy(ingest_client, read_client, drain, tenant, settings, monkeypatch):
    x = build_merge(ingest_client, read_client, drain, tenant, "busy")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    monkeypatch.setattr(unmerge_module, "LOCK_TIMEOUT_MS", 200)
    with psycopg.connect(settings.database_url) as holder, holder.transaction():
        holder.execute("SELECT 1 FROM profiles WHERE id = %s FOR UPDATE", (x["s"],))
        r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                             headers=auth(tenant.api_key))
    assert r.status_code == 409 and r.json()["code"] == "profile_busy", r.text
    assert r.headers.get("retry-after")
    # Nothing changed; once free, it works.
    assert profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()["id"] == x["s"]
    r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                         headers=auth(tenant.api_key))
    assert r.status_code == 200


def test_profile_updated_messages_for_both_sides(ingest_client, read_client, drain, tenant, db):
    x = build_merge(ingest_client, read_client, drain, tenant, "msg")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    with db.transaction():
        db.execute("INSERT INTO destinations (id, tenant_id, name, url, topics, secret) VALUES (%s, %s, 'd',"
                   " 'https://example.com/h', ARRAY['profile.updated'], 'whsec_x')", (str(uuid.uuid4()), tenant.id))
    assert read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                            headers=auth(tenant.api_key)).status_code == 200
    rows = db.execute("SELECT profile_id::text, topic FROM deliveries WHERE tenant_id = %s ORDER BY profile_id",
                      (tenant.id,)).fetchall()
    assert sorted(rows) == sorted([(x["s"], "profile.updated"), (x["a"], "profile.updated")])


BATCHES = 200


def stored_count(db, tenant_id: str) -> int:
    return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]


@pytest.mark.slow
def test_unmerge_racing_running_workers(ingest_client, read_client, drain, tenant, db, redis_conn, settings, tmp_path):
    """Three worker processes store events of both people (and events that would join them
    again) while the unmerge runs: afterwards every event and identifier sits on a live
    profile, the two stay apart, and each profile's counters match its stored events."""
    x = build_merge(ingest_client, read_client, drain, tenant, "race")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    batches = []
    for n in range(BATCHES):
        kind = n % 4
        ids = ([("email", x["email"])] if kind == 0 else [("anonymous_id", x["anon"])] if kind == 1
               else [("email", x["email"]), ("anonymous_id", x["anon"])] if kind == 2
               else [("anonymous_id", x["anon"]), ("device_id", f"race-dev-{n}")])
        batches.append([event("Purchase" if n % 5 == 0 else "Page", *ids, at=ago(5), properties={"revenue": 1})])
    post_batches(ingest_client, tenant.write_key, batches)
    procs = [start_worker(settings, tmp_path, f"w{i}", burst=True,
                          env={"STRATUM_WORKER_COALESCE_MAX_EVENTS": "0"}) for i in range(3)]
    try:
        # Unmerge once the workers are under way, with most of the queue still to go.
        wait_until(lambda: stored_count(db, tenant.id) >= 5 + 10, 60, "workers storing events")
        answers = []
        for _ in range(200):
            r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                                 headers=auth(tenant.api_key))
            answers.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 409 and r.json()["code"] == "profile_busy", r.text
        assert answers[-1] == 200, answers
        assert stored_count(db, tenant.id) < 5 + BATCHES, "the workers had finished before the unmerge"
        codes = wait_all(procs)
    finally:
        stop(procs)
    assert all(c in (0, 1) for c in codes)
    assert_queue_drained(redis_conn, settings.queue_name)

    a = profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()
    s = profile_by(read_client, tenant.api_key, "email", x["email"]).json()
    assert (a["id"], s["id"]) == (x["a"], x["s"])
    assert db.execute("SELECT count(*) FROM profile_merges WHERE tenant_id = %s AND undone_at IS NULL"
                      " AND %s IN (survivor_id, absorbed_id) AND %s IN (survivor_id, absorbed_id)",
                      (tenant.id, x["a"], x["s"])).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM profile_identifiers pi JOIN profiles p ON p.id = pi.profile_id"
                      " WHERE pi.tenant_id = %s AND p.merged_into IS NOT NULL", (tenant.id,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM events e JOIN profiles p ON p.id = e.profile_id"
                      " WHERE e.tenant_id = %s AND p.merged_into IS NOT NULL", (tenant.id,)).fetchone()[0] == 0
    stored = dict(db.execute("SELECT profile_id::text, count(*) FROM events WHERE tenant_id = %s GROUP BY 1",
                             (tenant.id,)).fetchall())
    assert sum(stored.values()) == 5 + BATCHES
    for pid in (x["a"], x["s"]):
        counters = read_client.get(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key)).json()["counters"]
        assert counters["events"] == stored[pid], (pid, counters, stored)


def test_chained_merges_undo_latest_first(ingest_client, read_client, drain, tenant):
    """A into S, then S into X: A's merge waits for S's to be undone (409 merge_not_latest);
    undone in that order, all three are themselves again with their own events."""
    x = build_merge(ingest_client, read_client, drain, tenant, "chain")
    (x1,) = ingest_and_drain(ingest_client, drain, tenant.write_key, event("Seen", ("external_id", "chain-x"), at=ago(8)))
    x_id = profile_by(read_client, tenant.api_key, "external_id", "chain-x").json()["id"]
    (xm,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                             event("Login", ("external_id", "chain-x"), ("email", x["email"]), at=ago(5)))
    merges = read_client.get(f"/api/v1/cdp/profiles/{x_id}/graph", headers=auth(tenant.api_key)).json()["merges"]
    by_absorbed = {m["absorbed"]: m["id"] for m in merges}
    assert set(by_absorbed) == {x["a"], x["s"]}

    def undo(merge_id: str):
        return read_client.post(f"/api/v1/cdp/profiles/{x_id}/unmerge", json={"merge_id": merge_id},
                                headers=auth(tenant.api_key))

    r = undo(by_absorbed[x["a"]])
    assert r.status_code == 409 and r.json()["code"] == "merge_not_latest", r.text
    assert undo(by_absorbed[x["s"]]).status_code == 200
    # S is back, still holding A as merged into it
    assert profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()["id"] == x["s"]
    assert read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": by_absorbed[x["a"]]},
                            headers=auth(tenant.api_key)).status_code == 200
    assert event_ids(read_client, tenant, x_id) == {x1, xm}
    assert event_ids(read_client, tenant, x["s"]) == {x["s1"], x["m"], x["s2"]}
    assert event_ids(read_client, tenant, x["a"]) == {x["a1"], x["a2"]}
    counters = {pid: read_client.get(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key)).json()["counters"]
                for pid in (x_id, x["s"], x["a"])}
    assert counters == {x_id: {"events": 2, "purchases": 0, "revenue": 0.0},
                        x["s"]: {"events": 3, "purchases": 1, "revenue": 5.0},
                        x["a"]: {"events": 2, "purchases": 1, "revenue": 10.0}}


def test_merges_recorded_before_both_sides_were_kept_cannot_be_undone(ingest_client, read_client, drain, tenant, db):
    x = build_merge(ingest_client, read_client, drain, tenant, "legacy")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    with db.transaction():  # what a merge recorded before migration 0010 holds
        db.execute("UPDATE profile_merges SET snapshot = snapshot - 'survivor' - 'identifiers' - 'trait_times'"
                   " WHERE id = %s", (int(merge_id),))
    r = read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                         headers=auth(tenant.api_key))
    assert r.status_code == 409 and r.json()["code"] == "merge_not_undoable", r.text
    assert profile_by(read_client, tenant.api_key, "anonymous_id", x["anon"]).json()["id"] == x["s"]


def test_computed_traits_and_segments_follow_at_once(ingest_client, read_client, drain, tenant):
    admin = auth(tenant.api_key)
    r = read_client.post("/api/v1/cdp/computed-traits", headers=admin, json={
        "name": "orders", "function": "count", "event": "Order Completed", "within_days": 30})
    assert r.status_code == 201, r.text
    r = read_client.post("/api/v1/cdp/segments", headers=admin, json={
        "name": "ordered", "kind": "dynamic", "rules": {"all": [{"computed": "orders", "op": "gte", "value": 1}]}})
    assert r.status_code == 201, r.text
    segment = r.json()["id"]
    x = build_merge(ingest_client, read_client, drain, tenant, "aud")
    merge_id = merge_id_of(read_client, tenant, x["s"])
    assert read_client.post(f"/api/v1/cdp/profiles/{x['s']}/unmerge", json={"merge_id": merge_id},
                            headers=admin).status_code == 200
    computed = {pid: read_client.get(f"/api/v1/cdp/profiles/{pid}", headers=admin).json()["computed"]["orders"]
                for pid in (x["a"], x["s"])}
    assert computed == {x["a"]: 1, x["s"]: 0}  # the order was the absorbed visitor's
    members = read_client.get(f"/api/v1/cdp/segments/{segment}/members", headers=admin).json()["profiles"]
    assert members == [x["a"]]
