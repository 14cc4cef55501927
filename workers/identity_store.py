"""Loading the identity graph snapshot and applying a plan, inside the caller's transaction.

Concurrency protocol (any number of workers, READ COMMITTED), ``load_batch``:
0. read, without locks, which live profile holds each identifier of the batch; the
   *steady* events (core/identity_steady.py: every identifier on one live profile, none
   provisional or suppressed, that profile touched by no other event of the batch) skip
   steps 1 and the planner; every other event is *planned*;
1. take a transaction-level advisory lock per identifier of the planned events, in sorted
   order, so two workers never create or link the same identifier at once, and read the
   graph of those identifiers again under the locks;
2. lock the profile rows FOR UPDATE in id order: the planned events' profiles and the
   steady events' ones together, in one statement (a merge locks both sides, so it cannot
   race a link to the absorbed profile); if a planned identifier now sits on a steady
   profile, raise ``SnapshotChanged`` (the split no longer holds);
3. if a locked profile turns out merged or erased meanwhile (a merge holds the absorbed
   profile's lock; erasure deletes it under the same lock), raise ``SnapshotChanged`` and
   the whole transaction is retried;
4. read the graph of every identifier again once the profiles are locked: besides merges,
   a provisional identifier can move (or be displaced at a type limit) to another profile,
   under the row lock of the profile it leaves but without the advisory lock of an
   identifier outside that batch. Every change to a steady identifier (a merge, a move, an
   erasure) is made under the row lock of the profile it leaves, which we now hold, so this
   read shows any that committed since step 0, and none can happen before we commit. Any
   difference (a steady identifier elsewhere than in step 0, a planned one elsewhere than
   in step 1) means the snapshot is stale: ``SnapshotChanged`` again.
A steady event's identifiers are not advisory-locked: nothing creates or links them (they
are stored), and whoever moves one needs its profile's row lock, held here until commit.
5. unmerge blocks (``identity_blocks``) naming a planned identifier or a planned profile
   are read once the profiles are locked: an unmerge writes its block holding the
   survivor's row lock, so a batch that could join the two again sees it (steady events
   join nothing).
All locks are taken in one global order (advisory keys, then profile ids), so waits
cannot form a cycle; Postgres' deadlock detector and the retry loop cover the rest.
The read API's unmerge (read_api/unmerge.py) takes the same locks in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from core.identifiers import KNOWN_TYPES
from core.identity import Apart, Plan, ProfileState
from core.identity_steady import steady_events
from core.profiles import clamp_revenue, merge_trait_sets
from stratum.db.params import array_literal, json_rows, json_value
from stratum.identity_locks import advisory_key


class SnapshotChanged(Exception):
    """The graph moved between reading and locking; retry the transaction."""


@dataclass
class ProfileRow:
    id: str
    lifecycle: str
    traits: dict[str, Any]
    trait_times: dict[str, str]
    event_count: int
    purchase_count: int
    revenue: Decimal
    merge_count: int
    first_seen: datetime
    last_seen: datetime
    counts: dict[str, int] = field(default_factory=dict)
    new: bool = False
    # provisional identifiers (type, hash) -> rank (microseconds since the epoch of the link)
    provisional: dict[tuple[str, str], int] = field(default_factory=dict)
    # A steady profile (only steady events, core/identity_steady.py) gains no identifier in
    # the batch, so its counts are not loaded: its stored identifier_count stands, and
    # whether it holds a known identifier is read only when its lifecycle depends on it.
    steady_identifiers: int | None = None
    steady_known: bool = False

    def planner_state(self) -> ProfileState:
        return ProfileState(self.id, self.first_seen, dict(self.counts), self.merge_count, self.new,
                            dict(self.provisional))

    @property
    def known(self) -> bool:
        if self.steady_identifiers is not None:
            return self.steady_known
        return any(self.counts.get(t, 0) > 0 for t in KNOWN_TYPES)

    @property
    def identifier_total(self) -> int:
        if self.steady_identifiers is not None:
            return self.steady_identifiers
        return sum(self.counts.values())


@dataclass
class Snapshot:
    graph: dict[tuple[str, str], str]
    profiles: dict[str, ProfileRow]
    suppressed: set[tuple[str, str]]
    # (first_seen, last_seen) of every stored identifier of the batch, read under its
    # advisory lock, so nothing else changes them before the transaction ends
    seen: dict[tuple[str, str], tuple[datetime, datetime]] = field(default_factory=dict)
    # identifiers an unmerge split from a profile of the snapshot, or carried by the batch
    apart: list[Apart] = field(default_factory=list)
    # event index -> profile of the batch's steady events (not planned)
    steady: dict[int, str] = field(default_factory=dict)


# One statement, so one snapshot: an erasure committing meanwhile is seen either whole
# (identifier gone and suppressed) or not at all (identifier on a profile, whose row lock
# then waits for the erasure and finds it gone: SnapshotChanged, retry).
_GRAPH_SQL = """
SELECT k.n, pi.profile_id::text, s.tenant_id IS NOT NULL, pi.provisional_since IS NOT NULL{times}
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS k(t, h, n)
LEFT JOIN profile_identifiers pi ON pi.tenant_id = %s AND pi.type = k.t AND pi.hash = k.h
LEFT JOIN suppressed_identifiers s ON s.tenant_id = %s AND s.type = k.t AND s.hash = k.h
WHERE pi.profile_id IS NOT NULL OR s.tenant_id IS NOT NULL
"""
_GRAPH_ONLY_SQL = _GRAPH_SQL.format(times="")
_GRAPH_TIMES_SQL = _GRAPH_SQL.format(times=", pi.first_seen, pi.last_seen")

# Traits only where the batch can change them (planned profiles, steady ones whose events
# carry traits): the others skip sending and parsing their jsonb. ``known`` only for
# steady churned profiles, the one lifecycle that is re-derived from what a profile holds.
_LOCK_PROFILES_SQL = """
SELECT id::text, lifecycle, CASE WHEN t THEN traits END, CASE WHEN t THEN trait_times END, event_count,
       purchase_count, revenue, merge_count, first_seen, last_seen, merged_into, identifier_count,
       CASE WHEN s AND lifecycle = 'churned' THEN EXISTS (
           SELECT 1 FROM profile_identifiers pi WHERE pi.profile_id = p.id AND pi.type = ANY(%s)) END
