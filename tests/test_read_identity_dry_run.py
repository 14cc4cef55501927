"""Identity rule dry-run (CONTRACT 9) over events stored by the real pipeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from litestar.testing import TestClient
from test_read_support import auth, event, ingest_and_drain

WINDOW = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
          "to": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


def _store_two_people_then_a_joining_event(ingest_client, drain, t) -> list[str]:
    return ingest_and_drain(ingest_client, drain, t.write_key,
                            event("A", ("email", "dr-a@example.com")), event("B", ("email", "dr-b@example.com")),
                            event("C", ("email", "dr-a@example.com"), ("email", "dr-b@example.com")))


def dry(client, key: str, rules: dict, **window):
    return client.post("/api/v1/cdp/identity/dry-run", json={"rules": rules, **WINDOW, **window}, headers=auth(key))


def test_dry_run_reports_what_a_lower_limit_would_change(ingest_client, read_client, new_tenant, drain, db):
    t = new_tenant(source_type="server")
    ids = _store_two_people_then_a_joining_event(ingest_client, drain, t)
    before = db.execute("SELECT count(*) FROM identity_decisions WHERE tenant_id = %s", (t.id,)).fetchone()[0]
    r = dry(read_client, t.api_key, {"limits": {"email": 1}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["events"] == 3 and body["truncated"] is False
    assert body["profiles"] == {"now": 1, "would_be": 2}
    assert body["merges"] == {"now": 1, "would_be": 0}
    assert body["decisions"] == {"now": {}, "would_be": {"limit": 1}}
    [example] = body["examples"]
    assert example["event_id"] == ids[2]
    assert example["now"] == [{"kind": "merge", "type": "email"}]
    assert example["would_be"] == [{"kind": "limit", "type": "email"}]
    # nothing was written
    assert db.execute("SELECT count(*) FROM identity_decisions WHERE tenant_id = %s", (t.id,)).fetchone()[0] == before
    assert db.execute("SELECT count(*) FROM profiles WHERE tenant_id = %s AND merged_into IS NULL",
                      (t.id,)).fetchone()[0] == 1


def test_blocked_values_and_priority(ingest_client, read_client, new_tenant, drain):
    t = new_tenant(source_type="server")
    _store_two_people_then_a_joining_event(ingest_client, drain, t)
    body = dry(read_client, t.api_key, {"blocked_values": ["DR-A@example.com "]}).json()
    assert body["profiles"] == {"now": 1, "would_be": 1} and body["merges"] == {"now": 1, "would_be": 0}
    r = dry(read_client, t.api_key, {"priority": ["email", "external_id", "phone", "anonymous_id", "device_id"]})
    assert r.status_code == 200 and r.json()["examples"] == []


def test_dry_run_stops_at_its_bound(ingest_client, settings, redis_conn, new_tenant, drain):
    from read_api.app import create_app

    t = new_tenant(source_type="server")
    _store_two_people_then_a_joining_event(ingest_client, drain, t)
    with TestClient(app=create_app(settings.replace(dry_run_max_events=2))) as client:
        body = dry(client, t.api_key, {}).json()
    assert body["events"] == 2 and body["truncated"] is True


def test_bad_requests(read_client, tenant):
    for rules, window in (({"limits": {"email": -1}}, {}), ({"limits": {"fax": 1}}, {}), ({"priority": ["email"]}, {}),
                          ({"priority": ["anonymous_id", "email", "phone", "external_id", "device_id"]}, {}),
                          ({"blocked_values": "x"}, {}), ({"other": 1}, {}), ({}, {"from": "yesterday"}),
                          ({}, {"to": WINDOW["from"]})):
        r = dry(read_client, tenant.api_key, rules, **window)
        assert r.status_code == 400, (rules, window, r.text)
        assert r.json()["code"] in ("invalid_rules", "invalid_time"), r.text
    r = read_client.post("/api/v1/cdp/identity/dry-run", json={"rules": {}}, headers=auth(tenant.api_key))
    assert r.status_code == 400


def test_one_dry_run_per_tenant_at_a_time(read_client, tenant, redis_conn):
    from core.cache_keys import dry_run_lock_key

    redis_conn.set(dry_run_lock_key(tenant.id), "someone", ex=30)
    r = dry(read_client, tenant.api_key, {})
    assert r.status_code == 409 and r.json()["code"] == "dry_run_in_progress"
    redis_conn.delete(dry_run_lock_key(tenant.id))
    assert dry(read_client, tenant.api_key, {}).status_code == 200
    assert redis_conn.get(dry_run_lock_key(tenant.id)) is None
