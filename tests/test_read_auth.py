"""Keys and roles on every read API endpoint (CONTRACT 5): no key and a revoked key are
401, an operator key 403, a read key 403 on any change, another tenant's key 404 on
objects (never 403, never data)."""

from __future__ import annotations

import time
import uuid

import pytest
from conftest import Tenant, make_tenant
from test_read_support import auth, event, ingest_and_drain, profile_by

from stratum.admin import create_operator, create_tenant_key, revoke_key

MUTATING = {"PUT", "POST", "PATCH", "DELETE"}
# POSTs that only read (a segment preview): read keys may call them.
READ_ONLY_POSTS = {"/api/v1/cdp/segments/preview"}


def _endpoints(pid: str, event_id: str, source_id: str, segment_id: str = "sg", trait_id: str = "ct",
               ) -> list[tuple[str, str, str, dict | None, dict | None]]:
    """(method, route template, concrete path, query, JSON body) for every tenant endpoint."""
    seg, trait = f"/api/v1/cdp/segments/{segment_id}", f"/api/v1/cdp/computed-traits/{trait_id}"
    return [
        ("GET", "/api/v1/cdp/profiles/{profile_id}", f"/api/v1/cdp/profiles/{pid}", None, None),
        ("GET", "/api/v1/cdp/profiles", "/api/v1/cdp/profiles",
         {"identifier_type": "email", "identifier_value": "walk@example.com"}, None),
        ("GET", "/api/v1/cdp/profiles/{profile_id}/events", f"/api/v1/cdp/profiles/{pid}/events", None, None),
        ("GET", "/api/v1/cdp/profiles/{profile_id}/graph", f"/api/v1/cdp/profiles/{pid}/graph", None, None),
        ("GET", "/api/v1/cdp/profiles/{profile_id}/consents", f"/api/v1/cdp/profiles/{pid}/consents", None, None),
        ("PUT", "/api/v1/cdp/profiles/{profile_id}/consents", f"/api/v1/cdp/profiles/{pid}/consents", None,
         {"consents": {"email": True}}),
        ("DELETE", "/api/v1/cdp/profiles/{profile_id}", f"/api/v1/cdp/profiles/{pid}", None, None),
        ("GET", "/api/v1/cdp/events/{event_id}", f"/api/v1/cdp/events/{event_id}", None, None),
        ("GET", "/api/v1/cdp/sources", "/api/v1/cdp/sources", None, None),
        ("POST", "/api/v1/cdp/sources", "/api/v1/cdp/sources", None, {"name": "walked", "type": "server"}),
        ("PATCH", "/api/v1/cdp/sources/{source_id}", f"/api/v1/cdp/sources/{source_id}", None, {"name": "renamed"}),
        ("POST", "/api/v1/cdp/sources/{source_id}/rotate-key", f"/api/v1/cdp/sources/{source_id}/rotate-key",
         None, None),
        ("POST", "/api/v1/cdp/sources/{source_id}/rotate-identity-secret",
         f"/api/v1/cdp/sources/{source_id}/rotate-identity-secret", None, None),
        ("GET", "/api/v1/cdp/export/profiles", "/api/v1/cdp/export/profiles", None, None),
        ("GET", "/api/v1/cdp/export/events", "/api/v1/cdp/export/events", None, None),
        ("GET", "/api/v1/cdp/stats", "/api/v1/cdp/stats", None, None),
        ("GET", "/api/v1/cdp/anomalies", "/api/v1/cdp/anomalies", None, None),
        ("GET", "/api/v1/cdp/segments", "/api/v1/cdp/segments", None, None),
        ("POST", "/api/v1/cdp/segments", "/api/v1/cdp/segments", None, {"name": "walked", "rules": {"all": []}}),
        ("GET", "/api/v1/cdp/segments/fields", "/api/v1/cdp/segments/fields", None, None),
        ("POST", "/api/v1/cdp/segments/preview", "/api/v1/cdp/segments/preview", None, {"rules": {"all": []}}),
        ("GET", "/api/v1/cdp/segments/{segment_id}", seg, None, None),
        ("PATCH", "/api/v1/cdp/segments/{segment_id}", seg, None, {"name": "renamed"}),
        ("GET", "/api/v1/cdp/segments/{segment_id}/members", f"{seg}/members", None, None),
        ("GET", "/api/v1/cdp/segments/{segment_id}/history", f"{seg}/history", None, None),
        ("DELETE", "/api/v1/cdp/segments/{segment_id}", seg, None, None),
        ("GET", "/api/v1/cdp/computed-traits", "/api/v1/cdp/computed-traits", None, None),
        ("POST", "/api/v1/cdp/computed-traits", "/api/v1/cdp/computed-traits", None,
         {"name": "walked", "function": "count", "event": "Signed Up", "within_days": 7}),
        ("GET", "/api/v1/cdp/computed-traits/{trait_id}", trait, None, None),
        ("PATCH", "/api/v1/cdp/computed-traits/{trait_id}", trait, None, {"within_days": 30}),
        ("DELETE", "/api/v1/cdp/computed-traits/{trait_id}", trait, None, None),
        ("GET", "/api/v1/cdp/profiles/{profile_id}/decisions", f"/api/v1/cdp/profiles/{pid}/decisions", None, None),
        ("GET", "/api/v1/cdp/identity/explain", "/api/v1/cdp/identity/explain",
         {"a_type": "email", "a_value": "walk@example.com", "b_type": "anonymous_id", "b_value": "walk-anon"}, None),
        ("POST", "/api/v1/cdp/identity/dry-run", "/api/v1/cdp/identity/dry-run", None,
         {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "rules": {"limits": {"email": 1}}}),
        # The world has no merge: the tenant's own admin key gets 404 merge_not_found there,
        # which still proves it passed authentication (tests/test_read_unmerge.py undoes real ones).
        ("POST", "/api/v1/cdp/profiles/{profile_id}/unmerge", f"/api/v1/cdp/profiles/{pid}/unmerge", None,
         {"merge_id": "987654321"}),
    ]

