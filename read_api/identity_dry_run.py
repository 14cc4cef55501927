"""``POST /api/v1/cdp/identity/dry-run``: what the stored events of a time range would give
under other identity rules (CONTRACT 9), without writing anything.

The replay (``core.identity_dry_run``) is CPU-bound and may take up to
``STRATUM_DRY_RUN_MAX_S``: it runs in a thread on its own read-only connection, reading the
events through a server-side cursor in (event time, event id) order, so memory holds the
two replayed graphs and never the events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from litestar import Request, post
from litestar.params import JSONBody
from msgspec import Struct

from core.cache_keys import dry_run_lock_key
from core.identity import TRUSTED_SOURCE_TYPES, IdentityRules
from core.identity_dry_run import (
    InvalidRules,
    ProposedRules,
    Replay,
    StoredEvent,
    dry_run,
    parse_rules,
)
from read_api.auth import principal_of, tenant_admin_key
from read_api.errors import BadRequest, Conflict
from read_api.openapi import errors_for
from read_api.state import ReadState
from stratum.settings import libpq_url

_FETCH_ROWS = 5000

_EVENTS_SQL = """
SELECT e.event_id::text, least(e.event_time, e.received_at), e.identifiers, s.type
FROM events e JOIN sources s ON s.id = e.source_id
WHERE e.tenant_id = %s AND e.event_time >= %s AND e.event_time < %s
ORDER BY e.event_time, e.event_id
"""


class DryRunRequest(Struct, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    to: str = msgspec.field()
    rules: dict[str, Any] = msgspec.field(default_factory=dict)


class SideCounts(Struct):
    now: int
    would_be: int


class DecisionCounts(Struct):
    now: dict[str, int]
    would_be: dict[str, int]


class DryRunReport(Struct):
    events: int
    profiles: SideCounts
    merges: SideCounts
    decisions: DecisionCounts
    examples: list[dict[str, Any]]
    truncated: bool


def _time(value: str, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        ts = None
    if ts is None or ts.tzinfo is None:
        raise BadRequest(f"{name} must be an ISO 8601 time with a zone, e.g. 2026-11-01T00:00:00Z", code="invalid_time")
    return ts


def _replay(database_url: str, tenant_id: str, start: datetime, end: datetime, current: IdentityRules,
            proposed: ProposedRules, max_events: int, max_s: float) -> DryRunReport:
    deadline = time.monotonic() + max_s
    with psycopg.connect(libpq_url(database_url), options=f"-c statement_timeout={int(max_s * 1000) + 5000}") as conn:
        conn.read_only = True
        with conn.transaction(), conn.cursor(name="identity_dry_run") as cur:
            cur.itersize = _FETCH_ROWS
            cur.execute(_EVENTS_SQL, (tenant_id, start, end))
            events = (StoredEvent(eid, at, [(t, h) for t, h in idents], stype in TRUSTED_SOURCE_TYPES)
                      for eid, at, idents, stype in cur)
            now = Replay(current)
            would_be = Replay(proposed.rules, proposed.relabel, proposed.blocked)
            result = dry_run(events, now, would_be, max_events=max_events,
                             out_of_time=lambda: time.monotonic() > deadline)
    return DryRunReport(events=result.events, profiles=SideCounts(now.profiles, would_be.profiles),
                        merges=SideCounts(now.merges, would_be.merges),
                        decisions=DecisionCounts(dict(now.decisions), dict(would_be.decisions)),
                        examples=result.examples, truncated=result.truncated)


@post("/api/v1/cdp/identity/dry-run", guards=[tenant_admin_key], status_code=200,
      summary="Replay stored events under other identity rules, without writing (admin key)",
      description="Body `{\"rules\": {\"limits\": {TYPE: N}, \"priority\": [TYPES], \"blocked_values\": [...]}, "
                  "\"from\", \"to\"}` (any subset of rules, over the tenant's). Replays the events of "
                  "[from, to) in event-time order onto an empty graph under the current rules (`now`) and the "
                  "proposed ones (`would_be`); stops at the configured event count or time (`truncated`).",
      responses=errors_for(400, 401, 403, 409, 503))
async def identity_dry_run(request: Request, data: JSONBody[DryRunRequest]) -> DryRunReport:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    start, end = _time(data.from_, "from"), _time(data.to, "to")
    if end <= start:
        raise BadRequest("to must be after from", code="invalid_time")
    async with st.pool.connection() as conn:
        row = await (await conn.execute("SELECT settings FROM tenants WHERE id = %s", (tenant_id,))).fetchone()
    current = IdentityRules.from_tenant_settings(row[0] if row else {})
    try:
        proposed = parse_rules(current, data.rules)
    except InvalidRules as exc:
        raise BadRequest(exc.message, code="invalid_rules", errors=[{"field": exc.field, "message": exc.message}]) \
            from None
    s = st.settings
    # One replay per tenant at a time: each may hold a core and a connection for max_s.
    lock = dry_run_lock_key(tenant_id)
    token = uuid.uuid4().hex
    if not await st.redis.set(lock, token, nx=True, ex=int(s.dry_run_max_s) + 30):
        raise Conflict("a dry-run of this tenant is running; retry when it is done", code="dry_run_in_progress")
    try:
        return await asyncio.to_thread(_replay, s.database_url, tenant_id, start, end, current, proposed,
                                       s.dry_run_max_events, s.dry_run_max_s)
    finally:
        if await st.redis.get(lock) == token.encode():
            await st.redis.delete(lock)
