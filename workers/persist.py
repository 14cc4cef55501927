"""Writing a batch: dedupe, identity resolution, events (COPY) and profile upkeep, in one
transaction. Running it twice for the same events changes nothing the second time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import msgspec
import psycopg

from core.identity import TRUSTED_SOURCE_TYPES, IdentityRules, plan_identities
from core.profiles import is_purchase, merge_traits, next_lifecycle, revenue_of
from stratum.db.params import json_rows
from workers.identity_store import (
    ProfileRow,
    apply_merges,
    identifiers_of,
    link_identifiers,
    load_snapshot,
    touch_identifiers,
)
from workers.outbox import write_outbox
from workers.prepare import PreparedEvent

_json = msgspec.json.Encoder()

_EVENT_COLUMNS = (
    "tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key, event_type,"
    " event_name, properties, context, identifiers, emq, decisions"
)

_LINK_TYPES = {"alias": "alias", "identify": "identify"}


@dataclass
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    profiles_created: int = 0
    merges: int = 0


def _claim_dedupe_keys(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent]) -> list[PreparedEvent]:
    """Insert the events' dedupe keys; return the events that won them (first time seen)."""
    ordered = sorted(events, key=lambda e: e.event.dedupe_key)
    rows = conn.execute(
        "INSERT INTO event_keys (tenant_id, dedupe_key, event_id, event_time)"
        " SELECT %s, k, e, t FROM json_to_recordset(%s::json) AS u(k text, e uuid, t timestamptz)"
        " ON CONFLICT DO NOTHING RETURNING event_id::text",
        (tenant_id, json_rows([{"k": e.event.dedupe_key, "e": e.event.event_id, "t": e.event.event_time}
                               for e in ordered])),
    ).fetchall()
    won = {r[0] for r in rows}
    lost = [e for e in events if e.event.event_id not in won]
    if lost:
        # Copies that arrived after the ingest window: remember what they duplicate, so the
        # read API can answer "duplicate" for their event ids.
        conn.execute(
            "INSERT INTO event_outcomes (event_id, tenant_id, status, duplicate_of)"
            " SELECT u.e, %s, 'duplicate', k.event_id FROM json_to_recordset(%s::json) AS u(e uuid, k text)"
            " JOIN event_keys k ON k.tenant_id = %s AND k.dedupe_key = u.k AND k.event_id <> u.e"
            " ON CONFLICT (event_id) DO NOTHING",
            (tenant_id, json_rows([{"e": e.event.event_id, "k": e.event.dedupe_key} for e in lost]), tenant_id),
        )
    return [e for e in events if e.event.event_id in won]