# Routes whose answer to an authorized caller is a 404 with this code, whoever asks.
ANSWERED_404 = {"/api/v1/cdp/profiles/{profile_id}/unmerge": "merge_not_found"}


# Endpoints that name one of the tenant's objects: another tenant gets 404 there. The
# others are collections, where another tenant simply sees its own (other) data.
OBJECT_ROUTES = {
    "/api/v1/cdp/profiles/{profile_id}", "/api/v1/cdp/profiles", "/api/v1/cdp/profiles/{profile_id}/events",
    "/api/v1/cdp/profiles/{profile_id}/graph", "/api/v1/cdp/profiles/{profile_id}/consents",
    "/api/v1/cdp/events/{event_id}", "/api/v1/cdp/sources/{source_id}",
    "/api/v1/cdp/sources/{source_id}/rotate-key", "/api/v1/cdp/sources/{source_id}/rotate-identity-secret",
    "/api/v1/cdp/segments/{segment_id}",
    "/api/v1/cdp/segments/{segment_id}/members", "/api/v1/cdp/segments/{segment_id}/history",
    "/api/v1/cdp/computed-traits/{trait_id}",
    "/api/v1/cdp/profiles/{profile_id}/decisions", "/api/v1/cdp/identity/explain",
}


def _walk(world: dict) -> list[tuple[str, str, str, dict | None, dict | None]]:
    return _endpoints(world["pid"], world["event_id"], world["source_id"], world["segment_id"], world["trait_id"])


def _call(client, method: str, path: str, query: dict | None, body: dict | None, headers: dict | None = None):
    return client.request(method, path, params=query, json=body, headers=headers or {})


def _error(r, status: int, code: str) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["message"], body


@pytest.fixture
def tenant(db) -> Tenant:
    """A website source, so the walk covers its identity-secret rotation too."""
    return make_tenant(db, source_type="website")


@pytest.fixture
def world(ingest_client, read_client, tenant, new_tenant, drain, db):
    """Tenant A with a profile, an event and a source; keys of every kind."""
    (event_id,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                   event("Signed Up", ("email", "walk@example.com"), ("anonymous_id", "walk-anon")))
    pid = profile_by(read_client, tenant.api_key, "email", "walk@example.com").json()["id"]
    other = new_tenant()
    with db.transaction():
        read_key = create_tenant_key(db, uuid.UUID(tenant.id), "read")
        revoked = create_tenant_key(db, uuid.UUID(tenant.id), "admin")
        revoke_key(db, revoked.key_id)
        operator = create_operator(db, "ops")
        segment_id, trait_id = uuid.uuid4(), uuid.uuid4()
        db.execute("INSERT INTO segments (tenant_id, id, name, kind, rules) VALUES (%s, %s, 'walk', 'dynamic',"
                   " '{\"all\": []}')", (tenant.id, segment_id))
        db.execute("INSERT INTO computed_traits (tenant_id, id, name, function, event_name, within_days)"
                   " VALUES (%s, %s, 'walk_count', 'count', 'Signed Up', 30)", (tenant.id, trait_id))
    return {"tenant": tenant, "other": other, "pid": pid, "event_id": event_id, "source_id": tenant.source_id,
            "read_key": read_key.key, "revoked_key": revoked.key, "operator_key": operator.key,
            "segment_id": str(segment_id), "trait_id": str(trait_id)}


def test_the_walk_covers_every_tenant_route(read_client):
    # Destinations and their deliveries have their own walk (tests/test_destinations_api.py).
    routes = {(m, r.path.replace(":str}", "}")) for r in read_client.app.routes if r.path.startswith("/api/v1/cdp")
              and not r.path.startswith("/api/v1/cdp/destinations") for m in r.methods if m not in ("HEAD", "OPTIONS")}
    walked = {(m, template) for m, template, *_ in _endpoints("p", "e", "s")}
    assert routes == walked


