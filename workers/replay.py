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

from psycopg_pool import AsyncConnectionPool

from core.webhooks import event_message_id
from stratum.db.params import json_rows

REPLAY_PAGE_EVENTS = 500

_PAGE_SQL = """
SELECT event_id::text, event_time, profile_id::text
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
            # Lean rows, as live ones: the delivery process builds each body from the stored event.
            rows = [{"m": event_message_id(e[0]), "p": e[2], "et": e[1].isoformat()} for e in events]
            if rows:
                await conn.execute(
                    "INSERT INTO deliveries (tenant_id, destination_id, message_id, topic, profile_id, event_time)"
                    " SELECT %s, %s, m, 'event.received', p, et FROM json_to_recordset(%s::json) AS u(m text, p uuid,"
                    " et timestamptz)", (tenant_id, did, json_rows(rows)))
            if len(events) < page_events:
                await conn.execute("UPDATE destinations SET replay_to = NULL, replay_cursor_time = NULL,"
                                   " replay_cursor_id = NULL WHERE id = %s", (did,))
            else:
                await conn.execute("UPDATE destinations SET replay_cursor_time = %s, replay_cursor_id = %s WHERE id = %s",
                                   (events[-1][1], events[-1][0], did))
            queued += len(rows)
    return queued
