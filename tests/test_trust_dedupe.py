"""Dedupe scope and hashed keys, played as an attacker would (CONTRACT 4.5).

A website write key is public: whoever holds it must not be able to send an order id first
and turn the server's real order into a ``duplicate``. Server-side sources of one tenant
still dedupe against each other. Keys rest only as SHA-256 hashes, and keys over 255
characters are refused, never truncated.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic import command
from conftest import Tenant, stored_dedupe_key
from test_read_support import auth, event
from test_schema import _alembic_config, _scratch_url

from core.dedupe import dedupe_digest, dedupe_scope
from stratum.admin import create_source


def _add_source(db, tenant: Tenant, source_type: str) -> Tenant:
    with db.transaction():
        s = create_source(db, uuid.UUID(tenant.id), f"{source_type}-{uuid.uuid4().hex[:4]}", source_type, "US")
    return Tenant(tenant.id, tenant.api_key, str(s.owner_id), s.key, s.identity_secret, source_type)


def _post(ingest_client, source: Tenant, key: str, name: str = "Order Completed") -> dict:
    body = {"events": [event(name, ("external_id", "cust-1"), idempotency_key=key,
                             properties={"revenue": 99})]}
    r = ingest_client.post("/api/v1/cdp/events", json=body, headers=auth(source.write_key))
    assert r.status_code == 202, r.text
    return r.json()["results"][0]


def _forget_door_marks(redis_conn) -> None:
    """As if the ingest window had passed: only the workers' key table remains."""
    for key in redis_conn.scan_iter("stratum:dedupe:*"):
        redis_conn.delete(key)


def _stored(db, source: Tenant, key: str) -> int:
    return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s AND source_id = %s AND dedupe_key = %s",
                      (source.id, source.source_id, stored_dedupe_key(source, key))).fetchone()[0]


@pytest.mark.parametrize("window_passed", [False, True], ids=["at the door", "in the worker"])
def test_a_website_key_cannot_preempt_the_servers_order_id(ingest_client, new_tenant, db, drain, redis_conn,
                                                           read_client, window_passed):
    website = new_tenant(source_type="website")
    server = _add_source(db, website, "server")
    attacker = _post(ingest_client, website, "order-1001", "Fake Order")
    assert attacker["status"] == "accepted"
    if window_passed:
        assert drain() == 0
        _forget_door_marks(redis_conn)
    real = _post(ingest_client, server, "order-1001")
    assert real["status"] == "accepted", real  # not a duplicate of the browser's event
    assert drain() == 0
    assert _stored(db, server, "order-1001") == 1 and _stored(db, website, "order-1001") == 1
    status = read_client.get(f"/api/v1/cdp/events/{real['event_id']}", headers=auth(website.api_key)).json()
    assert status["status"] == "processed"


@pytest.mark.parametrize("window_passed", [False, True], ids=["at the door", "in the worker"])
def test_server_sources_of_one_tenant_still_dedupe_against_each_other(ingest_client, new_tenant, db, drain,
                                                                      redis_conn, read_client, window_passed):
    backend = new_tenant(source_type="server")
    crm = _add_source(db, backend, "crm")
    first = _post(ingest_client, backend, "order-2002")
    if window_passed:
        assert drain() == 0
        _forget_door_marks(redis_conn)
    second = _post(ingest_client, crm, "order-2002")
    assert drain() == 0
    assert _stored(db, backend, "order-2002") + _stored(db, crm, "order-2002") == 1
    if window_passed:
        status = read_client.get(f"/api/v1/cdp/events/{second['event_id']}", headers=auth(backend.api_key)).json()
        assert status["status"] == "duplicate"
    else:
        assert second == {"index": 0, "status": "duplicate", "event_id": first["event_id"]}


def test_a_website_source_dedupes_its_own_events_and_not_another_sites(ingest_client, new_tenant, db, drain):
    site = new_tenant(source_type="website")
    other_site = _add_source(db, site, "website")
    first = _post(ingest_client, site, "page-1")
    assert _post(ingest_client, site, "page-1") == {"index": 0, "status": "duplicate", "event_id": first["event_id"]}
    assert _post(ingest_client, other_site, "page-1")["status"] == "accepted"
    assert drain() == 0
    assert _stored(db, site, "page-1") == 1 and _stored(db, other_site, "page-1") == 1


def test_dedupe_and_idempotency_keys_rest_only_as_sha256(ingest_client, new_tenant, db, drain, redis_conn):
    site = new_tenant(source_type="website")
    secret_key, idem_key = f"order-secret-{uuid.uuid4().hex}", f"idem-secret-{uuid.uuid4().hex}"
    body = {"events": [event("Order Completed", ("external_id", "cust-9"), idempotency_key=secret_key)]}
    r = ingest_client.post("/api/v1/cdp/events", json=body,
                           headers={**auth(site.write_key), "Idempotency-Key": idem_key})
    assert r.status_code == 202
    # Redis, before the worker runs: no key, no field, no value outside the queued job holds either key.
    for key in redis_conn.scan_iter("*"):
        name = key.decode(errors="replace")
        assert secret_key not in name and idem_key not in name, name
        if name.startswith(("stratum:dedupe:", "stratum:idem:")):
            kind = redis_conn.type(key).decode()
            blob = repr(redis_conn.hgetall(key) if kind == "hash" else redis_conn.get(key))
            assert secret_key not in blob and idem_key not in blob, name
    assert drain() == 0
    key_hash, event_key = db.execute(
        "SELECT k.key_hash, e.dedupe_key FROM event_keys k JOIN events e ON e.tenant_id = k.tenant_id"
        " AND e.event_id = k.event_id AND e.event_time = k.event_time WHERE k.tenant_id = %s", (site.id,)).fetchone()
    assert bytes(key_hash) == dedupe_digest(dedupe_scope("website", site.source_id), secret_key)
    assert event_key == bytes(key_hash).hex()
    columns = db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'event_keys'"
                         " ORDER BY column_name").fetchall()
    assert [c for (c,) in columns] == ["event_id", "event_time", "key_hash", "tenant_id"]