FROM profiles p JOIN json_to_recordset(%s::json) AS u(i uuid, t boolean, s boolean) ON p.id = u.i
WHERE p.tenant_id = %s
ORDER BY id FOR UPDATE OF p
"""

_PROVISIONAL_SQL = """
SELECT profile_id::text, type, hash, provisional_since FROM profile_identifiers
WHERE profile_id IN (SELECT value::uuid FROM json_array_elements_text(%s::json)) AND provisional_since IS NOT NULL
"""

# Blocks naming a batch identifier, or a snapshot profile (or one merged into it); an
# identifier held outside the snapshot cannot join anything in this batch.
_APART_SQL = """
WITH snap AS (SELECT value::uuid AS id FROM json_array_elements_text(%(profiles)s::json)),
targets AS (SELECT id FROM snap UNION SELECT p.id FROM profiles p JOIN snap ON p.tenant_id = %(tenant_id)s
                                               AND p.merged_into = snap.id)
SELECT b.type, b.hash, pi.profile_id::text, coalesce(p.merged_into, p.id)::text
FROM identity_blocks b JOIN profiles p ON p.tenant_id = b.tenant_id AND p.id = b.profile_id
LEFT JOIN profile_identifiers pi ON pi.tenant_id = b.tenant_id AND pi.type = b.type AND pi.hash = b.hash
WHERE b.tenant_id = %(tenant_id)s AND (b.profile_id IN (SELECT id FROM targets)
      OR (b.type, b.hash) IN (SELECT t, h FROM json_to_recordset(%(keys)s::json) AS k(t text, h text)))
