"""Operator view of every tenant's destinations behind the /ops page: health per
destination (success rate and counts over the last hour, lag, dead count, breaker state as
the delivery processes publish it) and deliveries per minute, with a retry of the dead ones.
Operator key only (the guard of read_api/ops.py).
"""

from __future__ import annotations

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath

from read_api.destinations import parse_destination_id
from read_api.errors import NotFound
from read_api.openapi import errors_for
from read_api.ops import operator_key
from read_api.state import ReadState
from stratum.queue.deliveries import LANES_KEY_PREFIX

WINDOW_MINUTES = 60

_HEALTH_SQL = """
SELECT d.id::text, d.tenant_id::text, t.name, d.name, d.active,
       count(x.id) FILTER (WHERE x.created_at >= now() - interval '1 hour' AND x.status = 'delivered'),
       count(x.id) FILTER (WHERE x.created_at >= now() - interval '1 hour' AND x.status IN ('failed', 'dead')),
       count(x.id) FILTER (WHERE x.status IN ('pending', 'failed')),
       count(x.id) FILTER (WHERE x.status = 'dead'),
       extract(epoch FROM now() - min(x.created_at) FILTER (WHERE x.status IN ('pending', 'failed')))
FROM destinations d JOIN tenants t ON t.id = d.tenant_id
LEFT JOIN deliveries x ON x.destination_id = d.id AND x.tenant_id = d.tenant_id
    AND (x.created_at >= now() - interval '1 hour' OR x.status IN ('pending', 'failed', 'dead'))
GROUP BY d.id, d.tenant_id, t.name, d.name, d.active
ORDER BY t.name, d.name
"""
_PER_MINUTE_SQL = """
SELECT to_char(date_trunc('minute', created_at), 'YYYY-MM-DD"T"HH24:MI:00"Z"'),
       count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE status IN ('failed', 'dead')),
       count(*) FILTER (WHERE status = 'skipped')
FROM deliveries WHERE created_at >= now() - make_interval(mins => %s)
GROUP BY 1 ORDER BY 1
"""


class DestinationHealth(msgspec.Struct):
    id: str
    tenant_id: str
    tenant_name: str
    name: str
    active: bool
    delivered_1h: int
    failed_1h: int
    success_rate_1h: float | None
    undelivered: int
    lag_s: float | None
    dead: int
    breaker: str  # closed | half_open | open | unknown (no delivery process has this lane)
    consecutive_failures: int


class DeliveriesPerMinute(msgspec.Struct):
    minute: str
    delivered: int
    failed: int
    skipped: int


class DestinationsHealth(msgspec.Struct):
    destinations: list[DestinationHealth]
    per_minute: list[DeliveriesPerMinute]


class Requeued(msgspec.Struct):
    requeued: int


async def _lanes(st: ReadState) -> dict[str, dict]:
    """Merged lane states of the live delivery processes: the worst breaker per destination."""
    rank = {"open": 2, "half_open": 1, "closed": 0}
    merged: dict[str, dict] = {}
    async for key in st.redis.scan_iter(match=LANES_KEY_PREFIX + "*", count=100):
        for did, raw in (await st.redis.hgetall(key)).items():
            state = msgspec.json.decode(raw)
            did = did.decode()
            seen = merged.get(did)
            if seen is None or rank.get(state["breaker"], 0) > rank.get(seen["breaker"], 0):
                merged[did] = state
    return merged


@get("/api/v1/ops/destinations", guards=[operator_key], summary="Health of every destination (operator key)",
     responses=errors_for(401, 403, 503), tags=["ops"])
async def ops_destinations(request: Request) -> DestinationsHealth:
    st: ReadState = request.app.state.read
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(_HEALTH_SQL)).fetchall()
        minutes = await (await conn.execute(_PER_MINUTE_SQL, (WINDOW_MINUTES,))).fetchall()
    lanes = await _lanes(st)
    out = []
    for did, tid, tname, name, active, ok, bad, undelivered, dead, lag in rows:
        lane = lanes.get(did, {})
        out.append(DestinationHealth(
            id=did, tenant_id=tid, tenant_name=tname, name=name, active=active, delivered_1h=ok, failed_1h=bad,
            success_rate_1h=round(ok / (ok + bad), 4) if ok + bad else None, undelivered=undelivered,
            lag_s=round(float(lag), 1) if lag is not None else None, dead=dead,
            breaker=lane.get("breaker", "unknown"), consecutive_failures=lane.get("consecutive_failures", 0)))
    return DestinationsHealth(destinations=out, per_minute=[DeliveriesPerMinute(*m) for m in minutes])


@post("/api/v1/ops/destinations/{destination_id:str}/retry", guards=[operator_key], status_code=200,
      summary="Retry a destination's dead deliveries (operator key)", responses=errors_for(401, 403, 404, 503),
      tags=["ops"])
async def ops_retry_dead(request: Request, destination_id: FromPath[str]) -> Requeued:
    st: ReadState = request.app.state.read
    did = parse_destination_id(destination_id)
    async with st.pool.connection() as conn:
        if await (await conn.execute("SELECT 1 FROM destinations WHERE id = %s", (did,))).fetchone() is None:
            raise NotFound(f"no destination {destination_id}")
        cur = await conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()"
            " WHERE destination_id = %s AND status = 'dead'"
            " AND (body IS NOT NULL OR event_time IS NOT NULL)", (did,))
    return Requeued(requeued=cur.rowcount)


OPS_DESTINATION_ROUTES = [ops_destinations, ops_retry_dead]
