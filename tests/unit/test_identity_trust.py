"""Unit tests for the trust rules of core.identity (CONTRACT 6: trust, verified identity,
public keys cannot fill a profile, caps, order): the protect rule, provisional identifiers,
trust-aware limits and summarized decision lists. Pure: no services.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from core.identifiers import Identifier, normalize_identifier
from core.identity import (
    MAX_EVENT_DECISIONS,
    EventIdentity,
    IdentityRules,
    Plan,
    ProfileState,
    plan_identities,
    summarize_decisions,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EXT, EMAIL, PHONE, DEVICE, ANON = "external_id", "email", "phone", "device_id", "anonymous_id"
Raw = tuple[str, str]


def ident(id_type: str, value: str) -> Identifier:
    return normalize_identifier(id_type, value, default_region="US")


def key(id_type: str, value: str) -> tuple[str, str]:
    i = ident(id_type, value)
    return (i.type, i.hash)


@dataclass(frozen=True)
class Ev:
    """An event as a test writes it: raw identifiers, who sent it, which claims are signed."""

    raw: Sequence[Raw]
    source: str = "website"  # "website" (protect), "website_off", or "server"
    signed: Sequence[Raw] = ()

    def identity(self, minute: float) -> EventIdentity:
        return EventIdentity([ident(*r) for r in self.raw], T0 + timedelta(minutes=minute),
                             trusted=self.source == "server", verified=frozenset(key(*r) for r in self.signed),
                             protect=self.source == "website")


def web(*raw: Raw, signed: Sequence[Raw] = ()) -> Ev:
    return Ev(raw, "website", signed)


def server(*raw: Raw) -> Ev:
    return Ev(raw, "server")


@dataclass
class World:
    """Applies plans the way workers/persist.py and workers/identity_store.py do (merges,
    links, then moves; provisional flags), so scenarios can span several jobs."""

    rules: IdentityRules = field(default_factory=IdentityRules)
    graph: dict[tuple[str, str], str] = field(default_factory=dict)
    provisional: dict[tuple[str, str], int] = field(default_factory=dict)  # key -> link rank
    first_seen: dict[str, datetime] = field(default_factory=dict)
    merge_counts: dict[str, int] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    clock: float = 0.0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _rank: itertools.count = field(default_factory=lambda: itertools.count(1))

    def profiles(self) -> dict[str, ProfileState]:
        out = {pid: ProfileState(pid, self.first_seen[pid], {}, self.merge_counts.get(pid, 0))
               for pid in set(self.graph.values())}
        for (t, h), pid in self.graph.items():
            out[pid].counts[t] = out[pid].counts.get(t, 0) + 1
            if (t, h) in self.provisional:
                out[pid].provisional[(t, h)] = self.provisional[(t, h)]
        return out

    def run(self, *events: Ev) -> Plan:
        identities = [e.identity(self.clock + n) for n, e in enumerate(events)]
        self.clock += len(events)
        graph_before, profiles = dict(self.graph), self.profiles()
        p = plan_identities(identities, self.graph, profiles, self.rules,
                            new_profile_id=lambda: f"P{next(self._ids)}")
        assert self.graph == graph_before and self.profiles() == profiles, "the planner modified its inputs"
        self._apply(p)
        self.plans.append(p)
        return p

    def _apply(self, p: Plan) -> None:
        redirect = {m.absorbed: m.survivor for m in p.merges}
        for pid, st in p.created.items():
            self.first_seen[pid] = st.first_seen
        for m in p.merges:
            self.merge_counts[m.survivor] = (self.merge_counts.get(m.survivor, 0)
                                             + self.merge_counts.pop(m.absorbed, 0) + 1)
            self.first_seen[m.survivor] = min(self.first_seen[m.survivor], self.first_seen[m.absorbed])
        self.graph = {k: redirect.get(v, v) for k, v in self.graph.items()}
        for lk in p.links:
            k = (lk.identifier.type, lk.identifier.hash)
            assert k not in self.graph, "an identifier was linked twice"
            self.graph[k] = lk.profile_id
            if lk.provisional:
                self.provisional[k] = next(self._rank)
        for mv in p.moves:
            k = (mv.identifier.type, mv.identifier.hash)
            assert self.graph[k] == mv.from_profile, "a move from a profile that does not hold the identifier"
            self.graph[k] = mv.to_profile
            if not mv.provisional:
                self.provisional.pop(k, None)
        for k in p.confirmed:
            self.provisional.pop(k, None)
        for pid, counts in ((pid, st.counts) for pid, st in self.profiles().items()):
            for t, n in counts.items():
                assert n <= self.rules.type_limits[t], (pid, t, n)

    def of(self, id_type: str, value: str) -> str | None:
        return self.graph.get(key(id_type, value))

    def is_provisional(self, id_type: str, value: str) -> bool:
        return key(id_type, value) in self.provisional


def decisions_of(p: Plan) -> list[tuple[str, tuple[str, str]]]:
    return [(d.kind, (d.identifier.type, d.identifier.hash)) for d in p.decisions]


VICTIM = [(EXT, "cust-1"), (EMAIL, "victim@example.com")]


def world_with_victim() -> World:
    w = World()
    w.run(server(*VICTIM))
    return w


# --------------------------------------------------------------------------- protect


def test_unverified_claim_of_a_customers_email_stays_with_the_browser() -> None:
    w = world_with_victim()
    victim = w.of(EMAIL, "victim@example.com")
    p = w.run(web((ANON, "attacker"), (EMAIL, "victim@example.com"), (EMAIL, "attacker@example.com")))
    assert p.merges == [] and p.moves == []
    assert decisions_of(p) == [("unverified_claim", key(EMAIL, "victim@example.com"))]
    [home] = p.event_profiles
    assert home != victim and w.of(ANON, "attacker") == w.of(EMAIL, "attacker@example.com") == home
    # nothing was linked to, merged into or moved off the victim's profile
    assert {k for k, pid in w.graph.items() if pid == victim} == {key(*r) for r in VICTIM}
    assert w.is_provisional(EMAIL, "attacker@example.com")


def test_unverified_claim_held_by_the_home_profile_is_an_ordinary_match() -> None:
    w = World()
    w.run(web((ANON, "a"), (EMAIL, "me@example.com")))
    p = w.run(web((ANON, "a"), (EMAIL, "me@example.com"), (PHONE, "+16505550100")))
    assert p.decisions == [] and p.merges == []
    assert p.event_profiles == [w.of(EMAIL, "me@example.com")] == [w.of(PHONE, "+16505550100")]


@pytest.mark.parametrize("claims", [[(EMAIL, "victim@example.com")], [(EMAIL, "new@example.com")],
                                    [(EMAIL, "victim@example.com"), (EXT, "brand-new")]],
                         ids=["held_by_another", "on_no_profile", "held_and_new"])
def test_an_event_with_no_home_is_stored_without_a_profile(claims) -> None:
    w = world_with_victim()
    before = dict(w.graph)
    p = w.run(web(*claims))
    assert p.event_profiles == [None] and p.created == {} and p.links == [] and p.merges == []
    assert [kind for kind, _ in decisions_of(p)] == ["unverified_claim"] * len(claims)
    assert w.graph == before


def test_anonymous_visitor_signs_up_with_a_new_email() -> None:
    w = World()
    w.run(web((ANON, "v")))
    p = w.run(web((ANON, "v"), (EMAIL, "fresh@example.com")))
    assert p.decisions == [] and p.merges == [] and p.created == {}
    assert w.of(EMAIL, "fresh@example.com") == w.of(ANON, "v")
    assert w.is_provisional(EMAIL, "fresh@example.com")


def test_returning_customer_logs_in_with_a_signed_email() -> None:
    w = world_with_victim()
    w.run(web((ANON, "laptop")))
    customer = w.of(EXT, "cust-1")
    p = w.run(web((ANON, "laptop"), (EMAIL, "victim@example.com"), signed=[(EMAIL, "victim@example.com")]))
    assert p.decisions == []
    assert [(m.survivor, m.trigger) for m in p.merges] == [(customer, ident(ANON, "laptop"))]
    assert w.of(ANON, "laptop") == customer and p.event_profiles == [customer]


def test_a_signed_claim_may_merge_two_known_profiles_an_unsigned_one_may_not() -> None:
    w = World()
    w.run(server((EMAIL, "a@example.com")))
    w.run(server((EMAIL, "b@example.com"), (ANON, "browser")))
    p = w.run(web((ANON, "browser"), (EMAIL, "a@example.com")))
    assert decisions_of(p) == [("unverified_claim", key(EMAIL, "a@example.com"))] and p.merges == []
    p = w.run(web((ANON, "browser"), (EMAIL, "a@example.com"), signed=[(EMAIL, "a@example.com")]))
    assert p.decisions == [] and len(p.merges) == 1
    assert w.of(EMAIL, "a@example.com") == w.of(EMAIL, "b@example.com") == w.of(ANON, "browser")


def test_without_protect_a_website_claim_links_as_before() -> None:
    w = world_with_victim()
    p = w.run(Ev([(ANON, "x"), (EMAIL, "victim@example.com")], "website_off"))
    # the anonymous browser joins the customer (no merge of two known profiles), nothing provisional
    assert p.decisions == [] and w.of(ANON, "x") == w.of(EXT, "cust-1")
    assert not w.provisional


# --------------------------------------------------------------------------- provisional identifiers


def test_a_trusted_event_moves_a_provisional_identifier_instead_of_merging() -> None:
    w = World()
    w.run(server((EXT, "cust-1")))
    w.run(web((ANON, "attacker"), (EMAIL, "victim@example.com")))  # pre-claims the email
    attacker = w.of(ANON, "attacker")
    assert w.of(EMAIL, "victim@example.com") == attacker and w.is_provisional(EMAIL, "victim@example.com")
    customer = w.of(EXT, "cust-1")
    p = w.run(server((EXT, "cust-1"), (EMAIL, "victim@example.com")))
    assert p.merges == []
    assert decisions_of(p) == [("unverified_claim", key(EMAIL, "victim@example.com"))]
    assert [(mv.from_profile, mv.to_profile, mv.provisional) for mv in p.moves] == [(attacker, customer, False)]
    assert w.of(EMAIL, "victim@example.com") == customer and not w.is_provisional(EMAIL, "victim@example.com")
    assert w.of(ANON, "attacker") == attacker != customer


def test_a_verified_claim_moves_a_provisional_identifier_too() -> None:
    w = World()
    w.run(web((ANON, "owner"), (EMAIL, "owner@example.com"), signed=[(EMAIL, "owner@example.com")]))
    w.run(web((ANON, "attacker"), (PHONE, "+16505550100")))
    owner = w.of(EMAIL, "owner@example.com")
    p = w.run(web((ANON, "owner"), (EMAIL, "owner@example.com"), (PHONE, "+16505550100"),
                  signed=[(EMAIL, "owner@example.com"), (PHONE, "+16505550100")]))
    assert p.merges == [] and [mv.to_profile for mv in p.moves] == [owner]
    assert w.of(PHONE, "+16505550100") == owner and not w.is_provisional(PHONE, "+16505550100")


def test_a_trusted_event_carrying_a_provisional_identifier_where_it_is_confirms_it() -> None:
    w = World()
    w.run(web((ANON, "v"), (EMAIL, "fresh@example.com")))
    home = w.of(ANON, "v")
    p = w.run(server((EMAIL, "fresh@example.com"), (EXT, "user-9")))  # the backend confirms the signup
    assert p.moves == [] and p.merges == [] and p.decisions == []
    assert w.of(EXT, "user-9") == home and not w.is_provisional(EMAIL, "fresh@example.com")
    # now a firm identifier: a later server event merges rather than moves it
    w.run(server((EMAIL, "other@example.com")))
    p = w.run(server((EMAIL, "fresh@example.com"), (EMAIL, "other@example.com")))
    assert p.moves == [] and len(p.merges) == 1


def test_an_unverified_claim_never_moves_a_provisional_identifier() -> None:
    w = World()
    w.run(server((EXT, "cust-1"), (ANON, "c")))
    w.run(web((ANON, "attacker"), (EMAIL, "x@example.com")))
    p = w.run(web((ANON, "c"), (EMAIL, "x@example.com")))
    assert p.moves == [] and p.merges == []
    assert decisions_of(p) == [("unverified_claim", key(EMAIL, "x@example.com"))]


def test_provisional_identifier_linked_and_moved_in_one_batch() -> None:
    w = World()
    w.run(server((EXT, "cust-1")))
    p = w.run(web((ANON, "a"), (EMAIL, "e@example.com")), server((EXT, "cust-1"), (EMAIL, "e@example.com")))
    customer = w.of(EXT, "cust-1")
    assert [lk.provisional for lk in p.links] == [False, False]  # the move confirmed it
    assert w.of(EMAIL, "e@example.com") == customer and not w.provisional
    assert p.event_profiles == [w.of(ANON, "a"), customer]


# --------------------------------------------------------------------------- trust-aware limits


def fill_with_unverified_emails(w: World, n: int = 5) -> str:
    w.run(server((EXT, "cust-1"), (ANON, "browser")))
    for i in range(n):
        w.run(web((ANON, "browser"), (EMAIL, f"junk{i}@example.com")))
    return w.of(EXT, "cust-1")


@pytest.mark.parametrize("trusted_event", [server((EXT, "cust-1"), (EMAIL, "real@example.com")),
                                           web((ANON, "browser"), (EMAIL, "real@example.com"),
                                               signed=[(EMAIL, "real@example.com")])],
                         ids=["server", "verified"])
def test_trusted_identifier_displaces_the_latest_unverified_one_at_a_limit(trusted_event: Ev) -> None:
    w = World()
    customer = fill_with_unverified_emails(w)
    p = w.run(trusted_event)
    assert w.of(EMAIL, "real@example.com") == customer and not w.is_provisional(EMAIL, "real@example.com")
    assert decisions_of(p) == [("limit", key(EMAIL, "junk4@example.com"))]
    [mv] = p.moves
    assert (mv.from_profile, mv.provisional) == (customer, True) and mv.to_profile in p.created
    assert w.of(EMAIL, "junk4@example.com") == mv.to_profile and w.is_provisional(EMAIL, "junk4@example.com")
    assert sorted(k for k, pid in w.graph.items() if pid == customer and k[0] == EMAIL) == sorted(
        [key(EMAIL, f"junk{i}@example.com") for i in range(4)] + [key(EMAIL, "real@example.com")])


def test_an_unverified_claim_never_displaces() -> None:
    w = World()
    customer = fill_with_unverified_emails(w)
    p = w.run(web((ANON, "browser"), (EMAIL, "more@example.com")))
    assert decisions_of(p) == [("limit", key(EMAIL, "more@example.com"))] and p.moves == []
    assert w.of(EMAIL, "more@example.com") is None
    assert sum(1 for k, pid in w.graph.items() if pid == customer and k[0] == EMAIL) == 5


def test_server_identifiers_are_never_displaced() -> None:
    w = World()
    w.run(server(*[(EMAIL, f"s{i}@example.com") for i in range(5)], (EXT, "u")))
    p = w.run(server((EXT, "u"), (EMAIL, "sixth@example.com")))
    assert decisions_of(p) == [("limit", key(EMAIL, "sixth@example.com"))] and p.moves == []


# --------------------------------------------------------------------------- decision lists


def test_decision_lists_are_summarized_past_20_entries() -> None:
    short = [{"kind": "limit", "message": str(i)} for i in range(MAX_EVENT_DECISIONS)]
    assert summarize_decisions(short) == short
    long = short + [{"kind": "limit"}] * 7 + [{"kind": "unverified_claim"}] * 3
    out = summarize_decisions(long)
    assert out[:MAX_EVENT_DECISIONS] == short and len(out) == MAX_EVENT_DECISIONS + 1
    assert out[-1]["kind"] == "summary" and out[-1]["omitted"] == 10
    assert out[-1]["kinds"] == {"limit": 7, "unverified_claim": 3}


def test_one_flooded_event_records_a_bounded_decision_list() -> None:
    w = world_with_victim()
    w.run(server(*[(EMAIL, f"held{i}@example.com") for i in range(5)]))
    flood = web((ANON, "x"), *[(EMAIL, f"held{i}@example.com") for i in range(5)],
                *[(EMAIL, f"new{i}@example.com") for i in range(40)])
    p = w.run(flood)
    assert len(p.decisions) == 5 + 35  # five claims of another's emails, 35 past the limit
    stored = summarize_decisions([d.as_dict() for d in p.decisions])
    assert len(stored) == MAX_EVENT_DECISIONS + 1 and stored[-1]["omitted"] == 20


# --------------------------------------------------------------------------- invariants (seeded)


POOL: list[Raw] = ([(EXT, f"u{n}") for n in range(3)] + [(EMAIL, f"m{n}@example.com") for n in range(5)]
                   + [(PHONE, f"+1650555{n:04d}") for n in range(2)] + [(DEVICE, f"d{n}") for n in range(3)]
                   + [(ANON, f"a{n}") for n in range(5)])
TIGHT = IdentityRules(type_limits={EXT: 1, EMAIL: 2, PHONE: 1, DEVICE: 2, ANON: 3}, max_identifiers=6, max_merges=3)


def random_ev(rng: random.Random) -> Ev:
    raw = rng.sample(POOL, rng.randint(1, 4))
    source = rng.choice(["website", "website", "website_off", "server"])
    known = [r for r in raw if r[0] in (EXT, EMAIL, PHONE)]
    signed = [r for r in known if rng.random() < 0.3] if source == "website" else []
    return Ev(raw, source, signed)


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_for_random_mixed_traffic(seed: int) -> None:
    """Whatever the mix of server, protected and unprotected website events: one live profile
    per identifier (World asserts it), limits hold, and an identifier of the event that is
    left out causes no link, merge or move for it."""
    rng = random.Random(seed)
    w = World(rules=TIGHT)
    for _ in range(12):
        batch = [random_ev(rng) for _ in range(rng.choice([1, 1, 3]))]
        owner_before = dict(w.graph)
        p = w.run(*batch)
        for d in p.decisions:
            if any(mv.event_index == d.event_index and mv.identifier.hash == d.identifier.hash for mv in p.moves):
                continue  # a moved or displaced identifier: its decision records the move
            i = d.identifier
            assert not any(lk.event_index == d.event_index and i in (lk.identifier, lk.via) for lk in p.links)
            assert not any(m.event_index == d.event_index and i in (m.trigger, m.via) for m in p.merges)
            k = (i.type, i.hash)
            if len(batch) == 1 and k in owner_before:
                q = owner_before[k]
                assert all(q not in (m.survivor, m.absorbed) for m in p.merges)
                assert p.event_profiles[0] != q
