"""Unit tests for core.unmerge (CONTRACT 9: unmerge) and the planner's unmerge blocks
(core.identity ``apart``). Pure: no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.identifiers import normalize_identifier
from core.identity import Apart, IdentityRules, ProfileState, plan_identities
from core.profiles import merge_trait_sets
from core.unmerge import (
    ConsentRecord,
    MergedProfile,
    MergeNotUndoable,
    StoredEvent,
    assign_sides,
    plan_unmerge,
)

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def key(id_type: str, value: str) -> tuple[str, str]:
    i = normalize_identifier(id_type, value, default_region="US")
    return (i.type, i.hash)


EMAIL_S = key("email", "s@example.com")
ANON_S = key("anonymous_id", "anon-s")
EMAIL_A = key("email", "a@example.com")
ANON_A = key("anonymous_id", "anon-a")
DEVICE_NEW = key("device_id", "device-new")


def side(ids, traits, times, events, purchases=0, revenue="0", consents=None, lifecycle="known",
         first=0, last=0, merges=0):
    return {"identifiers": [list(k) for k in ids], "traits": traits, "trait_times": times,
            "counters": {"events": events, "purchases": purchases, "revenue": revenue},
            "consents": consents or {}, "lifecycle": lifecycle, "first_seen": at(first).isoformat(),
            "last_seen": at(last).isoformat(), "merge_count": merges}


def snapshot():
    s = side([EMAIL_S, ANON_S], {"plan": "pro", "city": "Oslo"}, {"plan": at(1).isoformat(), "city": at(1).isoformat()},
             events=5, purchases=1, revenue="10.0000",
             consents={"email": {"granted": True, "updated_at": at(2).isoformat(), "source_id": None}}, last=5)
    a = side([EMAIL_A, ANON_A], {"plan": "free", "name": "Ann"}, {"plan": at(3).isoformat(), "name": at(3).isoformat()},
             events=3, purchases=1, revenue="7.5000",
             consents={"email": {"granted": False, "updated_at": at(4).isoformat(), "source_id": None}}, last=6)
    return {**a, "survivor": s, "consent_mark": 100}


def merged_now(extra_traits=None, extra_times=None, events=12, purchases=3, revenue="42.5000", merges=1):
    snap = snapshot()
    traits, times = dict(snap["survivor"]["traits"]), dict(snap["survivor"]["trait_times"])
    merge_trait_sets(traits, times, snap["traits"], snap["trait_times"])
    traits.update(extra_traits or {})
    times.update(extra_times or {})
    return MergedProfile(traits, times, events, purchases, Decimal(revenue), merges, at(0), at(30),
                         [EMAIL_S, ANON_S, EMAIL_A, ANON_A, DEVICE_NEW])


def ev(eid, minutes, ids, name="Page", props=None, from_absorbed=False):
    return StoredEvent(eid, at(minutes), name, props or {}, ids, from_absorbed)


def test_identifiers_and_events_go_back_by_side_and_priority():
    events = [
        ev("a-old", 3, [ANON_A], from_absorbed=True),  # the absorbed side had it at merge time
        ev("s-old", 1, [ANON_S]),
        ev("merge", 10, [EMAIL_S, ANON_A]),  # the merge's event: the email (stronger) is the survivor's
        ev("a-new", 11, [ANON_A, DEVICE_NEW]),  # the device, linked since, follows its first event
        ev("both", 12, [ANON_S, EMAIL_A]),  # both sides: the email decides
        ev("device-only", 13, [DEVICE_NEW]),
    ]
    sides, event_sides = assign_sides([EMAIL_A, ANON_A], [EMAIL_S, ANON_S],
                                      [EMAIL_S, ANON_S, EMAIL_A, ANON_A, DEVICE_NEW], events)
    assert sides == {EMAIL_S: "s", ANON_S: "s", EMAIL_A: "a", ANON_A: "a", DEVICE_NEW: "a"}
    assert event_sides == {"a-old": "a", "s-old": "s", "merge": "s", "a-new": "a", "both": "a", "device-only": "a"}


def test_counters_come_from_snapshots_plus_events_since():
    events = [
        ev("a-old", 3, [ANON_A], from_absorbed=True),  # counted in the snapshot (others left retention)
        ev("a-buy", 11, [EMAIL_A], name="Order Completed", props={"revenue": 20}),
        ev("a-page", 12, [ANON_A]),
        ev("s-buy", 13, [EMAIL_S], name="Purchase", props={"revenue": 5}),
        ev("s-page", 14, [ANON_S]),
    ]
    # 5 + 3 at merge, 4 events since: 12; purchases 1 + 1 + 2 since; revenue 10 + 7.5 + 25
    plan = plan_unmerge(snapshot(), merged_now(events=12, purchases=4, revenue="42.5"), events, [])
    assert plan.absorbed.event_count == 3 + 2
    assert plan.absorbed.purchase_count == 1 + 1
    assert plan.absorbed.revenue == Decimal("27.5")
    assert plan.survivor.event_count == 12 - 5
    assert plan.survivor.purchase_count == 2
    assert plan.survivor.revenue == Decimal("15.0")
    assert sorted(plan.absorbed_events) == ["a-buy", "a-old", "a-page"]
    assert plan.absorbed_identifiers == {EMAIL_A, ANON_A}
    assert plan.absorbed.lifecycle == "customer" and plan.survivor.lifecycle == "customer"
    assert plan.absorbed.merge_count == 0 and plan.survivor.merge_count == 0
    assert plan.absorbed.last_seen == at(12) and plan.survivor.last_seen == at(14)


def test_traits_split_by_the_side_that_set_them_since():
    # since the merge: an absorbed-side event set "name" at minute 20, a survivor one "plan" at 21
    merged = merged_now(extra_traits={"name": "Anna", "plan": "team", "tier": "gold"},
                        extra_times={"name": at(20).isoformat(), "plan": at(21).isoformat(),
                                     "tier": at(22).isoformat()})
    events = [ev("a", 20, [ANON_A]), ev("s", 21, [ANON_S])]  # nothing stamped 22: the survivor keeps it
    plan = plan_unmerge(snapshot(), merged, events, [])
    assert plan.absorbed.traits == {"plan": "free", "name": "Anna"}
    assert plan.survivor.traits == {"plan": "team", "city": "Oslo", "tier": "gold"}
    assert plan.absorbed.trait_times["name"] == at(20).isoformat()


def test_consents_from_snapshots_plus_records_since_the_merge():
    events = [ev("a", 20, [ANON_A]), ev("s", 21, [ANON_S])]
    records = [
        ConsentRecord(50, None, "email", True, at(30), None),  # before the mark: in the snapshots
        ConsentRecord(101, "a", "sms", True, at(20), None),
        ConsentRecord(102, "s", "email", False, at(21), None),
    ]
    plan = plan_unmerge(snapshot(), merged_now(), events, records)
    assert plan.absorbed.consents["email"]["granted"] is False
    assert plan.absorbed.consents["sms"]["granted"] is True
    assert plan.survivor.consents["email"]["granted"] is False
    assert "sms" not in plan.survivor.consents
    assert plan.absorbed_consent_records == [101]


def test_same_inputs_same_plan_and_old_records_refused():
    events = [ev("a", 20, [ANON_A])]
    assert plan_unmerge(snapshot(), merged_now(), events, []) == plan_unmerge(snapshot(), merged_now(), events, [])
    legacy = {k: v for k, v in snapshot().items() if k not in ("identifiers", "survivor")}
    with pytest.raises(MergeNotUndoable):
        plan_unmerge(legacy, merged_now(), events, [])


def _ident(id_type, value):
    return normalize_identifier(id_type, value, default_region="US")


def test_planner_keeps_an_unmerged_trigger_apart():
    graph = {EMAIL_S: "S", ANON_A: "A"}
    profiles = {"S": ProfileState("S", at(0), {"email": 1}), "A": ProfileState("A", at(1), {"anonymous_id": 1})}
    event = ([_ident("email", "s@example.com"), _ident("anonymous_id", "anon-a")], at(40))
    ids = iter(f"N{n}" for n in range(10))
    merged = plan_identities([event], graph, profiles, IdentityRules(), new_profile_id=lambda: next(ids))
    assert [(m.survivor, m.absorbed) for m in merged.merges] == [("S", "A")]
    kept = plan_identities([event], graph, profiles, IdentityRules(), new_profile_id=lambda: next(ids),
                           apart=[Apart(ANON_A, "A", "S")])
    assert kept.merges == [] and kept.event_profiles == ["S"]
    assert [(d.kind, (d.identifier.type, d.identifier.hash)) for d in kept.decisions] == [("unmerge_block", ANON_A)]


def test_planner_block_holds_through_another_identifier_of_the_holder():
    # the event joins A through its email; A holds the blocked trigger, so it may not join S
    graph = {EMAIL_S: "S", EMAIL_A: "A", ANON_A: "A"}
    profiles = {"S": ProfileState("S", at(0), {"email": 1}),
                "A": ProfileState("A", at(1), {"email": 1, "anonymous_id": 1})}
    event = ([_ident("email", "s@example.com"), _ident("email", "a@example.com")], at(40))
    plan = plan_identities([event], graph, profiles, IdentityRules(), new_profile_id=lambda: "N",
                           apart=[Apart(ANON_A, "A", "S")])
    assert plan.merges == []
    assert [d.kind for d in plan.decisions] == ["unmerge_block"]


def test_planner_block_refuses_linking_a_free_trigger_to_the_profile():
    graph = {EMAIL_S: "S"}
    profiles = {"S": ProfileState("S", at(0), {"email": 1})}
    event = ([_ident("email", "s@example.com"), _ident("anonymous_id", "anon-a")], at(40))
    plan = plan_identities([event], graph, profiles, IdentityRules(), new_profile_id=lambda: "N",
                           apart=[Apart(ANON_A, None, "S")])
    assert plan.links == [] and plan.event_profiles == ["S"]
    assert [d.kind for d in plan.decisions] == ["unmerge_block"]
