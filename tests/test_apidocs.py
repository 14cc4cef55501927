"""``/schema`` on both APIs works offline (CONTRACT 10): the Swagger UI page loads nothing
from other hosts, its assets are served by the process, and a Content-Security-Policy that
allows only this origin comes with every ``/schema`` answer."""

from __future__ import annotations

import re

import pytest

from stratum.apidocs import DOCS_CSP


@pytest.fixture(params=["ingest", "read"])
def client(request, ingest_client, read_client):
    return ingest_client if request.param == "ingest" else read_client


def _references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_the_swagger_page_references_only_this_origin(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    refs = _references(r.text)
    assert refs, r.text
    assert all(ref.startswith("/schema/") for ref in refs), refs
    assert "://" not in r.text  # no absolute URL at all: no CDN, no validator, no favicon host
    assert "<script>" not in r.text  # no inline script: the CSP forbids it


def test_the_page_carries_a_strict_content_security_policy(client):
    csp = client.get("/schema").headers["content-security-policy"]
    assert csp == DOCS_CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert client.get("/schema/openapi.json").headers["content-security-policy"] == DOCS_CSP


def test_every_referenced_asset_is_served(client):
    for ref in _references(client.get("/schema").text):
        r = client.get(ref)
        assert r.status_code == 200 and r.content, ref
        assert r.headers["content-security-policy"] == DOCS_CSP
    assert "SwaggerUIBundle" in client.get("/schema/assets/swagger-ui-bundle.js").text
    init = client.get("/schema/assets/swagger-init.js").text
    assert '"/schema/openapi.json"' in init and "validatorUrl: null" in init
    assert client.get("/schema/openapi.json").json()["paths"]


@pytest.mark.parametrize("name", ["index.html", "swagger-ui.js.map", "..%2f..%2fpyproject.toml", "%00", "x" * 5000])
def test_other_asset_names_are_404_with_the_error_body(client, name):
    r = client.get(f"/schema/assets/{name}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_no_oauth_redirect_page_with_an_inline_script(client):
    assert client.get("/schema/oauth2-redirect.html").status_code == 404
