"""Writing a batch: dedupe, identity resolution, events (COPY) and profile upkeep, in one
transaction. Running it twice for the same events changes nothing the second time."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from core.identity import (
    IdentityRules,
    Plan,
    plan_identities,
    settled_holder,
)
from core.identity_plan import EventIdentity
from core.profiles import (
    MAX_TRAIT_KEYS,
    MAX_TRAITS_BYTES,
    add_revenue,
    merge_traits,
    merge_traits_once,
)
from stratum.db.overlap import FirstThen, Overlap, current_work, while_waiting
from stratum.db.params import json_rows, json_value
from workers.copy_binary import copy_rows, uuid_field
from workers.decision_log import decision_rows, record_decisions
from workers.event_rows import EVENT_COLUMNS, KEY_COLUMNS, copy_row
from workers.identity_store import (
    ProfileRow,
    Snapshot,
    apply_merges,
    apply_moves,
    link_identifiers,
    load_snapshot,
    load_traits,
    stale_identifiers,
    touch_identifiers,
)
from workers.outbox import write_outbox
from workers.prepare import PreparedEvent
from workers.profile_writeback import write_profiles, writeback_steps

_LINK_TYPES = {"alias": "alias", "identify": "identify"}


@dataclass
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    profiles_created: int = 0
    merges: int = 0
    # events left for a later transaction (``persist_tenant_events(..., defer=True)``)
    deferred: list[PreparedEvent] = dataclasses.field(default_factory=list)


def _claim_dedupe_keys(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent]) -> list[PreparedEvent]:
    """Insert the events' scoped dedupe key hashes (``PreparedEvent.dedupe_hex``: the tenant
    for server-side sources, the source for website ones); return the events that won them
    (first time seen). Keys themselves are never written.

    Duplicates that reach a worker are rare (the door drops repeats inside its window), so
    the keys are first copied in, in a savepoint: COPY costs the server about half of an
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for the same rows. A key stored already
    (a late copy, a job run again) fails that COPY, and the batch's keys then go through
    the insert that skips them (``_insert_dedupe_keys``); a key another transaction holds
    uncommitted is waited for by both. Within the batch the first event of a key wins it."""
    # hex sorts as the bytes do: one lock order for concurrent batches
    ordered = sorted(events, key=lambda e: e.dedupe_hex)
    firsts = [e for i, e in enumerate(ordered) if i == 0 or e.dedupe_hex != ordered[i - 1].dedupe_hex]
    try:
        with conn.transaction():
            copy_rows(conn, "event_keys", KEY_COLUMNS, [e.key_row for e in firsts])
        won = {e.event.event_id for e in firsts}
    except psycopg.errors.UniqueViolation:
        won = _insert_dedupe_keys(conn, tenant_id, ordered)
    lost = [e for e in events if e.event.event_id not in won]
    if lost:
        # Copies that arrived after the ingest window: remember what they duplicate, so the
        # read API can answer "duplicate" for their event ids.
        conn.execute(
            "INSERT INTO event_outcomes (event_id, tenant_id, status, duplicate_of)"
            " SELECT u.e, %s, 'duplicate', k.event_id FROM json_to_recordset(%s::json) AS u(e uuid, k text)"
            " JOIN event_keys k ON k.tenant_id = %s AND k.key_hash = decode(u.k, 'hex') AND k.event_id <> u.e"
            " ON CONFLICT (tenant_id, event_id) DO NOTHING",
            (tenant_id, json_rows([{"e": e.event.event_id, "k": e.dedupe_hex} for e in lost]), tenant_id),
        )
        return [e for e in events if e.event.event_id in won]
    return events


def _insert_dedupe_keys(conn: psycopg.Connection, tenant_id: str, ordered: list[PreparedEvent]) -> set[str]:
    """The event ids whose keys this insert stored (keys stored already are skipped)."""
    rows = conn.execute(
        "INSERT INTO event_keys (tenant_id, key_hash, event_id, event_time)"
        " SELECT %s, decode(k, 'hex'), e, t FROM json_to_recordset(%s::json) AS u(k text, e uuid, t timestamptz)"
        " ON CONFLICT DO NOTHING RETURNING event_id::text",
        (tenant_id, json_rows([{"k": e.dedupe_hex, "e": e.event.event_id, "t": e.event.event_time}
                               for e in ordered])),
    ).fetchall()
    return {r[0] for r in rows}


def split_expired(events: list[PreparedEvent], oldest: datetime | None
                  ) -> tuple[list[PreparedEvent], list[PreparedEvent]]:
    """(events to store, events older than the retention cut-off ``oldest``). An event can
    pass the door and still be too old here: queued before its month left retention."""
    if oldest is None or all(e.event.event_time >= oldest for e in events):
        return events, []
    return ([e for e in events if e.event.event_time >= oldest],
            [e for e in events if e.event.event_time < oldest])


def record_rejected(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent], reason: str) -> None:
    """Events not stored (nor counted on any profile): the read API answers ``rejected``
    for their ids. Idempotent, like everything a retried job writes."""
    if not events:
        return
    conn.execute(
        "INSERT INTO event_outcomes (event_id, tenant_id, status, reason)"
        " SELECT u.e, %s, 'rejected', %s FROM json_to_recordset(%s::json) AS u(e uuid)"
        " ON CONFLICT (tenant_id, event_id) DO NOTHING",
        (tenant_id, reason, json_rows([{"e": e.event.event_id} for e in events])),
    )


def persist_tenant_events(
    conn: psycopg.Connection,
    tenant_id: str,
    events: list[PreparedEvent],
    rules: IdentityRules,
    new_profile_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    touch_granularity: timedelta = timedelta(0),
    *,
    defer: bool = False,
) -> BatchOutcome:
    """Store one tenant's events inside the caller's transaction.

    ``defer``: wait for no identifier another transaction holds. Events carrying one (its
    advisory lock, or its profile's row, is taken) are neither stored nor claimed, and come
    back in ``BatchOutcome.deferred`` for a later transaction; the others are stored as
    usual. Without it, every lock is waited for.

    ``touch_granularity``: a stored identifier's ``last_seen`` is rewritten only when it
    moves later by more than this (``STRATUM_IDENTIFIER_TOUCH_GRANULARITY_S``); its
    ``first_seen``, and both times of identifiers linked by this batch, stay exact.

    Raises SnapshotChanged (retry the transaction) when a concurrent merge, or a move of a
    provisional identifier, changed the graph. ``events`` are never modified, so a retry
    after a rollback sees the same inputs.
    """
    out = BatchOutcome()
    # Locks first, dedupe keys second, in every transaction: one order, so no cycle of waits.
    spans = _identifier_spans(events)
    snapshot = load_snapshot(conn, tenant_id, spans.keys(), wait=not defer, events=[e.identity for e in events])
    if snapshot.unavailable:
        events, out.deferred = _split_unavailable(events, snapshot.unavailable)
    fresh = _claim_dedupe_keys(conn, tenant_id, events)
    out.duplicates = len(events) - len(fresh)
    if not fresh:
        return out
    if out.deferred or out.duplicates:
        spans = _identifier_spans(fresh)  # the times of the events stored, not of the others
    if snapshot.suppressed:
        fresh = _drop_suppressed(fresh, snapshot.suppressed)

    plan = _plan(fresh, snapshot, rules, new_profile_id)
    out.profiles_created, out.merges = len(plan.created), len(plan.merges)
    load_traits(conn, tenant_id, snapshot.profiles, _trait_profiles(fresh, plan))
    decisions = _apply_plan(conn, tenant_id, fresh, plan, snapshot.profiles, spans)
    owners_touched = _touch_identifiers(conn, tenant_id, spans, snapshot, touch_granularity)
    _store_events(conn, tenant_id, fresh, plan, snapshot.profiles, decisions, owners_touched)
    out.stored = len(fresh)
    return out


def _plan(events: list[PreparedEvent], snapshot: Snapshot, rules: IdentityRules,
          new_profile_id: Callable[[], str]) -> Plan:
    """The identity plan of ``events`` (each event's trust was decided when it was prepared:
    ``PreparedEvent.identity``); the profiles it creates join ``snapshot.profiles``. They
    are inserted once, with their final values, by the write-back
    (workers/profile_writeback.py): the foreign keys to them are checked at commit
    (migration 0014)."""
    profiles = snapshot.profiles
    identities = [e.identity for e in events]
    plan = plan_identities(
        identities, snapshot.graph, {pid: p.planner_state() for pid, p in profiles.items() if p.detailed}, rules,
        new_profile_id=new_profile_id, apart=snapshot.apart, settled=_settled(identities, snapshot),
    )
    for pid, st in plan.created.items():
        profiles[pid] = ProfileRow(pid, "anonymous", {}, {}, 0, 0, Decimal(0), 0, st.first_seen, st.first_seen,
                                   new=True)
    return plan


def _apply_plan(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent], plan: Plan,
                profiles: dict[str, ProfileRow], spans: dict[tuple[str, str], tuple[datetime, datetime]]
                ) -> list[list[dict]]:
    """Write the plan's merges, links and moves, and its decisions to the decision log
    (CONTRACT 9: links, merges and refusals, per profile). Returns each event's decisions
    (its own, then the plan's), for its stored row."""
    ids = [e.event.event_id for e in events]
    link_types = [_LINK_TYPES.get(e.event.event_type, "co_occurrence") for e in events]
    apply_merges(conn, tenant_id, plan, profiles, ids)
    link_identifiers(conn, tenant_id, plan, ids, spans, link_types, profiles)
    apply_moves(conn, tenant_id, plan, ids, link_types, profiles)
    decisions: list[list[dict]] = [list(e.decisions) for e in events]
    for d in plan.decisions:
        decisions[d.event_index].append(d.as_dict())
    record_decisions(conn, tenant_id, decision_rows(plan, ids, plan.event_profiles, link_types, decisions))
    return decisions


def _touch_identifiers(conn: psycopg.Connection, tenant_id: str,
                       spans: dict[tuple[str, str], tuple[datetime, datetime]], snapshot: Snapshot,
                       granularity: timedelta) -> set[str]:
    """Move the stored identifiers' seen times (``stale_identifiers``); return the loaded
    profiles owning one, which the write-back updates (their ``updated_at`` moves)."""
    profiles = snapshot.profiles
    owners = touch_identifiers(conn, tenant_id, stale_identifiers(spans, snapshot.seen, granularity))
    if not owners <= profiles.keys():  # not expected: owners of stored identifiers are all loaded
        conn.execute("UPDATE profiles SET updated_at = now() WHERE tenant_id = %s AND id IN"
                     " (SELECT value::uuid FROM json_array_elements_text(%s::json))",
                     (tenant_id, json_value(sorted(owners - profiles.keys()))))
        owners &= profiles.keys()
    return owners


def _store_events(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent], plan: Plan,
                  profiles: dict[str, ProfileRow], decisions: list[list[dict]], owners_touched: set[str]) -> None:
    """The events' rows, consents, profile write-back and outbox messages."""
    event_profiles = plan.event_profiles
    _merge_event_traits(events, event_profiles, profiles, decisions)
    # Before the COPY: an amount left out of the counter is recorded as a warning on its event.
    _add_revenue(events, event_profiles, profiles, decisions)
    # Owners of touched identifiers are written back with the others (their updated_at
    # moves), instead of by a second UPDATE of the same rows.
    changed = ({lk.profile_id for lk in plan.links} | {m.survivor for m in plan.merges}
               | {p for mv in plan.moves for p in (mv.from_profile, mv.to_profile)} | owners_touched)
    # Traits change only through events carrying traits and through merges.
    traits_changed = ({pid for e, pid in zip(events, event_profiles, strict=True)
                       if pid is not None and (e.traits or e.traits_once)}
                      | {m.survivor for m in plan.merges})
    # The write-back's Python runs while the events' COPY waits, ahead of the next round's
    # preparation (what the waits ran so far).
    writeback = Overlap(writeback_steps(tenant_id, events, event_profiles, profiles,
                                        changed | plan.created.keys(), traits_changed))
    with while_waiting(FirstThen(writeback, current_work())):
        _copy_events(conn, events, event_profiles, decisions)
        _record_consents(conn, tenant_id, events, event_profiles)
    write_profiles(conn, tenant_id, writeback.result())
    # Messages for destinations, in this transaction (workers/outbox.py).
    write_outbox(conn, tenant_id, events, event_profiles, plan.merges)


def _settled(identities: list[EventIdentity], snapshot: Snapshot) -> dict[int, str]:
    """The events (by index) sitting wholly on a profile loaded without its counts: nothing
    of the batch can change that profile (load_snapshot), so they need no plan."""
    profiles = snapshot.profiles
    if all(p.detailed for p in profiles.values()):
        return {}
    settled = {}
    for i, identity in enumerate(identities):
        pid = settled_holder(identity, snapshot.graph, snapshot.provisional)
        if pid is not None and not profiles[pid].detailed:
            settled[i] = pid
    return settled


def _trait_profiles(events: list[PreparedEvent], plan: Plan) -> set[str]:
    """The profiles whose traits the batch may change: those of events carrying traits, and
    both sides of every merge (``load_traits`` skips those it holds already, new ones too)."""
    out = {pid for e, pid in zip(events, plan.event_profiles, strict=True)
           if pid is not None and (e.traits or e.traits_once)}
    for m in plan.merges:
        out.add(m.survivor)
        out.add(m.absorbed)
    return out


def _split_unavailable(events: list[PreparedEvent], unavailable: set[tuple[str, str]]
                       ) -> tuple[list[PreparedEvent], list[PreparedEvent]]:
    """(events whose identifiers are all locked, events carrying an unavailable one)."""
    kept, deferred = [], []
    for e in events:
        if any((i.type, i.hash) in unavailable for i in e.identifiers):
            deferred.append(e)
        else:
            kept.append(e)
    return kept, deferred


def _identifier_spans(events: list[PreparedEvent]) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """(earliest, latest) state time of each identifier over ``events``."""
    spans: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for e in events:
        t = e.state_time
        for ident in e.identifiers:
            key = (ident.type, ident.hash)
            lo_hi = spans.get(key)
            if lo_hi is None:
                spans[key] = (t, t)
            elif t < lo_hi[0]:
                spans[key] = (t, lo_hi[1])
            elif t > lo_hi[1]:
                spans[key] = (lo_hi[0], t)
    return spans


def _drop_suppressed(events: list[PreparedEvent], suppressed: set[tuple[str, str]]) -> list[PreparedEvent]:
    """Identifiers of erased people never identify again (recorded with the event).

    Returns copies of the events that held one; the inputs stay as they were, so a retried
    transaction starts from the same events."""
    out = []
    for e in events:
        dropped = [i for i in e.identifiers if (i.type, i.hash) in suppressed]
        if not dropped:
            out.append(e)
            continue
        notes = [{"kind": "suppressed", "type": i.type, "hash": i.hash, "message": "identifier of an erased profile"}
                 for i in dropped]
        out.append(dataclasses.replace(e, identifiers=[i for i in e.identifiers if (i.type, i.hash) not in suppressed],
                                       decisions=[*e.decisions, *notes]))
    return out


def _record_consents(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent],
                     profile_ids: list[str | None]) -> None:
    """Consent objects of events: a history row each, and the current state per type
    (the decision with the newest state time wins)."""
    rows = []
    for e, pid in zip(events, profile_ids, strict=True):
        if pid is None or not e.event.consent:
            continue
        ctx = e.context
        ua = ctx.get("user_agent") or ctx.get("userAgent")
        for consent_type, granted in e.event.consent.items():
            rows.append({"p": pid, "c": consent_type, "g": granted, "t": e.state_time, "s": e.source_id,
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
        " ON CONFLICT (tenant_id, profile_id, consent_type) DO UPDATE SET granted = EXCLUDED.granted,"
        " updated_at = EXCLUDED.updated_at, source_id = EXCLUDED.source_id"
        " WHERE EXCLUDED.updated_at >= consents.updated_at",
        (tenant_id, data),
    )


def _copy_events(conn: psycopg.Connection, events: list[PreparedEvent], profile_ids: list[str | None],
                 decisions: list[list[dict]]) -> None:
    """COPY the events: each prepared row completed with its profile and decisions."""
    fields: dict[str | None, bytes] = {}  # each profile's field, built once
    rows = []
    for e, pid, dec in zip(events, profile_ids, decisions, strict=True):
        field = fields.get(pid)
        if field is None:
            field = fields[pid] = uuid_field(pid)
        rows.append(copy_row(e, field, dec))
    copy_rows(conn, "events", EVENT_COLUMNS, rows)


def _merge_event_traits(events: list[PreparedEvent], profile_ids: list[str | None],
                        profiles: dict[str, ProfileRow], decisions: list[list[dict]]) -> None:
    """Fold each event's traits into its profile (newest state time per key), before the
    events are written: keys refused by the profile caps are warned on the event itself."""
    for e, pid, dec in zip(events, profile_ids, decisions, strict=True):
        if pid is None or not (e.traits or e.traits_once):
            continue
        p = profiles[pid]
        refused = merge_traits(p.traits, p.trait_times, e.traits, e.state_time)
        if e.traits_once:  # PostHog $set_once: the oldest state time wins
            refused += merge_traits_once(p.traits, p.trait_times, e.traits_once, e.state_time)
        if refused:
            # The count only: trait keys are client text and warnings never echo it.
            dec.append({"kind": "warning", "message": f"{len(refused)} trait key(s) refused: profile traits are "
                        f"capped at {MAX_TRAIT_KEYS} keys and {MAX_TRAITS_BYTES // 1024} KB of JSON"})


def _add_revenue(events: list[PreparedEvent], profile_ids: list[str | None], profiles: dict[str, ProfileRow],
                 decisions: list[list[dict]]) -> None:
    """Add purchases' amounts to their profiles' revenue. Counters never fail a batch: an
    amount that cannot be summed, or a total that would no longer fit ``profiles.revenue``,
    is left out with a warning in the event's ``decisions``."""
    for e, pid, dec in zip(events, profile_ids, decisions, strict=True):
        amount = e.purchase
        if pid is None or amount is None:
            continue
        p = profiles[pid]
        if amount.warning:
            dec.append({"kind": "warning", "message": amount.warning})
        total = add_revenue(p.revenue, amount.amount)
        if total is None:
            dec.append({"kind": "warning", "message": "revenue left out: the profile's total would exceed the"
                                                      " counter's range"})
        else:
            p.revenue = total