"""

_COUNTS_SQL = """
SELECT profile_id::text, type, count(*) FROM profile_identifiers
WHERE profile_id IN (SELECT value::uuid FROM json_array_elements_text(%s::json)) GROUP BY 1, 2
"""


@dataclass
class _GraphRead:
    owner: dict[tuple[str, str], str]
    suppressed: set[tuple[str, str]]
    seen: dict[tuple[str, str], tuple[datetime, datetime]]
    provisional: set[tuple[str, str]]


def _read_graph(conn: psycopg.Connection, tenant_id: str, keys: list[tuple[str, str]],
                times: bool = False) -> _GraphRead:
    """Which live profile holds each key, which keys are suppressed by an erasure, which
    stored keys are provisional, and with ``times`` the stored keys' (first_seen, last_seen).
    Rows come back by position in ``keys``: no key text travels back."""
    if not keys:
        return _GraphRead({}, set(), {}, set())
    rows = conn.execute(_GRAPH_TIMES_SQL if times else _GRAPH_ONLY_SQL,
                        (array_literal([t for t, _ in keys]), array_literal([h for _, h in keys]),
                         tenant_id, tenant_id)).fetchall()
    owner, suppressed, seen, provisional = {}, set(), {}, set()
    for row in rows:
        key = keys[row[0] - 1]
        pid = row[1]
        if pid is not None:
            owner[key] = pid
            if row[3]:
                provisional.add(key)
            if times:
                seen[key] = (row[4], row[5])
        if row[2]:
            suppressed.add(key)
    return _GraphRead(owner, suppressed, seen, provisional)


def load_batch(conn: psycopg.Connection, tenant_id: str, events_keys: list[list[tuple[str, str]]],
               eligible: list[bool], with_traits: list[bool]) -> Snapshot:
    """Find the batch's steady events, lock what the others need, lock every profile the
    batch writes; return the snapshot (protocol: the module docstring).

    ``events_keys``: each event's (type, hash) identifiers; ``eligible``:
    ``core.identity_steady.may_be_steady`` per event; ``with_traits``: the event carries
    traits. Raises SnapshotChanged when the graph moved meanwhile (retry the transaction).
    """
    all_keys = sorted({k for keys in events_keys for k in keys})
    first = _read_graph(conn, tenant_id, all_keys)
    steady = steady_events(events_keys, eligible, first.owner, first.provisional, first.suppressed)
    planned_keys = sorted({k for i, keys in enumerate(events_keys) if i not in steady for k in keys})
    graph = _lock_identifiers(conn, tenant_id, planned_keys)
    steady_profiles = set(steady.values())
    if not steady_profiles.isdisjoint(graph.owner.values()):
        raise SnapshotChanged("an identifier moved onto a steady profile")
    planned_profiles = set(graph.owner.values())
    traits_for = planned_profiles | {pid for i, pid in steady.items() if with_traits[i]}
    profiles = _lock_profiles(conn, tenant_id, sorted(planned_profiles | steady_profiles), traits_for, steady_profiles)
    if steady_profiles or planned_profiles:
        # Only a merge moves an identifier between profiles, and a merge holds the absorbed
        # profile's row lock: a profile read before a concurrent merge committed is now
        # locked with merged_into set (checked while locking). A provisional identifier
        # moves under the row lock of the profile it leaves, which we now hold: reading the
        # graph again shows any such move committed before our lock.
        again = _read_graph(conn, tenant_id, all_keys, times=True)
        expected = dict(graph.owner)
        expected.update((k, pid) for i, pid in steady.items() for k in events_keys[i])
        if again.owner != expected:
            raise SnapshotChanged("an identifier moved while locking")
        graph = _GraphRead(graph.owner, graph.suppressed, again.seen, graph.provisional)
    if planned_profiles:
        ids_param = json_value(sorted(planned_profiles))
        for pid, id_type, n in conn.execute(_COUNTS_SQL, (ids_param,)).fetchall():
            profiles[pid].counts[id_type] = n
        for pid, id_type, id_hash, since in conn.execute(_PROVISIONAL_SQL, (ids_param,)).fetchall():
            profiles[pid].provisional[(id_type, id_hash)] = int(since.timestamp() * 1_000_000)
    apart = [Apart((t, h), holder, other) for t, h, holder, other in conn.execute(_APART_SQL, {
        "profiles": json_value(sorted(planned_profiles)), "tenant_id": tenant_id,
        "keys": json_rows([{"t": t, "h": h} for t, h in planned_keys])}).fetchall()] if planned_keys else []
    return Snapshot(graph.owner, profiles, graph.suppressed, graph.seen, apart, steady)


def _lock_identifiers(conn: psycopg.Connection, tenant_id: str, keys: list[tuple[str, str]]) -> _GraphRead:
    """Take the advisory lock of each key (sorted) and read their graph under the locks
    (a read from before the locks may miss a link committed while we waited)."""
    if not keys:
        return _GraphRead({}, set(), {}, set())
    locks = sorted({advisory_key(tenant_id, t, h) for t, h in keys})
    conn.execute("SELECT count(pg_advisory_xact_lock(k::bigint)) FROM json_array_elements_text(%s::json) AS k",
                 (json_value(locks),))
    return _read_graph(conn, tenant_id, keys)


def _lock_profiles(conn: psycopg.Connection, tenant_id: str, ids: list[str], traits_for: set[str],
                   steady: set[str]) -> dict[str, ProfileRow]:
    """Lock the profile rows in id order; raise SnapshotChanged if one was merged away or
    erased meanwhile."""
    if not ids:
        return {}
    param = json_rows([{"i": pid, "t": pid in traits_for, "s": pid in steady} for pid in ids])
    profiles: dict[str, ProfileRow] = {}
    for row in conn.execute(_LOCK_PROFILES_SQL, (list(KNOWN_TYPES), param, tenant_id)).fetchall():
        if row[10] is not None:
            raise SnapshotChanged(f"profile {row[0]} was merged meanwhile")
        p = ProfileRow(row[0], row[1], row[2] if row[2] is not None else {}, row[3] if row[3] is not None else {},
                       row[4], row[5], row[6], row[7], row[8], row[9])
        if row[0] in steady:
            p.steady_identifiers = row[11]
            p.steady_known = bool(row[12])
        profiles[row[0]] = p
    if len(profiles) != len(ids):
        raise SnapshotChanged("a profile was erased while locking")
    return profiles


def _profile_snapshot(p: ProfileRow, identifiers: list[list[str]] | None = None,
                      consents: dict[str, dict] | None = None) -> dict[str, Any]:
    """One side of a merge as it was: what an unmerge restores (core/unmerge.py)."""
    return {
        "id": p.id, "lifecycle": p.lifecycle, "traits": dict(p.traits), "trait_times": dict(p.trait_times),
        "counters": {"events": p.event_count, "purchases": p.purchase_count, "revenue": str(p.revenue)},
        "identifier_counts": dict(p.counts), "first_seen": p.first_seen.isoformat(),
        "last_seen": p.last_seen.isoformat(), "merge_count": p.merge_count,
        "identifiers": sorted(identifiers or []), "consents": dict(consents or {}),
    }


def _sides_before_merge(conn: psycopg.Connection, tenant_id: str, plan: Plan
                        ) -> tuple[dict[str, list[list[str]]], dict[str, dict[str, dict]], int]:
    """(identifiers, consents of every profile a merge of the plan touches, the consent
    history watermark): read before anything moves. Merges are rare, so two more reads."""
    ids = sorted({p for m in plan.merges for p in (m.survivor, m.absorbed)})
    idents: dict[str, list[list[str]]] = {p: [] for p in ids}
    for pid, t, h in conn.execute("SELECT profile_id::text, type, hash FROM profile_identifiers"
                                  " WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])", (tenant_id, ids)).fetchall():
        idents[pid].append([t, h])
    consents: dict[str, dict[str, dict]] = {p: {} for p in ids}
    for pid, ctype, granted, at, src in conn.execute(
            "SELECT profile_id::text, consent_type, granted, updated_at, source_id::text FROM consents"
            " WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])", (tenant_id, ids)).fetchall():
        consents[pid][ctype] = {"granted": granted, "updated_at": at.isoformat(), "source_id": src}
    # The tenant's newest history row (ids come from one sequence; the key is (tenant_id, id)).
    row = conn.execute("SELECT coalesce(max(id), 0) FROM consent_history WHERE tenant_id = %s",
                       (tenant_id,)).fetchone()
    mark = int(row[0]) if row is not None else 0
    return idents, consents, mark


def _fold_sides(idents: dict[str, list[list[str]]], consents: dict[str, dict[str, dict]], s: str, a: str) -> None:
    """The survivor's side after absorbing ``a`` (a later merge of the same batch sees it)."""
    idents[s] = idents[s] + idents.pop(a)
    for ctype, c in consents.pop(a).items():
        if ctype not in consents[s] or consents[s][ctype]["updated_at"] < c["updated_at"]:
            consents[s][ctype] = c


