"""A profile's events (newest first, keyset pagination) and the status of one event.

Pagination is by keyset, never OFFSET: the cursor is the (event_time, event_id) of the
last event returned, and the next page is the rows strictly below it in the order of the
index ``events (tenant_id, profile_id, event_time DESC, event_id DESC)``. The row
comparison ``(event_time, event_id) < (%s, %s)`` is an index condition, so every page
costs the same however deep it is; the extra ``event_time <= %s`` lets Postgres skip the
monthly partitions newer than the cursor.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Request, get
from litestar.params import FromPath, FromQuery

from read_api.auth import principal_of, tenant_key, tenant_key_before_request
from read_api.autocommit import fetch_all, fetch_one
from read_api.errors import BadRequest, NotFound
from read_api.openapi import errors_for
from read_api.profiles import parse_profile_id
from read_api.schemas import Event, EventIdentifier, EventPage, EventStatus, iso
from read_api.state import ReadState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

EVENT_COLUMNS = (
    "e.event_id::text, e.event_name, e.event_type, e.event_time, e.received_at, e.source_id::text,"
    " e.properties, e.context, e.emq, e.identifiers, e.decisions"
)

# One statement: resolve the (possibly merged-away) id to the live profile, then its page
# of events. No row: no such profile; one row of NULLs: a profile without (more) events.
_PAGE_SQL = """
SELECT l.id::text, {columns}
FROM (SELECT coalesce(merged_into, id) AS id FROM profiles WHERE id = %(profile_id)s AND tenant_id = %(tenant_id)s) l
LEFT JOIN LATERAL (
    SELECT * FROM events
    WHERE tenant_id = %(tenant_id)s AND profile_id = l.id {after}
    ORDER BY event_time DESC, event_id DESC
    LIMIT %(limit)s
) e ON true
ORDER BY e.event_time DESC, e.event_id DESC
"""
_AFTER_CURSOR = "AND (event_time, event_id) < (%(cursor_time)s, %(cursor_id)s) AND event_time <= %(cursor_time)s"

PAGE_SQL = _PAGE_SQL.format(columns=EVENT_COLUMNS, after="")
PAGE_AFTER_CURSOR_SQL = _PAGE_SQL.format(columns=EVENT_COLUMNS, after=_AFTER_CURSOR)

# event_keys.event_id is unique; its event_time prunes ``events`` to one partition. The
# correlated subquery keeps that a parameterized index lookup (run-time partition pruning)
# whatever the planner thinks of a join. An outcome (erased, duplicate) comes first: an
# erased event's key stays in event_keys as a tombstone.
_STATUS_SQL = """
SELECT status, profile_id FROM (
SELECT 1 AS rank, o.status, (SELECT e.profile_id::text FROM event_keys k JOIN events e
        ON e.tenant_id = k.tenant_id AND e.event_time = k.event_time AND e.event_id = k.event_id
        WHERE k.event_id = o.duplicate_of AND k.tenant_id = o.tenant_id) AS profile_id
FROM event_outcomes o
WHERE o.event_id = %(id)s AND o.tenant_id = %(tenant)s
UNION ALL
SELECT 2, 'processed', (SELECT e.profile_id::text FROM events e
        WHERE e.tenant_id = k.tenant_id AND e.event_time = k.event_time AND e.event_id = k.event_id)
FROM event_keys k
WHERE k.event_id = %(id)s AND k.tenant_id = %(tenant)s
) s ORDER BY rank LIMIT 1
"""

_CURSOR_VERSION = 1
_CURSOR = struct.Struct(">Bq16s")  # version, event_time in µs since the epoch, event_id
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(event_time: datetime, event_id: str) -> str:
    """An opaque, URL-safe cursor for the position just below (event_time, event_id)."""
    micros = (event_time - _EPOCH) // timedelta(microseconds=1)
    raw = _CURSOR.pack(_CURSOR_VERSION, micros, uuid.UUID(event_id).bytes)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """(event_time, event_id) from a cursor; BadRequest (``invalid_cursor``) if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, micros, id_bytes = _CURSOR.unpack(raw)
        if version != _CURSOR_VERSION:
            raise ValueError(version)
        return _EPOCH + timedelta(microseconds=micros), uuid.UUID(bytes=id_bytes)
    except (binascii.Error, struct.error, ValueError, OverflowError):
        raise BadRequest("cursor is not one this API returned; pass next_cursor back unchanged",
                         code="invalid_cursor") from None


def event_from_row(row: tuple[Any, ...]) -> Event:
    """A row of ``SELECT EVENT_COLUMNS`` as an event object."""
    (event_id, name, event_type, event_time, received_at, source_id, properties, context, emq,
     identifiers, decisions) = row
    return Event(
        event_id=event_id, event_name=name, event_type=event_type, event_time=iso(event_time),
        received_at=iso(received_at), source_id=source_id, properties=properties, context=context, emq=emq,
        identifiers=[EventIdentifier(t, h) for t, h in identifiers], decisions=decisions or [],
    )


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")
    return limit


@get("/api/v1/cdp/profiles/{profile_id:str}/events", before_request=tenant_key_before_request,
     summary="A profile's events, newest first",
     description=f"Keyset pagination: `limit` 1..{MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}); pass "
                 "`next_cursor` back as `cursor` for the next page. A merged-away id lists the survivor's events.",
     responses=errors_for(400, 401, 403, 404, 503))
async def profile_events(
    request: Request,
    profile_id: FromPath[str],
    limit: FromQuery[int | None] = None,
    cursor: FromQuery[str | None] = None,
) -> EventPage:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    n = page_size(limit)
    params: dict[str, Any] = {"tenant_id": principal.tenant_id, "limit": n + 1}
    if cursor:
        params["cursor_time"], params["cursor_id"] = decode_cursor(cursor)
    params["profile_id"] = parse_profile_id(profile_id)
    # One statement in autocommit: one round trip and one snapshot (profile -> survivor ->
    # page), so a merge or erasure is never half-seen.
    rows = await fetch_all(st.statements, PAGE_AFTER_CURSOR_SQL if cursor else PAGE_SQL, params)
    if not rows:
        raise NotFound(f"no profile {profile_id}")
    rows = [r[1:] for r in rows if r[1] is not None]
    next_cursor = encode_cursor(rows[n - 1][3], rows[n - 1][0]) if len(rows) > n else None
    return EventPage(events=[event_from_row(r) for r in rows[:n]], next_cursor=next_cursor)


@get("/api/v1/cdp/events/{event_id:str}", guards=[tenant_key], summary="Status of one event by its event_id",
     description="`processed` with the profile it was attributed to once a worker stored it; `duplicate` for a "
                 "copy stored once already (with that event's profile); `erased` after an erasure; "
                 "`rejected` for an event a worker refused (e.g. `event_too_old`: its month left retention "
                 "while it was queued). Events "
                 "still queued and unknown ids answer 404 (see docs/API.md).",
     responses=errors_for(401, 403, 404, 503))
async def event_status(request: Request, event_id: FromPath[str]) -> EventStatus:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    try:
        eid = uuid.UUID(event_id)
    except ValueError:
        raise NotFound(f"no event {event_id}") from None
    row = await fetch_one(st.statements, _STATUS_SQL, {"id": eid, "tenant": principal.tenant_id})
    if row is None:
        raise NotFound(f"no stored event {event_id}; an event still queued is not visible until a worker "
                       "stores it (usually within seconds)")
    # processed: stored; duplicate: a later copy of a stored event (profile of the stored
    # one); erased: removed by an erasure; rejected: refused by a worker (never stored).
    return EventStatus(event_id=str(eid), status=row[0], profile_id=row[1])