def test_native_idempotency_key_over_255_characters_is_refused_not_truncated(ingest_client, tenant, db, drain):
    ok, too_long = "k" * 255, "k" * 255 + "-2"
    r = ingest_client.post("/api/v1/cdp/events", headers=auth(tenant.write_key), json={"events": [
        event("A", ("anonymous_id", "anon-255"), idempotency_key=ok),
        event("B", ("anonymous_id", "anon-255"), idempotency_key=too_long)]})
    assert r.status_code == 202, r.text
    good, bad = r.json()["results"]
    assert good["status"] == "accepted"
    assert bad["status"] == "rejected" and bad["error"]["code"] == "dedupe_key_too_long"
    assert bad["error"]["field"] == "idempotency_key"
    assert drain() == 0
    assert _stored(db, tenant, ok) == 1


def test_segment_message_id_over_255_characters_is_refused_not_truncated(ingest_client, tenant, db, drain):
    """Two messageIds that agree on their first 255 characters were one event once truncated:
    the second was dropped as a duplicate. Now each is refused on its own."""
    prefix = "m" * 255
    batch = [{"type": "track", "event": "Clicked", "userId": "u-long", "messageId": prefix + "-a"},
             {"type": "track", "event": "Clicked", "userId": "u-long", "messageId": prefix + "-b"},
             {"type": "track", "event": "Clicked", "userId": "u-long", "messageId": prefix}]
    r = ingest_client.post("/v1/batch", json={"batch": batch}, headers=auth(tenant.write_key))
    assert r.status_code == 200, r.text
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(0, "dedupe_key_too_long"),
                                                                        (1, "dedupe_key_too_long")]
    assert drain() == 0
    assert _stored(db, tenant, prefix) == 1


def test_migration_0003_hashes_existing_keys_in_their_sources_scope(settings):
    """Keys stored before the change are rehashed in place: an event's key takes its source's
    scope, and later copies dedupe against it exactly as they would against a new one."""
    url = _scratch_url(settings, f"{psycopg.conninfo.conninfo_to_dict(settings.database_url)['dbname']}_m0003")
    cfg = _alembic_config(url)
    from stratum.db.connect import create_database_if_missing

    create_database_if_missing(url)
    command.upgrade(cfg, "0002")
    tenant, web, srv = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows = [(uuid.uuid4(), web, "order-1"), (uuid.uuid4(), srv, "order-2"), (uuid.uuid4(), srv, "ünïcode-3")]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 't')", (tenant,))
        for sid, stype in ((web, "website"), (srv, "server")):
            conn.execute("INSERT INTO sources (id, tenant_id, name, type, write_key_hash) VALUES (%s, %s, 's', %s, %s)",
                         (sid, tenant, stype, uuid.uuid4().hex))
        conn.execute("CREATE TABLE IF NOT EXISTS events_p202611 PARTITION OF events"
                     " FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')")
        for eid, sid, key in rows:
            conn.execute("INSERT INTO event_keys (tenant_id, dedupe_key, event_id, event_time)"
                         " VALUES (%s, %s, %s, '2026-11-02')", (tenant, key, eid))
            conn.execute("INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, dedupe_key,"
                         " event_type, event_name, properties, context, identifiers, emq)"
                         " VALUES (%s, %s, '2026-11-02', now(), %s, %s, 'track', 'E', '{}', '{}', '[]', 0)",
                         (tenant, eid, sid, key))
        orphan = uuid.uuid4()  # a key whose event is gone: tenant scope
        conn.execute("INSERT INTO event_keys (tenant_id, dedupe_key, event_id, event_time)"
                     " VALUES (%s, 'gone-3', %s, '2026-11-02')", (tenant, orphan))
    command.upgrade(cfg, "head")
    with psycopg.connect(url) as conn:
        keys = {str(e): bytes(h) for e, h in conn.execute("SELECT event_id, key_hash FROM event_keys")}
        stored = {str(e): k for e, k in conn.execute("SELECT event_id, dedupe_key FROM events")}
    for eid, sid, key in rows:
        expected = dedupe_digest(dedupe_scope("website" if sid == web else "server", str(sid)), key)
        assert keys[str(eid)] == expected and stored[str(eid)] == expected.hex()
    assert keys[str(orphan)] == dedupe_digest("t", "gone-3")
    command.downgrade(cfg, "0002")
    command.upgrade(cfg, "head")
    command.check(cfg)
