"""Undo a merge (CONTRACT 9): ``POST /api/v1/cdp/profiles/{id}/unmerge`` ``{"merge_id"}``.

Locking follows the workers' protocol (workers/identity_store.py): advisory locks of every
identifier on the merged profile in key order, then both profile rows ``FOR UPDATE`` in
id order, each wait bounded by ``LOCK_TIMEOUT_MS`` (409 ``profile_busy`` beyond). Once the
survivor's row is locked no worker can change its identifiers; if they changed between the
first read and the lock, the transaction starts again. A worker that read the graph before
the unmerge committed finds it changed once it holds its own locks, and retries its batch.

The decision itself is core/unmerge.py; this module loads its inputs and applies it in one
transaction: identifiers, events, consent history and identity links go back to the
absorbed profile, both profile rows and their consents are rewritten, the merge is
marked undone (the graph stops listing it; a repeat answers the same and changes nothing),
the trigger identifier is blocked from joining the survivor again (``identity_blocks``),
an ``unmerge`` decision is logged on both profiles, and ``profile.updated`` messages go to
subscribed destinations. After commit: computed traits and dynamic segments of both are
recounted from their events, and the messages go to the live stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from litestar import Request, post
from litestar.params import FromPath, JSONBody
from psycopg import AsyncConnection
from redis.exceptions import RedisError

from core.identifiers import IDENTIFIER_TYPES
from core.unmerge import (
    ConsentRecord,
    MergedProfile,
    MergeNotUndoable,
    SideState,
    StoredEvent,
    UnmergePlan,
    plan_unmerge,
)
from core.webhooks import message_body
from read_api.auth import principal_of, tenant_admin_key
from read_api.errors import BadRequest, Conflict, NotFound
from read_api.openapi import errors_for
from read_api.profiles import _document_sql, parse_profile_id
from read_api.schemas import Unmerge, UnmergeRequest, iso
from read_api.state import ReadState
from stratum.audiences import upkeep_profiles
from stratum.db.connect import connect
from stratum.db.params import json_rows, json_value
from stratum.identity_locks import advisory_key
from stratum.queue.deliveries import stream_channel

log = logging.getLogger("stratum.read")

LOCK_TIMEOUT_MS = 5000
_ATTEMPTS = 3

# The merge concerns the requested profile when it is either side, or when both resolve to
# the same live profile (the merge is in that profile's graph).
_MERGE_SQL = """
SELECT m.id, m.survivor_id::text, m.absorbed_id::text, m.trigger_type, m.trigger_hash, m.event_id::text,
       m.snapshot, m.undone_at, r.id IS NOT NULL
FROM profile_merges m
LEFT JOIN profiles s ON s.tenant_id = m.tenant_id AND s.id = m.survivor_id
LEFT JOIN profiles r ON r.id = %(requested)s AND r.tenant_id = m.tenant_id
    AND (r.id IN (m.survivor_id, m.absorbed_id) OR coalesce(r.merged_into, r.id) = coalesce(s.merged_into, s.id))
WHERE m.tenant_id = %(tenant_id)s AND m.id = %(merge_id)s
"""
_IDENTIFIERS_SQL = "SELECT type, hash FROM profile_identifiers WHERE profile_id = %s ORDER BY type, hash"
_LOCK_SQL = """
SELECT id::text, merged_into::text, traits, trait_times, event_count, purchase_count, revenue, merge_count,
       first_seen, last_seen
FROM profiles WHERE tenant_id = %s AND id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE
"""
# State time is min(event_time, received_at) (core.event_time); only the amounts of
# ``properties`` matter to the counters.
_EVENTS_SQL = """
SELECT event_id::text, least(event_time, received_at), event_name,
       jsonb_strip_nulls(jsonb_build_object('revenue', properties -> 'revenue', 'total', properties -> 'total')),
       identifiers, coalesce(merged_from[cardinality(merged_from)] = %(absorbed)s::uuid, false)
FROM events WHERE tenant_id = %(tenant_id)s AND profile_id = %(survivor)s
"""
_CONSENT_HISTORY_SQL = """
SELECT id, event_id::text, consent_type, granted, recorded_at, source_id::text FROM consent_history
WHERE tenant_id = %s AND profile_id = %s
"""


@dataclass(frozen=True)
class _MergeRow:
    id: int
    survivor: str
    absorbed: str
    trigger: tuple[str, str]
    event_id: str | None
    snapshot: dict[str, Any]
    undone_at: datetime | None


class _GraphMoved(Exception):
    """The survivor's identifiers changed between reading and locking: start again."""


