"""Generates ``clients/typescript/stratum.ts``: TypeScript types of the Stratum ingest and
read APIs for front ends, from the APIs' own OpenAPI documents (no npm needed).

    python clients/typescript/codegen.py > clients/typescript/stratum.ts

The read API's document is used as it is: one type per ``components.schemas`` entry and a
``ReadApiPaths`` table of every route (path and query parameters, JSON body, responses).
The ingest API reads its bodies itself (to answer every bad byte with a clear 400), so
its document lists the routes without bodies; the bodies of the native and Segment routes
are filled in from the msgspec types the ingest API decodes with (the same schemas as
docs/EVENT_SPEC.md). tests/test_typescript_types.py regenerates the file and fails on drift.

``render_typescript`` is pure (two OpenAPI dicts in, TypeScript source out).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADER = """\
// TypeScript types of the Stratum CDP ingest and read APIs, generated from their OpenAPI
// documents by `python clients/typescript/codegen.py > clients/typescript/stratum.ts`.
// Do not edit by hand: tests/test_typescript_types.py fails when this file and the APIs disagree.
// Types only (nothing at run time): import them with `import type { ... } from "./stratum"`.
"""

_SCALARS = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean",
            "null": "null"}
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_METHODS = ("get", "put", "post", "patch", "delete")


def _key(name: str) -> str:
    return name if _IDENT.match(name) else json.dumps(name)


def _union(parts: list[str]) -> str:
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return " | ".join(seen) if seen else "never"


def ts_type(schema: dict, indent: str = "") -> str:
    """The TypeScript type of one JSON Schema node (``$ref`` names the referenced schema)."""
    if not schema:
        return "unknown"
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return _union([json.dumps(v) for v in schema["enum"]])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return _union([ts_type(sub, indent) for sub in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([ts_type({**schema, "type": k}, indent) for k in kind])
    if kind == "array":
        item = ts_type(schema.get("items", {}), indent)
        return f"({item})[]" if " | " in item else f"{item}[]"
    if kind == "object" or "properties" in schema:
        return _object(schema, indent)
    return _SCALARS.get(kind, "unknown")


def _object(schema: dict, indent: str) -> str:
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if not props:
        if isinstance(extra, dict) and extra:
            return f"Record<string, {ts_type(extra, indent)}>"
        return "Record<string, unknown>"
    required = set(schema.get("required", ()))
    inner = indent + "  "
    lines = [f"{inner}{_key(f)}{'' if f in required else '?'}: {ts_type(sub, inner)};"
             for f, sub in props.items()]
    if extra not in (None, False):
        lines.append(f"{inner}[key: string]: unknown;")
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


def _declaration(name: str, schema: dict) -> str:
    body = ts_type(schema)
    doc = schema.get("description")
    comment = f"/** {' '.join(doc.split())} */\n" if doc else ""
    if body.startswith("{"):
        return f"{comment}export interface {name} {body}"
    return f"{comment}export type {name} = {body};"


def _json_schema(content: dict) -> dict | None:
    for media, spec in content.items():
        if "json" in media:
            return spec.get("schema", {})
    return None


def _operation(op: dict, indent: str) -> str:
    """``{ path; query; body; responses }`` of one operation, as a TypeScript object type."""
    inner = indent + "  "
    lines = []
    for where in ("path", "query"):
        params = [p for p in op.get("parameters", ()) if p.get("in") == where]
        if params:
            fields = {p["name"]: p.get("schema", {}) for p in params}
            schema = {"type": "object", "properties": fields,
                      "required": [p["name"] for p in params if p.get("required")]}
            lines.append(f"{inner}{where}: {ts_type(schema, inner)};")
    body = op.get("requestBody")
    if body and (schema := _json_schema(body.get("content", {}))) is not None:
        lines.append(f"{inner}body{'' if body.get('required') else '?'}: {ts_type(schema, inner)};")
    responses = []
    for code, resp in sorted(op.get("responses", {}).items()):
        schema = _json_schema(resp.get("content", {}))
        responses.append(f"{inner}  {code}: {ts_type(schema, inner + '  ') if schema is not None else 'unknown'};")
    lines.append(f"{inner}responses: {{\n" + "\n".join(responses) + f"\n{inner}}};")
    return "{\n" + "\n".join(lines) + f"\n{indent}}}"


def _paths(name: str, openapi: dict) -> str:
    out = [f"/** Every route of the {name}: parameters, JSON body and responses by status code. */",
           f"export interface {name.title().replace(' ', '')}Paths {{"]
    for path in sorted(openapi.get("paths", {})):
        ops = openapi["paths"][path]
        out.append(f"  {json.dumps(path)}: {{")
        out.extend(f"    {m}: {_operation(ops[m], '    ')};" for m in _METHODS if m in ops)
        out.append("  };")
    out.append("}")
    return "\n".join(out)


def render_typescript(ingest_openapi: dict, read_openapi: dict) -> str:
    """The whole of clients/typescript/stratum.ts. Raises ValueError when the two documents
    give one schema name different definitions (the file has one flat namespace)."""
    schemas: dict[str, dict] = {}
    for doc in (read_openapi, ingest_openapi):
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(f"schema {name!r} differs between the ingest and read APIs")
            schemas[name] = schema
    parts = [HEADER.rstrip("\n")]
    parts.extend(_declaration(name, schemas[name]) for name in sorted(schemas))
    parts.append(_paths("ingest API", ingest_openapi))
    parts.append(_paths("read API", read_openapi))
    return "\n\n".join(parts) + "\n"


# Ingest routes whose JSON bodies the document lacks, and the msgspec type each decodes with.
_SEGMENT_SINGLE = ("/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias")


def ingest_api_openapi() -> dict:
    """The ingest API's OpenAPI document, with the native and Segment request bodies filled
    in from the msgspec types it decodes with (stratum/event_spec.py)."""
    import msgspec

    from ingest_api.app import create_app
    from stratum.event_spec import NativeBatch, SegmentBatch, SegmentSingle
    from stratum.settings import Settings

    doc = create_app(Settings()).openapi_schema.to_schema()
    (native, batch, single), components = msgspec.json.schema_components(
        [NativeBatch, SegmentBatch, SegmentSingle], ref_template="#/components/schemas/{name}")
    doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
    bodies = {"/api/v1/cdp/events": native, "/v1/batch": batch, "/v1/import": batch, "/v1/b": batch}
    bodies.update(dict.fromkeys(_SEGMENT_SINGLE, single))
    for path, schema in bodies.items():
        doc["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": schema}}}
    return doc


def read_api_openapi() -> dict:
    """The read API's OpenAPI document, from the application itself (no server needed)."""
    from read_api.app import create_app
    from stratum.settings import Settings

    return create_app(Settings()).openapi_schema.to_schema()


OUTPUT = Path(__file__).with_name("stratum.ts")

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
    print(render_typescript(ingest_api_openapi(), read_api_openapi()), end="")
