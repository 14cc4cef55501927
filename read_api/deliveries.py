"""Deliveries of a destination you can operate (CONTRACT 7): the list, bulk retry of dead
or failed deliveries, and replay of stored events by time range.

A replay is recorded on the destination row (its range and a keyset cursor); the delivery
process turns it into deliveries page by page (workers/replay.py), so it survives restarts
and runs at most once per destination at a time (409 ``replay_in_progress``).
"""

from __future__ import annotations

from datetime import datetime

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.destination_schemas import (
    Delivery,
    DeliveryPage,
    DeliveryRetry,
    ReplayQueued,
    ReplayRequest,
    Requeued,
)
from read_api.destinations import parse_destination_id
from read_api.errors import ApiError, BadRequest, NotFound
from read_api.openapi import errors_for
from read_api.schemas import iso
from read_api.state import ReadState

STATUSES = ("pending", "delivered", "failed", "dead", "skipped")
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"

_COLUMNS = ("id, message_id, topic, status, attempts, last_status_code, last_error, next_attempt_at, created_at,"
            " delivered_at, skip_reason")


class ReplayInProgress(ApiError):
    status = 409
    code = "replay_in_progress"


def _delivery(row: tuple) -> Delivery:
    id_, mid, topic, status, attempts, code, error, next_at, created, delivered, skip = row
    waiting = status in ("pending", "failed")
    return Delivery(id=str(id_), message_id=mid, topic=topic, status=status, attempts=attempts,
                    last_status_code=code, last_error=error, next_attempt_at=iso(next_at) if waiting else None,
                    created_at=iso(created), delivered_at=iso(delivered) if delivered else None, skip_reason=skip)


async def _owned(conn, tenant_id: str, destination_id: str):
    did = parse_destination_id(destination_id)
    row = await (await conn.execute("SELECT id, event_names FROM destinations WHERE id = %s AND tenant_id = %s",
                                    (did, tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    return row


@get("/api/v1/cdp/destinations/{destination_id:str}/deliveries", guards=[tenant_key],
     summary="A destination's deliveries, newest first", responses=errors_for(400, 401, 403, 404, 503))
async def list_deliveries(request: Request, destination_id: FromPath[str], status: FromQuery[str | None] = None,
                          cursor: FromQuery[str | None] = None, limit: FromQuery[int] = PAGE_SIZE) -> DeliveryPage:
    st: ReadState = request.app.state.read
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of: {', '.join(STATUSES)}", code="invalid_status")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit must be 1..{MAX_PAGE_SIZE}", code="invalid_limit")
    if cursor is not None and not cursor.isdigit():
        raise BadRequest("cursor must be a next_cursor this endpoint returned", code="invalid_cursor")
    tenant_id = principal_of(request).tenant_id
    async with st.pool.connection() as conn:
        did, _ = await _owned(conn, tenant_id, destination_id)
        rows = await (await conn.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE tenant_id = %(t)s AND destination_id = %(d)s"
            " AND (%(s)s::text IS NULL OR status = %(s)s) AND (%(c)s::bigint IS NULL OR id < %(c)s)"
            " ORDER BY id DESC LIMIT %(n)s",
            {"t": tenant_id, "d": did, "s": status, "c": int(cursor) if cursor else None, "n": limit + 1},
        )).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(deliveries=[_delivery(r) for r in rows], next_cursor=str(rows[-1][0]) if more else None)


@post("/api/v1/cdp/destinations/{destination_id:str}/deliveries/retry", guards=[tenant_admin_key], status_code=200,
      summary="Retry dead or failed deliveries now (admin key)",
      description="`{\"status\": \"dead\"}` (or `failed`) retries all of them; `{\"ids\": [...]}` the ones listed "
                  "that are dead or failed. Their retry schedule starts again.",
      responses=errors_for(400, 401, 403, 404, 503))
async def retry_deliveries(request: Request, destination_id: FromPath[str], data: JSONBody[DeliveryRetry]) -> Requeued:
    st: ReadState = request.app.state.read
    if (data.status is None) == (data.ids is None):
        raise BadRequest("send either status (dead or failed) or ids", code="invalid_request")
    if data.status is not None and data.status not in ("dead", "failed"):
        raise BadRequest("status must be dead or failed", code="invalid_status")
    if data.ids is not None and not all(i.isdigit() for i in data.ids):
        raise BadRequest("ids must be delivery ids as the deliveries list shows them", code="invalid_parameter")
    tenant_id = principal_of(request).tenant_id
    async with st.pool.connection() as conn:
        did, _ = await _owned(conn, tenant_id, destination_id)
        cur = await conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()"
            " WHERE tenant_id = %(t)s AND destination_id = %(d)s AND (body IS NOT NULL OR event_time IS NOT NULL)"
            " AND status = ANY(%(st)s) AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))",
            {"t": tenant_id, "d": did, "st": [data.status] if data.status else ["dead", "failed"],
             "ids": [int(i) for i in data.ids] if data.ids is not None else None})
    return Requeued(requeued=cur.rowcount)


def _instant(value: str, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        ts = None
    if ts is None or ts.tzinfo is None:
        raise BadRequest(f"{name} must be an ISO 8601 time with a timezone", code="invalid_parameter")
    return ts


@post("/api/v1/cdp/destinations/{destination_id:str}/replay", guards=[tenant_admin_key], status_code=202,
      summary="Re-send stored events of a time range (admin key)",
      description="Stored events with `from <= event_time < to` go out again as `event.received` with their "
                  "original `webhook-id`s; the destination's `event_names` filter and consent gate apply. One "
                  "replay per destination at a time (409 `replay_in_progress`).",
      responses=errors_for(400, 401, 403, 404, 409, 503))
async def replay_events(request: Request, destination_id: FromPath[str], data: JSONBody[ReplayRequest]) -> ReplayQueued:
    st: ReadState = request.app.state.read
    start, end = _instant(data.from_, "from"), _instant(data.to, "to")
    if end <= start:
        raise BadRequest("to must be later than from", code="invalid_parameter")
    tenant_id = principal_of(request).tenant_id
    async with st.pool.connection() as conn, conn.transaction():
        did, event_names = await _owned(conn, tenant_id, destination_id)
        cur = await conn.execute(
            "UPDATE destinations SET replay_to = %s, replay_cursor_time = %s, replay_cursor_id = %s"
            " WHERE id = %s AND replay_to IS NULL", (end, start, _ZERO_UUID, did))
        if cur.rowcount == 0:
            raise ReplayInProgress("a replay of this destination is running; wait for it to finish")
        (queued,) = await (await conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s AND event_time >= %s AND event_time < %s"
            " AND (%s::text[] IS NULL OR event_name = ANY(%s::text[]))",
            (tenant_id, start, end, event_names, event_names))).fetchone()
    return ReplayQueued(queued=queued)


DELIVERY_ROUTES = [list_deliveries, retry_deliveries, replay_events]
