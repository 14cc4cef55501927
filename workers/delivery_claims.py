"""Claiming due deliveries: many rows per round trip, with the bodies of lean
``event.received`` rows built by Postgres from the stored events in the same statement.

The claim reads the due rows in the order of the due index (``next_attempt_at``, no sort
of the backlog) and updates them through the per-destination index (an id array, not a
join that would scan the table): its cost follows the rows claimed, not the table's size.

A lean row (``event_time`` set, ``body`` NULL; workers/outbox.py) names its event by its
message id (``msg_<event_id>``) and time. Its body is built at every attempt from the
stored event and the row itself (``profile_id`` as written, ``timestamp`` the row's
creation time, times rendered in UTC with six decimals whatever the session's time zone),
so every attempt sends the same bytes without a payload stored per event. An erased event
(or one dropped by retention) builds no body: the row is then skipped as erased.
"""

from __future__ import annotations

import math

from core.webhooks import MAX_BATCH_SIZE

# Margin of the claim lease over the time its batch may take (resolution, bookkeeping),
# in request timeouts: 20 s with the default 10 s timeout.
LEASE_MARGIN_TIMEOUTS = 2
# Requests a lane claims rows for at once, per request it may have in flight.
CLAIM_PER_SLOT = 16
# Most rows one claim takes, whatever the batch size.
MAX_CLAIM_ROWS = 4 * MAX_BATCH_SIZE


def _utc_text(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


_EVENT_BODY_SQL = f"""
SELECT jsonb_build_object('type', c.topic, 'timestamp', {_utc_text('c.created_at')}, 'data', jsonb_build_object(
    'event_id', e.event_id, 'profile_id', c.profile_id, 'event_name', e.event_name, 'event_type', e.event_type,
    'event_time', {_utc_text('e.event_time')}, 'received_at', {_utc_text('e.received_at')},
    'source_id', e.source_id, 'properties', e.properties, 'context', e.context, 'emq', e.emq,
    'identifiers', (SELECT coalesce(jsonb_agg(jsonb_build_object('type', i->>0, 'hash', i->>1)), '[]'::jsonb)
                    FROM jsonb_array_elements(e.identifiers) i)))::text
FROM events e
WHERE e.tenant_id = c.tenant_id AND e.event_time = c.event_time AND e.event_id = substr(c.message_id, 5)::uuid
"""

# The body a row sends (``%(ids)s``: delivery ids of one destination ``%(d)s``): what an
# attempt would send now, for inspection and tests.
BODIES_SQL = f"""
SELECT c.id, CASE WHEN c.event_time IS NULL THEN c.body ELSE ({_EVENT_BODY_SQL}) END
FROM deliveries c WHERE c.destination_id = %(d)s AND (%(ids)s::bigint[] IS NULL OR c.id = ANY(%(ids)s::bigint[]))
ORDER BY c.id
"""

CLAIM_SQL = f"""
WITH c AS (
    UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => %(lease)s)
    WHERE d.destination_id = %(d)s AND d.id = ANY(ARRAY(
        SELECT id FROM deliveries
        WHERE destination_id = %(d)s AND status IN ('pending', 'failed') AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT %(n)s FOR UPDATE SKIP LOCKED))
    RETURNING d.tenant_id, d.id, d.message_id, d.topic, d.profile_id, d.body, d.attempts, d.event_time, d.created_at
)
SELECT c.tenant_id::text, c.id, c.message_id, c.topic, c.profile_id::text,
       CASE WHEN c.event_time IS NULL THEN c.body ELSE ({_EVENT_BODY_SQL}) END, c.attempts
FROM c ORDER BY c.id
"""


def claim_plan(batch_size: int, max_in_flight: int, timeout_s: float) -> tuple[int, float]:
    """(rows to claim at once, lease in seconds) for a lane: enough rows for CLAIM_PER_SLOT
    requests per slot (at most MAX_CLAIM_ROWS), and a lease covering those requests sent
    ``max_in_flight`` at a time, plus one request and the margin."""
    slots = max(1, max_in_flight)
    size = max(1, batch_size)
    rows = min(slots * CLAIM_PER_SLOT * size, max(MAX_CLAIM_ROWS, size))
    requests = math.ceil(rows / size)
    lease_s = (math.ceil(requests / slots) + 1) * timeout_s + LEASE_MARGIN_TIMEOUTS * timeout_s
    return rows, lease_s