def apply_merges(conn: psycopg.Connection, tenant_id: str, plan: Plan, profiles: dict[str, ProfileRow],
                 event_ids: list[str]) -> None:
    """Move everything of each absorbed profile to its survivor and record the merges.

    Set-based: one statement per table for all of the plan's merges (survivors are final,
    so a chain A->B->C moves A and B straight to C).
    """
    if not plan.merges:
        return
    idents, consents, consent_mark = _sides_before_merge(conn, tenant_id, plan)
    moves = json_rows([{"a": m.absorbed, "s": m.survivor} for m in plan.merges])
    conn.execute("UPDATE profile_identifiers pi SET profile_id = m.s FROM json_to_recordset(%s::json)"
                 " AS m(a uuid, s uuid) WHERE pi.profile_id = m.a", (moves,))
    # merged_from: the unmerge finds the absorbed side's events by it (and pops it)
    conn.execute("UPDATE events e SET profile_id = m.s, merged_from = array_append(e.merged_from, m.a)"
                 " FROM json_to_recordset(%s::json) AS m(a uuid, s uuid)"
                 " WHERE e.tenant_id = %s AND e.profile_id = m.a", (moves, tenant_id))
    # Consents: per type, the most recent decision wins on the survivor.
    conn.execute(
        "INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at, source_id)"
        " SELECT DISTINCT ON (m.s, c.consent_type) m.s, c.consent_type, c.tenant_id, c.granted, c.updated_at,"
        " c.source_id FROM consents c JOIN json_to_recordset(%s::json) AS m(a uuid, s uuid)"
        " ON c.tenant_id = %s AND c.profile_id = m.a"
        " ORDER BY m.s, c.consent_type, c.updated_at DESC"
        " ON CONFLICT (tenant_id, profile_id, consent_type) DO UPDATE SET granted = EXCLUDED.granted,"
        " updated_at = EXCLUDED.updated_at, source_id = EXCLUDED.source_id"
        " WHERE EXCLUDED.updated_at > consents.updated_at",
        (moves, tenant_id),
    )
    conn.execute("DELETE FROM consents c USING json_to_recordset(%s::json) AS m(a uuid, s uuid)"
                 " WHERE c.tenant_id = %s AND c.profile_id = m.a", (moves, tenant_id))
    for table in ("consent_history", "identity_links"):
        conn.execute(f"UPDATE {table} t SET profile_id = m.s FROM json_to_recordset(%s::json) AS m(a uuid, s uuid)"
                     " WHERE t.profile_id = m.a", (moves,))
    # Earlier merges into an absorbed profile now resolve straight to the survivor.
    conn.execute("UPDATE profiles p SET merged_into = m.s FROM json_to_recordset(%s::json) AS m(a uuid, s uuid)"
                 " WHERE p.merged_into = m.a", (moves,))
    conn.execute("UPDATE profiles p SET merged_into = m.s, merged_at = now(), updated_at = now()"
                 " FROM json_to_recordset(%s::json) AS m(a uuid, s uuid) WHERE p.tenant_id = %s AND p.id = m.a",
                 (moves, tenant_id))
    audit = []
    for m in plan.merges:
        s, a = profiles[m.survivor], profiles.pop(m.absorbed)
        snap = {**_profile_snapshot(a, idents[a.id], consents[a.id]),
                "survivor": _profile_snapshot(s, idents[s.id], consents[s.id]), "consent_mark": consent_mark,
                "via": [m.via.type, m.via.hash] if m.via is not None else None}
        _fold_sides(idents, consents, s.id, a.id)
        audit.append({"s": s.id, "a": a.id, "tt": m.trigger.type, "th": m.trigger.hash,
                      "e": event_ids[m.event_index], "snap": snap})
        merge_trait_sets(s.traits, s.trait_times, a.traits, a.trait_times)
        s.event_count += a.event_count
        s.purchase_count += a.purchase_count
        s.revenue = clamp_revenue(s.revenue + a.revenue)  # both near the limit: capped, never an error
        s.merge_count += a.merge_count + 1
        s.first_seen = min(s.first_seen, a.first_seen)
        s.last_seen = max(s.last_seen, a.last_seen)
        for t, n in a.counts.items():
            s.counts[t] = s.counts.get(t, 0) + n
        if a.lifecycle == "customer" or (a.lifecycle == "known" and s.lifecycle == "anonymous"):
            s.lifecycle = a.lifecycle
    edges = [{"p": m.survivor, "ft": m.via.type, "fh": m.via.hash, "tt": m.trigger.type, "th": m.trigger.hash,
              "e": event_ids[m.event_index]} for m in plan.merges if m.via is not None]
    if edges:
        conn.execute(
            "INSERT INTO identity_links (tenant_id, profile_id, from_type, from_hash, to_type, to_hash, link_type, event_id)"
            " SELECT %s, p, ft, fh, tt, th, 'merge', e FROM json_to_recordset(%s::json)"
            " AS u(p uuid, ft text, fh text, tt text, th text, e uuid)",
            (tenant_id, json_rows(edges)),
        )
    conn.execute(
        "INSERT INTO profile_merges (tenant_id, survivor_id, absorbed_id, trigger_type, trigger_hash, event_id, snapshot)"
        " SELECT %s, s, a, tt, th, e, snap FROM json_to_recordset(%s::json)"
        " AS u(s uuid, a uuid, tt text, th text, e uuid, snap jsonb)",
        (tenant_id, json_rows(audit)),
    )


