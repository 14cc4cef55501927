"""Undoing a merge (CONTRACT 9): which identifiers, events and consent records go back to
the absorbed side, and what both sides look like afterwards. Pure: the read API loads the
merge record and the merged profile, calls ``plan_unmerge`` and applies the result in one
transaction (read_api/unmerge.py).

Both sides are rebuilt from the merge's snapshots (taken when it happened, so counts of
events that have since left retention are kept) plus what happened since:

- identifiers: those in the absorbed side's snapshot go back to it; one linked since the
  merge follows the earliest event carrying it whose side is known (else the survivor);
- events: an event the absorbed side had at merge time (``merged_from`` ends with its id)
  goes back to it; any other event goes to the side of its highest-priority identifier
  (ties: the first in the event), the survivor when none of its identifiers is on either;
- counters: the absorbed side gets its snapshot plus the events moved to it that it did
  not have at merge time; the survivor keeps the rest (so nothing is counted twice or lost);
- traits: each side's snapshot, plus the values changed since the merge, each given to the
  side of the events whose state time stamped it (the survivor when that is unclear);
- consents: each side's snapshot, then the consent records made since the merge (history
  rows after the merge's watermark), in state-time order, by the side of their event;
- lifecycle: re-derived from the snapshot's stage, identifiers and purchases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.identifiers import KNOWN_TYPES, PRIORITY
from core.profiles import is_purchase, merge_trait_sets, next_lifecycle, once_stamp, purchase_amount

Key = tuple[str, str]


class MergeNotUndoable(ValueError):
    """The merge record lacks what an unmerge needs (recorded before snapshots held both sides)."""


@dataclass(frozen=True)
class StoredEvent:
    """An event now on the merged profile, as the unmerge needs it."""

    event_id: str
    state_time: datetime
    event_name: str
    properties: Mapping[str, Any]
    identifiers: Sequence[Key]
    # the absorbed side had it at merge time (``merged_from`` ends with the absorbed id)
    from_absorbed: bool = False


@dataclass(frozen=True)
class ConsentRecord:
    """A consent history row of the merged profile."""

    id: int
    event_id: str | None
    consent_type: str
    granted: bool
    recorded_at: datetime
    source_id: str | None


@dataclass
class MergedProfile:
    """The merged (survivor) profile as it stands now."""

    traits: dict[str, Any]
    trait_times: dict[str, str]
    event_count: int
    purchase_count: int
    revenue: Decimal
    merge_count: int
    first_seen: datetime
    last_seen: datetime
    identifiers: Sequence[Key]


@dataclass
class SideState:
    """One side after the unmerge: what the profile row and its consents become."""

    lifecycle: str
    traits: dict[str, Any]
    trait_times: dict[str, str]
    event_count: int
    purchase_count: int
    revenue: Decimal
    merge_count: int
    first_seen: datetime
    last_seen: datetime
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class UnmergePlan:
    absorbed_identifiers: set[Key]
    absorbed_events: list[str]  # event ids that go back to the absorbed profile
    absorbed_consent_records: list[int]  # consent history ids that go with them
    survivor: SideState
    absorbed: SideState


def _side_snapshot(snapshot: Mapping[str, Any]) -> Mapping[str, Any]:
    if "identifiers" not in snapshot or "trait_times" not in snapshot:
        raise MergeNotUndoable("this merge was recorded before merges kept what an unmerge needs")
    return snapshot


def _best_side(idents: Iterable[Key], sides: Mapping[Key, str]) -> str | None:
    best: tuple[int, str] | None = None
    for key in idents:
        side = sides.get(key)
        if side is not None and (best is None or PRIORITY[key[0]] < best[0]):
            best = (PRIORITY[key[0]], side)
    return best[1] if best else None


def assign_sides(absorbed_ids: Iterable[Key], survivor_ids: Iterable[Key], current_ids: Sequence[Key],
                 events: Sequence[StoredEvent]) -> tuple[dict[Key, str], dict[str, str]]:
    """(side of each identifier now on the merged profile, side of each of ``events``):
    ``"a"`` for the absorbed side, ``"s"`` for the survivor's. ``absorbed_ids`` and
    ``survivor_ids`` are the snapshots' identifier lists."""
    from_a, from_s = set(absorbed_ids), set(survivor_ids)
    sides: dict[Key, str] = {}
    for k in current_ids:
        if k in from_a:
            sides[k] = "a"
        elif k in from_s:
            sides[k] = "s"
    unknown = {k for k in current_ids if k not in sides}
    ordered = sorted(events, key=lambda e: (e.state_time, e.event_id))
    event_sides: dict[str, str] = {}
    for e in ordered:
        side = "a" if e.from_absorbed else _best_side(e.identifiers, sides)
        if side is not None:
            event_sides[e.event_id] = side
    # An identifier linked since the merge follows the earliest event that carried it.
    for e in ordered:
        side = event_sides.get(e.event_id)
        for k in e.identifiers:
            if side is not None and k in unknown:
                sides[k] = side
                unknown.discard(k)
    for k in unknown:
        sides[k] = "s"
    for e in ordered:
        if e.event_id not in event_sides:
            event_sides[e.event_id] = _best_side(e.identifiers, sides) or "s"
    return sides, event_sides


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _stamps(e: StoredEvent) -> tuple[str, str]:
    """The ``trait_times`` stamps an event's traits would carry (plain and set-once)."""
    return e.state_time.isoformat(), once_stamp(e.state_time)


