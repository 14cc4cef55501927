"""The read API's OpenAPI document and docs/API.md stay complete: every route has a
summary and typed responses, and is documented with its error codes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "API.md").read_text()
TENANT_API = "/api/v1/cdp"
SERVICE_PATHS = {"/health", "/ready", "/metrics"}
# The modules behind the tenant API (/api/v1/cdp), whose error codes the docs must list.
TENANT_API_MODULES = ("auth", "errors", "profiles", "events", "graph", "consents", "erasure", "sources", "exports",
                      "stats", "profile_locks", "segments", "computed_traits", "anomalies", "identity", "identity_dry_run",
                      "unmerge")


def _openapi(read_client) -> dict:
    r = read_client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_every_route_has_a_summary_and_typed_responses(read_client):
    spec = _openapi(read_client)
    api_ops = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            if not path.startswith(TENANT_API):
                continue
            api_ops += 1
            ok = op["responses"].get("200") or op["responses"].get("201") or op["responses"].get("202")
            assert ok and ok.get("content"), (method, path)
            schema = next(iter(ok["content"].values()))["schema"]
            assert schema.get("$ref") or schema.get("type") == "string", (method, path, schema)
            for status in ("401", "403"):
                error = op["responses"][status]["content"]["application/json"]["schema"]
                assert error["$ref"].endswith("/ErrorBody"), (method, path)
    assert api_ops == 34 + 9 + 1  # + destinations and their deliveries (CONTRACT 7), unmerge (CONTRACT 9)


def test_docs_list_every_route(read_client):
    read_section = DOC.split("## Read API", 1)[1]
    for path, ops in _openapi(read_client)["paths"].items():
        if not path.startswith(TENANT_API) and path not in SERVICE_PATHS:
            continue  # /api/v1/ops (operator endpoints) is documented with the ops pages
        documented = re.sub(r"\{\w+_id\}", "{id}", path)
        for method in ops:
            assert documented in read_section, (method, path)
            if path.startswith(TENANT_API):
                assert re.search(rf"(`|-X ){method.upper()}[ `]", read_section) or method == "get", (method, path)


def test_docs_list_every_error_status_and_code():
    assert DOC.index("## Ingest API") < DOC.index("## Read API")
    table = DOC.split("### Errors", 1)[1].split("### Objects", 1)[0]
    for status in (400, 401, 403, 404, 409, 422, 429, 503):
        assert f"| {status} |" in table, status
    raised = set()
    for module in TENANT_API_MODULES:
        raised |= set(re.findall(r'code="([a-z_]+)"', (ROOT / "read_api" / f"{module}.py").read_text()))
    raised -= {"invalid_export"}  # unreachable over HTTP: the route names the kind
    admin = (ROOT / "stratum" / "admin.py").read_text()
    raised |= set(re.findall(r'code="(invalid_[a-z_]+)"', admin)) - {"invalid_role"}
    missing = sorted(code for code in raised if f"`{code}`" not in table)
    assert not missing, missing