def persist_tenant_events(
    conn: psycopg.Connection,
    tenant_id: str,
    events: list[PreparedEvent],
    rules: IdentityRules,
    new_profile_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> BatchOutcome:
    """Store one tenant's events inside the caller's transaction.

    Raises SnapshotChanged (retry the transaction) when a concurrent merge moved the graph.
    """
    out = BatchOutcome()
    fresh = _claim_dedupe_keys(conn, tenant_id, events)
    out.duplicates = len(events) - len(fresh)
    if not fresh:
        return out

    snapshot = load_snapshot(conn, tenant_id, identifiers_of([e.identifiers for e in fresh]))
    if snapshot.suppressed:
        _drop_suppressed(fresh, snapshot.suppressed)
    profiles: dict[str, ProfileRow] = snapshot.profiles
    event_profiles: list[str | None] = [None] * len(fresh)
    decisions: list[list[dict]] = [list(e.decisions) for e in fresh]

    # Website write keys are public: their events may not merge known profiles (CONTRACT 6).
    groups: dict[bool, list[int]] = defaultdict(list)
    for i, e in enumerate(fresh):
        groups[e.source_type in TRUSTED_SOURCE_TYPES].append(i)
    graph = dict(snapshot.graph)
    all_links, all_merges = [], []
    for trusted, indexes in sorted(groups.items()):
        states = {pid: p.planner_state() for pid, p in profiles.items()}
        plan = plan_identities(
            [(fresh[i].identifiers, fresh[i].event.event_time) for i in indexes], graph, states, rules,
            trusted_source=trusted, new_profile_id=new_profile_id,
        )
        for pid, st in plan.created.items():
            profiles[pid] = ProfileRow(pid, "anonymous", {}, {}, 0, 0, Decimal(0), 0, st.first_seen, st.first_seen,
                                       new=True)
            out.profiles_created += 1
        _insert_profiles(conn, tenant_id, [profiles[p] for p in plan.created])
        ids = [fresh[i].event.event_id for i in indexes]
        apply_merges(conn, tenant_id, plan, profiles, ids)
        all_links.extend(plan.links)
        all_merges.extend(plan.merges)
        out.merges += len(plan.merges)
        times = [fresh[i].event.event_time for i in indexes]
        link_types = [_LINK_TYPES.get(fresh[i].event.event_type, "co_occurrence") for i in indexes]
        link_identifiers(conn, tenant_id, plan, ids, times, link_types, profiles)
        for local, pid in enumerate(plan.event_profiles):
            event_profiles[indexes[local]] = pid
        for d in plan.decisions:
            decisions[indexes[d.event_index]].append(d.as_dict())
        for lk in plan.links:
            graph[(lk.identifier.type, lk.identifier.hash)] = lk.profile_id
        absorbed = {m.absorbed: m.survivor for m in plan.merges}
        if absorbed:
            graph = {k: absorbed.get(v, v) for k, v in graph.items()}

    seen: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for e in fresh:
        t = e.event.event_time
        for ident in e.identifiers:
            key = (ident.type, ident.hash)
            lo_hi = seen.get(key)
            seen[key] = (min(lo_hi[0], t), max(lo_hi[1], t)) if lo_hi else (t, t)
    touch_identifiers(conn, tenant_id, seen)

    _copy_events(conn, tenant_id, fresh, event_profiles, decisions)
    _record_consents(conn, tenant_id, fresh, event_profiles)
    changed = {lk.profile_id for lk in all_links} | {m.survivor for m in all_merges}
    _update_profiles(conn, fresh, event_profiles, profiles, changed)
    # Messages for destinations, in this transaction (workers/outbox.py).
    write_outbox(conn, tenant_id, fresh, event_profiles, all_merges)
    out.stored = len(fresh)
    return out


def _drop_suppressed(events: list[PreparedEvent], suppressed: set[tuple[str, str]]) -> None:
    """Identifiers of erased people never identify again (recorded with the event)."""
    for e in events:
        kept = [i for i in e.identifiers if (i.type, i.hash) not in suppressed]
        if len(kept) != len(e.identifiers):
            for i in e.identifiers:
                if (i.type, i.hash) in suppressed:
                    e.decisions.append({"kind": "suppressed", "type": i.type, "hash": i.hash,
                                        "message": "identifier of an erased profile"})
            e.identifiers = kept


def _insert_profiles(conn: psycopg.Connection, tenant_id: str, rows: list[ProfileRow]) -> None:
    if not rows:
        return
    conn.execute(
        "INSERT INTO profiles (id, tenant_id, first_seen, last_seen)"
        " SELECT u.id, %s, u.ts, u.ts FROM json_to_recordset(%s::json) AS u(id uuid, ts timestamptz)",
        (tenant_id, json_rows([{"id": r.id, "ts": r.first_seen} for r in rows])),
    )
    for r in rows:
        r.new = False


def _record_consents(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent],
                     profile_ids: list[str | None]) -> None:
    """Consent objects of events: a history row each, and the current state per type
    (the decision with the newest event time wins)."""
    rows = []
    for e, pid in zip(events, profile_ids, strict=True):
        if pid is None or not e.event.consent:
            continue
        ctx = e.context
        ua = ctx.get("user_agent") or ctx.get("userAgent")
        for consent_type, granted in e.event.consent.items():
            rows.append({"p": pid, "c": consent_type, "g": granted, "t": e.event.event_time, "s": e.source_id,
                         "e": e.event.event_id, "ip": str(ctx["ip"])[:64] if ctx.get("ip") else None,
                         "ua": str(ua)[:512] if ua else None})
    if not rows:
        return
    data = json_rows(rows)
    conn.execute(
        "INSERT INTO consent_history (tenant_id, profile_id, consent_type, granted, recorded_at, source_id, event_id,"
        " ip, user_agent) SELECT %s, p, c, g, t, s, e, ip, ua FROM json_to_recordset(%s::json)"
        " AS u(p uuid, c text, g boolean, t timestamptz, s uuid, e uuid, ip text, ua text)",
        (tenant_id, data),
    )
    conn.execute(
        "INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at, source_id)"
        " SELECT DISTINCT ON (p, c) p, c, %s, g, t, s FROM json_to_recordset(%s::json)"
        " AS u(p uuid, c text, g boolean, t timestamptz, s uuid) ORDER BY p, c, t DESC"
        " ON CONFLICT (profile_id, consent_type) DO UPDATE SET granted = EXCLUDED.granted,"
        " updated_at = EXCLUDED.updated_at, source_id = EXCLUDED.source_id"
        " WHERE EXCLUDED.updated_at >= consents.updated_at",
        (tenant_id, data),
    )