def link_identifiers(conn: psycopg.Connection, tenant_id: str, plan: Plan, event_ids: list[str],
                     spans: dict[tuple[str, str], tuple[datetime, datetime]], link_types: list[str],
                     profiles: dict[str, ProfileRow]) -> None:
    """Store the plan's new identifiers with their batch's (earliest, latest) state times
    (``spans``), so they need no touch afterwards."""
    if not plan.links:
        return
    # clock_timestamp(): provisional links made later in the batch rank as more recent
    rows = []
    for lk in plan.links:
        lo, hi = spans[lk.identifier.type, lk.identifier.hash]
        rows.append((lk.identifier.type, lk.identifier.hash, lk.profile_id, lo.isoformat(), hi.isoformat(),
                     "t" if lk.provisional else "f"))
    # unnest keeps the plan's order: later provisional links get later clock_timestamp()s
    conn.execute(
        "INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen, provisional_since)"
        " SELECT %s, t, h, p, fs, ls, CASE WHEN pr THEN clock_timestamp() END FROM unnest(%s::text[], %s::text[],"
        " %s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::boolean[]) AS u(t, h, p, fs, ls, pr)",
        (tenant_id, *(array_literal(column) for column in zip(*rows, strict=True))),
    )
    edges = [(lk, lk.via) for lk in plan.links if lk.via is not None]
    if edges:
        conn.execute(
            "INSERT INTO identity_links (tenant_id, profile_id, from_type, from_hash, to_type, to_hash, link_type, event_id)"
            " SELECT %s, p, ft, fh, tt, th, lt, e FROM json_to_recordset(%s::json)"
            " AS u(p uuid, ft text, fh text, tt text, th text, lt text, e uuid)",
            (tenant_id, json_rows([{"p": lk.profile_id, "ft": via.type, "fh": via.hash,
                                    "tt": lk.identifier.type, "th": lk.identifier.hash,
                                    "lt": link_types[lk.event_index], "e": event_ids[lk.event_index]}
                                   for lk, via in edges])),
        )
    for lk in plan.links:
        p = profiles[lk.profile_id]
        p.counts[lk.identifier.type] = p.counts.get(lk.identifier.type, 0) + 1


