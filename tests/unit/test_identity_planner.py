"""Unit tests for core.identity.plan_identities (CONTRACT section 6: identity rules, trust,
order, merge survivor). Pure: no services; identifiers come from normalize_identifier and
profile ids from a deterministic counter.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import BlockedIdentifier
from core.identifiers import Identifier, normalize_identifier
from core.identity import (
    DEFAULT_TYPE_LIMITS,
    TRUSTED_SOURCE_TYPES,
    IdentityRules,
    Merge,
    Plan,
    ProfileState,
    plan_identities,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

Raw = tuple[str, str]  # (type, raw value) as a client sends it
RawEvent = Sequence[Raw]


def ident(id_type: str, value: str) -> Identifier:
    return normalize_identifier(id_type, value, default_region="US")


def key(id_type: str, value: str) -> tuple[str, str]:
    i = ident(id_type, value)
    return (i.type, i.hash)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Ids:
    """Deterministic ``new_profile_id``: P1, P2, ..."""

    def __init__(self, prefix: str = "P") -> None:
        self._n = itertools.count(1)
        self.prefix = prefix

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._n)}"


def events_of(batch: Iterable[RawEvent], start: float = 0.0) -> list[tuple[list[Identifier], datetime]]:
    """Raw events -> planner input, one minute apart from ``start``."""
    return [([ident(t, v) for t, v in ev], at(start + n)) for n, ev in enumerate(batch)]


def plan(batch: Iterable[RawEvent], *, graph=None, profiles=None, rules: IdentityRules | None = None,
         trusted: bool = True, ids: Ids | None = None, start: float = 0.0) -> Plan:
    return plan_identities(events_of(batch, start), graph or {}, profiles or {}, rules or IdentityRules(),
                           trusted_source=trusted, new_profile_id=ids or Ids())


@dataclass
class World:
    """A stand-in for the database: applies each plan to a graph and profile states, the way
    workers/persist.py does, so scenarios can span several batches (jobs)."""

    rules: IdentityRules = field(default_factory=IdentityRules)
    graph: dict[tuple[str, str], str] = field(default_factory=dict)
    profiles: dict[str, ProfileState] = field(default_factory=dict)
    ids: Ids = field(default_factory=Ids)
    plans: list[Plan] = field(default_factory=list)
    clock: float = 0.0

    def run(self, batch: Sequence[RawEvent], *, trusted: bool = True) -> Plan:
        graph_before = dict(self.graph)
        profiles_before = {pid: (p.first_seen, dict(p.counts), p.merge_count) for pid, p in self.profiles.items()}
        p = plan(batch, graph=self.graph, profiles=self.profiles, rules=self.rules, trusted=trusted,
                 ids=self.ids, start=self.clock)
        # The planner must not modify its inputs.
        assert self.graph == graph_before
        assert {pid: (q.first_seen, q.counts, q.merge_count) for pid, q in self.profiles.items()} == profiles_before
        self.clock += len(batch)
        self._apply(p)
        self.plans.append(p)
        return p

    def _apply(self, p: Plan) -> None:
        redirect = {m.absorbed: m.survivor for m in p.merges}
        old = self.profiles
        live: dict[str, ProfileState] = {}
        for pid, st in old.items():
            if pid in redirect:
                continue
            live[pid] = ProfileState(pid, st.first_seen, {}, st.merge_count)
        for pid, st in p.created.items():
            live[pid] = ProfileState(pid, st.first_seen, {}, st.merge_count)
        for m in p.merges:
            s = live[m.survivor]
            a = old.get(m.absorbed)
            if m.survivor in p.created:
                continue  # the planner's state of a created profile already counts its merges
            s.merge_count += (a.merge_count if a else 0) + 1
            if a is not None:
                s.first_seen = min(s.first_seen, a.first_seen)
        self.graph = {k: redirect.get(v, v) for k, v in self.graph.items()}
        for lk in p.links:
            assert (lk.identifier.type, lk.identifier.hash) not in self.graph, "an identifier was linked twice"
            self.graph[(lk.identifier.type, lk.identifier.hash)] = lk.profile_id
        for (t, _h), pid in self.graph.items():
            live[pid].counts[t] = live[pid].counts.get(t, 0) + 1
        self.profiles = live
        assert set(self.graph.values()) <= set(live), "an identifier points at a profile that is not live"

    def profile_of(self, id_type: str, value: str) -> str | None:
        return self.graph.get(key(id_type, value))

    def partition(self) -> set[frozenset[tuple[str, str]]]:
        return partition_of(self.graph)

    def resolve(self, pid: str | None) -> str | None:
        """Where a profile id of an earlier plan lives now (following later merges)."""
        redirect = {m.absorbed: m.survivor for m in self.merges}
        while pid in redirect:
            pid = redirect[pid]
        return pid

    @property
    def merges(self) -> list[Merge]:
        return [m for p in self.plans for m in p.merges]

    @property
    def decisions(self):
        return [d for p in self.plans for d in p.decisions]


def partition_of(graph: dict[tuple[str, str], str]) -> set[frozenset[tuple[str, str]]]:
    groups: dict[str, set[tuple[str, str]]] = {}
    for k, pid in graph.items():
        groups.setdefault(pid, set()).add(k)
    return {frozenset(g) for g in groups.values()}


def groups(*sets: Iterable[Raw]) -> set[frozenset[tuple[str, str]]]:
    return {frozenset(key(t, v) for t, v in s) for s in sets}


def plan_partition(p: Plan) -> set[frozenset[tuple[str, str]]]:
    return partition_of({(lk.identifier.type, lk.identifier.hash): lk.profile_id for lk in p.links})


def check_plan_consistency(p: Plan, n_events: int) -> None:
    """Structural invariants of any plan built on an empty graph."""
    absorbed = {m.absorbed for m in p.merges}
    assert len(p.event_profiles) == n_events
    assert not absorbed & set(p.created), "a profile is both created (live) and absorbed"
    for lk in p.links:
        assert lk.profile_id not in absorbed
    for pid in p.event_profiles:
        assert pid is None or pid not in absorbed
    keys = [(lk.identifier.type, lk.identifier.hash) for lk in p.links]
    assert len(keys) == len(set(keys)), "an identifier was linked twice"


EXT, EMAIL, PHONE, DEVICE, ANON = "external_id", "email", "phone", "device_id", "anonymous_id"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Scenario:
    name: str
    batches: list[list[RawEvent]]  # each inner list is one batch (one plan)
    groups: set[frozenset[tuple[str, str]]]
    decisions: list[tuple[str, Raw]] = field(default_factory=list)  # (kind, identifier), in order
    merges: int = 0
    profiles_created: int | None = None
    trusted: bool = True
    rules: IdentityRules = field(default_factory=IdentityRules)
    absent: list[Raw] = field(default_factory=list)  # identifiers that must end on no profile


SCENARIOS = [
    Scenario(
        "anonymous_then_login",
        [[[(ANON, "a-1")]], [[(ANON, "a-1"), (EMAIL, "jane@example.com")]]],
        groups([(ANON, "a-1"), (EMAIL, "jane@example.com")]),
        profiles_created=1,
    ),
    Scenario(
        "anonymous_then_login_same_batch",
        [[[(ANON, "a-1")], [(ANON, "a-1"), (EMAIL, "jane@example.com")]]],
        groups([(ANON, "a-1"), (EMAIL, "jane@example.com")]),
        profiles_created=1,
    ),
    Scenario(
        "one_person_two_devices",
        [[[(ANON, "phone-app"), (EMAIL, "jane@example.com")]], [[(ANON, "laptop"), (EMAIL, "jane@example.com")]]],
        groups([(ANON, "phone-app"), (ANON, "laptop"), (EMAIL, "jane@example.com")]),
        profiles_created=1,
    ),
    Scenario(
        "email_overflow_sixth_dropped",
        [[[(EXT, "u1"), (EMAIL, f"e{i}@example.com")]] for i in range(1, 7)],
        groups([(EXT, "u1")] + [(EMAIL, f"e{i}@example.com") for i in range(1, 6)]),
        decisions=[("limit", (EMAIL, "e6@example.com"))],
        absent=[(EMAIL, "e6@example.com")],
        profiles_created=1,
    ),
    Scenario(
        "email_overflow_in_one_event_later_one_dropped",
        [[[(EXT, "u1")] + [(EMAIL, f"e{i}@example.com") for i in range(1, 7)]]],
        groups([(EXT, "u1")] + [(EMAIL, f"e{i}@example.com") for i in range(1, 6)]),
        decisions=[("limit", (EMAIL, "e6@example.com"))],
        absent=[(EMAIL, "e6@example.com")],
    ),
    Scenario(
        "chain_merges_across_batches",
        [[[(ANON, "a")]], [[(ANON, "b")]], [[(ANON, "c")]], [[(ANON, "a"), (ANON, "b")]], [[(ANON, "b"), (ANON, "c")]]],
        groups([(ANON, "a"), (ANON, "b"), (ANON, "c")]),
        merges=2, profiles_created=3,
    ),
    Scenario(
        "chain_merges_in_one_batch",
        [[[(ANON, "a")], [(ANON, "b")], [(ANON, "c")], [(ANON, "a"), (ANON, "b")], [(ANON, "b"), (ANON, "c")]]],
        groups([(ANON, "a"), (ANON, "b"), (ANON, "c")]),
        # Profiles created and absorbed within one plan never reach the database: no Merge
        # to record, their links and events go straight to the survivor.
        merges=0, profiles_created=1,
    ),
    Scenario(
        "website_links_anonymous_to_known",
        [[[(EMAIL, "jane@example.com")]], [[(ANON, "z"), (EMAIL, "jane@example.com")]]],
        groups([(ANON, "z"), (EMAIL, "jane@example.com")]),
        trusted=False, profiles_created=1,
    ),
    Scenario(
        "website_merges_anonymous_profile_into_known",
        [[[(EMAIL, "jane@example.com")]], [[(ANON, "z")]], [[(ANON, "z"), (EMAIL, "jane@example.com")]]],
        groups([(ANON, "z"), (EMAIL, "jane@example.com")]),
        trusted=False, merges=1,
    ),
    Scenario(
        "website_may_not_merge_two_known_profiles",
        [[[(EMAIL, "a@example.com"), (ANON, "x")]], [[(PHONE, "+16505550100"), (ANON, "y")]],
         [[(ANON, "x"), (ANON, "y")]]],
        groups([(EMAIL, "a@example.com"), (ANON, "x")], [(PHONE, "+16505550100"), (ANON, "y")]),
        decisions=[("untrusted_merge", (ANON, "y"))],
        trusted=False,
    ),
    Scenario(
        "server_may_merge_two_known_profiles",
        [[[(EMAIL, "a@example.com"), (ANON, "x")]], [[(PHONE, "+16505550100"), (ANON, "y")]],
         [[(ANON, "x"), (ANON, "y")]]],
        groups([(EMAIL, "a@example.com"), (ANON, "x"), (PHONE, "+16505550100"), (ANON, "y")]),
        merges=1,
    ),
    Scenario(
        "merge_cap",
        [[[(ANON, "a")]], [[(ANON, "b")]], [[(ANON, "c")]], [[(ANON, "a"), (ANON, "b")]], [[(ANON, "b"), (ANON, "c")]]],
        groups([(ANON, "a"), (ANON, "b")], [(ANON, "c")]),
        decisions=[("merge_limit", (ANON, "c"))],
        merges=1, rules=IdentityRules(max_merges=1),
    ),
    Scenario(
        "total_identifier_cap",
        [[[(EXT, "u1"), (EMAIL, "a@example.com"), (PHONE, "+16505550100"), (ANON, "x")]]],
        groups([(EXT, "u1"), (EMAIL, "a@example.com"), (PHONE, "+16505550100")]),
        decisions=[("limit", (ANON, "x"))],
        absent=[(ANON, "x")],
        rules=IdentityRules(max_identifiers=3),
    ),
    Scenario(
        "merge_refused_when_it_would_break_a_type_limit",
        [[[(EXT, "u1"), (ANON, "x")]], [[(EXT, "u2"), (ANON, "y")]], [[(ANON, "x"), (ANON, "y")]]],
        groups([(EXT, "u1"), (ANON, "x")], [(EXT, "u2"), (ANON, "y")]),
        decisions=[("limit", (ANON, "y"))],
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    w = World(rules=sc.rules)
    for batch in sc.batches:
        p = w.run(batch, trusted=sc.trusted)
        check_plan_consistency(p, len(batch))
    assert w.partition() == sc.groups
    got = [(d.kind, (d.identifier.type, d.identifier.hash)) for d in w.decisions]
    assert got == [(kind, key(*raw)) for kind, raw in sc.decisions]
    assert len(w.merges) == sc.merges
    assert len(w.profiles) == len(sc.groups)
    if sc.profiles_created is not None:
        assert sum(len(p.created) for p in w.plans) == sc.profiles_created
    for raw in sc.absent:
        assert w.profile_of(*raw) is None
    # every event ends on a live profile holding at least one of its identifiers
    for batch, p in zip(sc.batches, w.plans, strict=True):
        for ev, pid in zip(batch, p.event_profiles, strict=True):
            pid = w.resolve(pid)
            assert pid in w.profiles
            assert any(w.profile_of(*raw) == pid for raw in ev)


# --------------------------------------------------------------------------- anonymous, then login


def test_login_links_email_to_the_anonymous_profile_without_a_new_profile() -> None:
    ids = Ids()
    first = plan([[(ANON, "a-1")]], ids=ids)
    assert list(first.created) == ["P1"] and first.event_profiles == ["P1"]
    graph = {key(ANON, "a-1"): "P1"}
    profiles = {"P1": first.created["P1"]}
    second = plan([[(ANON, "a-1"), (EMAIL, "Jane@Example.com")]], graph=graph, profiles=profiles, ids=ids, start=5)
    assert second.created == {} and second.merges == [] and second.decisions == []
    assert second.event_profiles == ["P1"]
    [link] = second.links
    assert link.identifier == ident(EMAIL, "jane@example.com") and link.profile_id == "P1"
    assert link.event_index == 0
    assert link.via == ident(ANON, "a-1")  # the edge starts at the identifier already on the profile


def test_two_devices_one_email_one_profile_with_both_anonymous_ids() -> None:
    w = World()
    w.run([[(ANON, "A"), (EMAIL, "jane@example.com")]])
    p = w.run([[(ANON, "B"), (EMAIL, "jane@example.com")]])
    assert p.created == {} and p.merges == []
    assert w.profile_of(ANON, "A") == w.profile_of(ANON, "B") == w.profile_of(EMAIL, "jane@example.com")
    assert w.profiles[w.profile_of(ANON, "A")].counts == {ANON: 2, EMAIL: 1}


# --------------------------------------------------------------------------- shared device


def test_shared_device_never_merges_two_external_ids() -> None:
    w = World()
    w.run([[(DEVICE, "D"), (EXT, "u1")]])
    p = w.run([[(DEVICE, "D"), (EXT, "u2")]])
    assert p.merges == []
    assert [d.kind for d in p.decisions] == ["limit"]
    p1 = w.profile_of(EXT, "u1")
    assert w.profile_of(EXT, "u2") != p1  # u2 has its own profile or none, never u1's
    assert w.profiles[p1].counts[EXT] == 1


@pytest.mark.parametrize(
    ("history", "event", "dropped", "kept"),
    [
        # Shared device: D is on u1's profile; an event of u2 on the same device.
        ([[(DEVICE, "D"), (EXT, "u1")]], [(DEVICE, "D"), (EXT, "u2")], (DEVICE, "D"), [(EXT, "u2")]),
        # Same with an anonymous id in a browser shared by two logged-in users.
        ([[(ANON, "shared"), (EXT, "u1")]], [(ANON, "shared"), (EXT, "u2")], (ANON, "shared"), [(EXT, "u2")]),
        # u2 already has a profile; the device of u1 shows up in u2's event (trusted source).
        ([[(DEVICE, "D"), (EXT, "u1")], [(EXT, "u2")]], [(DEVICE, "D"), (EXT, "u2")], (DEVICE, "D"), [(EXT, "u2")]),
        # D's profile is full of emails; an event of a new user u2 with a 6th email on D. The
        # conflict is e6 against the profile D ties the event to: D is left out, and u2 and
        # e6 get a profile of their own (u2 must not be put on D's profile either).
        ([[(DEVICE, "D")] + [(EMAIL, f"e{i}@example.com") for i in range(1, 6)]],
         [(EXT, "u2"), (EMAIL, "e6@example.com"), (DEVICE, "D")], (DEVICE, "D"),
         [(EXT, "u2"), (EMAIL, "e6@example.com")]),
    ],
    ids=["device_with_new_external_id", "anonymous_with_new_external_id", "device_with_known_external_id",
         "device_on_full_profile_with_new_user"],
)
def test_limit_leaves_out_the_lowest_priority_conflicting_identifier(history, event, dropped, kept) -> None:
    """CONTRACT 6: "When a link or merge would break a limit, it does not happen: the
    lowest-priority conflicting identifier of the event is left out (within one type, the
    one seen later), and the decision is recorded with the event."

    In each case the event's conflicting identifiers are a new strong identifier and the
    shared device/anonymous id tying the event to someone else's profile; the lowest-priority
    one, the device/anonymous id, is left out and the event belongs to the other identifiers.
    """
    w = World()
    for ev in history:
        w.run([ev])
    p = w.run([event])
    [event_profile] = p.event_profiles
    got = {
        "merges": len(p.merges),
        "left_out": [(d.kind, d.identifier.type, d.identifier.value) for d in p.decisions],
        "identifiers_of_the_event_on_its_profile": sorted(r for r in event if w.profile_of(*r) == event_profile),
    }
    assert got == {
        "merges": 0,
        "left_out": [("limit", *dropped)],
        "identifiers_of_the_event_on_its_profile": sorted(kept),
    }
    assert w.profile_of(*dropped) != event_profile


# --------------------------------------------------------------------------- blocked values


@pytest.mark.parametrize(
    "value",
    ["", "   ", "null", "NULL", "None", "nil", "undefined", "NaN", "true", "False", "0", "-1", "anonymous",
     "Guest", "unknown", "test", "[object Object]", "000", "0-0-0", "---", " 00 "],
)
@pytest.mark.parametrize("id_type", [EXT, ANON, DEVICE, EMAIL])
def test_blocked_values_never_reach_the_planner(id_type: str, value: str) -> None:
    with pytest.raises(BlockedIdentifier):
        normalize_identifier(id_type, value)


def test_per_tenant_blocked_values() -> None:
    with pytest.raises(BlockedIdentifier):
        normalize_identifier(ANON, " Placeholder ", extra_blocked=frozenset({"placeholder"}))
    assert normalize_identifier(ANON, "placeholder-2", extra_blocked=frozenset({"placeholder"})).value == "placeholder-2"


# --------------------------------------------------------------------------- limits


def test_sixth_email_is_dropped_with_a_limit_decision_on_its_event() -> None:
    events = [[(EXT, "u1"), (EMAIL, f"e{i}@example.com")] for i in range(1, 7)]
    p = plan(events)
    [pid] = p.created
    assert p.event_profiles == [pid] * 6
    [d] = p.decisions
    assert d.kind == "limit" and d.identifier == ident(EMAIL, "e6@example.com") and d.event_index == 5
    assert d.as_dict()["type"] == EMAIL and d.as_dict()["hash"] == d.identifier.hash
    assert p.created[pid].counts == {EXT: 1, EMAIL: 5}


def test_type_limit_applies_to_a_profile_loaded_from_the_graph() -> None:
    graph = {key(EMAIL, f"e{i}@example.com"): "P9" for i in range(1, 6)} | {key(EXT, "u1"): "P9"}
    profiles = {"P9": ProfileState("P9", T0, {EMAIL: 5, EXT: 1})}
    p = plan([[(EXT, "u1"), (EMAIL, "e6@example.com"), (ANON, "x")]], graph=graph, profiles=profiles)
    assert [(d.kind, d.identifier) for d in p.decisions] == [("limit", ident(EMAIL, "e6@example.com"))]
    assert [lk.identifier for lk in p.links] == [ident(ANON, "x")]
    assert p.event_profiles == ["P9"]


# --------------------------------------------------------------------------- merges and survivors


def test_chain_merges_record_each_merge_and_keep_the_earliest_anonymous_profile() -> None:
    w = World()
    w.run([[(ANON, "a")]])
    w.run([[(ANON, "b")]])
    w.run([[(ANON, "c")]])
    pa, pb, pc = w.profile_of(ANON, "a"), w.profile_of(ANON, "b"), w.profile_of(ANON, "c")
    m1 = w.run([[(ANON, "a"), (ANON, "b")]])
    assert m1.merges == [Merge(pa, pb, ident(ANON, "b"), 0)]
    m2 = w.run([[(ANON, "b"), (ANON, "c")]])
    assert m2.merges == [Merge(pa, pc, ident(ANON, "c"), 0)]
    assert set(w.profiles) == {pa}
    assert w.profiles[pa].merge_count == 2
    assert w.profiles[pa].first_seen == at(0)


def test_chain_merges_in_one_event() -> None:
    profiles = {f"P{n}": ProfileState(f"P{n}", at(n), {ANON: 1}) for n in (1, 2, 3)}
    graph = {key(ANON, "a"): "P2", key(ANON, "b"): "P1", key(ANON, "c"): "P3"}
    p = plan([[(ANON, "a"), (ANON, "b"), (ANON, "c")]], graph=graph, profiles=profiles, start=10)
    assert {(m.survivor, m.absorbed) for m in p.merges} == {("P1", "P2"), ("P1", "P3")}
    assert p.event_profiles == ["P1"] and p.links == [] and p.decisions == []


def test_survivor_is_the_profile_with_the_strongest_identifier_even_if_younger() -> None:
    profiles = {
        "OLD": ProfileState("OLD", at(0), {EMAIL: 1, ANON: 3}),
        "YOUNG": ProfileState("YOUNG", at(60 * 24 * 30), {EXT: 1}),
    }
    graph = {key(EMAIL, "jane@example.com"): "OLD", key(EXT, "crm-7"): "YOUNG"}
    p = plan([[(EMAIL, "jane@example.com"), (EXT, "crm-7")]], graph=graph, profiles=profiles, start=60 * 24 * 31)
    assert p.merges == [Merge("YOUNG", "OLD", ident(EMAIL, "jane@example.com"), 0)]
    assert p.event_profiles == ["YOUNG"]


def test_survivor_between_equal_priorities_is_the_earliest_first_seen() -> None:
    profiles = {
        "A": ProfileState("A", at(10), {EMAIL: 1}),
        "B": ProfileState("B", at(5), {EMAIL: 1}),
    }
    graph = {key(EMAIL, "a@example.com"): "A", key(EMAIL, "b@example.com"): "B"}
    p = plan([[(EMAIL, "a@example.com"), (EMAIL, "b@example.com")]], graph=graph, profiles=profiles, start=20)
    assert [(m.survivor, m.absorbed) for m in p.merges] == [("B", "A")]


def test_profiles_joined_within_a_batch_end_as_the_final_survivor() -> None:
    # P(anon a) at t0, P(anon b) at t1, P(email e) at t2; then a+b joins b to a, then b+e
    # joins a's profile to e's (email beats anonymous). All three are created by this plan,
    # so only the survivor is created and nothing is merged.
    p = plan([[(ANON, "a")], [(ANON, "b")], [(EMAIL, "e@example.com")], [(ANON, "a"), (ANON, "b")],
              [(ANON, "b"), (EMAIL, "e@example.com")]])
    check_plan_consistency(p, 5)
    assert list(p.created) == ["P3"]
    assert p.event_profiles == ["P3"] * 5
    assert {lk.profile_id for lk in p.links} == {"P3"}
    assert p.merges == [] and p.decisions == []
    assert p.created["P3"].counts == {ANON: 2, EMAIL: 1}
    assert p.created["P3"].first_seen == at(0)


def test_batch_joining_existing_profiles_through_new_ones_records_merges_of_existing_only() -> None:
    # Existing P(anon a) and P(email e); the batch creates P(anon b), joins it to a, then
    # joins a to e: one Merge (a's profile into e's), none for the profile created here.
    profiles = {"OLD_A": ProfileState("OLD_A", at(0), {ANON: 1}), "OLD_E": ProfileState("OLD_E", at(1), {EMAIL: 1})}
    graph = {key(ANON, "a"): "OLD_A", key(EMAIL, "e@example.com"): "OLD_E"}
    p = plan([[(ANON, "b")], [(ANON, "a"), (ANON, "b")], [(ANON, "b"), (EMAIL, "e@example.com")]],
             graph=graph, profiles=profiles, start=10)
    assert p.created == {}
    assert [(m.survivor, m.absorbed, m.event_index) for m in p.merges] == [("OLD_E", "OLD_A", 2)]
    assert p.event_profiles == ["OLD_E"] * 3
    assert [(lk.identifier, lk.profile_id, lk.event_index) for lk in p.links] == [(ident(ANON, "b"), "OLD_E", 0)]


def test_merge_cap_refuses_with_merge_limit_decision() -> None:
    profiles = {"S": ProfileState("S", at(0), {EMAIL: 1}, merge_count=100),
                "T": ProfileState("T", at(1), {ANON: 1})}
    graph = {key(EMAIL, "s@example.com"): "S", key(ANON, "t"): "T"}
    p = plan([[(EMAIL, "s@example.com"), (ANON, "t")]], graph=graph, profiles=profiles, start=2)
    assert p.merges == []
    assert [(d.kind, d.identifier) for d in p.decisions] == [("merge_limit", ident(ANON, "t"))]
    assert p.event_profiles == ["S"]
    # one merge below the cap is still allowed
    profiles["S"] = ProfileState("S", at(0), {EMAIL: 1}, merge_count=99)
    assert len(plan([[(EMAIL, "s@example.com"), (ANON, "t")]], graph=graph, profiles=profiles, start=2).merges) == 1


# --------------------------------------------------------------------------- trust


def test_trusted_source_types() -> None:
    assert {"server", "crm", "import", "sgtm"} == set(TRUSTED_SOURCE_TYPES)
    assert "website" not in TRUSTED_SOURCE_TYPES


@pytest.mark.parametrize(("trusted", "merged"), [(False, False), (True, True)], ids=["website", "server"])
def test_only_trusted_sources_merge_two_known_profiles(trusted: bool, merged: bool) -> None:
    profiles = {"K1": ProfileState("K1", at(0), {EMAIL: 1}), "K2": ProfileState("K2", at(1), {EXT: 1})}
    graph = {key(EMAIL, "a@example.com"): "K1", key(EXT, "u-2"): "K2"}
    p = plan([[(EMAIL, "a@example.com"), (EXT, "u-2"), (ANON, "new")]], graph=graph, profiles=profiles,
             trusted=trusted, start=2)
    if merged:
        assert p.merges == [Merge("K2", "K1", ident(EMAIL, "a@example.com"), 0)] and p.decisions == []
    else:
        assert p.merges == []
        assert [(d.kind, d.identifier, d.event_index) for d in p.decisions] == [
            ("untrusted_merge", ident(EMAIL, "a@example.com"), 0)]
    assert p.event_profiles == ["K2"]


def test_website_may_merge_an_anonymous_profile_into_a_known_one() -> None:
    profiles = {"K": ProfileState("K", at(5), {PHONE: 1}), "A": ProfileState("A", at(0), {ANON: 1, DEVICE: 1})}
    graph = {key(PHONE, "+16505550100"): "K", key(DEVICE, "d1"): "A"}
    p = plan([[(DEVICE, "d1"), (PHONE, "(650) 555-0100")]], graph=graph, profiles=profiles, trusted=False, start=9)
    assert p.merges == [Merge("K", "A", ident(DEVICE, "d1"), 0)] and p.decisions == []


# --------------------------------------------------------------------------- links


def test_every_link_keeps_the_index_of_the_event_that_brought_the_identifier() -> None:
    batch = [
        [(ANON, "a")],
        [(ANON, "b"), (DEVICE, "d")],
        [(ANON, "a"), (EMAIL, "x@example.com")],
        [(ANON, "b"), (ANON, "a"), (EXT, "u")],
        [(EMAIL, "x@example.com"), (PHONE, "+16505550101")],
        [],
    ]
    p = plan(batch)
    check_plan_consistency(p, len(batch))
    first_index: dict[tuple[str, str], int] = {}
    for n, ev in enumerate(batch):
        for raw in ev:
            first_index.setdefault(key(*raw), n)
    assert {(lk.identifier.type, lk.identifier.hash): lk.event_index for lk in p.links} == first_index
    for lk in p.links:
        event_keys = {key(*raw) for raw in batch[lk.event_index]}
        assert lk.via is None or (lk.via.type, lk.via.hash) in event_keys
    assert p.event_profiles[-1] is None  # an event without identifiers has no profile


# --------------------------------------------------------------------------- order


ORDER_EVENTS: list[RawEvent] = [
    [(ANON, "a")],
    [(ANON, "b"), (DEVICE, "d")],
    [(ANON, "a"), (ANON, "b")],
    [(EMAIL, "e@example.com"), (DEVICE, "d")],
    [(ANON, "z"), (EXT, "u")],
    [(ANON, "y"), (EMAIL, "f@example.com"), (PHONE, "+16505550102")],
]
ORDER_GROUPS = groups(
    [(ANON, "a"), (ANON, "b"), (DEVICE, "d"), (EMAIL, "e@example.com")],
    [(ANON, "z"), (EXT, "u")],
    [(ANON, "y"), (EMAIL, "f@example.com"), (PHONE, "+16505550102")],
)


@pytest.mark.parametrize("trusted", [True], ids=["server"])
def test_grouping_does_not_depend_on_arrival_order_or_batching(trusted: bool) -> None:
    for perm in itertools.permutations(ORDER_EVENTS):
        # all in one batch (one worker job)
        p = plan(perm, trusted=trusted)
        check_plan_consistency(p, len(perm))
        assert p.decisions == [], perm
        assert plan_partition(p) == ORDER_GROUPS, perm
        # one batch per event (several jobs, one after the other)
        w = World()
        for ev in perm:
            w.run([ev], trusted=trusted)
        assert w.decisions == [], perm
        assert w.partition() == ORDER_GROUPS, perm
        # two batches
        w = World()
        w.run(perm[:3], trusted=trusted)
        w.run(perm[3:], trusted=trusted)
        assert w.partition() == ORDER_GROUPS, perm


def test_when_a_limit_decides_the_first_processed_wins() -> None:
    events = [[(DEVICE, "D"), (EXT, "u1")], [(EXT, "u2"), (EMAIL, "x@example.com")], [(EXT, "u1"), (EXT, "u2")]]
    p = plan(events)
    assert p.merges == []
    assert [(d.kind, d.event_index) for d in p.decisions] == [("limit", 2)]
    assert plan_partition(p) == groups([(DEVICE, "D"), (EXT, "u1")], [(EXT, "u2"), (EMAIL, "x@example.com")])


# --------------------------------------------------------------------------- rules


def test_default_rules_match_the_contract() -> None:
    r = IdentityRules()
    assert dict(r.type_limits) == {EXT: 1, EMAIL: 5, PHONE: 5, DEVICE: 10, ANON: 100}
    assert r.max_identifiers == 1000 and r.max_merges == 100
    assert IdentityRules.from_tenant_settings({}) == r


def test_rules_from_tenant_settings_override_only_what_is_given() -> None:
    r = IdentityRules.from_tenant_settings(
        {"type_limits": {"email": 2, "anonymous_id": "7", "fax": 3}, "max_merges": "4", "blocked_values": ["x"]})
    assert dict(r.type_limits) == {**DEFAULT_TYPE_LIMITS, EMAIL: 2, ANON: 7}
    assert r.max_merges == 4 and r.max_identifiers == 1000
    r2 = IdentityRules.from_tenant_settings({"max_identifiers": 50, "type_limits": None})
    assert r2.max_identifiers == 50 and dict(r2.type_limits) == dict(DEFAULT_TYPE_LIMITS)
    # the defaults object is not shared with (or modified by) overrides
    assert DEFAULT_TYPE_LIMITS[EMAIL] == 5


def test_overridden_limits_drive_the_planner() -> None:
    rules = IdentityRules.from_tenant_settings({"type_limits": {"email": 2}, "max_merges": 0})
    p = plan([[(EXT, "u"), (EMAIL, "a@example.com"), (EMAIL, "b@example.com"), (EMAIL, "c@example.com")],
              [(ANON, "x")], [(ANON, "x"), (EXT, "u")]], rules=rules)
    assert [(d.kind, d.identifier) for d in p.decisions] == [
        ("limit", ident(EMAIL, "c@example.com")), ("merge_limit", ident(ANON, "x"))]
    assert p.merges == []


# --------------------------------------------------------------------------- left out before any merge


def test_shared_device_with_a_second_customer_never_drags_an_anonymous_profile_into_the_first() -> None:
    """Issue 10.4: device D is on u1's profile; an anonymous browser profile (a) logs in as u2
    on that device. D is left out (u2 outranks it and u1's profile has no room for u2), and
    it must be left out before any merge: a's profile stays out of u1's and joins u2."""
    w = World()
    w.run([[(DEVICE, "D"), (EXT, "u1")]])
    w.run([[(ANON, "a")]])
    p1, pa = w.profile_of(EXT, "u1"), w.profile_of(ANON, "a")
    p = w.run([[(DEVICE, "D"), (EXT, "u2"), (ANON, "a")]])
    assert p.merges == []
    assert [(d.kind, d.identifier) for d in p.decisions] == [("limit", ident(DEVICE, "D"))]
    assert w.profile_of(EXT, "u2") == w.profile_of(ANON, "a") == pa == p.event_profiles[0]
    assert w.partition() == groups([(DEVICE, "D"), (EXT, "u1")], [(EXT, "u2"), (ANON, "a")])
    assert w.profiles[p1].counts == {DEVICE: 1, EXT: 1}


@dataclass(frozen=True)
class LeftOutCause:
    """Why the event's weak anchor L (on profile PL) must be left out, given the event's
    strong identifier C (new, or on profile PC)."""

    kind: str
    c: Raw
    c_held: bool
    pl_extra: tuple[Raw, ...] = ()  # what else PL holds besides L
    trusted: bool = True
    rules: IdentityRules = field(default_factory=IdentityRules)
    pl_merges: int = 0


LEFT_OUT_CAUSES = {
    # C outranks L and PL has no room for it (the shared device of the issue)
    "new_identifier_outranks": LeftOutCause("limit", (EXT, "u2"), False, ((EXT, "u1"),)),
    "held_identifier_outranks": LeftOutCause("limit", (EXT, "u2"), True, ((EXT, "u1"),)),
    "website_two_known_profiles": LeftOutCause("untrusted_merge", (EMAIL, "c@example.com"), True,
                                               ((EMAIL, "x@example.com"),), trusted=False),
    "merge_cap": LeftOutCause("merge_limit", (EXT, "u2"), True, rules=IdentityRules(max_merges=1), pl_merges=1),
    "identifier_cap": LeftOutCause("limit", (EXT, "u2"), True, ((ANON, "f1"), (ANON, "f2")),
                                   rules=IdentityRules(max_identifiers=3)),
}
# L's type, and M: another anchor of the event on an anonymous profile PM that is merged
# (None: no such anchor). M is decided before L (device before anonymous) or after it.
# Within one type, the event's listing order decides which comes first (m_first).
ANCHOR_SHAPES = [(DEVICE, None, False), (ANON, None, False)] + [
    (lt, mt, first) for lt, mt in [(DEVICE, ANON), (ANON, DEVICE), (DEVICE, DEVICE), (ANON, ANON)]
    for first in (False, True)
]


@pytest.mark.parametrize(("l_type", "m_type", "m_first"), ANCHOR_SHAPES,
                         ids=[f"L_{a}-M_{b}{'-M_listed_first' * f}" for a, b, f in ANCHOR_SHAPES])
@pytest.mark.parametrize("cause", LEFT_OUT_CAUSES.values(), ids=LEFT_OUT_CAUSES.keys())
def test_a_left_out_anchor_takes_no_part_in_any_merge_or_link(cause: LeftOutCause, l_type: str, m_type: str | None,
                                                             m_first: bool) -> None:
    """Every combination of a left-out anchor with a merge the event still makes: L is left
    out with its decision, L's profile is neither merged nor given anything, and the event's
    other identifiers end together on one profile."""
    L, M = (l_type, "L"), (m_type, "M") if m_type else None
    graph = {key(*L): "PL"} | {key(*raw): "PL" for raw in cause.pl_extra}
    pl_counts: dict[str, int] = {}
    for t, _v in (L, *cause.pl_extra):
        pl_counts[t] = pl_counts.get(t, 0) + 1
    profiles = {"PL": ProfileState("PL", at(0), pl_counts, cause.pl_merges)}
    if cause.c_held:
        graph[key(*cause.c)] = "PC"
        profiles["PC"] = ProfileState("PC", at(1), {cause.c[0]: 1})
    if M:
        graph[key(*M)] = "PM"
        profiles["PM"] = ProfileState("PM", at(2), {M[0]: 1})
    w = World(rules=cause.rules, graph=graph, profiles=profiles, clock=10)
    event = [cause.c, L] + ([M] if M else [])
    if m_first and M:
        event = [M] + event[:-1]
    p = w.run([event], trusted=cause.trusted)

    assert [(d.kind, d.identifier) for d in p.decisions] == [(cause.kind, ident(*L))]
    assert all("PL" not in (m.survivor, m.absorbed) for m in p.merges)
    assert all(lk.profile_id != "PL" and lk.via != ident(*L) for lk in p.links)
    assert w.profiles["PL"].counts == pl_counts and w.profile_of(*L) == "PL"
    [home] = p.event_profiles
    assert home != "PL"
    kept = [cause.c] + ([M] if M else [])
    assert {w.profile_of(*raw) for raw in kept} == {home}
    assert len(p.merges) == (1 if cause.c_held and M else 0)


# --------------------------------------------------------------------------- invariants (seeded)

POOL: list[Raw] = ([(EXT, f"u{n}") for n in range(4)] + [(EMAIL, f"m{n}@example.com") for n in range(4)]
                   + [(PHONE, f"+1650555{n:04d}") for n in range(3)] + [(DEVICE, f"d{n}") for n in range(4)]
                   + [(ANON, f"a{n}") for n in range(6)])
TIGHT = IdentityRules(type_limits={EXT: 1, EMAIL: 2, PHONE: 1, DEVICE: 2, ANON: 3}, max_identifiers=6, max_merges=3)
ROOMY = IdentityRules(type_limits={t: 1000 for t in DEFAULT_TYPE_LIMITS})


def random_event(rng, pool: Sequence[Raw] = POOL) -> list[Raw]:
    return rng.sample(pool, rng.randint(1, 4))


def assert_left_out_never_acted(p: Plan, batch: Sequence[RawEvent], owner_before: dict, merged_before) -> None:
    """Left-out identifiers of an event cause no link or merge for it; for a one-event plan
    the profile a left-out identifier was on is not touched by the event at all."""
    for d in p.decisions:
        k = (d.identifier.type, d.identifier.hash)
        assert k in {key(*raw) for raw in batch[d.event_index]}
        assert not any(lk.event_index == d.event_index and d.identifier in (lk.identifier, lk.via) for lk in p.links)
        assert not any(m.event_index == d.event_index and d.identifier in (m.trigger, m.via) for m in p.merges)
        if len(batch) == 1 and k in owner_before:
            q = merged_before(owner_before[k])
            assert all(q not in (m.survivor, m.absorbed) for m in p.merges)
            assert p.event_profiles[0] != q
            assert all(lk.profile_id != q for lk in p.links)


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_for_random_traffic_under_tight_limits(seed: int) -> None:
    rng = random.Random(seed)
    w = World(rules=TIGHT)
    for _ in range(12):
        batch = [random_event(rng) for _ in range(rng.choice([1, 1, 3]))]
        owner_before = dict(w.graph)
        p = w.run(batch, trusted=rng.random() < 0.6)  # World checks one live profile per identifier
        check_plan_consistency(p, len(batch))
        assert_left_out_never_acted(p, batch, owner_before, lambda pid: pid)
        for pid, st in w.profiles.items():
            for t, n in st.counts.items():
                assert n <= TIGHT.type_limits[t], (pid, t, n)
            assert st.total <= TIGHT.max_identifiers


@pytest.mark.parametrize("seed", range(20))
def test_grouping_is_order_independent_when_no_limit_applies(seed: int) -> None:
    rng = random.Random(1000 + seed)
    events = [random_event(rng) for _ in range(8)]
    expected = None
    for _ in range(6):
        perm = rng.sample(events, len(events))
        cut = rng.randint(0, len(perm))
        w = World(rules=ROOMY)
        w.run(perm[:cut])
        w.run(perm[cut:])
        assert w.decisions == []
        one = plan(perm, rules=ROOMY)
        assert one.decisions == [] and plan_partition(one) == w.partition()
        expected = expected or w.partition()
        assert w.partition() == expected, perm


@pytest.mark.parametrize("seed", range(30))
def test_settled_events_plan_as_if_every_profile_were_loaded(seed: int) -> None:
    """Events sitting wholly on a profile that no other event of the batch can change
    (``settled_holder``, ``profiles_to_plan``) are attributed without planning, and the
    planner gets only the other profiles' states (workers/persist.py loads no counts for
    them): the plan is the one a planner with every profile's state makes."""
    from core.identity import profiles_to_plan, settled_holder
    from core.identity_plan import EventIdentity

    rng = random.Random(5000 + seed)
    w = World(rules=TIGHT)
    for _ in range(6):  # a stored graph to start from
        w.run([random_event(rng) for _ in range(3)], trusted=rng.random() < 0.7)
    known = sorted(w.graph)
    settled_seen = 0
    for _ in range(16):
        events = []
        for n in range(rng.randint(1, 12)):
            if known and rng.random() < 0.6:  # mostly identifiers the graph holds
                raws = rng.sample(known, 1 if rng.random() < 0.7 else min(2, len(known)))
                idents = [next(i for t, v in POOL if (i := ident(t, v)).type == k[0] and i.hash == k[1])
                          for k in raws]
            else:
                idents = [ident(t, v) for t, v in random_event(rng)]
            trusted = rng.random() < 0.7
            events.append(EventIdentity(idents, at(n), trusted, frozenset(), protect=not trusted and rng.random() < 0.5))
        planned = profiles_to_plan(events, w.graph, set())
        settled = {i: pid for i, e in enumerate(events)
                   if (pid := settled_holder(e, w.graph, set())) is not None and pid not in planned}
        settled_seen += len(settled)
        full = plan_identities(events, w.graph, w.profiles, TIGHT, new_profile_id=Ids())
        part = plan_identities(events, w.graph, {pid: st for pid, st in w.profiles.items() if pid in planned}, TIGHT,
                               new_profile_id=Ids(), settled=settled)
        assert part == full
        w._apply(full)
        known = sorted(w.graph)
    assert settled_seen > 0, "the traffic had settled events"
