"""Passing many rows to one SQL statement as a single JSON parameter (or, for the hottest
statements, as array literals of plain tokens).

``json_to_recordset(%s::json) AS u(col type, ...)`` takes the rows as one text value that
msgspec encodes at C speed; psycopg's Python-level array dumpers (one ``unnest`` array per
column) were the largest single cost of the worker's hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(decimal_format="number")


def json_rows(rows: list[dict[str, Any]]) -> str:
    return _encoder.encode(rows).decode()


def array_literal(values: Iterable[str]) -> str:
    """A Postgres array literal (``'{a,b}'``, cast in SQL: ``%s::text[]``, ``%s::uuid[]``...)
    of values that need no quoting: hex digests, uuids, ISO times, identifier type names
    (no comma, brace, quote, backslash, whitespace; never empty or ``NULL``). Postgres
    parses it in C, without the per-row field lookup of ``json_to_recordset``."""
    return "{" + ",".join(values) + "}"


def json_value(value: Any) -> str:
    return _encoder.encode(value).decode()
