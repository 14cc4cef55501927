"""Event volume per source for the /ops chart (operator key): hourly counts of the last
hours with the seasonal baseline band (core.anomalies) and the recorded anomalies.

Counts are by event time, over every tenant, for the shown hours and the same hours of the
past STRATUM_ANOMALY_LOOKBACK_WEEKS weeks only (one index range per week).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from litestar import Request, get
from litestar.params import FromQuery

from core.anomalies import AnomalyRules, history_of, normal_band, weekly_ranges
from read_api.errors import BadRequest
from read_api.openapi import errors_for
from read_api.ops import operator_key
from read_api.schemas import iso
from read_api.state import ReadState

MAX_HOURS = 168
MAX_SOURCES = 20


class VolumePoint(msgspec.Struct):
    hour: str
    observed: int
    expected: float | None
    low: float | None
    high: float | None


class VolumeAnomaly(msgspec.Struct):
    hour: str
    kind: str
    observed: int
    expected: float
    score: float


class SourceVolume(msgspec.Struct):
    source_id: str
    tenant_id: str
    name: str
    points: list[VolumePoint]
    anomalies: list[VolumeAnomaly]


class OpsVolume(msgspec.Struct):
    hours: int
    sources: list[SourceVolume]


async def _counts(conn, ranges: list[tuple[datetime, datetime]]) -> dict[tuple[str, datetime], int]:
    where = " OR ".join("(event_time >= %s AND event_time < %s)" for _ in ranges)
    rows = await (await conn.execute(
        f"SELECT source_id::text, date_trunc('hour', event_time, 'UTC'), count(*) FROM events WHERE {where}"
        " GROUP BY 1, 2", [t for r in ranges for t in r])).fetchall()
    return {(s, h): n for s, h, n in rows}


@get("/api/v1/ops/volume", guards=[operator_key], summary="Hourly volume per source with baseline (operator key)",
     description="The last `hours` (1..168, default 48) completed and current hours per source (the 20 busiest), "
                 "each with the baseline median and the band outside which an hour is flagged, and the anomalies "
                 "the scheduler recorded in that time.",
     responses=errors_for(400, 401, 403, 503))
async def ops_volume(request: Request, hours: FromQuery[int] = 48) -> OpsVolume:
    st: ReadState = request.app.state.read
    if not 1 <= hours <= MAX_HOURS:
        raise BadRequest(f"hours: from 1 to {MAX_HOURS}", code="invalid_parameter")
    s = st.settings
    rules = AnomalyRules(threshold=s.anomaly_threshold, min_weeks=s.anomaly_min_weeks,
                         min_expected=s.anomaly_min_expected)
    weeks = max(1, s.anomaly_lookback_weeks)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    shown = [end - timedelta(hours=h) for h in range(hours, 0, -1)]
    async with st.pool.connection() as conn:
        counts = await _counts(conn, weekly_ranges(shown[0], end, weeks))
        names = {sid: (tid, name) for sid, tid, name in await (await conn.execute(
            "SELECT id::text, tenant_id::text, name FROM sources")).fetchall()}
        flagged = await (await conn.execute(
            "SELECT source_id::text, hour, kind, observed, expected, score FROM anomalies"
            " WHERE hour >= %s AND hour < %s ORDER BY hour", (shown[0], end))).fetchall()
    first: dict[str, datetime] = {}
    for sid, hour in counts:
        first[sid] = min(hour, first.get(sid, hour))
    # Busiest over the shown hours and their past weeks: a source gone silent still shows.
    total: dict[str, int] = {}
    for (sid, _), n in counts.items():
        total[sid] = total.get(sid, 0) + n
    busiest = sorted((sid for sid in total if sid in names), key=lambda x: (-total[x], x))
    out = []
    for sid in busiest[:MAX_SOURCES]:
        points = []
        for hour in shown:
            band = normal_band(history_of(counts, sid, hour, weeks, first[sid]), rules) if hour >= first[sid] else None
            expected, low, high = band if band else (None, None, None)
            points.append(VolumePoint(hour=iso(hour), observed=counts.get((sid, hour), 0), expected=expected,
                                      low=low, high=high))
        out.append(SourceVolume(source_id=sid, tenant_id=names[sid][0], name=names[sid][1], points=points,
                                anomalies=[VolumeAnomaly(hour=iso(h), kind=k, observed=o, expected=e, score=sc)
                                           for s_, h, k, o, e, sc in flagged if s_ == sid]))
    return OpsVolume(hours=hours, sources=out)