def parse_merge_id(value: str | int) -> int:
    """The merge id as stored; BadRequest when it is not one."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18:
        raise BadRequest("merge_id must be the id of an entry of the profile graph's merges", code="invalid_merge_id")
    return int(text)


async def _load_merge(conn: AsyncConnection, tenant_id: str, merge_id: int, requested: str) -> _MergeRow:
    """The merge, if it is the tenant's and concerns the requested profile; else NotFound."""
    row = await (await conn.execute(_MERGE_SQL, {"tenant_id": tenant_id, "merge_id": merge_id,
                                                  "requested": requested})).fetchone()
    if row is None or not row[8]:
        raise NotFound(f"no merge {merge_id} of profile {requested}", code="merge_not_found")
    return _MergeRow(row[0], row[1], row[2], (row[3], row[4]), row[5], row[6], row[7])


async def _lock_sides(conn: AsyncConnection, tenant_id: str, merge: _MergeRow) -> dict[str, tuple]:
    """Take the locks (see the module docstring); return both profile rows by id."""
    keys = [tuple(r) for r in await (await conn.execute(_IDENTIFIERS_SQL, (merge.survivor,))).fetchall()]
    locks = sorted({advisory_key(tenant_id, t, h) for t, h in keys})
    if locks:
        await conn.execute("SELECT count(pg_advisory_xact_lock(k::bigint)) FROM json_array_elements_text(%s::json) AS k",
                           (json_value(locks),))
    rows = {r[0]: r for r in await (await conn.execute(
        _LOCK_SQL, (tenant_id, sorted([merge.survivor, merge.absorbed])))).fetchall()}
    if len(rows) < 2:
        raise NotFound(f"the profiles of merge {merge.id} were erased", code="merge_not_found")
    if rows[merge.survivor][1] is not None:
        raise Conflict(f"profile {merge.survivor} was merged into {rows[merge.survivor][1]} since; undo that merge "
                       "first", code="merge_not_latest")
    if rows[merge.absorbed][1] != merge.survivor:
        raise Conflict(f"profile {merge.absorbed} is no longer merged into {merge.survivor}", code="merge_not_latest")
    if [tuple(r) for r in await (await conn.execute(_IDENTIFIERS_SQL, (merge.survivor,))).fetchall()] != keys:
        raise _GraphMoved
    return rows


async def _load_inputs(conn: AsyncConnection, tenant_id: str, merge: _MergeRow, survivor_row: tuple
                       ) -> tuple[MergedProfile, list[StoredEvent], list[ConsentRecord]]:
    keys = [(t, h) for t, h in await (await conn.execute(_IDENTIFIERS_SQL, (merge.survivor,))).fetchall()]
    _, _, traits, times, events, purchases, revenue, merges, first_seen, last_seen = survivor_row
    merged = MergedProfile(traits, times, events, purchases, revenue, merges, first_seen, last_seen, keys)
    rows = await (await conn.execute(_EVENTS_SQL, {"tenant_id": tenant_id, "survivor": merge.survivor,
                                                    "absorbed": merge.absorbed})).fetchall()
    stored = [StoredEvent(eid, at, name, props, [(t, h) for t, h in idents if t in IDENTIFIER_TYPES], marked)
              for eid, at, name, props, idents, marked in rows]
    records = [ConsentRecord(*r) for r in await (await conn.execute(
        _CONSENT_HISTORY_SQL, (tenant_id, merge.survivor))).fetchall()]
    return merged, stored, records


def _profile_row(pid: str, side: SideState, identifiers: int) -> dict:
    return {"id": pid, "lc": side.lifecycle, "tr": side.traits, "tt": side.trait_times, "ec": side.event_count,
            "pc": side.purchase_count, "rv": str(side.revenue), "ic": identifiers, "mc": side.merge_count,
            "fs": side.first_seen, "ls": side.last_seen}


