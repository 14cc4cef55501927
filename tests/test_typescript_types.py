"""clients/typescript/stratum.ts: regenerated from the APIs' OpenAPI documents, it must equal
the checked-in file (drift fails here), and it must say what the documents say."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ts_codegen", ROOT / "clients" / "typescript" / "codegen.py")
codegen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(codegen)


@pytest.fixture(scope="module")
def documents() -> tuple[dict, dict]:
    return codegen.ingest_api_openapi(), codegen.read_api_openapi()


def test_checked_in_types_are_current(documents):
    assert codegen.OUTPUT.read_text() == codegen.render_typescript(*documents), (
        "clients/typescript/stratum.ts is stale: run "
        "python clients/typescript/codegen.py > clients/typescript/stratum.ts")


def test_every_schema_and_route_is_typed(documents):
    ingest, read = documents
    text = codegen.render_typescript(ingest, read)
    for doc in documents:
        for name in doc["components"]["schemas"]:
            assert re.search(rf"^export (interface|type) {re.escape(name)}\b", text, re.M), name
    read_block = text[text.index("export interface ReadApiPaths"):]
    ingest_block = text[text.index("export interface IngestApiPaths"):text.index("export interface ReadApiPaths")]
    for path in read["paths"]:
        assert f'  "{path}": {{' in read_block, path
    for path in ingest["paths"]:
        assert f'  "{path}": {{' in ingest_block, path


def test_ingest_bodies_come_from_the_decoding_types(documents):
    ingest, _ = documents
    native = ingest["paths"]["/api/v1/cdp/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert native == {"$ref": "#/components/schemas/NativeBatch"}
    event = ingest["components"]["schemas"]["NativeEvent"]
    assert {"event_name", "event_time", "identifiers"} <= set(event["required"])
    text = codegen.render_typescript(*documents)
    assert re.search(r"export interface NativeEvent \{[^}]*\n  event_name: string;", text)
    assert re.search(r'"/v1/track": \{\n    post: \{\n      body: SegmentSingle;', text)


def test_profile_lookup_route_reads_as_the_document_says(documents):
    text = codegen.render_typescript(*documents)
    route = text[text.index('  "/api/v1/cdp/profiles": {'):]
    route = route[:route.index("\n  };")]
    assert "query: {\n        identifier_type?: string | null;" in route
    assert "200: Profile;" in route and "401: ErrorBody;" in route


@pytest.mark.parametrize(("schema", "expected"), [
    ({}, "unknown"),
    ({"type": "integer"}, "number"),
    ({"oneOf": [{"type": "string"}, {"type": "null"}]}, "string | null"),
    ({"type": ["string", "null"]}, "string | null"),
    ({"enum": ["a", 1, None]}, '"a" | 1 | null'),
    ({"type": "array", "items": {"oneOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]}}, "(X | null)[]"),
    ({"type": "object", "additionalProperties": {"type": "boolean"}}, "Record<string, boolean>"),
    ({"type": "object"}, "Record<string, unknown>"),
    ({"type": "object", "properties": {"from": {"type": "string"}, "a-b": {"type": "number"}}, "required": ["from"]},
     '{\n  from: string;\n  "a-b"?: number;\n}'),
])
def test_json_schema_to_typescript(schema, expected):
    assert codegen.ts_type(schema) == expected


def test_one_name_two_definitions_is_refused():
    a = {"components": {"schemas": {"X": {"type": "string"}}}, "paths": {}}
    b = {"components": {"schemas": {"X": {"type": "integer"}}}, "paths": {}}
    with pytest.raises(ValueError, match="'X' differs"):
        codegen.render_typescript(a, b)