def split_traits(survivor_snap: Mapping[str, Any], absorbed_snap: Mapping[str, Any], merged: MergedProfile,
                 events: Sequence[StoredEvent], event_sides: Mapping[str, str]
                 ) -> tuple[tuple[dict, dict], tuple[dict, dict]]:
    """((traits, times) of the survivor, (traits, times) of the absorbed side).

    The merge's result is replayed from the two snapshots; a key whose value or stamp
    differs now was set since the merge, by an event whose state time is its stamp: it
    goes to that event's side (the survivor's when no single side matches)."""
    at_merge, at_merge_times = dict(survivor_snap["traits"]), dict(survivor_snap["trait_times"])
    merge_trait_sets(at_merge, at_merge_times, absorbed_snap["traits"], absorbed_snap["trait_times"])
    by_stamp: dict[str, set[str]] = {}
    for e in events:
        if e.from_absorbed:
            continue  # counted in the absorbed snapshot already
        for stamp in _stamps(e):
            by_stamp.setdefault(stamp, set()).add(event_sides[e.event_id])
    sides = {"s": (dict(survivor_snap["traits"]), dict(survivor_snap["trait_times"])),
             "a": (dict(absorbed_snap["traits"]), dict(absorbed_snap["trait_times"]))}
    for key, value in merged.traits.items():
        stamp = merged.trait_times.get(key, "")
        if key in at_merge and at_merge[key] == value and at_merge_times.get(key, "") == stamp:
            continue
        matched = by_stamp.get(stamp, set())
        side = "a" if matched == {"a"} else "s"
        traits, times = sides[side]
        traits[key], times[key] = value, stamp
    return sides["s"], sides["a"]


def fold_consents(base: Mapping[str, Mapping[str, Any]], records: Iterable[ConsentRecord]) -> dict[str, dict]:
    """``base`` (a snapshot's consents) with ``records`` applied: per type, the newest state
    time wins (a tie: the later record), as workers record them."""
    out = {t: dict(c) for t, c in base.items()}
    for r in sorted(records, key=lambda r: (r.recorded_at, r.id)):
        current = out.get(r.consent_type)
        if current is None or _parse_time(current["updated_at"]) <= r.recorded_at:
            out[r.consent_type] = {"granted": r.granted, "updated_at": r.recorded_at.isoformat(),
                                   "source_id": r.source_id}
    return out


def _counters(snap: Mapping[str, Any]) -> tuple[int, int, Decimal]:
    c = snap["counters"]
    return int(c["events"]), int(c["purchases"]), Decimal(str(c["revenue"]))


def _known(keys: Iterable[Key]) -> bool:
    return any(t in KNOWN_TYPES for t, _ in keys)


def plan_unmerge(snapshot: Mapping[str, Any], merged: MergedProfile, events: Sequence[StoredEvent],
                 consent_records: Sequence[ConsentRecord]) -> UnmergePlan:
    """The unmerge of the merge whose record holds ``snapshot`` (the absorbed side at the
    top level, the survivor under ``"survivor"``, the consent history watermark under
    ``"consent_mark"``), given the merged profile now, every event on it and its consent
    history. Raises ``MergeNotUndoable`` for a record without both sides."""
    a_snap = _side_snapshot(snapshot)
    s_snap = _side_snapshot(snapshot.get("survivor") or {})
    mark = int(snapshot.get("consent_mark", 0))
    key_sides, event_sides = assign_sides([tuple(k) for k in a_snap["identifiers"]],
                                          [tuple(k) for k in s_snap["identifiers"]], merged.identifiers, events)
    a_keys = {k for k, side in key_sides.items() if side == "a"}
    s_keys = {k for k, side in key_sides.items() if side == "s"}
    a_events = [e for e in events if event_sides[e.event_id] == "a"]
    s_events = [e for e in events if event_sides[e.event_id] == "s"]

    # Counters: the absorbed side's snapshot, plus what it gained since; the survivor the rest.
    a_count, a_purchases, a_revenue = _counters(a_snap)
    for e in a_events:
        if e.from_absorbed:
            continue
        a_count += 1
        if is_purchase(e.event_name):
            a_purchases += 1
            a_revenue += purchase_amount(dict(e.properties)).amount
    s_count = max(0, merged.event_count - a_count)
    s_purchases = max(0, merged.purchase_count - a_purchases)
    s_revenue = merged.revenue - a_revenue

    (s_traits, s_times), (a_traits, a_times) = split_traits(s_snap, a_snap, merged, events, event_sides)

    a_event_ids = {e.event_id for e in a_events}
    since = [r for r in consent_records if r.id > mark]
    a_consents = fold_consents(a_snap.get("consents", {}), [r for r in since if r.event_id in a_event_ids])
    s_consents = fold_consents(s_snap.get("consents", {}), [r for r in since if r.event_id not in a_event_ids])

    def seen(snap: Mapping[str, Any], side_events: list[StoredEvent]) -> tuple[datetime, datetime]:
        times = [e.state_time for e in side_events]
        return (min([_parse_time(snap["first_seen"]), *times]), max([_parse_time(snap["last_seen"]), *times]))

    a_first, a_last = seen(a_snap, a_events)
    s_first, s_last = seen(s_snap, s_events)
    a_merges = int(a_snap.get("merge_count", 0))
    absorbed = SideState(
        next_lifecycle(a_snap["lifecycle"], known=_known(a_keys), purchases=a_purchases), a_traits, a_times,
        a_count, a_purchases, a_revenue, a_merges, a_first, a_last, a_consents)
    survivor = SideState(
        next_lifecycle(s_snap["lifecycle"], known=_known(s_keys), purchases=s_purchases), s_traits, s_times,
        s_count, s_purchases, s_revenue, max(0, merged.merge_count - a_merges - 1), s_first, s_last, s_consents)
    return UnmergePlan(a_keys, sorted(a_event_ids),
                       sorted(r.id for r in consent_records if r.event_id in a_event_ids), survivor, absorbed)
