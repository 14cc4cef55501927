"""Batch idempotency with the Idempotency-Key header (CONTRACT 4.5), and CORS per source."""

from __future__ import annotations

from datetime import UTC, datetime


def _batch(key: str = "evt-1") -> dict:
    return {"events": [{"event_name": "Paid", "event_time": datetime.now(UTC).isoformat(),
                        "identifiers": [{"type": "external_id", "value": "u-9"}], "idempotency_key": key}]}


def test_same_key_same_body_replays_the_first_answer(ingest_client, tenant, redis_conn, settings):
    headers = {"Authorization": f"Bearer {tenant.write_key}", "Idempotency-Key": "req-1"}
    body = _batch()
    first = ingest_client.post("/api/v1/cdp/events", json=body, headers=headers)
    assert first.status_code == 202 and first.json()["accepted"] == 1
    again = ingest_client.post("/api/v1/cdp/events", json=body, headers=headers)
    assert again.status_code == 202
    assert again.json() == first.json()  # replayed, not re-run (a re-run would say "duplicate")
    assert again.headers.get("idempotent-replayed") == "true"
    assert redis_conn.llen(f"rq:queue:{settings.queue_name}") == 1


def test_same_key_other_body_is_422(ingest_client, tenant):
    headers = {"Authorization": f"Bearer {tenant.write_key}", "Idempotency-Key": "req-2"}
    assert ingest_client.post("/api/v1/cdp/events", json=_batch("a"), headers=headers).status_code == 202
    r = ingest_client.post("/api/v1/cdp/events", json=_batch("b"), headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"


def test_same_key_in_flight_is_409(ingest_client, tenant, redis_conn):
    from ingest_api.idempotency import _Entry, _redis_key

    headers = {"Authorization": f"Bearer {tenant.write_key}", "Idempotency-Key": "req-3"}
    import hashlib
    import json

    import msgspec

    body = json.dumps(_batch()).encode()
    redis_conn.set(_redis_key(tenant.source_id, "req-3"),
                   msgspec.json.encode(_Entry("inflight", hashlib.sha256(body).hexdigest())), ex=30)
    r = ingest_client.post("/api/v1/cdp/events", content=body, headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"


def test_key_is_scoped_per_source(ingest_client, new_tenant):
    a, b = new_tenant(), new_tenant()
    for t in (a, b):
        r = ingest_client.post("/api/v1/cdp/events", json=_batch(), headers={
            "Authorization": f"Bearer {t.write_key}", "Idempotency-Key": "shared"})
        assert r.status_code == 202 and r.json()["accepted"] == 1


def test_segment_route_honours_the_key(ingest_client, tenant):
    headers = {"Authorization": f"Bearer {tenant.write_key}", "Idempotency-Key": "seg-1"}
    body = {"batch": [{"type": "track", "event": "X", "userId": "u1", "messageId": "m-1"}]}
    assert ingest_client.post("/v1/batch", json=body, headers=headers).json() == {"success": True}
    r = ingest_client.post("/v1/batch", json=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert r.headers.get("idempotent-replayed") == "true"


def test_allowed_origins_are_enforced_per_source(ingest_client, tenant, db):
    import time

    db.execute("UPDATE sources SET allowed_origins = ARRAY['https://shop.example'] WHERE id = %s", (tenant.source_id,))
    time.sleep(1.1)  # the write-key cache holds a source for at most one second
    headers = {"Authorization": f"Bearer {tenant.write_key}"}
    ok = ingest_client.post("/api/v1/cdp/events", json=_batch("o1"), headers={**headers, "Origin": "https://shop.example"})
    assert ok.status_code == 202
    assert ok.headers.get("access-control-allow-origin") in ("*", "https://shop.example")
    bad = ingest_client.post("/api/v1/cdp/events", json=_batch("o2"), headers={**headers, "Origin": "https://evil.example"})
    assert bad.status_code == 403 and bad.json()["code"] == "origin_not_allowed"
    pre = ingest_client.options("/v1/batch", headers={"Origin": "https://shop.example",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code in (200, 204)
    assert "POST" in pre.headers.get("access-control-allow-methods", "")
