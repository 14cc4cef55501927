"""PostHog-compatible capture (CONTRACT 4.3) through the real app, real Redis and real Postgres."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import STORED_KEY_SQL

from core.identifiers import hash_normalized
from stratum.queue.layout import queue_key
from stratum.queue.status import queue_status

OK = {"status": 1}


def iso(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat()


def ev(event: str, distinct_id: str | None, **fields) -> dict:
    out: dict = {"event": event, "properties": fields.pop("properties", {}), "timestamp": iso(),
                 "uuid": str(uuid.uuid4())}
    if distinct_id is not None:
        out["distinct_id"] = distinct_id
    out.update(fields)
    return out


def post(client, path: str, body, headers: dict | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"Content-Type": "application/json", **(headers or {})})


def profile_of(db, tenant_id: str, id_type: str, value: str) -> str | None:
    row = db.execute("SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s"
                     " AND hash = %s", (tenant_id, id_type, hash_normalized(id_type, value))).fetchone()
    return row[0] if row else None


def stored(db, tenant_id: str, dedupe: str):
    # events.dedupe_key holds the SHA-256 of the key in its source's scope (core/dedupe.py)
    return db.execute("SELECT event_type, event_name, properties, profile_id::text FROM events"
                      f" WHERE tenant_id = %s AND dedupe_key = {STORED_KEY_SQL}", (tenant_id, dedupe)).fetchall()


def test_identify_joins_anonymous_history_and_external_id_lookup(ingest_client, drain, db, tenant):
    anon, user = f"anon-{uuid.uuid4()}", f"user-{uuid.uuid4()}"
    first = ev("$pageview", anon, properties={"$current_url": "https://shop.example/"})
    identify = ev("$identify", user, properties={"$anon_distinct_id": anon, "$set": {"plan": "pro"}})
    r = post(ingest_client, "/batch/", {"api_key": tenant.write_key, "sent_at": iso(), "batch": [first, identify]})
    assert r.status_code == 200 and r.json() == OK, r.text
    assert drain() == 0
    pid = profile_of(db, tenant.id, "external_id", user)
    assert pid is not None
    assert profile_of(db, tenant.id, "anonymous_id", anon) == pid == profile_of(db, tenant.id, "anonymous_id", user)
    assert stored(db, tenant.id, identify["uuid"])[0][:2] == ("identify", "$identify")
    assert stored(db, tenant.id, first["uuid"])[0][0] == "page"
    traits = db.execute("SELECT traits FROM profiles WHERE id = %s", (pid,)).fetchone()[0]
    assert traits["plan"] == "pro"


@pytest.mark.parametrize("path", ["/batch", "/capture/", "/capture", "/e/", "/e", "/i/v0/e/", "/i/v0/e"])
def test_every_capture_path_takes_a_single_event_with_the_token(ingest_client, drain, db, tenant, path):
    e = ev("clicked", f"anon-{uuid.uuid4()}", properties={"token": tenant.write_key, "button": "buy"})
    r = post(ingest_client, path, e)
    assert r.status_code == 200 and r.json() == OK, r.text
    assert drain() == 0
    [(etype, name, props, pid)] = stored(db, tenant.id, e["uuid"])
    assert (etype, name, props["button"], pid is not None) == ("track", "clicked", "buy", True)
    assert "token" not in props  # the write key is never stored


def test_array_body_gzip_js_and_alias(ingest_client, drain, db, tenant):
    a, b = f"anon-{uuid.uuid4()}", f"anon-{uuid.uuid4()}"
    events = [ev("$pageview", a, properties={"token": tenant.write_key}),
              ev("$create_alias", a, properties={"alias": b, "token": tenant.write_key})]
    r = post(ingest_client, "/e/?compression=gzip-js&ver=1.0", gzip.compress(json.dumps(events).encode()))
    assert r.status_code == 200 and r.json() == OK, r.text
    assert drain() == 0
    assert profile_of(db, tenant.id, "anonymous_id", a) == profile_of(db, tenant.id, "anonymous_id", b) is not None
    assert stored(db, tenant.id, events[1]["uuid"])[0][0] == "alias"


def test_is_identified_records_external_id(ingest_client, drain, db, new_tenant):
    t = new_tenant(source_type="server")
    user, anon = f"user-{uuid.uuid4()}", f"anon-{uuid.uuid4()}"
    e = ev("bought", user, properties={"$is_identified": True, "$anon_distinct_id": anon})
    assert post(ingest_client, "/capture/", {**e, "api_key": t.write_key}).status_code == 200
    assert drain() == 0
    pid = profile_of(db, t.id, "external_id", user)
    assert pid is not None and profile_of(db, t.id, "anonymous_id", anon) == pid


def test_set_once_keeps_oldest_and_set_overrides(ingest_client, drain, db, tenant):
    user = f"anon-{uuid.uuid4()}"
    newer = ev("$set_once", user, timestamp=iso(-60), **{"$set_once": {"first_seen_page": "/pricing"}})
    older = ev("$set_once", user, timestamp=iso(-3600), **{"$set_once": {"first_seen_page": "/home",
                                                                           "referrer": "ad"}})
    later = ev("$set_once", user, timestamp=iso(-10), **{"$set_once": {"first_seen_page": "/blog"}})
    plain = ev("$set", user, timestamp=iso(-5), **{"$set": {"referrer": "newsletter"}})
    for batch in ([newer], [older], [later, plain]):  # out of order, one job each
        assert post(ingest_client, "/batch/", {"api_key": tenant.write_key, "batch": batch}).status_code == 200
        assert drain() == 0
    pid = profile_of(db, tenant.id, "anonymous_id", user)
    traits = db.execute("SELECT traits FROM profiles WHERE id = %s", (pid,)).fetchone()[0]
    assert traits == {"first_seen_page": "/home", "referrer": "newsletter"}


def test_uuid_is_the_dedupe_key(ingest_client, drain, db, tenant):
    e = ev("clicked", f"anon-{uuid.uuid4()}")
    for _ in range(2):
        assert post(ingest_client, "/batch/", {"api_key": tenant.write_key, "batch": [e]}).status_code == 200
    assert drain() == 0
    assert len(stored(db, tenant.id, e["uuid"])) == 1


def test_historical_migration_goes_to_the_import_lane(ingest_client, drain, db, tenant, settings, redis_conn):
    e = ev("imported", f"anon-{uuid.uuid4()}", timestamp=iso(-86400 * 30))
    r = post(ingest_client, "/batch/", {"api_key": tenant.write_key, "historical_migration": True, "batch": [e]})
    assert r.status_code == 200, r.text
    assert redis_conn.llen(queue_key(settings.import_queue)) == 1
    assert redis_conn.llen(queue_key(settings.queue_name)) == 0
    assert queue_status(settings, redis_conn)["queues"][settings.import_queue]["queued"] == 1  # stratum status
    assert drain() == 0  # workers listen to the import lane by default
    assert len(stored(db, tenant.id, e["uuid"])) == 1
    # same dedupe scope as the live lane
    assert post(ingest_client, "/batch/", {"api_key": tenant.write_key, "batch": [e]}).status_code == 200
    assert redis_conn.llen(queue_key(settings.queue_name)) == 0


def test_bad_key_and_unusable_events(ingest_client, tenant):
    r = post(ingest_client, "/batch/", {"api_key": "nope", "batch": [ev("x", "anon-1")]})
    assert r.status_code == 401 and {"code", "message"} <= r.json().keys()
    r = post(ingest_client, "/batch/", {"api_key": tenant.write_key, "batch": [ev("x", None), ev("x", "undefined")]})
    assert r.status_code == 400 and r.json()["code"] == "no_usable_events"
    ok, bad = ev("x", f"anon-{uuid.uuid4()}"), ev("x", "anon-2", uuid="u" * 300)
    r = post(ingest_client, "/batch/", {"api_key": tenant.write_key, "batch": [ok, bad]})
    assert r.status_code == 200 and r.json()["status"] == 1
    assert r.json()["rejected"] == [{"index": 1, "code": "dedupe_key_too_long", "message": r.json()["rejected"][0]["message"]}]


def test_odd_values_are_rejected_per_event_never_a_500(ingest_client, drain, db, tenant):
    key = {"api_key": tenant.write_key}
    odd = [ev("x", "anon-big", properties={"n": 2**70}), ev("x", "anon-nul", properties={"t": "a\u0000b"}),
           ev("x", {"a": 1}), ev("x", "anon-ts", timestamp=12), ev("x", "anon-off", timestamp=None, offset=1e300),
           ev("x", "anon-props", properties=[1])]
    ok = ev("x", f"anon-{uuid.uuid4()}")
    r = post(ingest_client, "/batch/", {**key, "batch": [*odd, ok]})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["rejected"]] == list(range(len(odd)))
    for body in (b"[]", b"[1, 2]", b"12", b'"x"', b"{", json.dumps({**key, "batch": []}).encode()):
        r = post(ingest_client, "/batch/", body)
        assert 400 <= r.status_code < 500 and {"code", "message"} <= r.json().keys(), (body, r.text)
    assert drain() == 0
    assert len(stored(db, tenant.id, ok["uuid"])) == 1


def test_posthog_js_base64_form_body(ingest_client, drain, db, tenant):
    import base64
    from urllib.parse import quote

    e = ev("$pageview", f"anon-{uuid.uuid4()}", properties={"token": tenant.write_key})
    data = base64.b64encode(json.dumps([e]).encode()).decode()
    r = ingest_client.post("/e/?compression=base64", content=f"data={quote(data)}".encode(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json() == OK, r.text
    assert drain() == 0
    assert len(stored(db, tenant.id, e["uuid"])) == 1
    r = ingest_client.post("/e/", content=b"data=%%%", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_encoding"