def apply_moves(conn: psycopg.Connection, tenant_id: str, plan: Plan, event_ids: list[str],
                link_types: list[str], profiles: dict[str, ProfileRow]) -> None:
    """Move identifiers between profiles (after merges and links, so every profile id is
    final and an identifier linked by this plan is already stored), and clear the flag of
    provisional identifiers that a trusted event carried."""
    if plan.moves:
        conn.execute(
            "UPDATE profile_identifiers pi SET profile_id = u.p,"
            " provisional_since = CASE WHEN u.pr THEN coalesce(pi.provisional_since, clock_timestamp()) END"
            " FROM json_to_recordset(%s::json) AS u(t text, h text, p uuid, pr boolean)"
            " WHERE pi.tenant_id = %s AND pi.type = u.t AND pi.hash = u.h",
            (json_rows([{"t": mv.identifier.type, "h": mv.identifier.hash, "p": mv.to_profile,
                         "pr": mv.provisional} for mv in plan.moves]), tenant_id),
        )
        moved = [(mv, mv.via) for mv in plan.moves if mv.via is not None]
        if moved:
            conn.execute(
                "INSERT INTO identity_links (tenant_id, profile_id, from_type, from_hash, to_type, to_hash, link_type,"
                " event_id) SELECT %s, p, ft, fh, tt, th, lt, e FROM json_to_recordset(%s::json)"
                " AS u(p uuid, ft text, fh text, tt text, th text, lt text, e uuid)",
                (tenant_id, json_rows([{"p": mv.to_profile, "ft": via.type, "fh": via.hash,
                                        "tt": mv.identifier.type, "th": mv.identifier.hash,
                                        "lt": link_types[mv.event_index], "e": event_ids[mv.event_index]}
                                       for mv, via in moved])),
            )
        for mv in plan.moves:
            t = mv.identifier.type
            profiles[mv.from_profile].counts[t] -= 1
            profiles[mv.to_profile].counts[t] = profiles[mv.to_profile].counts.get(t, 0) + 1
    if plan.confirmed:
        conn.execute(
            "UPDATE profile_identifiers pi SET provisional_since = NULL FROM json_to_recordset(%s::json)"
            " AS u(t text, h text) WHERE pi.tenant_id = %s AND pi.type = u.t AND pi.hash = u.h",
            (json_rows([{"t": t, "h": h} for t, h in sorted(plan.confirmed)]), tenant_id),
        )


