"""Loading the identity graph snapshot and applying a plan, inside the caller's transaction.

Concurrency protocol (any number of workers, READ COMMITTED):
1. take a transaction-level advisory lock per identifier of the batch, in sorted order,
   so two workers never create or link the same identifier at once;
2. read which profiles hold those identifiers and lock those profile rows FOR UPDATE in
   id order (a merge locks both sides, so it cannot race a link to the absorbed profile);
3. if a locked profile turns out merged or erased meanwhile (a merge holds the absorbed
   profile's lock), raise ``SnapshotChanged`` and the whole transaction is retried;
4. look again, once the profiles are locked, at the batch's identifiers that were
   provisional when read: besides merges, only a provisional identifier can leave its
   profile (displaced at a type limit) without the advisory lock of an identifier outside
   the displacing batch, under the row lock of the profile it leaves; a difference means
   the snapshot is stale: ``SnapshotChanged`` again. Any other identifier of the batch
   changes hands only under its advisory lock, which this batch holds (creating it, linking
   it, confirming or moving it as a claim of an event, unmerging it).
5. unmerge blocks (``identity_blocks``) are read once the profiles are locked: an unmerge
   writes its block holding the survivor's row lock, so a batch that could join the two
   again sees it.
All locks are taken in one global order (advisory keys, then profile ids, then the batch's
dedupe keys in workers/persist.py), so waits cannot form a cycle; Postgres' deadlock
detector and the retry loop cover the rest. A batch that may defer (``wait=False``, every
round of a job but its last) only tries steps 1 and 2 (``pg_try_advisory_xact_lock``,
``FOR UPDATE SKIP LOCKED``): what it could not lock is left out of its snapshot, and the
events carrying it wait for a later transaction; what it did lock is held as above.
The read API's unmerge (read_api/unmerge.py) takes the same locks in the same order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from core.identifiers import KNOWN_TYPES
from core.identity import Apart, Plan, ProfileState, profiles_to_plan
from core.identity_plan import EventIdentity
from core.profiles import clamp_revenue, merge_trait_sets
from stratum.db.params import json_rows, json_value
from stratum.identity_locks import advisory_key
from workers.copy_rows import copy_lines, timestamp_text


class _NotLoaded:
    """In place of a profile's traits until ``load_traits`` reads them: any use fails
    loudly (a profile written back with traits it never read would lose them)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a profile's traits were used before load_traits read them")

    __getitem__ = __setitem__ = __iter__ = __len__ = __contains__ = get = items = keys = values = _refuse


_NOT_LOADED: Any = _NotLoaded()


# Lifecycles a profile's identifier counts can no longer move (core.profiles.next_lifecycle:
# it only moves forward, and only ``churned`` is derived again from what a profile holds).
_KNOWN_LIFECYCLES = frozenset({"known", "customer"})


class SnapshotChanged(Exception):
    """The graph moved between reading and locking; retry the transaction."""


@dataclass(slots=True)
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
    # ``identifier_count`` as stored; ``counts`` and ``provisional`` were read (False: a
    # known profile the batch's plan cannot change, see load_snapshot)
    identifier_count: int = 0
    detailed: bool = True
    # ``traits`` and ``trait_times`` hold what is stored (load_snapshot reads neither:
    # ``load_traits`` does, for the profiles the batch can change them on)
    traits_loaded: bool = True

    @property
    def total_identifiers(self) -> int:
        return sum(self.counts.values()) if self.detailed else self.identifier_count

    def planner_state(self) -> ProfileState:
        """The planner's view; it shares this row's dicts, which the planner never changes
        (it works on copies, core/identity.py)."""
        return ProfileState(self.id, self.first_seen, self.counts, self.merge_count, self.new, self.provisional)

    @property
    def known(self) -> bool:
        if not self.detailed:  # only known profiles and customers go without their counts
            return self.lifecycle in _KNOWN_LIFECYCLES
        counts = self.counts
        return bool(counts) and any(counts.get(t, 0) > 0 for t in KNOWN_TYPES)


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
    # identifiers left out because another transaction holds their lock or their profile's
    # row (load_snapshot with wait=False)
    unavailable: set[tuple[str, str]] = field(default_factory=set)
    # stored identifiers of the batch linked provisionally
    provisional: set[tuple[str, str]] = field(default_factory=set)


