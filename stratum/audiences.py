"""Audience storage shared by the read API (create, preview, backfill) and the scheduler
(upkeep): segment membership and computed trait values, on a synchronous connection.

Concurrency: every membership change of one segment runs in a transaction holding the
segment's advisory lock (``pg_advisory_xact_lock``), so the API's full evaluation and the
scheduler's incremental one never interleave; the membership diff and its history rows
(``segment_events``, the entered/exited messages for the destinations outbox) are written by
one statement. Computed values are written only when they change, and a change moves
``profiles.updated_at`` (the read API's profile cache validates against it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from core.computed_traits import ComputedTrait
from core.segment_rules import CompiledRule, compile_rules

TRAIT_COLUMNS = "id::text, name, function, event_name, property, within_days, created_at, updated_at"


@dataclass(frozen=True)
class SegmentRow:
    id: str
    name: str
    kind: str
    rules: dict
    size: int
    created_at: Any
    updated_at: Any


# Size is counted, not stored: erasure (which cascades to members) and every other path
# that removes a member can never leave it stale. An index-only count of the PK prefix.
SEGMENT_COLUMNS = ("id::text, name, kind, rules, (SELECT count(*) FROM segment_members m"
                   " WHERE m.tenant_id = segments.tenant_id AND m.segment_id = segments.id), created_at, updated_at")


def trait_from_row(row: Sequence[Any]) -> ComputedTrait:
    return ComputedTrait(name=row[1], function=row[2], event=row[3], property=row[4], within_days=row[5])


def load_computed_traits(conn: psycopg.Connection, tenant_id: str) -> list[ComputedTrait]:
    rows = conn.execute(f"SELECT {TRAIT_COLUMNS} FROM computed_traits WHERE tenant_id = %s ORDER BY name",
                        (tenant_id,)).fetchall()
    return [trait_from_row(r) for r in rows]


def dynamic_segments(conn: psycopg.Connection, tenant_id: str) -> list[tuple[str, dict]]:
    return conn.execute("SELECT id::text, rules FROM segments WHERE tenant_id = %s AND kind = 'dynamic' ORDER BY id",
                        (tenant_id,)).fetchall()


def upkeep_profiles(conn: psycopg.Connection, tenant_id: str, profile_ids: list[str],
                    stamp: datetime | None = None, *, unheard: bool = False) -> None:
    """Recount the tenant's computed traits and re-evaluate its dynamic segments for these
    profiles, in one transaction (the scheduler's upkeep per chunk; the read API's unmerge
    right after commit): the traits first (one statement for all of them), then the
    membership of every segment (one statement, under the segments' locks). Profiles whose
    computed values change get ``updated_at`` = ``stamp`` (or later, see
    refresh_traits_of_profiles). ``unheard``: no destination subscribes to a segment topic
    and no live stream listens, so membership changes are recorded as already emitted."""
    traits = load_computed_traits(conn, tenant_id)
    defaults = {t.name: t.default for t in traits}
    segments = [(sid, compile_rules(rules, defaults)) for sid, rules in dynamic_segments(conn, tenant_id)]
    with conn.transaction():
        refresh_traits_of_profiles(conn, tenant_id, traits, profile_ids, stamp)
        lock_segments(conn, [sid for sid, _ in segments])
        apply_memberships(conn, tenant_id, segments, profile_ids, unheard=unheard)


def compile_for_tenant(conn: psycopg.Connection, tenant_id: str, rules: dict) -> CompiledRule:
    """Rules compiled with the tenant's computed-trait defaults (a count of 0 for profiles
    that never had a value stored)."""
    defaults = {t.name: t.default for t in load_computed_traits(conn, tenant_id)}
    return compile_rules(rules, defaults)


def preview_segment(conn: psycopg.Connection, tenant_id: str, rules: dict, sample_size: int) -> tuple[int, list[str]]:
    """(live count, sample of profile ids) of the live profiles matching the rules. Turns
    ``jit`` off until the end of the transaction (the caller's, if it has one open): the
    count over a large tenant costs past ``jit_above_cost``, and compiling its expressions
    takes each process of the parallel plan about 100 ms, more than the compiled code saves
    on one pass over a million profiles (docs/PERFORMANCE.md)."""
    compiled = compile_for_tenant(conn, tenant_id, rules)
    base = f"FROM profiles p WHERE p.tenant_id = %s AND p.merged_into IS NULL AND {compiled.sql}"
    with conn.transaction():
        conn.execute("SET LOCAL jit = off")
        size = conn.execute(f"SELECT count(*) {base}", (tenant_id, *compiled.params)).fetchone()[0]
        sample = conn.execute(f"SELECT p.id::text {base} ORDER BY p.id LIMIT %s",
                              (tenant_id, *compiled.params, sample_size)).fetchall()
    return size, [r[0] for r in sample]


def evaluate_segment(conn: psycopg.Connection, tenant_id: str, segment_id: str, rules: dict,
                     profile_ids: Sequence[str] | None = None) -> tuple[int, int]:
    """Bring the segment's members in line with its rules, for every live profile or only for
    ``profile_ids``; record an ``entered``/``exited`` row per change. Returns (entered, exited).
    Runs in its own transaction (the caller's connection must not be inside one)."""
    with conn.transaction():
        lock_segments(conn, [segment_id])
        compiled = compile_for_tenant(conn, tenant_id, rules)
        if profile_ids is None:
            return _apply_full_membership(conn, tenant_id, segment_id, compiled)
        return apply_memberships(conn, tenant_id, [(segment_id, compiled)], profile_ids)


def _apply_full_membership(conn: psycopg.Connection, tenant_id: str, segment_id: str,
                           compiled: CompiledRule) -> tuple[int, int]:
    """The membership diff of one segment over every profile of the tenant and its history
    rows, as one statement, inside the caller's transaction (which holds the segment's
    lock). Set-based: the rules in the
    WHERE clause (so top-level EXISTS conditions run as semi or anti joins over identifiers
    and events), exits as an anti join of the members against the matches. Nested loops are
    off for the transaction: with a freshly changed members table the planner may believe it
    tiny and loop over the matches once per member."""
    conn.execute("SET LOCAL enable_nestloop = off")
    sql = f"""
    WITH cand AS MATERIALIZED (
        SELECT p.id FROM profiles p WHERE p.tenant_id = %s AND p.merged_into IS NULL AND {compiled.sql}
    ), entered AS (
        INSERT INTO segment_members (tenant_id, segment_id, profile_id)
        SELECT %s::uuid, %s::uuid, id FROM cand ON CONFLICT DO NOTHING RETURNING profile_id
    ), exited AS (
        DELETE FROM segment_members m USING (
            SELECT m2.profile_id FROM segment_members m2 LEFT JOIN cand c ON c.id = m2.profile_id
            WHERE m2.tenant_id = %s AND m2.segment_id = %s AND c.id IS NULL) gone
        WHERE m.tenant_id = %s AND m.segment_id = %s AND m.profile_id = gone.profile_id
        RETURNING m.profile_id
    ), logged AS (
        INSERT INTO segment_events (tenant_id, segment_id, profile_id, kind)
        SELECT %s::uuid, %s::uuid, profile_id, 'entered' FROM entered
        UNION ALL SELECT %s::uuid, %s::uuid, profile_id, 'exited' FROM exited
        RETURNING kind
    )
    SELECT count(*) FILTER (WHERE kind = 'entered'), count(*) FILTER (WHERE kind = 'exited') FROM logged
    """
    seg = (tenant_id, segment_id)
    entered, exited = conn.execute(sql, (tenant_id, *compiled.params, *seg, *seg, *seg, *seg, *seg)).fetchone()
    return entered, exited


def lock_segments(conn: psycopg.Connection, segment_ids: Sequence[str]) -> None:
    """Take the segments' advisory locks for the caller's transaction, in id order (so two
    holders of several never wait on each other in a cycle)."""
    for segment_id in sorted(segment_ids):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('segment:' || %s, 0))", (segment_id,))


def apply_memberships(conn: psycopg.Connection, tenant_id: str, segments: Sequence[tuple[str, CompiledRule]],
                      profile_ids: Sequence[str], *, unheard: bool = False) -> tuple[int, int]:
    """The membership diff of several segments for the same profiles and its history rows, in
    one statement: each profile is read once and judged against every segment. Inside the caller's transaction,
    which must hold the segments' locks. Returns (entered, exited) summed over the segments.
    ``unheard``: nobody subscribes to the segment topics now, so the history rows are written
    as already emitted (to nobody) instead of waiting for the emission job to mark them."""
    if not segments or not profile_ids:
        return 0, 0
    hits = ", ".join(f"(p.merged_into IS NULL AND {compiled.sql})" for _, compiled in segments)
    # Exits: a primary-key probe per (segment, profile) judged out, collected as row ids; any
    # join of the members with the CTE is left to a planner that cannot size it.
    sql = f"""
    WITH judged AS MATERIALIZED (
        SELECT p.id, ARRAY[{hits}]::boolean[] AS hits
        FROM unnest(%s::uuid[]) AS ids(id) JOIN profiles p ON p.id = ids.id WHERE p.tenant_id = %s
    ), pairs AS MATERIALIZED (
        SELECT j.id, s.segment_id, s.hit FROM judged j CROSS JOIN LATERAL unnest(%s::uuid[], j.hits) AS s(segment_id, hit)
    ), entered AS (
        INSERT INTO segment_members (tenant_id, segment_id, profile_id)
        SELECT %s::uuid, segment_id, id FROM pairs WHERE hit ON CONFLICT DO NOTHING RETURNING segment_id, profile_id
    ), exited AS (
        DELETE FROM segment_members m WHERE m.ctid = ANY(ARRAY(
            SELECT x.ctid FROM pairs q CROSS JOIN LATERAL (
                SELECT ctid FROM segment_members x
                WHERE x.tenant_id = %s AND x.segment_id = q.segment_id AND x.profile_id = q.id) x
            WHERE NOT q.hit))
        RETURNING m.segment_id, m.profile_id
    ), logged AS (
        INSERT INTO segment_events (tenant_id, segment_id, profile_id, kind, emitted_at)
        SELECT %s::uuid, segment_id, profile_id, 'entered', CASE WHEN %s THEN now() END FROM entered
        UNION ALL SELECT %s::uuid, segment_id, profile_id, 'exited', CASE WHEN %s THEN now() END FROM exited
        RETURNING kind
    )
    SELECT count(*) FILTER (WHERE kind = 'entered'), count(*) FILTER (WHERE kind = 'exited') FROM logged
    """
    params = [p for _, compiled in segments for p in compiled.params]
    params += [list(profile_ids), tenant_id, [sid for sid, _ in segments], tenant_id, tenant_id,
               tenant_id, unheard, tenant_id, unheard]
    entered, exited = conn.execute(sql, params).fetchone()
    return entered, exited


def refresh_traits_of_profiles(conn: psycopg.Connection, tenant_id: str, traits: Sequence[ComputedTrait],
                               profile_ids: Sequence[str], stamp: Any = None) -> int:
    """Recount every one of ``traits`` for ``profile_ids`` in one statement: one scan of each
    profile's events (the traits' names, the widest window) feeds every trait's aggregate,
    and a changed profile gets one row version. Returns how many profiles changed. A changed
    profile's ``updated_at`` becomes the later of ``stamp`` and its old value plus a
    microsecond (``stamp`` None: now()). Runs in the caller's transaction."""
    if not traits or not profile_ids:
        return 0
    params: dict[str, Any] = {"tenant": tenant_id, "ids": list(profile_ids), "stamp": stamp,
                              "events": sorted({t.event for t in traits}),
                              "days": max(t.within_days for t in traits)}
    aggregates, pairs, names = [], [], []
    for i, trait in enumerate(traits):
        params.update({f"name{i}": trait.name, f"event{i}": trait.event, f"days{i}": trait.within_days,
                       f"prop{i}": trait.property})
        rows = f"e.event_name = %(event{i})s AND e.event_time >= now() - make_interval(days => %(days{i})s)"
        aggregates.append(f"{trait.aggregate_sql(rows).replace('%(prop)s', f'%(prop{i})s')} AS a{i}")
        pairs.append(f"(%(name{i})s, a.a{i})")
        names.append(f"%(name{i})s")
    # Recounted keys are replaced; a recount without a value (no event in the window, for
    # functions without a default) removes the key, as refresh_computed_trait does.
    # MATERIALIZED: the new value is computed once per profile, not again in the SET.
    sql = f"""
    WITH v AS MATERIALIZED (
        SELECT p.id, (p.computed - ARRAY[{", ".join(names)}]::text[])
               || (SELECT coalesce(jsonb_object_agg(k, x), '{{}}'::jsonb)
                   FROM (VALUES {", ".join(pairs)}) AS t(k, x) WHERE x IS NOT NULL) AS computed
        FROM unnest(%(ids)s::uuid[]) AS ids(id) JOIN profiles p ON p.id = ids.id
        CROSS JOIN LATERAL (
            SELECT {", ".join(aggregates)} FROM events e
            WHERE e.tenant_id = %(tenant)s AND e.profile_id = ids.id AND e.event_name = ANY(%(events)s::text[])
              AND e.event_time >= now() - make_interval(days => %(days)s)
        ) a
        WHERE p.tenant_id = %(tenant)s AND p.merged_into IS NULL
    )
    UPDATE profiles p
    SET computed = v.computed,
        updated_at = greatest(p.updated_at + interval '1 microsecond', coalesce(%(stamp)s::timestamptz, now()))
    FROM v
    WHERE p.id = v.id AND p.tenant_id = %(tenant)s AND p.merged_into IS NULL AND p.computed IS DISTINCT FROM v.computed
    """
    return conn.execute(sql, params).rowcount


def refresh_computed_trait(conn: psycopg.Connection, tenant_id: str, trait: ComputedTrait,
                           profile_ids: Sequence[str] | None = None) -> int:
    """Recount one trait for ``profile_ids``, or (None) for every live profile that has a
    stored value or a matching event in the window. Returns the number of profiles whose
    value changed. Runs in the caller's transaction, if any."""
    if profile_ids is None:
        candidates = """
            SELECT p.id FROM profiles p WHERE p.tenant_id = %(tenant)s AND p.merged_into IS NULL
              AND p.computed ? %(name)s
            UNION
            SELECT DISTINCT e.profile_id FROM events e
            WHERE e.tenant_id = %(tenant)s AND e.event_name = %(event)s AND e.profile_id IS NOT NULL
              AND e.event_time >= now() - make_interval(days => %(days)s)"""
    else:
        candidates = "SELECT unnest(%(ids)s::uuid[])"
    sql = f"""
    WITH ids AS ({candidates}),
    v AS (
        SELECT ids.id, agg.val FROM ids AS ids(id) CROSS JOIN LATERAL (
            SELECT {trait.aggregate_sql()} AS val FROM events e
            WHERE e.tenant_id = %(tenant)s AND e.profile_id = ids.id AND e.event_name = %(event)s
              AND e.event_time >= now() - make_interval(days => %(days)s)
        ) agg
    )
    UPDATE profiles p
    SET computed = CASE WHEN v.val IS NULL THEN p.computed - %(name)s
                        ELSE jsonb_set(p.computed, ARRAY[%(name)s], v.val) END,
        updated_at = now()
    FROM v
    WHERE p.id = v.id AND p.tenant_id = %(tenant)s AND p.merged_into IS NULL
      AND (p.computed -> %(name)s) IS DISTINCT FROM v.val
    """
    params = {"tenant": tenant_id, "name": trait.name, "event": trait.event, "days": trait.within_days,
              "prop": trait.property, "ids": list(profile_ids or [])}
    return conn.execute(sql, params).rowcount


def new_id() -> str:
    return str(uuid.uuid4())
