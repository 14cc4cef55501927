"""Streamed exports of a tenant's profiles or events, as JSON lines or CSV.

Rows come from a server-side (named) cursor, ``FETCH_ROWS`` at a time, and are written out
as they arrive, so memory stays constant whatever the tenant's size. The same query and
rendering serve ``GET /api/v1/cdp/export/{profiles,events}`` and ``stratum export``.

- profiles: live profiles only (merged-away ones are part of their survivor), one PROFILE
  per line, in no particular order; ``from``/``to`` filter on the last change
  (``profiles.updated_at``), so ``from=<last export>`` gives an incremental export.
- events: one event (with its ``profile_id``) per line, oldest first; ``from``/``to``
  filter on ``event_time`` (partition pruning).
- CSV: a header row, then the same fields as JSON lines, one column per top-level field;
  nested values (traits, identifiers, properties...) are JSON text, null is empty. Text
  cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
  tab or carriage return) get a leading ``'`` (OWASP CSV injection); numbers are left as
  they are. Event names and traits come from browsers holding public write keys, so
  ``=HYPERLINK(...)`` must never reach a spreadsheet as a live formula.
- HTTP exports take a per-tenant slot first (``read_api.export_slots``): the limit holds
  across processes and concurrent requests, and one tenant never blocks another.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Annotated, Any

import msgspec
import psycopg
from litestar import Request, get
from litestar.background_tasks import BackgroundTask
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from read_api.auth import principal_of, tenant_key
from read_api.errors import BadRequest, TooManyRequests
from read_api.events import EVENT_COLUMNS, event_from_row
from read_api.export_slots import ExportSlot
from read_api.openapi import errors_for
from read_api.profiles import PROFILE_COLUMNS, PROFILE_JOINS, profile_from_row
from read_api.schemas import Event, Profile
from read_api.state import ReadState
from stratum.settings import libpq_url

FORMATS = ("jsonl", "csv")
KINDS = ("profiles", "events")
FETCH_ROWS = 2000
# A CSV cell starting with one of these is a formula to Excel, LibreOffice and Sheets.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}  # Litestar adds charset=utf-8 to text/*


class ExportedEvent(Event):
    profile_id: str | None


@dataclass(frozen=True)
class ExportQuery:
    kind: str
    sql: str
    count_sql: str
    params: tuple[Any, ...]
    columns: tuple[str, ...]
    to_struct: Callable[[tuple[Any, ...]], msgspec.Struct]


def _exported_event(row: tuple[Any, ...]) -> ExportedEvent:
    event = event_from_row(row[1:])
    return ExportedEvent(**msgspec.structs.asdict(event), profile_id=row[0])


def export_query(kind: str, tenant_id: str, start: datetime | None = None, end: datetime | None = None) -> ExportQuery:
    """The query and row mapping of an export; ``start`` inclusive, ``end`` exclusive."""
    if kind not in KINDS:
        raise BadRequest(f"export profiles or events, not {kind!r}", code="invalid_export")
    column = "p.updated_at" if kind == "profiles" else "e.event_time"
    where, params = ["tenant_id = %s"], [tenant_id]
    if start is not None:
        where.append(f"{column} >= %s")
        params.append(start)
    if end is not None:
        where.append(f"{column} < %s")
        params.append(end)
    if kind == "profiles":
        cond = " AND ".join(["p." + where[0], "p.merged_into IS NULL", *where[1:]])
        return ExportQuery(
            kind, f"SELECT false, {PROFILE_COLUMNS} FROM profiles p {PROFILE_JOINS} WHERE {cond}",
            f"SELECT count(*) FROM profiles p WHERE {cond}", tuple(params), Profile.__struct_fields__,
            lambda row: profile_from_row(row).profile,
        )
    cond = " AND ".join(["e." + where[0], *where[1:]])
    return ExportQuery(
        kind, f"SELECT e.profile_id::text, {EVENT_COLUMNS} FROM events e WHERE {cond} ORDER BY e.event_time, e.event_id",
        f"SELECT count(*) FROM events e WHERE {cond}", tuple(params), ExportedEvent.__struct_fields__,
        _exported_event,
    )


_json = msgspec.json.Encoder()


def _csv_cell(value: Any) -> str:
    """One CSV cell: null empty, nested values and booleans as JSON text, numbers as they are,
    text neutralized against formula injection."""
    if value is None:
        return ""
    if isinstance(value, dict | list | bool):
        return _json.encode(value).decode()
    if isinstance(value, int | float):
        return str(value)
    return neutralize_formula(str(value))


def neutralize_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula (OWASP)."""
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def render_header(fmt: str, query: ExportQuery) -> bytes:
    if fmt != "csv":
        return b""
    buf = io.StringIO()
    csv.writer(buf).writerow(query.columns)
    return buf.getvalue().encode()