async def _move_back(conn: AsyncConnection, tenant_id: str, merge: _MergeRow, plan: UnmergePlan) -> None:
    """Identifiers, events, consent history and identity links of the absorbed side."""
    s, a = merge.survivor, merge.absorbed
    keys = json_rows([{"t": t, "h": h} for t, h in sorted(plan.absorbed_identifiers)])
    await conn.execute("UPDATE profile_identifiers pi SET profile_id = %s FROM json_to_recordset(%s::json)"
                       " AS k(t text, h text) WHERE pi.tenant_id = %s AND pi.type = k.t AND pi.hash = k.h"
                       " AND pi.profile_id = %s", (a, keys, tenant_id, s))
    # merged_from: the absorbed side's own events drop this merge's mark
    await conn.execute(
        "UPDATE events SET profile_id = %(a)s, merged_from = CASE WHEN merged_from[cardinality(merged_from)] ="
        " %(a)s::uuid THEN trim_array(merged_from, 1) ELSE merged_from END"
        " WHERE tenant_id = %(t)s AND profile_id = %(s)s AND event_id = ANY(%(ids)s::uuid[])",
        {"a": a, "s": s, "t": tenant_id, "ids": plan.absorbed_events})
    await conn.execute("UPDATE consent_history SET profile_id = %s WHERE tenant_id = %s AND id = ANY(%s::bigint[])",
                       (a, tenant_id, plan.absorbed_consent_records))
    # The merge's own edge no longer joins anything; other links follow the identifier they reached.
    await conn.execute("DELETE FROM identity_links WHERE tenant_id = %s AND profile_id = %s AND link_type = 'merge'"
                       " AND to_type = %s AND to_hash = %s AND event_id IS NOT DISTINCT FROM %s",
                       (tenant_id, s, *merge.trigger, merge.event_id))
    await conn.execute("UPDATE identity_links l SET profile_id = %s FROM json_to_recordset(%s::json)"
                       " AS k(t text, h text) WHERE l.tenant_id = %s AND l.profile_id = %s AND l.to_type = k.t"
                       " AND l.to_hash = k.h", (a, keys, tenant_id, s))
    # Profiles merged into the absorbed one before resolve to it again.
    await conn.execute("UPDATE profiles SET merged_into = %(a)s WHERE merged_into = %(s)s AND tenant_id = %(t)s"
                       " AND id IN (SELECT absorbed_id FROM profile_merges WHERE tenant_id = %(t)s"
                       " AND survivor_id = %(a)s AND undone_at IS NULL)", {"a": a, "s": s, "t": tenant_id})


async def _rewrite_sides(conn: AsyncConnection, tenant_id: str, merge: _MergeRow, plan: UnmergePlan,
                         survivor_identifiers: int) -> None:
    """Both profile rows and their consents, as the plan rebuilt them."""
    s, a = merge.survivor, merge.absorbed
    rows = [_profile_row(s, plan.survivor, survivor_identifiers),
            _profile_row(a, plan.absorbed, len(plan.absorbed_identifiers))]
    await conn.execute(
        "UPDATE profiles p SET merged_into = NULL, merged_at = NULL, lifecycle = u.lc, traits = u.tr,"
        " trait_times = u.tt, event_count = u.ec, purchase_count = u.pc, revenue = u.rv, identifier_count = u.ic,"
        " merge_count = u.mc, first_seen = u.fs, last_seen = u.ls, updated_at = now()"
        " FROM json_to_recordset(%s::json) AS u(id uuid, lc text, tr jsonb, tt jsonb, ec bigint, pc bigint,"
        " rv numeric, ic int, mc int, fs timestamptz, ls timestamptz) WHERE p.id = u.id AND p.tenant_id = %s",
        (json_rows(rows), tenant_id))
    await conn.execute("DELETE FROM consents WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])",
                       (tenant_id, [s, a]))
    consents = [{"p": pid, "c": ctype, "g": c["granted"], "t": c["updated_at"], "s": c.get("source_id")}
                for pid, side in ((s, plan.survivor), (a, plan.absorbed)) for ctype, c in side.consents.items()]
    if consents:
        await conn.execute(
            "INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at, source_id)"
            " SELECT p, c, %s, g, t, s FROM json_to_recordset(%s::json)"
            " AS u(p uuid, c text, g boolean, t timestamptz, s uuid)", (tenant_id, json_rows(consents)))


async def _record(conn: AsyncConnection, tenant_id: str, merge: _MergeRow) -> None:
    """Mark the merge undone, block its trigger from the survivor, log both decisions."""
    s, a = merge.survivor, merge.absorbed
    await conn.execute("UPDATE profile_merges SET undone_at = now() WHERE id = %s", (merge.id,))
    await conn.execute("INSERT INTO identity_blocks (tenant_id, type, hash, profile_id, merge_id)"
                       " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", (tenant_id, *merge.trigger, s, merge.id))
    trigger = [{"type": merge.trigger[0], "hash": merge.trigger[1]}]
    rows = [{"p": pid, "i": trigger, "m": f"merge {merge.id} of profile {a} into {s} undone; "
                                         f"this {merge.trigger[0]} may not join {s} again"} for pid in (s, a)]
    await conn.execute(
        "INSERT INTO identity_decisions (tenant_id, profile_id, event_id, kind, identifiers, rule, message)"
        " SELECT %s, p, %s, 'unmerge', i, 'unmerge', m FROM json_to_recordset(%s::json) AS u(p uuid, i jsonb, m text)",
        (tenant_id, merge.event_id, json_rows(rows)))


