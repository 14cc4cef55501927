"""Tenant statistics: event volume per source (hourly and daily), EMQ distribution,
identity match rate, profiles by lifecycle.

Time basis is ``event_time`` (UTC buckets), not ``received_at``: the events table is
partitioned and indexed by it, so the 30-day window reads only its partitions through the
``(tenant_id, event_time)`` index. Backfilled events count at their event time. Windows:
hourly = the current hour and the 47 before it; daily = today and the 29 days before;
EMQ and match rate over the daily window. Buckets without events are left out.

One scan of the window computes volume, EMQ and match rate together (GROUPING SETS); for
very large tenants an hourly rollup written by the workers would make this constant-time.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from litestar import Request, get

from core.emq import BANDS, emq_band
from core.identifiers import KNOWN_TYPES
from read_api.auth import principal_of, tenant_key
from read_api.openapi import errors_for
from read_api.schemas import DailyVolume, EmqDistribution, HourlyVolume, Stats, Volume, iso
from read_api.state import ReadState

HOURLY_WINDOW = timedelta(hours=48)
DAILY_WINDOW_DAYS = 30
LIFECYCLES = ("anonymous", "known", "customer", "churned")

# GROUPING(source_id, emq, profile_id) is a bit mask of the columns NOT grouped in a row:
# 3 = (source_id, hour) rows, 5 = (emq) rows, 6 = (profile_id) rows.
_WINDOW_SQL = """
WITH g AS (
    SELECT GROUPING(source_id, emq, profile_id) AS gs, source_id, date_trunc('hour', event_time, 'UTC') AS hour,
           emq, profile_id, count(*) AS n
    FROM events
    WHERE tenant_id = %(tenant_id)s AND event_time >= %(start)s AND event_time < %(end)s
    GROUP BY GROUPING SETS ((source_id, date_trunc('hour', event_time, 'UTC')), (emq), (profile_id))
)
SELECT 'volume', source_id::text, hour, NULL::int, n FROM g WHERE gs = 3
UNION ALL
SELECT 'emq', NULL, NULL, emq, n FROM g WHERE gs = 5
UNION ALL
SELECT 'matched', NULL, NULL, NULL, coalesce(sum(n), 0)::bigint FROM g
WHERE gs = 6 AND EXISTS (
    SELECT 1 FROM profile_identifiers pi WHERE pi.profile_id = g.profile_id AND pi.type = ANY(%(known)s)
)
"""

_LIFECYCLE_SQL = """
SELECT lifecycle, count(*) FROM profiles WHERE tenant_id = %s AND merged_into IS NULL GROUP BY lifecycle
"""


@get("/api/v1/cdp/stats", guards=[tenant_key], summary="Volumes, EMQ, identity match rate, lifecycle counts",
     description="Volumes per source by `event_time` (UTC): hourly for the last 48 hours, daily for the last "
                 "30 days; EMQ and identity match rate over the 30 days; counts of live profiles.",
     responses=errors_for(401, 403, 503))
async def tenant_stats(request: Request) -> Stats:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hourly_from = end - HOURLY_WINDOW
    daily_from = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAILY_WINDOW_DAYS - 1)
    params = {"tenant_id": tenant_id, "start": daily_from, "end": end, "known": sorted(KNOWN_TYPES)}
    async with st.pool.connection() as conn, conn.pipeline():
        window_cur = await conn.execute(_WINDOW_SQL, params)
        lifecycle_cur = await conn.execute(_LIFECYCLE_SQL, (tenant_id,))
    window_rows, lifecycle_rows = await window_cur.fetchall(), await lifecycle_cur.fetchall()

    hourly: list[HourlyVolume] = []
    daily: dict[tuple[str, str], int] = defaultdict(int)
    bands = dict.fromkeys(BANDS, 0)
    total = score_sum = matched = 0
    for kind, source_id, hour, emq, n in window_rows:
        if kind == "volume":
            if hour >= hourly_from:
                hourly.append(HourlyVolume(source_id=source_id, hour=iso(hour), events=n))
            daily[(hour.astimezone(UTC).date().isoformat(), source_id)] += n
        elif kind == "emq":
            bands[emq_band(emq)] += n
            total += n
            score_sum += emq * n
        else:
            matched = n
    hourly.sort(key=lambda v: (v.hour, v.source_id))
    return Stats(
        volume=Volume(hourly=hourly, daily=[DailyVolume(source_id=s, day=d, events=n)
                                            for (d, s), n in sorted(daily.items())]),
        emq=EmqDistribution(mean=round(score_sum / total, 1) if total else 0.0, bands=bands),
        identity_match_rate=round(matched / total, 4) if total else 0.0,
        profiles_by_lifecycle={**dict.fromkeys(LIFECYCLES, 0), **dict(lifecycle_rows)},
        window={"basis": "event_time", "hourly_from": iso(hourly_from), "daily_from": iso(daily_from),
                "to": iso(end)},
    )
