"""Passing many rows to one SQL statement as a single JSON parameter.

``json_to_recordset(%s::json) AS u(col type, ...)`` takes the rows as one text value that
msgspec encodes at C speed; psycopg's Python-level array dumpers (one ``unnest`` array per
column) were the largest single cost of the worker's hot path.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(decimal_format="number")


def json_rows(rows: list[dict[str, Any]]) -> str:
    return _encoder.encode(rows).decode()


def json_value(value: Any) -> str:
    return _encoder.encode(value).decode()