def _copy_text(value: str) -> str:
    """A value in COPY's text format (backslash, tab and line breaks escaped)."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_events(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent],
                 profile_ids: list[str | None], decisions: list[list[dict]]) -> None:
    """COPY the events in text format, building the lines directly: psycopg's per-row
    formatter was a large share of the worker's time."""
    enc = _json.encode
    lines = []
    for e, pid, dec in zip(events, profile_ids, decisions, strict=True):
        ev = e.event
        lines.append("\t".join((
            tenant_id, ev.event_id, ev.event_time.isoformat(), e.received_at.isoformat(), e.source_id,
            pid or "\\N", _copy_text(ev.dedupe_key), _copy_text(ev.event_type), _copy_text(ev.event_name),
            _copy_text(enc(e.properties).decode()), _copy_text(enc(e.context).decode()),
            _copy_text(enc([[i.type, i.hash] for i in e.identifiers]).decode()), str(ev.emq),
            _copy_text(enc(dec).decode()) if dec else "\\N",
        )))
    lines.append("")
    with conn.cursor().copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
        copy.write("\n".join(lines).encode())


def _update_profiles(conn: psycopg.Connection, events: list[PreparedEvent], profile_ids: list[str | None],
                     profiles: dict[str, ProfileRow], changed: set[str]) -> None:
    """Write back every profile whose events, identifiers or merges changed it."""
    touched: set[str] = set(changed)
    for e, pid in zip(events, profile_ids, strict=True):
        if pid is None:
            continue
        p = profiles[pid]
        ev = e.event
        touched.add(pid)
        p.event_count += 1
        if is_purchase(ev.event_name):
            p.purchase_count += 1
            p.revenue += revenue_of(e.properties)
        p.first_seen = min(p.first_seen, ev.event_time)
        p.last_seen = max(p.last_seen, ev.event_time)
        if e.traits:
            merge_traits(p.traits, p.trait_times, e.traits, ev.event_time)
    for pid in touched:
        p = profiles[pid]
        p.lifecycle = next_lifecycle(p.lifecycle, known=p.known, purchases=p.purchase_count)
    rows = [profiles[pid] for pid in sorted(touched)]
    if not rows:
        return
    conn.execute(
        "UPDATE profiles p SET lifecycle = u.lc, traits = u.tr, trait_times = u.tt, event_count = u.ec,"
        " purchase_count = u.pc, revenue = u.rv, identifier_count = u.ic, merge_count = u.mc,"
        " first_seen = u.fs, last_seen = u.ls, updated_at = now()"
        " FROM json_to_recordset(%s::json) AS u(id uuid, lc text, tr jsonb, tt jsonb, ec bigint, pc bigint,"
        " rv numeric, ic int, mc int, fs timestamptz, ls timestamptz) WHERE p.id = u.id",
        (json_rows([{"id": r.id, "lc": r.lifecycle, "tr": r.traits, "tt": r.trait_times, "ec": r.event_count,
                     "pc": r.purchase_count, "rv": r.revenue, "ic": sum(r.counts.values()), "mc": r.merge_count,
                     "fs": r.first_seen, "ls": r.last_seen} for r in rows]),),
    )