# Per-batch statements probe the keys they are given and never scan a tenant's rows: the
# planner takes a JSON parameter for 100 rows and may hold stale statistics for a growing
# tenant, and a hash join over all of its identifiers or profiles then costs the whole
# table on every batch (seen: 57,000 identifiers read to resolve 1,000). A LATERAL
# subquery with LIMIT 1 (never flattened into a join) is a probe per key; ``= ANY(ARRAY(
# ...))`` makes a list of ids an index condition.
#
# One statement, so one snapshot: an erasure committing meanwhile is seen either whole
# (identifier gone and suppressed) or not at all (identifier on a profile, whose row lock
# then waits for the erasure and finds it gone: SnapshotChanged, retry).
_GRAPH_SQL = """
SELECT k.t, k.h, pi.profile_id::text, s.tenant_id IS NOT NULL, pi.first_seen, pi.last_seen,
       pi.provisional_since IS NOT NULL
FROM json_to_recordset(%s::json) AS k(t text, h text)
LEFT JOIN LATERAL (SELECT profile_id, first_seen, last_seen, provisional_since FROM profile_identifiers
                   WHERE tenant_id = %s AND type = k.t AND hash = k.h LIMIT 1) pi ON true
LEFT JOIN LATERAL (SELECT tenant_id FROM suppressed_identifiers
                   WHERE tenant_id = %s AND type = k.t AND hash = k.h LIMIT 1) s ON true
WHERE pi.profile_id IS NOT NULL OR s.tenant_id IS NOT NULL
"""

# How many of the given keys (the batch's provisional ones) are held, once the profiles are
# locked, by another profile than the snapshot says (``p``): any means the snapshot is stale.
_GRAPH_MOVED_SQL = """
SELECT count(*) FROM json_to_recordset(%s::json) AS k(t text, h text, p uuid)
LEFT JOIN LATERAL (SELECT profile_id FROM profile_identifiers
                   WHERE tenant_id = %s AND type = k.t AND hash = k.h LIMIT 1) pi ON true
WHERE pi.profile_id IS DISTINCT FROM k.p
"""

_LOCK_PROFILES_SQL = """
SELECT id::text, lifecycle, event_count, purchase_count, revenue, merge_count,
       first_seen, last_seen, merged_into, identifier_count
FROM profiles WHERE tenant_id = %s AND id = ANY(ARRAY(SELECT value::uuid FROM json_array_elements_text(%s::json)))
ORDER BY id FOR UPDATE
"""
_LOCK_PROFILES_SKIP_SQL = _LOCK_PROFILES_SQL.replace("FOR UPDATE", "FOR UPDATE SKIP LOCKED")

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

# Each profile's identifiers per type, and which of them are provisional (hashes and
# since when): one index scan of the profiles' identifiers.
_COUNTS_SQL = """
SELECT profile_id::text, type, count(*), array_agg(hash) FILTER (WHERE provisional_since IS NOT NULL),
       array_agg(provisional_since) FILTER (WHERE provisional_since IS NOT NULL)
FROM profile_identifiers
WHERE profile_id = ANY(ARRAY(SELECT value::uuid FROM json_array_elements_text(%s::json))) GROUP BY 1, 2
"""


@dataclass
class _GraphRead:
    graph: dict[tuple[str, str], str]  # which live profile holds each key
    suppressed: set[tuple[str, str]]  # keys an erasure suppressed
    seen: dict[tuple[str, str], tuple[datetime, datetime]]  # stored keys' (first_seen, last_seen)
    provisional: set[tuple[str, str]]  # stored keys linked provisionally


def _keys_param(keys: list[tuple[str, str]]) -> str | None:
    """The identifiers as the statements' JSON parameter; None when there are none."""
    return json_rows([{"t": t, "h": h} for t, h in keys]) if keys else None


def _read_graph(conn: psycopg.Connection, tenant_id: str, keys_param: str | None) -> _GraphRead:
    """``keys_param``: the identifiers (``_keys_param``)."""
    if keys_param is None:
        return _GraphRead({}, set(), {}, set())
    rows = conn.execute(_GRAPH_SQL, (keys_param, tenant_id, tenant_id)).fetchall()
    read = _GraphRead({}, set(), {}, set())
    for t, h, pid, suppressed, fs, ls, provisional in rows:
        if suppressed:
            read.suppressed.add((t, h))
        if pid is not None:
            read.graph[t, h] = pid
            read.seen[t, h] = (fs, ls)
            if provisional:
                read.provisional.add((t, h))
    return read


