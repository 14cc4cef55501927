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


def upkeep_profiles(conn: psycopg.Connection, tenant_id: str, profile_ids: list[str]) -> None:
    """Recount the tenant's computed traits and re-evaluate its dynamic segments for these
    profiles (the scheduler's upkeep per chunk; the read API's unmerge right after commit).
    The connection must not be inside a transaction."""
    traits = load_computed_traits(conn, tenant_id)
    if traits:
        with conn.transaction():
            for trait in traits:
                refresh_computed_trait(conn, tenant_id, trait, profile_ids)
    for segment_id, rules in dynamic_segments(conn, tenant_id):
        evaluate_segment(conn, tenant_id, segment_id, rules, profile_ids)


def compile_for_tenant(conn: psycopg.Connection, tenant_id: str, rules: dict) -> CompiledRule:
    """Rules compiled with the tenant's computed-trait defaults (a count of 0 for profiles
    that never had a value stored)."""
    defaults = {t.name: t.default for t in load_computed_traits(conn, tenant_id)}
    return compile_rules(rules, defaults)


def preview_segment(conn: psycopg.Connection, tenant_id: str, rules: dict, sample_size: int) -> tuple[int, list[str]]:
    """(live count, sample of profile ids) of the live profiles matching the rules."""
    compiled = compile_for_tenant(conn, tenant_id, rules)
    base = f"FROM profiles p WHERE p.tenant_id = %s AND p.merged_into IS NULL AND {compiled.sql}"
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
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('segment:' || %s, 0))", (segment_id,))
        compiled = compile_for_tenant(conn, tenant_id, rules)
        scoped = profile_ids is not None
        only_p = " AND p.id = ANY(%s::uuid[])" if scoped else ""
        only_m = " AND m.profile_id = ANY(%s::uuid[])" if scoped else ""
        ids = [list(profile_ids)] if scoped else []
        sql = f"""
        WITH cand AS (
            SELECT p.id FROM profiles p
            WHERE p.tenant_id = %s AND p.merged_into IS NULL{only_p} AND {compiled.sql}
        ), entered AS (
            INSERT INTO segment_members (tenant_id, segment_id, profile_id)
            SELECT %s::uuid, %s::uuid, id FROM cand ON CONFLICT DO NOTHING RETURNING profile_id
        ), exited AS (
            DELETE FROM segment_members m
            WHERE m.tenant_id = %s AND m.segment_id = %s{only_m}
              AND NOT EXISTS (SELECT 1 FROM cand WHERE cand.id = m.profile_id)
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
        params = (tenant_id, *ids, *compiled.params, *seg, *seg, *ids, *seg, *seg)
        entered, exited = conn.execute(sql, params).fetchone()
    return entered, exited


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
