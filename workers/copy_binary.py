"""Rows in COPY's binary format, for the two bulk inserts of every event (``events``,
``event_keys``).

A binary row is a field count, then each field as its length and its bytes in the type's
wire format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format"). The
server then parses no text for uuids and timestamps and splits no tab-separated line:
the 39,207 ``events`` rows of the bench traffic cost its backend 16.1 instead of 24.4 us of
CPU per row with the table's indexes (medians of 8 alternating runs of 5,000-row COPYs,
docs/PERFORMANCE.md, eighth round). ``jsonb`` travels as a version byte and the JSON text,
which the server parses and checks exactly as it does in text format.

Fields are built directly, as the text rows are (workers/copy_rows.py): psycopg's per-row
formatter would need Python ``UUID`` objects and typed wrappers for every value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast
from uuid import UUID

import msgspec
import psycopg
from psycopg.adapt import PyFormat

_encode = msgspec.json.Encoder().encode
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no extension
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"
length = struct.Struct("!i").pack
#: a uuid field: its length (16) then ``uuid_bytes`` (pack with 16)
UUID_FIELD = struct.Struct("!i16s")
SMALLINT_FIELD = struct.Struct("!ih")


def uuid_bytes(value: str) -> bytes:
    """The 16 bytes of a uuid written as text (canonical, or any form Postgres reads)."""
    try:
        raw = bytes.fromhex(value.replace("-", ""))
    except ValueError:
        raw = b""
    return raw if len(raw) == 16 else UUID(value).bytes


def uuid_field(value: str | None) -> bytes:
    return NULL if value is None else UUID_FIELD.pack(16, uuid_bytes(value))


# psycopg's own (compiled) binary dumper: 1.6k instructions a time, against 3.7k for the
# arithmetic in Python ((value - 2000-01-01) // 1 us)
# (typed for what it returns for a datetime, never None)
_dump_timestamptz = cast(Callable[[datetime], bytes],
                         psycopg.adapters.get_dumper(datetime, PyFormat.BINARY)(datetime).dump)


def timestamp_bytes(value: datetime) -> bytes:
    """A timestamptz's 8 bytes: microseconds since 2000-01-01 UTC, big-endian. The
    pipeline's times are aware (UTC); a naive one is read as UTC."""
    try:
        return _dump_timestamptz(value)
    except TypeError:  # naive
        return _dump_timestamptz(value.replace(tzinfo=UTC))


def jsonb_field(value: object) -> bytes:
    """``value`` as JSON, in jsonb's binary form (version 1, then the text)."""
    raw = _encode(value)
    return length(len(raw) + 1) + b"\x01" + raw


def copy_rows(conn: psycopg.Connection, table: str, columns: str, rows: list[bytes]) -> None:
    """COPY ``rows`` (each a binary row: its field count, then ``columns``' fields in order)
    into ``table``, in order."""
    if not rows:
        return
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(b"".join((SIGNATURE, *rows, TRAILER)))
