"""Destinations through the read API (CONTRACT 7): shapes, validation, secrets shown once and
sealed at rest, the SSRF guard on create and url change, and key/tenant checks on every route."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import TestClient
from test_read_support import auth

from stratum.admin import create_operator, create_tenant_key
from stratum.secret_storage import SecretUnreadable, decrypt_secret, destination_secret_context

DESTINATION_KEYS = {"id", "name", "type", "url", "topics", "event_names", "consent", "active", "created_at",
                    "batch_size"}
SECRET_KEY = "test-secret-key-for-sealing"


@pytest.fixture
def client(settings, redis_conn, db):
    from read_api.app import create_app

    with TestClient(app=create_app(settings.replace(secret_key=SECRET_KEY))) as c:
        yield c


def _create(client, key: str, **fields) -> dict:
    body = {"name": "crm", "url": "https://93.184.215.14/hook", "topics": ["event.received"], **fields}
    r = client.post("/api/v1/cdp/destinations", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()


def test_create_list_get_patch_delete(client, tenant, db):
    created = _create(client, tenant.api_key, name=" CRM ", event_names=["Order Completed"], consent="ads")
    assert set(created) == DESTINATION_KEYS | {"secret"}
    assert created["name"] == "CRM" and created["type"] == "webhook" and created["active"] is True
    assert created["consent"] == "ads" and created["event_names"] == ["Order Completed"]
    assert created["secret"].startswith("whsec_")
    stored = db.execute("SELECT secret FROM destinations WHERE id = %s", (created["id"],)).fetchone()[0]
    assert created["secret"] not in stored and stored.startswith("aesgcm:v1:")
    context = destination_secret_context(created["id"])
    assert decrypt_secret(SECRET_KEY, stored, context) == created["secret"]
    with pytest.raises(SecretUnreadable):  # bound to its destination: useless on another row
        decrypt_secret(SECRET_KEY, stored, destination_secret_context(uuid.uuid4()))
    assert created["batch_size"] == 1

    listed = client.get("/api/v1/cdp/destinations", headers=auth(tenant.api_key)).json()["destinations"]
    assert [d["id"] for d in listed] == [created["id"]] and set(listed[0]) == DESTINATION_KEYS
    one = client.get(f"/api/v1/cdp/destinations/{created['id']}", headers=auth(tenant.api_key)).json()
    assert one == listed[0]

    r = client.patch(f"/api/v1/cdp/destinations/{created['id']}", headers=auth(tenant.api_key),
                     json={"active": False, "consent": None, "topics": ["profile.merged", "profile.merged"]})
    assert r.status_code == 200, r.text
    assert (r.json()["active"], r.json()["consent"], r.json()["topics"]) == (False, None, ["profile.merged"])

    rotated = client.post(f"/api/v1/cdp/destinations/{created['id']}/rotate-secret", headers=auth(tenant.api_key))
    assert rotated.status_code == 200 and rotated.json()["secret"] != created["secret"]
    prev = db.execute("SELECT previous_secret FROM destinations WHERE id = %s", (created["id"],)).fetchone()[0]
    assert decrypt_secret(SECRET_KEY, prev, context) == created["secret"]

    r = client.delete(f"/api/v1/cdp/destinations/{created['id']}", headers=auth(tenant.api_key))
    assert r.status_code == 200 and r.json()["id"] == created["id"] and "secret" not in r.json()
    assert client.get(f"/api/v1/cdp/destinations/{created['id']}", headers=auth(tenant.api_key)).status_code == 404


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"url": "ftp://example.com/x"}, 400, "invalid_url"),
    ({"url": "https:///nohost"}, 400, "invalid_url"),
    ({"topics": ["event.exploded"]}, 400, "invalid_topic"),
    ({"topics": []}, 400, "invalid_topic"),
    ({"name": " "}, 400, "invalid_name"),
    ({"name": "x" * 101}, 400, "invalid_name"),
    ({"consent": "marketing"}, 400, "invalid_consent"),
    ({"type": "kafka"}, 400, "invalid_destination_type"),
    ({"batch_size": 0}, 400, "invalid_batch_size"),
    ({"batch_size": 1001}, 400, "invalid_batch_size"),
    ({"batch_size": True}, 400, "invalid_parameter"),  # a boolean is not a count
    ({"url": "http://127.0.0.1:9/hook"}, 400, "destination_not_allowed"),
    ({"url": "http://[::ffff:10.0.0.1]/hook"}, 400, "destination_not_allowed"),
    ({"url": "http://169.254.169.254/latest"}, 400, "destination_not_allowed"),
    ({"url": "http://localhost/x"}, 400, "destination_not_allowed"),
])
def test_validation_errors(client, tenant, body, status, code):
    full = {"name": "crm", "url": "https://93.184.215.14/hook", "topics": ["event.received"], **body}
    r = client.post("/api/v1/cdp/destinations", json=full, headers=auth(tenant.api_key))
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["status"] == status and r.json()["message"]


def test_batch_size_opt_in_and_change(client, tenant):
    d = _create(client, tenant.api_key, batch_size=100)
    assert d["batch_size"] == 100
    url = f"/api/v1/cdp/destinations/{d['id']}"
    r = client.patch(url, headers=auth(tenant.api_key), json={"batch_size": 1000})
    assert (r.status_code, r.json()["batch_size"]) == (200, 1000)
    r = client.patch(url, headers=auth(tenant.api_key), json={"batch_size": -5})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_batch_size")
    assert client.get(url, headers=auth(tenant.api_key)).json()["batch_size"] == 1000


def test_name_taken_and_ssrf_on_url_change(client, tenant):
    d = _create(client, tenant.api_key)
    r = client.post("/api/v1/cdp/destinations", headers=auth(tenant.api_key),
                    json={"name": "crm", "url": "https://93.184.215.14/b", "topics": ["event.received"]})
    assert (r.status_code, r.json()["code"]) == (409, "name_taken")
    other = _create(client, tenant.api_key, name="other")
    r = client.patch(f"/api/v1/cdp/destinations/{other['id']}", headers=auth(tenant.api_key), json={"name": "crm"})
    assert (r.status_code, r.json()["code"]) == (409, "name_taken")
    r = client.patch(f"/api/v1/cdp/destinations/{d['id']}", headers=auth(tenant.api_key),
                     json={"url": "http://10.1.2.3/x"})
    assert (r.status_code, r.json()["code"]) == (400, "destination_not_allowed")


def test_private_addresses_allowed_by_the_setting(settings, redis_conn, db, tenant):
    from read_api.app import create_app

    with TestClient(app=create_app(settings.replace(destinations_allow_private=True))) as c:
        d = _create(c, tenant.api_key, url="http://127.0.0.1:9/hook")
    assert d["url"] == "http://127.0.0.1:9/hook"


def _routes(did: str) -> list[tuple[str, str, dict | None]]:
    base = f"/api/v1/cdp/destinations/{did}"
    return [("GET", "/api/v1/cdp/destinations", None),
            ("POST", "/api/v1/cdp/destinations", {"name": "walk", "url": "https://93.184.215.14/",
                                                  "topics": ["event.received"]}),
            ("GET", base, None), ("PATCH", base, {"name": "renamed"}), ("DELETE", base, None),
            ("POST", f"{base}/rotate-secret", None), ("GET", f"{base}/deliveries", None),
            ("POST", f"{base}/deliveries/retry", {"status": "dead"}),
            ("POST", f"{base}/replay", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})]


def test_every_route_checks_keys_and_tenants(client, tenant, new_tenant, db):
    d = _create(client, tenant.api_key)
    walked = {(m, p.replace(d["id"], "{destination_id}")) for m, p, _ in _routes(d["id"])}
    routes = {(m, r.path.replace(":str}", "}")) for r in client.app.routes
              if r.path.startswith("/api/v1/cdp/destinations") for m in r.methods if m not in ("HEAD", "OPTIONS")}
    assert routes == walked
    with db.transaction():
        read_key = create_tenant_key(db, uuid.UUID(tenant.id), "read").key
        operator_key = create_operator(db, "ops").key
    other = new_tenant()
    for method, path, body in _routes(d["id"]):
        assert client.request(method, path, json=body).status_code == 401
        assert client.request(method, path, json=body, headers=auth(operator_key)).status_code == 403
        r = client.request(method, path, json=body, headers=auth(read_key))
        assert r.status_code == (403 if method != "GET" else 200), (method, path, r.text)
        r = client.request(method, path, json=body, headers=auth(other.api_key))
        if d["id"] in path:
            assert r.status_code == 404, (method, path, r.text)
        assert d["url"] not in r.text
    assert client.get(f"/api/v1/cdp/destinations/{d['id']}", headers=auth(tenant.api_key)).json()["name"] == "crm"


def test_migrate_seals_secrets_stored_in_plain_text_once_a_key_is_set(settings, redis_conn, db, tenant):
    """Secrets stored while no key was set are rewritten by ``stratum migrate`` when one is."""
    import subprocess
    import sys

    from test_reliability_support import ROOT, worker_env

    from read_api.app import create_app

    with TestClient(app=create_app(settings.replace(secret_key=None))) as c:
        d = _create(c, tenant.api_key, name="plain")
    stored = db.execute("SELECT secret FROM destinations WHERE id = %s", (d["id"],)).fetchone()[0]
    assert stored == "plain:" + d["secret"]
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "migrate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=worker_env(settings, STRATUM_SECRET_KEY=SECRET_KEY))
    assert out.returncode == 0, out.stderr
    assert "resealed 0 identity and 1 webhook secrets" in out.stdout
    stored = db.execute("SELECT secret FROM destinations WHERE id = %s", (d["id"],)).fetchone()[0]
    assert stored.startswith("aesgcm:v1:")
    assert decrypt_secret(SECRET_KEY, stored, destination_secret_context(d["id"])) == d["secret"]
