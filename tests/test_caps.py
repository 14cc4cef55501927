"""Caps a public write key cannot get around (CONTRACT 6, "Caps"), played as an attacker
would, through the real ingest API, workers and Postgres.

- Segment batch-level ``context``/``integrations`` are copied into every event by the
  workers, so they count toward each event's 32 KB: one request could otherwise store
  ``events x context`` bytes (a 4 KB gzip body reached 1 GB).
- Profile traits stay within 500 keys and 64 KB of JSON, whatever the flood; refused keys
  are a warning on the event, never an error.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime

from core.profiles import MAX_TRAIT_KEYS, MAX_TRAITS_BYTES

EVENT_LIMIT = 32 * 1024


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def seg(i: int, **fields) -> dict:
    return {"type": "track", "event": "Clicked", "messageId": f"cap-{i}-{uuid.uuid4().hex[:8]}",
            "anonymousId": f"anon-{i % 7}", "timestamp": datetime.now(UTC).isoformat(), **fields}


def queued_jobs(redis_conn, settings) -> int:
    return redis_conn.llen(f"rq:queue:{settings.queue_name}")


# --------------------------------------------------------------------------- batch context

def test_batch_context_over_the_event_limit_refuses_the_request(ingest_client, tenant, redis_conn, settings):
    body = {"batch": [seg(i) for i in range(200)], "context": {"blob": "x" * 200_000}}
    r = ingest_client.post("/v1/batch", json=body, headers=basic(tenant.write_key))
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "context_too_large" and "message" in r.json()
    assert queued_jobs(redis_conn, settings) == 0


def test_gzip_body_cannot_amplify_through_the_batch_context(ingest_client, tenant, redis_conn, settings):
    # About 4 KB on the wire; 1000 copies of a 40 KB context would be 40 MB stored.
    body = json.dumps({"batch": [{"type": "track", "event": "E", "anonymousId": "a"}] * 1000,
                       "context": {"pad": "A" * 40_000}}).encode()
    packed = gzip.compress(body)
    assert len(packed) < 8_000
    r = ingest_client.post("/v1/batch", content=packed,
                           headers={**basic(tenant.write_key), "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["code"] == "context_too_large", r.text
    assert queued_jobs(redis_conn, settings) == 0


def test_batch_context_counts_toward_every_event(ingest_client, tenant, drain, db):
    context = {"page": {"padding": "p" * 20_000}}
    big = seg(0, properties={"blob": "b" * 13_000})  # 13 KB + 20 KB context > 32 KB
    small = [seg(i) for i in range(1, 6)]
    r = ingest_client.post("/v1/batch", json={"batch": [big, *small], "context": context},
                           headers=basic(tenant.write_key))
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [{"index": 0, "code": "event_too_large", "message": r.json()["rejected"][0]["message"]}]
    assert "batch context" in r.json()["rejected"][0]["message"]
    assert drain() == 0
    rows = db.execute("SELECT length(properties::text) + length(context::text) FROM events").fetchall()
    assert len(rows) == 5
    assert all(n <= EVENT_LIMIT for (n,) in rows)


def test_batch_context_alone_too_big_for_every_event_is_all_rejected(ingest_client, tenant, redis_conn, settings):
    # Under the limit alone, but no event fits beside it: per event, then 400.
    context = {"pad": "c" * (EVENT_LIMIT - 60)}
    r = ingest_client.post("/v1/batch", json={"batch": [seg(1), seg(2)], "context": context},
                           headers=basic(tenant.write_key))
    assert r.status_code == 400, r.text
    assert {e["code"] for e in r.json()["rejected"]} == {"event_too_large"}
    assert queued_jobs(redis_conn, settings) == 0


# --------------------------------------------------------------------------- trait caps

def _profile_traits(db) -> list[dict]:
    return [r[0] for r in db.execute("SELECT traits FROM profiles WHERE merged_into IS NULL").fetchall()]


def _warnings(db, name: str) -> list[str]:
    out = []
    for (decisions,) in db.execute("SELECT decisions FROM events WHERE event_name = %s", (name,)).fetchall():
        out += [d["message"] for d in decisions or [] if d.get("kind") == "warning"]
    return out


def test_trait_flood_from_a_public_key_stays_within_the_caps(ingest_client, tenant, drain, db):
    now = datetime.now(UTC).isoformat()
    ident = [{"type": "anonymous_id", "value": "flooder"}]
    for batch in range(3):
        events = [{"event_name": "Flood", "event_time": now, "identifiers": ident,
                   "traits": {f"k{batch}_{i}_{j}": "v" * 1000 for j in range(10)}} for i in range(100)]
        r = ingest_client.post("/api/v1/cdp/events", json={"events": events}, headers=bearer(tenant.write_key))
        assert r.status_code == 202 and r.json()["accepted"] == 100, r.text
    assert drain() == 0  # never an error
    (traits,) = _profile_traits(db)
    assert len(json.dumps(traits, separators=(",", ":")).encode()) <= MAX_TRAITS_BYTES
    assert 0 < len(traits) < 100
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 300  # events kept
    warned = _warnings(db, "Flood")
    assert warned and all("refused" in w and "64 KB" in w for w in warned)
    assert not any("v" * 20 in w or "k0_" in w for w in warned)  # no submitted text echoed


def test_trait_key_count_is_capped_and_existing_keys_still_update(ingest_client, tenant, drain, db):
    now = datetime.now(UTC).isoformat()
    ident = [{"type": "anonymous_id", "value": "many-keys"}]
    first = {"event_name": "Many", "event_time": now, "identifiers": ident,
             "traits": {f"t{i:03d}": i for i in range(MAX_TRAIT_KEYS + 100)}}
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [first]}, headers=bearer(tenant.write_key))
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert drain() == 0
    (traits,) = _profile_traits(db)
    assert len(traits) == MAX_TRAIT_KEYS
    assert _warnings(db, "Many") == [f"100 trait key(s) refused: profile traits are capped at {MAX_TRAIT_KEYS} "
                                     f"keys and {MAX_TRAITS_BYTES // 1024} KB of JSON"]

    later = {"event_name": "Update", "event_time": datetime.now(UTC).isoformat(), "identifiers": ident,
             "traits": {"t000": "changed", "brand_new": True}}
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [later]}, headers=bearer(tenant.write_key))
    assert r.status_code == 202, r.text
    assert drain() == 0
    (traits,) = _profile_traits(db)
    assert traits["t000"] == "changed" and "brand_new" not in traits and len(traits) == MAX_TRAIT_KEYS
    assert len(_warnings(db, "Update")) == 1
