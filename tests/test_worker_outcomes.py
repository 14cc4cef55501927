"""Erased identifiers stay suppressed; late duplicates are answered as duplicates."""

from __future__ import annotations

from datetime import UTC, datetime


def _post(client, tenant, events):
    r = client.post("/api/v1/cdp/events", json={"events": events},
                    headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text
    return r.json()


def _event(ident, key=None):
    e = {"event_name": "E", "event_time": datetime.now(UTC).isoformat(), "identifiers": ident}
    if key:
        e["idempotency_key"] = key
    return e


def test_erased_person_is_not_rebuilt(ingest_client, read_client, tenant, drain, db):
    email = [{"type": "email", "value": "gone@example.com"}]
    _post(ingest_client, tenant, [_event(email)])
    assert drain() == 0
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    found = read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "email",
                                                            "identifier_value": "gone@example.com"}, headers=auth)
    assert read_client.delete(f"/api/v1/cdp/profiles/{found.json()['id']}", headers=auth).status_code == 200

    _post(ingest_client, tenant, [_event(email + [{"type": "anonymous_id", "value": "new-anon"}])])
    assert drain() == 0
    assert read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "email",
                                                           "identifier_value": "gone@example.com"},
                           headers=auth).status_code == 404
    # The event is kept, on a profile holding only the anonymous id, with the decision recorded.
    decisions = db.execute("SELECT decisions FROM events").fetchone()[0]
    assert any(d["kind"] == "suppressed" and d["type"] == "email" for d in decisions)
    assert db.execute("SELECT count(*) FROM profile_identifiers WHERE type = 'email'").fetchone()[0] == 0


def test_late_duplicate_is_reported_as_duplicate(ingest_client, read_client, tenant, drain, redis_conn):
    ident = [{"type": "external_id", "value": "dup-1"}]
    first = _post(ingest_client, tenant, [_event(ident, "order-9")])["results"][0]["event_id"]
    assert drain() == 0
    for key in redis_conn.scan_iter("stratum:dedupe:*"):  # as if the ingest window had passed
        redis_conn.delete(key)
    second = _post(ingest_client, tenant, [_event(ident, "order-9")])["results"][0]["event_id"]
    assert second != first
    assert drain() == 0
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    a = read_client.get(f"/api/v1/cdp/events/{first}", headers=auth).json()
    b = read_client.get(f"/api/v1/cdp/events/{second}", headers=auth).json()
    assert a["status"] == "processed" and b["status"] == "duplicate"
    assert b["profile_id"] == a["profile_id"] is not None