def render_rows(fmt: str, query: ExportQuery, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """Rows as lines of the format: JSON lines, or CSV rows in ``query.columns`` order."""
    if fmt == "jsonl":
        return b"".join(_json.encode(query.to_struct(r)) + b"\n" for r in rows)
    buf = io.StringIO()
    writer = csv.writer(buf)
    for r in rows:
        record = msgspec.to_builtins(query.to_struct(r))
        writer.writerow([_csv_cell(record[c]) for c in query.columns])
    return buf.getvalue().encode()


def export_to_file(conn: psycopg.Connection, query: ExportQuery, fmt: str, out: IO[bytes],
                   on_progress: Callable[[int], None] = lambda n: None) -> int:
    """Write a whole export to ``out`` (synchronous; the CLI). Returns the rows written."""
    written = 0
    with conn.transaction(), conn.cursor(name="stratum_export") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query.sql, query.params)
        out.write(render_header(fmt, query))
        while rows := cur.fetchmany(FETCH_ROWS):
            out.write(render_rows(fmt, query, rows))
            written += len(rows)
            on_progress(written)
    return written


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 date or datetime from the query string; naive values are UTC."""
    if value is None or value == "":
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or datetime, e.g. 2025-01-31T00:00:00Z",
                         code="invalid_time") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class _ExportStream:
    """The body of one streamed export: owns its connection and its tenant slot and gives
    both back exactly once, whether the stream ends, fails, or the client goes away
    (``close`` also runs as the response's background task)."""

    def __init__(self, st: ReadState, slot: ExportSlot, conn: psycopg.AsyncConnection, query: ExportQuery,
                 fmt: str) -> None:
        self._st, self._slot, self._conn, self._query, self._fmt = st, slot, conn, query, fmt
        self._closed = False
        st.exports_running += 1
        slot.keep_alive_while(self)

    async def rows(self) -> AsyncIterator[bytes]:
        try:
            cur = self._conn.cursor(name="stratum_export")
            cur.itersize = FETCH_ROWS
            await cur.execute(self._query.sql, self._query.params)
            yield render_header(self._fmt, self._query)
            while rows := await cur.fetchmany(FETCH_ROWS):
                yield render_rows(self._fmt, self._query, rows)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._st.exports_running -= 1
        try:
            await self._conn.close()
        finally:
            await self._slot.release()


async def _open_export_connection(st: ReadState) -> psycopg.AsyncConnection:
    # Its own connection, not one of the pool's: an export may stream for minutes.
    conn = await psycopg.AsyncConnection.connect(libpq_url(st.settings.database_url))
    try:
        await conn.set_read_only(True)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _stream_export(request: Request, kind: str, fmt: str | None, start: str | None, end: str | None) -> Stream:
    st: ReadState = request.app.state.read
    fmt = fmt or "jsonl"
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", code="invalid_format")
    tenant_id = principal_of(request).tenant_id
    query = export_query(kind, tenant_id, parse_time("from", start), parse_time("to", end))
    # The slot is taken before the connection is opened: excess requests never touch Postgres.
    slot = await st.export_slots.try_acquire(tenant_id)
    if slot is None:
        raise TooManyRequests(f"this tenant already runs {st.export_slots.limit} exports; retry when one has "
                              "finished", code="too_many_exports", retry_after_s=30)
    try:
        conn = await _open_export_connection(st)
    except BaseException:
        await slot.release()
        raise
    body = _ExportStream(st, slot, conn, query, fmt)
    return Stream(body.rows(), media_type=_MEDIA_TYPES[fmt], background=BackgroundTask(body.close),
                  headers={"Content-Disposition": f'attachment; filename="{kind}.{fmt}"'})


_From = Annotated[str | None, QueryParameter(name="from", description="start, inclusive (ISO 8601)")]
_STREAM_SPEC = ResponseSpec(data_container=str, media_type="application/x-ndjson", generate_examples=False,
                            description="One JSON object per line (format=jsonl), or text/csv with a header row")
_DESCRIPTION = ("Streamed; `format` jsonl (default) or csv (header row, nested fields as JSON text); "
                "`from` (inclusive) and `to` (exclusive) are ISO 8601, naive means UTC.")


@get("/api/v1/cdp/export/profiles", guards=[tenant_key], summary="Export live profiles (streamed)",
     description=_DESCRIPTION + " Profiles filter on their last change (`updated_at`).",
     responses={200: _STREAM_SPEC, **errors_for(400, 401, 403, 429, 503)})
async def export_profiles(request: Request, format: FromQuery[str | None] = None,  # noqa: A002 - the API's name
                          from_: _From = None, to: FromQuery[str | None] = None) -> Stream:
    return await _stream_export(request, "profiles", format, from_, to)


@get("/api/v1/cdp/export/events", guards=[tenant_key], summary="Export events (streamed)",
     description=_DESCRIPTION + " Events filter on `event_time` and come oldest first.",
     responses={200: _STREAM_SPEC, **errors_for(400, 401, 403, 429, 503)})
async def export_events(request: Request, format: FromQuery[str | None] = None,  # noqa: A002 - the API's name
                        from_: _From = None, to: FromQuery[str | None] = None) -> Stream:
    return await _stream_export(request, "events", format, from_, to)