def test_no_bad_or_revoked_key_is_401_everywhere(read_client, world):
    for method, _, path, query, body in _walk(world):
        _error(_call(read_client, method, path, query, body), 401, "missing_api_key")
        _error(_call(read_client, method, path, query, body, {"Authorization": "Basic abc"}), 401, "missing_api_key")
        _error(_call(read_client, method, path, query, body, auth("sk_not-a-key")), 401, "invalid_api_key")
        r = _call(read_client, method, path, query, body, auth(world["revoked_key"]))
        _error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_keys_are_checked_before_the_request_is_parsed(read_client, world):
    """A garbage body or query never turns a missing key into a 400, nor a read key's 403."""
    pid, sid = world["pid"], world["source_id"]
    for method, path in (("PUT", f"/api/v1/cdp/profiles/{pid}/consents"), ("POST", "/api/v1/cdp/sources"),
                         ("PATCH", f"/api/v1/cdp/sources/{sid}")):
        raw = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
        _error(read_client.request(method, path, **raw), 401, "missing_api_key")
        raw["headers"].update(auth(world["read_key"]))
        _error(read_client.request(method, path, **raw), 403, "read_only_key")
    _error(read_client.get(f"/api/v1/cdp/profiles/{pid}/events", params={"limit": "x"}), 401, "missing_api_key")


def test_operator_keys_have_no_tenant_data(read_client, world):
    for method, _, path, query, body in _walk(world):
        _error(_call(read_client, method, path, query, body, auth(world["operator_key"])), 403, "tenant_key_required")


def test_read_key_reads_everything_and_changes_nothing(read_client, world, db):
    before = db.execute("SELECT name, write_key_hash FROM sources WHERE id = %s", (world["source_id"],)).fetchone()
    for method, _, path, query, body in _walk(world):
        r = _call(read_client, method, path, query, body, auth(world["read_key"]))
        if method in MUTATING and path not in READ_ONLY_POSTS:
            _error(r, 403, "read_only_key")
        else:
            assert r.status_code == 200, (path, r.text)
    assert db.execute("SELECT count(*) FROM profiles").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM consents").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM sources").fetchone()[0] == 2  # A's and B's
    assert db.execute("SELECT name, write_key_hash FROM sources WHERE id = %s",
                      (world["source_id"],)).fetchone() == before


def test_another_tenants_objects_are_404_and_never_data(read_client, world, db):
    a = world["tenant"]
    secrets = (world["pid"], world["event_id"], a.source_id)
    before = db.execute("SELECT name, write_key_hash FROM sources WHERE id = %s", (a.source_id,)).fetchone()
    for method, template, path, query, body in _walk(world):
        r = _call(read_client, method, path, query, body, auth(world["other"].api_key))
        if template in ANSWERED_404:
            _error(r, 404, ANSWERED_404[template])
        elif template in OBJECT_ROUTES:
            _error(r, 404, "not_found")
            assert set(r.json()) == {"code", "message", "status"}
        else:
            assert r.status_code in (200, 201), (path, r.text)
        for secret in secrets:
            if secret not in path:  # a 404 message may echo the id the caller sent
                assert secret not in r.text, (path, r.text)
    # Nothing of A's changed: profile, consents, source name and key.
    assert profile_by(read_client, a.api_key, "email", "walk@example.com").json()["id"] == world["pid"]
    assert db.execute("SELECT count(*) FROM consents").fetchone()[0] == 0
    assert db.execute("SELECT name, write_key_hash FROM sources WHERE id = %s", (a.source_id,)).fetchone() == before


def test_admin_key_passes_everywhere(read_client, world):
    for method, template, path, query, body in _walk(world):
        if method == "DELETE":
            continue  # erasure has its own tests; it would remove the profile the others use
        r = _call(read_client, method, path, query, body, auth(world["tenant"].api_key))
        if template in ANSWERED_404:
            _error(r, 404, ANSWERED_404[template])
        else:
            assert r.status_code in (200, 201), (method, path, r.text)


def test_revocation_takes_effect_within_a_second(read_client, tenant, db):
    with db.transaction():
        created = create_tenant_key(db, uuid.UUID(tenant.id), "read")
    assert read_client.get("/api/v1/cdp/sources", headers=auth(created.key)).status_code == 200
    with db.transaction():
        assert revoke_key(db, created.key_id)
    revoked_at = time.monotonic()
    while True:
        r = read_client.get("/api/v1/cdp/sources", headers=auth(created.key))
        if r.status_code == 401:
            break
        assert time.monotonic() - revoked_at < 1.5, "revoked key still accepted after a second"
        time.sleep(0.05)