def stale_identifiers(spans: dict[tuple[str, str], tuple[datetime, datetime]],
                      stored: dict[tuple[str, str], tuple[datetime, datetime]],
                      granularity: timedelta) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """The spans of stored identifiers whose times must be written: first_seen moves
    earlier (always exact), or last_seen moves later by more than ``granularity``. An
    identifier seen again within the granularity keeps its row untouched, so a busy
    identifier costs one row update per granularity instead of one per batch."""
    out = {}
    for key, (lo, hi) in spans.items():
        times = stored.get(key)
        if times is not None and (lo < times[0] or hi > times[1] + granularity):
            out[key] = (lo, hi)
    return out


def touch_identifiers(conn: psycopg.Connection, tenant_id: str,
                      seen: dict[tuple[str, str], tuple[datetime, datetime]]) -> set[str]:
    """Widen first_seen/last_seen of identifiers to the (earliest, latest) event times seen;
    return the ids of the profiles owning the identifiers that changed. An identifier's
    times are part of the PROFILE shown, so the caller must move those profiles'
    ``updated_at`` (it writes them back anyway)."""
    if not seen:
        return set()
    ordered = sorted(seen.items())
    rows = conn.execute(
        "UPDATE profile_identifiers pi SET first_seen = least(pi.first_seen, u.fs), last_seen = greatest(pi.last_seen, u.ls)"
        " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]) AS u(t, h, fs, ls)"
        " WHERE pi.tenant_id = %s AND pi.type = u.t AND pi.hash = u.h AND (pi.first_seen > u.fs OR pi.last_seen < u.ls)"
        " RETURNING pi.profile_id::text",
        (array_literal([k[0] for k, _ in ordered]), array_literal([k[1] for k, _ in ordered]),
         array_literal([v[0].isoformat() for _, v in ordered]), array_literal([v[1].isoformat() for _, v in ordered]),
         tenant_id),
    ).fetchall()
    return {r[0] for r in rows}
