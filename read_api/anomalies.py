"""Volume anomalies the scheduler recorded (CONTRACT 8): ``GET /api/v1/cdp/anomalies``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Request, get
from litestar.params import FromQuery, QueryParameter
from msgspec import Struct

from core.segment_rules import parse_time
from read_api.auth import principal_of, tenant_key
from read_api.errors import BadRequest
from read_api.openapi import errors_for
from read_api.schemas import iso
from read_api.state import ReadState

MAX_ANOMALIES = 10_000
_From = Annotated[str | None, QueryParameter(name="from", description="start of `hour`, inclusive")]


class Anomaly(Struct):
    source_id: str
    hour: str
    observed: int
    expected: float
    score: float
    kind: str


class AnomalyList(Struct):
    anomalies: list[Anomaly]


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise BadRequest(f"{name}: an ISO 8601 time, e.g. 2026-11-30T00:00:00Z", code="invalid_parameter")
    return parsed


@get("/api/v1/cdp/anomalies", guards=[tenant_key], summary="Drops and spikes of hourly volume per source",
     description="`from` (inclusive) and `to` (exclusive) filter on `hour`; oldest first, at most 10,000.",
     responses=errors_for(400, 401, 403, 503))
async def list_anomalies(request: Request, from_: _From = None,
                         to: FromQuery[str | None] = None) -> AnomalyList:
    st: ReadState = request.app.state.read
    start, end = _time("from", from_), _time("to", to)
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT source_id::text, hour, observed, expected, score, kind FROM anomalies WHERE tenant_id = %s"
            " AND (%s::timestamptz IS NULL OR hour >= %s) AND (%s::timestamptz IS NULL OR hour < %s)"
            " ORDER BY hour, source_id, kind LIMIT %s",
            (principal_of(request).tenant_id, start, start, end, end, MAX_ANOMALIES))).fetchall()
    return AnomalyList(anomalies=[Anomaly(source_id=s, hour=iso(h), observed=o, expected=e, score=sc, kind=k)
                                  for s, h, o, e, sc, k in rows])
