"""A round's profile write-back: the new profiles and every stored profile its events,
identifiers or merges changed, with their final counters, times and lifecycle.

Worked out in steps (``writeback_steps``), so the job thread can do it while the events'
COPY waits for Postgres (workers/persist.py; ``stratum.db.overlap.FirstThen``): a round's
Python that would otherwise run between two statements, with Postgres idle. Then written
by ``write_profiles``: new profiles by COPY, the others by one ``UPDATE ... FROM
json_to_recordset`` each for those whose traits may have changed and for the rest.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import psycopg

from core.profiles import next_lifecycle
from stratum.db.params import json_rows, json_value
from workers.copy_rows import copy_lines, json_text, timestamp_text
from workers.identity_store import ProfileRow
from workers.prepare import PreparedEvent

_STEP_EVENTS = 1_000  # a step's share of the counters loop: well under a millisecond of Python


@dataclass(slots=True)
class ProfileWrites:
    new: list[ProfileRow]  # the new profiles
    new_lines: list[str]  # their COPY lines
    with_traits: tuple[str, str] | None  # (rows, ids) parameters of the update with traits
    counters: tuple[str, str] | None  # (rows, ids) parameters of the counters-only update


def writeback_steps(tenant_id: str, events: list[PreparedEvent], profile_ids: list[str | None],
                    profiles: dict[str, ProfileRow], changed: set[str], traits_changed: set[str]
                    ) -> Generator[None, None, ProfileWrites]:
    """Apply the events to their profiles' counters and first/last seen, settle each touched
    profile's lifecycle, and build the statements' parameters. ``changed``: profiles to write
    whatever their events (links, merges, moves, touched identifiers, new profiles);
    ``traits_changed``: a superset of those whose traits changed (the others skip encoding
    and re-parsing their trait jsonb)."""
    touched: set[str] = set(changed)
    for start in range(0, len(events), _STEP_EVENTS):
        _count_events(events[start:start + _STEP_EVENTS], profile_ids[start:start + _STEP_EVENTS], profiles, touched)
        yield
    for pid in touched:
        p = profiles[pid]
        p.lifecycle = next_lifecycle(p.lifecycle, known=p.known, purchases=p.purchase_count)
    rows = [profiles[pid] for pid in sorted(touched)]
    new = [r for r in rows if r.new]
    new_lines = [_profile_line(tenant_id, r) for r in new]
    yield
    stored = [r for r in rows if not r.new]
    with_traits = [r for r in stored if r.id in traits_changed]
    counters = [r for r in stored if r.id not in traits_changed]
    return ProfileWrites(
        new, new_lines,
        (json_rows([_with_traits(r) for r in with_traits]), json_value([r.id for r in with_traits]))
        if with_traits else None,
        (json_rows([_counters(r) for r in counters]), json_value([r.id for r in counters])) if counters else None,
    )


def write_profiles(conn: psycopg.Connection, tenant_id: str, writes: ProfileWrites) -> None:
    """Insert the new profiles and update the others (``writes``, of ``writeback_steps``)."""
    if writes.new_lines:
        copy_lines(conn, "profiles", "tenant_id, id, lifecycle, event_count, purchase_count, revenue,"
                   " identifier_count, merge_count, first_seen, last_seen, traits, trait_times", writes.new_lines)
        for r in writes.new:
            r.new = False
    if writes.with_traits is not None:
        data, ids = writes.with_traits
        conn.execute(
            f"UPDATE profiles p SET traits = u.tr, trait_times = u.tt, {_COUNTERS_SET}"
            f" FROM json_to_recordset(%s::json) AS u({_COUNTERS_COLUMNS}, tr jsonb, tt jsonb)"
            f" WHERE p.tenant_id = %s AND p.id = u.id AND p.id = {_IDS}", (data, tenant_id, ids))
    if writes.counters is not None:
        data, ids = writes.counters
        conn.execute(
            f"UPDATE profiles p SET {_COUNTERS_SET} FROM json_to_recordset(%s::json) AS u({_COUNTERS_COLUMNS})"
            f" WHERE p.tenant_id = %s AND p.id = u.id AND p.id = {_IDS}", (data, tenant_id, ids))


def _count_events(events: list[PreparedEvent], profile_ids: list[str | None], profiles: dict[str, ProfileRow],
                  touched: set[str]) -> None:
    for e, pid in zip(events, profile_ids, strict=True):
        if pid is None:
            continue
        p = profiles[pid]
        touched.add(pid)
        p.event_count += 1
        if e.purchase is not None:
            p.purchase_count += 1  # revenue: persist._add_revenue
        t = e.state_time
        if t < p.first_seen:
            p.first_seen = t
        if t > p.last_seen:
            p.last_seen = t


def _profile_line(tenant_id: str, r: ProfileRow) -> str:
    return (f"{tenant_id}\t{r.id}\t{r.lifecycle}\t{r.event_count}\t{r.purchase_count}\t{r.revenue}"
            f"\t{r.total_identifiers}\t{r.merge_count}\t{timestamp_text(r.first_seen)}"
            f"\t{timestamp_text(r.last_seen)}\t{json_text(r.traits)}\t{json_text(r.trait_times)}")


# The rows to write, as an index condition: never a scan of the tenant's profiles
# (workers/identity_store.py, above _GRAPH_SQL).
_IDS = "ANY(ARRAY(SELECT value::uuid FROM json_array_elements_text(%s::json)))"
_COUNTERS_SET = ("lifecycle = u.lc, event_count = u.ec, purchase_count = u.pc, revenue = u.rv,"
                 " identifier_count = u.ic, merge_count = u.mc, first_seen = u.fs, last_seen = u.ls,"
                 " updated_at = now()")
_COUNTERS_COLUMNS = ("id uuid, lc text, ec bigint, pc bigint, rv numeric, ic int, mc int, fs timestamptz,"
                     " ls timestamptz")


def _with_traits(r: ProfileRow) -> dict:
    return {**_counters(r), "tr": r.traits, "tt": r.trait_times}


def _counters(r: ProfileRow) -> dict:
    return {"id": r.id, "lc": r.lifecycle, "ec": r.event_count, "pc": r.purchase_count, "rv": r.revenue,
            "ic": r.total_identifiers, "mc": r.merge_count, "fs": r.first_seen, "ls": r.last_seen}