def load_snapshot(conn: psycopg.Connection, tenant_id: str, identifiers: Collection[tuple[str, str]],
                  *, wait: bool = True, events: Sequence[EventIdentity] | None = None) -> Snapshot:
    """Lock the batch's identifiers and the profiles holding them; return the graph.

    ``wait=False`` waits for no lock another transaction holds: an identifier whose advisory
    lock is taken, or whose profile's row is locked, is left out of the snapshot and listed
    in ``Snapshot.unavailable`` (the caller defers the events that carry one). Nothing else
    changes: every identifier in the snapshot is locked as with ``wait=True``.

    ``events`` (the batch, or more): a known profile, or a customer, that planning them
    cannot change (``core.identity.profiles_to_plan``) is loaded without its identifier
    counts and provisional identifiers (``ProfileRow.detailed`` False): most of a busy
    tenant's profiles in a batch, whose counts were a grouped scan of all their
    identifiers."""
    keys = list(identifiers)
    unavailable: set[tuple[str, str]] = set()
    if keys:
        keys, unavailable = _lock_identifiers(conn, tenant_id, keys, wait)
    # the same JSON serves the blocks read below, unless keys are left out meanwhile
    keys_param = _keys_param(keys)
    read = _read_graph(conn, tenant_id, keys_param)
    graph = read.graph
    profile_ids = sorted(set(graph.values()))
    profiles: dict[str, ProfileRow] = {}
    if profile_ids:
        ids_param = json_value(profile_ids)
        for row in conn.execute(_LOCK_PROFILES_SQL if wait else _LOCK_PROFILES_SKIP_SQL,
                                (tenant_id, ids_param)).fetchall():
            if row[8] is not None:
                raise SnapshotChanged(f"profile {row[0]} was merged meanwhile")
            profiles[row[0]] = ProfileRow(row[0], row[1], _NOT_LOADED, _NOT_LOADED, row[2], row[3], row[4], row[5],
                                          row[6], row[7], identifier_count=row[9], traits_loaded=False)
        # Only a merge moves an identifier between profiles, and a merge holds the absorbed
        # profile's row lock: a profile read before a concurrent merge committed is now
        # locked with merged_into set (checked above). Erasure deletes the row.
        if len(profiles) != len(profile_ids):
            if wait:
                raise SnapshotChanged("a profile was erased while locking")
            # locked by another transaction (or erased): its identifiers wait for a later round
            keys, profile_ids = _without_profiles(read, keys, profiles.keys(), unavailable)
            keys_param = _keys_param(keys)
        if events is not None and any(p.lifecycle in _KNOWN_LIFECYCLES for p in profiles.values()):
            planned = profiles_to_plan(events, graph, read.provisional)
            for pid, profile in profiles.items():
                profile.detailed = pid in planned or profile.lifecycle not in _KNOWN_LIFECYCLES
        _read_profile_details(conn, tenant_id, read, profiles, [pid for pid in profile_ids if profiles[pid].detailed])
    apart = [Apart((t, h), holder, other) for t, h, holder, other in conn.execute(_APART_SQL, {
        "profiles": json_value(profile_ids), "tenant_id": tenant_id, "keys": keys_param}).fetchall()] if keys else []
    return Snapshot(graph, profiles, read.suppressed, read.seen, apart, unavailable, read.provisional)


_TRAITS_SQL = """
SELECT id::text, traits, trait_times FROM profiles
WHERE tenant_id = %s AND id = ANY(ARRAY(SELECT value::uuid FROM json_array_elements_text(%s::json)))
"""


