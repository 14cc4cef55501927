"""Erasure: everything of the person goes, across partitions; their identifiers are
suppressed; nobody else's data is touched."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from litestar.testing import TestClient
from test_read_support import auth, event, hash_of, ingest_and_drain, profile_by

from core.cache_keys import identifier_cache_key, profile_cache_key


def _count(db, sql: str, *params) -> int:
    return db.execute(sql, params).fetchone()[0]


@pytest.fixture
def person(ingest_client, read_client, tenant, drain):
    """A person built from two merged profiles, with events in an older month, consents
    and graph links; and a bystander who must survive the erasure."""
    old = datetime.now(UTC) - timedelta(days=70)
    ids = ingest_and_drain(
        ingest_client, drain, tenant.write_key,
        event("Viewed", ("anonymous_id", "e-anon"), ("device_id", "e-dev"), at=old, idempotency_key="e-1"),
        event("Signed Up", ("email", "erase@example.com"), traits={"name": "Eve"}),
        event("Viewed", ("email", "keep@example.com")),
    )
    ids += ingest_and_drain(ingest_client, drain, tenant.write_key,
                            event("Logged In", ("anonymous_id", "e-anon"), ("email", "erase@example.com")))
    anon_id = profile_by(read_client, tenant.api_key, "device_id", "e-dev").json()
    survivor = profile_by(read_client, tenant.api_key, "email", "erase@example.com").json()
    assert anon_id["id"] == survivor["id"]
    r = read_client.put(f"/api/v1/cdp/profiles/{survivor['id']}/consents",
                        json={"consents": {"email": True, "ads": False}}, headers=auth(tenant.api_key))
    assert r.status_code == 200
    graph = read_client.get(f"/api/v1/cdp/profiles/{survivor['id']}/graph", headers=auth(tenant.api_key)).json()
    absorbed = graph["merges"][0]["absorbed"]
    bystander = profile_by(read_client, tenant.api_key, "email", "keep@example.com").json()
    return {"id": survivor["id"], "absorbed": absorbed, "event_ids": [ids[0], ids[1], ids[3]],
            "bystander": bystander, "bystander_event": ids[2]}


def test_erasure_removes_the_person_everywhere(read_client, tenant, person, db, redis_conn):
    pid, absorbed = person["id"], person["absorbed"]
    profile_by(read_client, tenant.api_key, "email", "erase@example.com")  # cached
    r = read_client.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"erased": {"profiles": 2, "identifiers": 3, "events": 3, "consents": 2}}

    ids = [pid, absorbed]
    for table, column in (("profiles", "id"), ("profile_identifiers", "profile_id"), ("consents", "profile_id"),
                          ("consent_history", "profile_id"), ("identity_links", "profile_id"),
                          ("events", "profile_id")):
        assert _count(db, f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s::uuid[])", ids) == 0, table
    assert _count(db, "SELECT count(*) FROM profile_merges WHERE survivor_id = ANY(%s::uuid[])"
                      " OR absorbed_id = ANY(%s::uuid[])", ids, ids) == 0
    # The erased events' dedupe keys stay as hash-only tombstones (test_late_copy_of_an_erased_event_...)
    assert _count(db, "SELECT count(*) FROM event_keys WHERE event_id = ANY(%s::uuid[])", person["event_ids"]) == 3

    for id_type, value in (("email", "erase@example.com"), ("anonymous_id", "e-anon"), ("device_id", "e-dev")):
        assert profile_by(read_client, tenant.api_key, id_type, value).status_code == 404
        assert db.execute("SELECT 1 FROM suppressed_identifiers WHERE tenant_id = %s AND type = %s AND hash = %s",
                          (tenant.id, id_type, hash_of(id_type, value))).fetchone()
        assert not redis_conn.exists(identifier_cache_key(tenant.id, id_type, hash_of(id_type, value)))
    assert not redis_conn.exists(profile_cache_key(tenant.id, pid))
    for gone in ids:
        assert read_client.get(f"/api/v1/cdp/profiles/{gone}", headers=auth(tenant.api_key)).status_code == 404
    for eid in person["event_ids"]:
        status = read_client.get(f"/api/v1/cdp/events/{eid}", headers=auth(tenant.api_key))
        assert status.status_code == 200 and status.json() == {"event_id": eid, "status": "erased", "profile_id": None}

    # The bystander is untouched.
    keep = profile_by(read_client, tenant.api_key, "email", "keep@example.com").json()
    assert keep == person["bystander"]
    status = read_client.get(f"/api/v1/cdp/events/{person['bystander_event']}", headers=auth(tenant.api_key)).json()
    assert status["profile_id"] == keep["id"]
    assert db.execute("SELECT count(*) FROM suppressed_identifiers WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 3

    again = read_client.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key))
    assert again.status_code == 404


def test_late_copy_of_an_erased_event_is_not_stored(read_client, ingest_client, tenant, person, db, redis_conn,
                                                    drain):
    """The erased events' keys stay as hash-only tombstones: a retry arriving after the ingest
    window does not bring an erased event back."""
    assert read_client.delete(f"/api/v1/cdp/profiles/{person['id']}", headers=auth(tenant.api_key)).status_code == 200
    for key in redis_conn.scan_iter("stratum:dedupe:*"):  # as if the ingest window had passed
        redis_conn.delete(key)
    old = datetime.now(UTC) - timedelta(days=70)
    (late,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                               event("Viewed", ("anonymous_id", "late-anon"), at=old, idempotency_key="e-1"))
    assert _count(db, "SELECT count(*) FROM events WHERE tenant_id = %s AND event_id = %s", tenant.id, late) == 0
    status = read_client.get(f"/api/v1/cdp/events/{late}", headers=auth(tenant.api_key)).json()
    assert status == {"event_id": late, "status": "duplicate", "profile_id": None}
    assert profile_by(read_client, tenant.api_key, "anonymous_id", "late-anon").status_code == 404
    erased = read_client.get(f"/api/v1/cdp/events/{person['event_ids'][0]}", headers=auth(tenant.api_key)).json()
    assert erased["status"] == "erased"


def test_erasing_a_merged_away_id_erases_the_person(read_client, tenant, person, db):
    r = read_client.delete(f"/api/v1/cdp/profiles/{person['absorbed']}", headers=auth(tenant.api_key))
    assert r.status_code == 200 and r.json()["erased"]["profiles"] == 2
    assert _count(db, "SELECT count(*) FROM profiles WHERE id = %s", person["id"]) == 0


def test_erasure_without_suppression(read_client, tenant, person, redis_conn, db):
    r = read_client.delete(f"/api/v1/cdp/profiles/{person['id']}", params={"suppress": "false"},
                           headers=auth(tenant.api_key))
    assert r.status_code == 200
    assert db.execute("SELECT count(*) FROM suppressed_identifiers WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 0


def test_erasure_needs_redis_or_erases_nothing(read_client, tenant, person, settings, db):
    from read_api.app import create_app

    with TestClient(app=create_app(settings.replace(redis_url="redis://127.0.0.1:1/0"))) as client:
        r = client.delete(f"/api/v1/cdp/profiles/{person['id']}", headers=auth(tenant.api_key))
    assert r.status_code == 503 and r.json()["code"] == "unavailable" and r.headers["retry-after"]
    assert _count(db, "SELECT count(*) FROM profiles WHERE id = %s", person["id"]) == 1
    assert _count(db, "SELECT count(*) FROM events WHERE profile_id = %s", person["id"]) == 3


def test_erasure_waits_for_a_worker_then_409(read_client, tenant, person, settings, monkeypatch, db):
    """A worker holding the profile's row lock: the erasure waits up to the lock timeout,
    answers 409 profile_busy, and erases nothing; once the lock is gone it succeeds."""
    from read_api import profile_locks
    from stratum.settings import libpq_url

    monkeypatch.setattr(profile_locks, "LOCK_TIMEOUT_MS", 300)
    with psycopg.connect(libpq_url(settings.database_url)) as worker:
        worker.execute("SELECT 1 FROM profiles WHERE id = %s FOR UPDATE", (person["id"],))
        r = read_client.delete(f"/api/v1/cdp/profiles/{person['id']}", headers=auth(tenant.api_key))
        assert r.status_code == 409 and r.json()["code"] == "profile_busy" and r.headers["retry-after"]
        worker.rollback()
    assert _count(db, "SELECT count(*) FROM profiles WHERE id = %s", person["id"]) == 1

    # A lock released within the timeout just makes the erasure wait.
    monkeypatch.setattr(profile_locks, "LOCK_TIMEOUT_MS", 5000)
    with psycopg.connect(libpq_url(settings.database_url)) as worker:
        worker.execute("SELECT 1 FROM profiles WHERE id = %s FOR UPDATE", (person["id"],))
        timer = threading.Timer(0.3, worker.rollback)
        timer.start()
        started = time.monotonic()
        r = read_client.delete(f"/api/v1/cdp/profiles/{person['id']}", headers=auth(tenant.api_key))
        timer.join()
    assert r.status_code == 200 and time.monotonic() - started >= 0.25
