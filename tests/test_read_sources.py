"""Sources through the read API, checked against the real ingest API: new keys work,
rotated keys stop, disabled sources are refused, allowed origins are enforced."""

from __future__ import annotations

import time

import pytest
from test_read_support import auth, event

SOURCE_KEYS = {"id", "name", "type", "active", "phone_region", "rate_limit", "allowed_origins",
               "identity_verification", "created_at"}


def _ingest_status(ingest_client, write_key: str, headers: dict | None = None) -> int:
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [event("Ping", ("anonymous_id", "src-anon"))]},
                           headers={**auth(write_key), **(headers or {})})
    return r.status_code


def _eventually(check, timeout_s: float = 1.6) -> None:
    """Ingest caches write keys for one second: wait up to a little more than that."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not effective within the ingest key cache time"
        time.sleep(0.05)


def test_list_create_and_use_a_source(read_client, ingest_client, tenant):
    r = read_client.get("/api/v1/cdp/sources", headers=auth(tenant.api_key))
    assert r.status_code == 200
    (existing,) = r.json()["sources"]
    assert set(existing) == SOURCE_KEYS and existing["id"] == tenant.source_id

    r = read_client.post("/api/v1/cdp/sources", headers=auth(tenant.api_key), json={
        "name": " Backend ", "type": "server", "phone_region": "gb", "rate_limit": 500,
        "allowed_origins": ["https://shop.example.com/"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == SOURCE_KEYS | {"write_key"}
    assert created["name"] == "Backend" and created["type"] == "server" and created["phone_region"] == "GB"
    assert created["rate_limit"] == 500 and created["allowed_origins"] == ["https://shop.example.com"]
    assert created["active"] is True and created["write_key"].startswith("wk_")
    assert created["identity_verification"] == "off"  # server-side sources are trusted: no identity secret

    listed = read_client.get("/api/v1/cdp/sources", headers=auth(tenant.api_key)).json()["sources"]
    assert [s["id"] for s in listed] == [tenant.source_id, created["id"]]
    assert all("write_key" not in s for s in listed)
    assert _ingest_status(ingest_client, created["write_key"]) == 202

    defaults = read_client.post("/api/v1/cdp/sources", headers=auth(tenant.api_key), json={"name": "site"}).json()
    assert (defaults["type"], defaults["phone_region"], defaults["rate_limit"], defaults["allowed_origins"]) == (
        "website", None, None, [])
    # A website source also gets its identity secret, shown this once, and protects identity by default.
    assert set(defaults) == SOURCE_KEYS | {"write_key", "identity_secret"}
    assert defaults["identity_verification"] == "protect" and defaults["identity_secret"].startswith("ids_")
    listed = read_client.get("/api/v1/cdp/sources", headers=auth(tenant.api_key)).json()["sources"]
    assert all("identity_secret" not in s for s in listed)


@pytest.mark.parametrize(("body", "code"), [
    ({"name": " "}, "invalid_name"),
    ({"name": "x", "type": "ftp"}, "invalid_source_type"),
    ({"name": "x", "phone_region": "ZZ"}, "invalid_phone_region"),
    ({"name": "x", "rate_limit": 0}, "invalid_rate_limit"),
    ({"name": "x", "allowed_origins": ["shop.example.com"]}, "invalid_allowed_origins"),
    ({"name": "x", "allowed_origins": ["https://shop.example.com/path"]}, "invalid_allowed_origins"),
    ({"name": "x", "write_key": "mine"}, "invalid_parameter"),
    ({}, "invalid_parameter"),
])
def test_bad_source_bodies_are_400(read_client, tenant, body, code):
    r = read_client.post("/api/v1/cdp/sources", headers=auth(tenant.api_key), json=body)
    assert r.status_code == 400 and r.json()["code"] == code, r.text


def test_patch_changes_only_what_is_sent(read_client, ingest_client, tenant):
    path = f"/api/v1/cdp/sources/{tenant.source_id}"
    r = read_client.patch(path, headers=auth(tenant.api_key), json={"name": "Web shop", "rate_limit": 100,
                                                                     "allowed_origins": ["https://a.example"]})
    assert r.status_code == 200, r.text
    src = r.json()
    assert (src["name"], src["rate_limit"], src["phone_region"], src["allowed_origins"]) == (
        "Web shop", 100, "US", ["https://a.example"])
    _eventually(lambda: _ingest_status(ingest_client, tenant.write_key, {"Origin": "https://b.example"}) == 403)
    assert _ingest_status(ingest_client, tenant.write_key, {"Origin": "https://a.example"}) == 202

    src = read_client.patch(path, headers=auth(tenant.api_key), json={"phone_region": None, "rate_limit": None}).json()
    assert (src["name"], src["phone_region"], src["rate_limit"]) == ("Web shop", None, None)

    src = read_client.patch(path, headers=auth(tenant.api_key), json={"active": False}).json()
    assert src["active"] is False
    _eventually(lambda: _ingest_status(ingest_client, tenant.write_key) == 403)
    read_client.patch(path, headers=auth(tenant.api_key), json={"active": True})
    _eventually(lambda: _ingest_status(ingest_client, tenant.write_key) == 202)

    assert read_client.patch(path, headers=auth(tenant.api_key), json={}).json()["name"] == "Web shop"
    bad = read_client.patch(path, headers=auth(tenant.api_key), json={"type": "website"})
    assert bad.status_code == 400 and bad.json()["code"] == "immutable_field"
    bad = read_client.patch(path, headers=auth(tenant.api_key), json={"name": ""})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_name"


def test_rotate_key_stops_the_old_key(read_client, ingest_client, tenant):
    assert _ingest_status(ingest_client, tenant.write_key) == 202
    r = read_client.post(f"/api/v1/cdp/sources/{tenant.source_id}/rotate-key", headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["id"] == tenant.source_id and rotated["write_key"] != tenant.write_key
    assert _ingest_status(ingest_client, rotated["write_key"]) == 202
    _eventually(lambda: _ingest_status(ingest_client, tenant.write_key) == 401)


def test_unknown_sources_are_404(read_client, tenant):
    for sid in ("nope", "00000000-0000-0000-0000-000000000000"):
        assert read_client.patch(f"/api/v1/cdp/sources/{sid}", headers=auth(tenant.api_key),
                                 json={"name": "x"}).status_code == 404
        assert read_client.post(f"/api/v1/cdp/sources/{sid}/rotate-key",
                                headers=auth(tenant.api_key)).status_code == 404