def load_traits(conn: psycopg.Connection, tenant_id: str, profiles: dict[str, ProfileRow], ids: Iterable[str]) -> None:
    """Read the traits and trait times of the loaded profiles ``ids`` (their rows are locked
    by this transaction since ``load_snapshot``). The snapshot leaves them out: a batch
    changes the traits of the profiles its trait-carrying events and merges touch, and the
    others' traits (up to ``core.profiles.MAX_TRAITS_BYTES`` each) were read and decoded
    for nothing."""
    missing = sorted(pid for pid in ids if not profiles[pid].traits_loaded)
    if not missing:
        return
    for pid, traits, times in conn.execute(_TRAITS_SQL, (tenant_id, json_value(missing))).fetchall():
        profile = profiles[pid]
        profile.traits, profile.trait_times, profile.traits_loaded = traits, times, True


def _lock_identifiers(conn: psycopg.Connection, tenant_id: str, keys: list[tuple[str, str]], wait: bool
                      ) -> tuple[list[tuple[str, str]], set[tuple[str, str]]]:
    """Take the identifiers' advisory locks in key order: (identifiers locked, identifiers
    whose lock another transaction holds, with ``wait=False``; none with ``wait=True``)."""
    if wait:
        locks = sorted({advisory_key(tenant_id, t, h) for t, h in keys})
        conn.execute("SELECT count(pg_advisory_xact_lock(k::bigint)) FROM json_array_elements_text(%s::json) AS k",
                     (json_value(locks),))
        return keys, set()
    by_lock: dict[int, list[tuple[str, str]]] = {}
    for key in keys:
        by_lock.setdefault(advisory_key(tenant_id, *key), []).append(key)
    locks = sorted(by_lock)
    # In key order too: a try never waits, so it cannot join a cycle of waits either way.
    taken = conn.execute("SELECT array_agg(k::bigint) FILTER (WHERE NOT pg_try_advisory_xact_lock(k::bigint))"
                         " FROM json_array_elements_text(%s::json) AS k", (json_value(locks),)).fetchone()
    busy = set(taken[0] or ()) if taken else set()
    if not busy:
        return keys, set()
    unavailable = {key for lock in busy for key in by_lock[lock]}
    return [k for k in keys if k not in unavailable], unavailable


