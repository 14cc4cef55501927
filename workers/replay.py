"""Replays: stored events of a time range re-sent to one destination as ``event.received``
with their original message ids (``msg_<event_id>``), so receivers dedupe.

A replay is its range and a keyset cursor on the destination row (set by the read API).
The delivery process advances each running replay by one page per tick, in one
transaction that inserts the page's deliveries and moves the cursor, so a crash resumes
after the last committed page and never queues a page twice; the pace is bounded by the
page size and the tick. The destination's ``event_names`` filter applies here; the consent
gate at each attempt, as for live messages.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from core.webhooks import event_message_id, event_received_data, message_body
from stratum.db.params import json_rows

REPLAY_PAGE_EVENTS = 500

_PAGE_SQL = """
SELECT event_id::text, event_name, event_type, event_time, received_at, source_id::text, profile_id::text,
       properties, context, emq, identifiers
FROM events
WHERE tenant_id = %(t)s AND (event_time, event_id) > (%(ct)s, %(ci)s) AND event_time < %(to)s
  AND (%(names)s::text[] IS NULL OR event_name = ANY(%(names)s::text[]))
ORDER BY event_time, event_id LIMIT %(n)s
"""


async def advance_replays(pool: AsyncConnectionPool, page_events: int = REPLAY_PAGE_EVENTS) -> int:
    """Queue the next page of every running replay; returns how many deliveries were queued."""
    queued = 0
    async with pool.connection() as conn:
        running = [r[0] for r in await (await conn.execute(
            "SELECT id FROM destinations WHERE replay_to IS NOT NULL")).fetchall()]
    for did in running:
        async with pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT tenant_id::text, event_names, replay_to, replay_cursor_time, replay_cursor_id FROM destinations"
                " WHERE id = %s AND replay_to IS NOT NULL FOR UPDATE SKIP LOCKED", (did,))).fetchone()
            if row is None:
                continue  # finished, or another process holds it
            tenant_id, names, to, cursor_time, cursor_id = row
            events = await (await conn.execute(_PAGE_SQL, {"t": tenant_id, "ct": cursor_time, "ci": cursor_id,
                                                           "to": to, "names": names, "n": page_events})).fetchall()
            now = datetime.now(UTC)
            rows = [{"m": event_message_id(e[0]), "p": e[6], "b": message_body("event.received", now, event_received_data(
                event_id=e[0], event_name=e[1], event_type=e[2], event_time=e[3], received_at=e[4], source_id=e[5],
                profile_id=e[6], properties=e[7], context=e[8], emq=e[9], identifiers=e[10])).decode()}
                    for e in events]
            if rows:
                await conn.execute(
                    "INSERT INTO deliveries (tenant_id, destination_id, message_id, topic, profile_id, body)"
                    " SELECT %s, %s, m, 'event.received', p, b FROM json_to_recordset(%s::json) AS u(m text, p uuid,"
                    " b text)", (tenant_id, did, json_rows(rows)))
            if len(events) < page_events:
                await conn.execute("UPDATE destinations SET replay_to = NULL, replay_cursor_time = NULL,"
                                   " replay_cursor_id = NULL WHERE id = %s", (did,))
            else:
                await conn.execute("UPDATE destinations SET replay_cursor_time = %s, replay_cursor_id = %s WHERE id = %s",
                                   (events[-1][3], events[-1][0], did))
            queued += len(rows)
    return queued
