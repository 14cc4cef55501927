"""Generates ``stratum_client/models.py`` (TypedDicts) from the read API's OpenAPI
document, so the client's models are the server's, field for field.

    python -m stratum_client._codegen > stratum_client/models.py

``render_models`` is pure (an OpenAPI dict in, Python source out); only the command above
imports the server to obtain the document. tests/test_client.py regenerates and compares.
"""

from __future__ import annotations

import keyword

_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}

_HEADER = '''"""Response models of the Stratum read API, generated from its OpenAPI document by
``python -m stratum_client._codegen``; do not edit by hand (tests/test_client.py fails on drift)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict  # noqa: F401 - not every name is used each time
'''


def python_type(schema: dict) -> str:
    """The annotation for one JSON Schema node of the document."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            parts = []
            for sub in schema[key]:
                t = python_type(sub)
                if t not in parts:
                    parts.append(t)
            return " | ".join(parts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(python_type({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"list[{python_type(schema.get('items', {}))}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"dict[str, {python_type(extra) if isinstance(extra, dict) else 'Any'}]"
    return _SCALARS.get(kind, "Any")


def render_models(openapi: dict) -> str:
    """One TypedDict per object schema of ``components.schemas``, in name order; fields the
    document does not require are ``NotRequired``."""
    out = [_HEADER]
    schemas = openapi.get("components", {}).get("schemas", {})
    for name in sorted(schemas):
        schema = schemas[name]
        props = schema.get("properties")
        if schema.get("type") != "object" or props is None:
            continue
        required = set(schema.get("required", ()))
        fields = {f: (python_type(sub) if f in required else f"NotRequired[{python_type(sub)}]")
                  for f, sub in props.items()}
        if all(f.isidentifier() and not keyword.iskeyword(f) for f in fields):
            body = "\n".join(f"    {f}: {t}" for f, t in fields.items()) or "    pass"
            out.append(f"\n\nclass {name}(TypedDict):\n{body}")
        else:  # a field such as "from" needs the functional form (annotations as strings)
            body = "".join(f"    {f!r}: {t!r},\n" for f, t in fields.items())
            out.append(f"\n\n{name} = TypedDict({name!r}, {{\n{body}}})")
    return "".join(out) + "\n"


def read_api_openapi() -> dict:
    """The read API's OpenAPI document, from the application itself (no server needed)."""
    from read_api.app import create_app
    from stratum.settings import Settings

    return create_app(Settings()).openapi_schema.to_schema()


if __name__ == "__main__":
    print(render_models(read_api_openapi()), end="")