def _without_profiles(read: _GraphRead, keys: list[tuple[str, str]], locked: Iterable[str],
                      unavailable: set[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Drop from ``read`` the identifiers held by profiles that could not be locked (adding
    them to ``unavailable``); return the remaining keys and the locked profiles' ids."""
    locked = set(locked)
    gone = {key for key, pid in read.graph.items() if pid not in locked}
    unavailable |= gone
    for key in gone:
        del read.graph[key]
        read.seen.pop(key, None)
        read.provisional.discard(key)
    return [k for k in keys if k not in gone], sorted(locked)


def _read_profile_details(conn: psycopg.Connection, tenant_id: str, read: _GraphRead,
                          profiles: dict[str, ProfileRow], detailed: list[str]) -> None:
    """Once the profiles are locked: the second look at provisional identifiers, then the
    identifier counts and provisional identifiers of the ``detailed`` profiles."""
    graph = read.graph
    if read.provisional:
        expected = json_rows([{"t": t, "h": h, "p": graph[t, h]} for t, h in sorted(read.provisional)])
        if conn.execute(_GRAPH_MOVED_SQL, (expected, tenant_id)).fetchone() != (0,):
            raise SnapshotChanged("an identifier moved while locking")
    if not detailed:
        return
    for pid, id_type, n, hashes, since in conn.execute(_COUNTS_SQL, (json_value(detailed),)).fetchall():
        profile = profiles[pid]
        profile.counts[id_type] = n
        if hashes:
            for id_hash, at in zip(hashes, since, strict=True):
                profile.provisional[(id_type, id_hash)] = int(at.timestamp() * 1_000_000)


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
    _move_to_survivors(conn, tenant_id, plan)
    audit = []
    for m in plan.merges:
        s, a = profiles[m.survivor], profiles.pop(m.absorbed)
        snap = {**_profile_snapshot(a, idents[a.id], consents[a.id]),
                "survivor": _profile_snapshot(s, idents[s.id], consents[s.id]), "consent_mark": consent_mark,
                "via": [m.via.type, m.via.hash] if m.via is not None else None}
        _fold_sides(idents, consents, s.id, a.id)
        audit.append({"s": s.id, "a": a.id, "tt": m.trigger.type, "th": m.trigger.hash,
                      "e": event_ids[m.event_index], "snap": snap})
        _fold_profile(s, a)
    _record_merges(conn, tenant_id, plan, audit, event_ids)


def _move_to_survivors(conn: psycopg.Connection, tenant_id: str, plan: Plan) -> None:
    """Everything stored of each absorbed profile moves to its survivor, in one statement
    per table; absorbed profiles point at their survivors."""
    moves = json_rows([{"a": m.absorbed, "s": m.survivor} for m in plan.merges])
    conn.execute("UPDATE profile_identifiers pi SET profile_id = m.s FROM json_to_recordset(%s::json)"
                 " AS m(a uuid, s uuid) WHERE pi.profile_id = m.a", (moves,))
    # merged_from: the unmerge finds the absorbed side's events by it (and pops it)
    conn.execute("UPDATE events e SET profile_id = m.s, merged_from = array_append(e.merged_from, m.a)"
                 " FROM json_to_recordset(%s::json) AS m(a uuid, s uuid)"
                 " WHERE e.tenant_id = %s AND e.profile_id = m.a"
                 " AND e.profile_id = ANY(ARRAY(SELECT (r->>'a')::uuid FROM json_array_elements(%s::json) r))",
                 (moves, tenant_id, moves))
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


def _fold_profile(s: ProfileRow, a: ProfileRow) -> None:
    """The survivor's row after absorbing ``a``: traits, counters, times, lifecycle."""
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


def _record_merges(conn: psycopg.Connection, tenant_id: str, plan: Plan, audit: list[dict],
                   event_ids: list[str]) -> None:
    """The merges' edges in the identity links, and one ``profile_merges`` row each (with
    the snapshots an unmerge restores)."""
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
    firm = [lk for lk in plan.links if not lk.provisional]
    lines = []
    for lk in firm:
        t, h = lk.identifier.type, lk.identifier.hash
        first, last = spans[t, h]
        lines.append(f"{tenant_id}\t{t}\t{h}\t{lk.profile_id}\t{timestamp_text(first)}\t{timestamp_text(last)}")
    copy_lines(conn, "profile_identifiers", "tenant_id, type, hash, profile_id, first_seen, last_seen", lines)
    if len(firm) < len(plan.links):
        # clock_timestamp(): provisional links made later in the batch rank as more recent
        conn.execute(
            "INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen,"
            " provisional_since) SELECT %s, t, h, p, fs, ls, clock_timestamp()"
            " FROM json_to_recordset(%s::json) AS u(t text, h text, p uuid, fs timestamptz, ls timestamptz)",
            (tenant_id, json_rows([{"t": lk.identifier.type, "h": lk.identifier.hash, "p": lk.profile_id,
                                    "fs": spans[lk.identifier.type, lk.identifier.hash][0],
                                    "ls": spans[lk.identifier.type, lk.identifier.hash][1]}
                                   for lk in plan.links if lk.provisional])),
        )
    copy_lines(conn, "identity_links",
               "tenant_id, profile_id, from_type, from_hash, to_type, to_hash, link_type, event_id",
               [f"{tenant_id}\t{lk.profile_id}\t{lk.via.type}\t{lk.via.hash}\t{lk.identifier.type}"
                f"\t{lk.identifier.hash}\t{link_types[lk.event_index]}\t{event_ids[lk.event_index]}"
                for lk in plan.links if lk.via is not None])
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
    if len(stored) < len(spans):  # mostly new identifiers: walk the stored ones
        for key, (first, last) in stored.items():
            span = spans.get(key)
            if span is not None and (span[0] < first or span[1] > last + granularity):
                out[key] = span
        return out
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
    rows = json_rows([{"t": k[0], "h": k[1], "fs": v[0], "ls": v[1]} for k, v in sorted(seen.items())])
    owners = conn.execute(
        "UPDATE profile_identifiers pi SET first_seen = least(pi.first_seen, u.fs), last_seen = greatest(pi.last_seen, u.ls)"
        " FROM json_to_recordset(%s::json) AS u(t text, h text, fs timestamptz, ls timestamptz)"
        " WHERE pi.tenant_id = %s AND pi.type = u.t AND pi.hash = u.h AND (pi.first_seen > u.fs OR pi.last_seen < u.ls)"
        " RETURNING pi.profile_id::text",
        (rows, tenant_id),
    ).fetchall()
    return {r[0] for r in owners}