async def _profile_updated(conn: AsyncConnection, tenant_id: str, profile_ids: list[str]) -> list[bytes]:
    """``profile.updated`` for both sides: rows for the subscribed destinations (in this
    transaction) and the bodies for the live stream (published after commit)."""
    now = (await (await conn.execute("SELECT now()")).fetchone())[0]
    docs = await (await conn.execute(f"SELECT {_document_sql('NULL')} FROM profiles p WHERE p.id = ANY(%s::uuid[])"
                                     " ORDER BY p.id", (profile_ids,))).fetchall()
    profiles = [msgspec.json.decode(doc) for (doc,) in docs]
    bodies = [message_body("profile.updated", now, p) for p in profiles]
    # One message id per profile, shared by every destination (as the workers' outbox does).
    await conn.execute(
        "INSERT INTO deliveries (tenant_id, destination_id, message_id, topic, profile_id, body)"
        " SELECT %s, d.id, b.m, 'profile.updated', b.p, b.body FROM destinations d"
        " CROSS JOIN json_to_recordset(%s::json) AS b(p uuid, m text, body text)"
        " WHERE d.tenant_id = %s AND d.active AND 'profile.updated' = ANY(d.topics)",
        (tenant_id, json_rows([{"p": p["id"], "m": f"msg_{uuid.uuid4().hex}", "body": body.decode()}
                               for p, body in zip(profiles, bodies, strict=True)]), tenant_id))
    return bodies


async def _refresh_audiences(st: ReadState, tenant_id: str, profile_ids: list[str]) -> None:
    """Computed traits and dynamic segments of both sides, recounted from their events now
    rather than at the scheduler's next upkeep (which would, as both rows' ``updated_at``
    moved: so a failure here only delays them)."""

    def call() -> None:
        with connect(st.settings.database_url, autocommit=True) as conn:
            upkeep_profiles(conn, tenant_id, profile_ids)

    try:
        await asyncio.to_thread(call)
    except psycopg.Error as exc:
        log.warning("audience refresh after unmerge failed for tenant %s: %s", tenant_id, exc)


async def _unmerge_once(conn: AsyncConnection, tenant_id: str, merge_id: int, requested: str
                        ) -> tuple[_MergeRow, datetime, list[bytes]]:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
        merge = await _load_merge(conn, tenant_id, merge_id, requested)
        if merge.undone_at is not None:
            return merge, merge.undone_at, []
        rows = await _lock_sides(conn, tenant_id, merge)
        merged, events, records = await _load_inputs(conn, tenant_id, merge, rows[merge.survivor])
        try:
            plan = plan_unmerge(merge.snapshot, merged, events, records)
        except MergeNotUndoable as exc:
            raise Conflict(str(exc), code="merge_not_undoable") from None
        await _move_back(conn, tenant_id, merge, plan)
        await _rewrite_sides(conn, tenant_id, merge, plan, len(merged.identifiers) - len(plan.absorbed_identifiers))
        await _record(conn, tenant_id, merge)
        bodies = await _profile_updated(conn, tenant_id, [merge.survivor, merge.absorbed])
        (undone_at,) = await (await conn.execute("SELECT now()")).fetchone()
    return merge, undone_at, bodies


@post("/api/v1/cdp/profiles/{profile_id:str}/unmerge", guards=[tenant_admin_key], status_code=200,
      summary="Undo a merge (admin key)",
      description="Body `{\"merge_id\"}` (the `id` of an entry of the profile graph's `merges`; the profile is "
                  "either side). The absorbed profile comes back with the identifiers that came through it and "
                  "the events attributed through them; both sides are rebuilt from the merge's snapshots plus "
                  "the events since (traits, counters, consents, lifecycle); the merge's trigger identifier may "
                  "not join the survivor again. Repeating it changes nothing. 409 `profile_busy` when workers "
                  "hold the profiles; 409 `merge_not_latest` when the survivor was merged again since.",
      responses=errors_for(400, 401, 403, 404, 409, 503))
async def unmerge_profile(request: Request, profile_id: FromPath[str], data: JSONBody[UnmergeRequest]) -> Unmerge:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    requested = str(parse_profile_id(profile_id))
    merge_id = parse_merge_id(data.merge_id)
    async with st.pool.connection() as conn:
        for _ in range(_ATTEMPTS):
            try:
                merge, undone_at, bodies = await _unmerge_once(conn, tenant_id, merge_id, requested)
                break
            except _GraphMoved:
                continue
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                raise Conflict("workers are updating these profiles right now; retry shortly",
                               code="profile_busy") from None
        else:
            raise Conflict("these profiles keep changing; retry shortly", code="profile_busy")
    if bodies:  # committed just now (a repeat has nothing new)
        await _refresh_audiences(st, tenant_id, [merge.survivor, merge.absorbed])
    try:  # best effort, as the workers' publish: the stream does not replay
        for body in bodies:
            await st.redis.publish(stream_channel(tenant_id), body)
    except (RedisError, OSError) as exc:
        log.warning("live stream publish failed for tenant %s: %s", tenant_id, exc)
    return Unmerge(merge_id=str(merge.id), survivor=merge.survivor, absorbed=merge.absorbed, undone_at=iso(undone_at))
