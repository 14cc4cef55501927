"""Inputs a hostile or careless client sends the read API: each is a 4xx with the error
body, never a 500, and nothing unstorable or unbounded reaches Postgres."""

from __future__ import annotations

import pytest
from test_read_support import auth, event, ingest_and_drain, profile_by

DEEP_LIST = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"name": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}"


def _assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["message"]


@pytest.fixture
def profile_id(ingest_client, read_client, tenant, drain) -> str:
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Seen", ("external_id", "bad-inputs-1")))
    return profile_by(read_client, tenant.api_key, "external_id", "bad-inputs-1").json()["id"]


@pytest.mark.parametrize("body", [DEEP_LIST, DEEP_OBJECT], ids=["list", "object"])
def test_json_nested_a_thousand_deep_is_400(read_client, tenant, profile_id, body):
    headers = {**auth(tenant.api_key), "Content-Type": "application/json"}
    _assert_error(read_client.post("/api/v1/cdp/sources", headers=headers, content=body), 400, "invalid_json")
    _assert_error(read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=headers, content=body),
                  400, "invalid_json")
    _assert_error(read_client.put(f"/api/v1/cdp/profiles/{profile_id}/consents", headers=headers, content=body),
                  400, "invalid_json")


@pytest.mark.parametrize(("name", "code"), [
    ("shop\x00web", "invalid_name"), ("line\nbreak", "invalid_name"), ("x" * 201, "name_too_long"), ("  ", "invalid_name"),
])
def test_source_names_that_cannot_be_stored_are_400(read_client, tenant, name, code):
    h = auth(tenant.api_key)
    _assert_error(read_client.post("/api/v1/cdp/sources", headers=h, json={"name": name}), 400, code)
    _assert_error(read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=h, json={"name": name}),
                  400, code)
    assert read_client.post("/api/v1/cdp/sources", headers=h, json={"name": "x" * 200}).status_code == 201


@pytest.mark.parametrize("origin", [
    "https://shop\x00.example.com", "http://[::1", "http://[zz]", "not a url", "https://a.example:99999",
    "https://a.example:abc", "https://exa mple.com", "https://" + "a" * 400 + ".com", "https://a.example/path",
    "https://user@a.example",
])
def test_origins_that_are_not_origins_are_400(read_client, tenant, origin):
    h = auth(tenant.api_key)
    r = read_client.post("/api/v1/cdp/sources", headers=h, json={"name": "web", "allowed_origins": [origin]})
    _assert_error(r, 400, "invalid_allowed_origins")
    r = read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=h, json={"allowed_origins": [origin]})
    _assert_error(r, 400, "invalid_allowed_origins")


def test_real_origins_are_still_accepted(read_client, tenant):
    origins = ["https://shop.example.com", "http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:5173",
               "https://my_shop.internal"]
    r = read_client.post("/api/v1/cdp/sources", headers=auth(tenant.api_key),
                         json={"name": "web", "allowed_origins": origins})
    assert r.status_code == 201, r.text
    assert r.json()["allowed_origins"] == origins


def test_an_oversized_user_agent_is_not_kept_with_the_consent_history(read_client, tenant, profile_id):
    url = f"/api/v1/cdp/profiles/{profile_id}/consents"
    r = read_client.put(url, headers={**auth(tenant.api_key), "User-Agent": "A" * 513}, json={"consents": {"email": True}})
    _assert_error(r, 400, "user_agent_too_long")
    r = read_client.put(url, headers={**auth(tenant.api_key), "User-Agent": "A" * 512}, json={"consents": {"email": True}})
    assert r.status_code == 200 and r.json()["history"][0]["user_agent"] == "A" * 512


@pytest.mark.parametrize("path", [
    "/pages/static/%00", "/pages/static/a%00.js", "/pages/static/" + "a" * 5000, "/pages/static/" + "a/" * 3000 + "x",
    "/pages/static/..%2f..%2fpyproject.toml", "/pages/static/missing.js",
])
def test_odd_static_paths_are_404_with_the_error_body(read_client, path):
    _assert_error(read_client.get(path), 404, "not_found")


def test_page_assets_are_still_served(read_client):
    r = read_client.get("/pages/static/common.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
