"""``GET /`` on both APIs links to the pages, ``/schema`` and ``/health``, and every link works."""

from __future__ import annotations

import re

import pytest


def _links(client) -> list[str]:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    hrefs = re.findall(r'href="([^"]+)"', r.text)
    as_json = client.get("/", headers={"Accept": "application/json"})
    assert as_json.status_code == 200
    assert [link["href"] for link in as_json.json()["links"]] == hrefs
    return hrefs


@pytest.mark.parametrize("client_fixture", ["ingest_client", "read_client"])
def test_root_links_to_schema_and_health_and_each_link_answers(request, client_fixture):
    client = request.getfixturevalue(client_fixture)
    hrefs = _links(client)
    assert {"/schema", "/health"} <= set(hrefs)
    for href in hrefs:
        assert client.get(href).status_code == 200, href


def test_read_root_links_to_the_pages(read_client):
    assert {"/profiles", "/segments", "/ops", "/cdp-calculator"} <= set(_links(read_client))
