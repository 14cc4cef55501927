"""Unit tests for core.identity_steady: every event it calls steady is one the planner
(core/identity.py) would leave alone on that profile, with nothing linked, merged, moved or
refused, whatever else the batch holds. Pure: random graphs and batches, no services."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from core.identifiers import Identifier
from core.identity import EventIdentity, IdentityRules, ProfileState, plan_identities
from core.identity_steady import may_be_steady, steady_events

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TYPES = ("external_id", "email", "phone", "device_id", "anonymous_id")


def _ident(id_type: str, n: int) -> Identifier:
    return Identifier(id_type, f"{id_type}-{n}", f"{id_type[:2]}{n:04d}")


def _world(rng: random.Random):
    """A random stored graph: profiles holding a few identifiers each, some provisional."""
    graph: dict[tuple[str, str], str] = {}
    profiles: dict[str, ProfileState] = {}
    pool: list[Identifier] = []
    for p in range(rng.randint(1, 6)):
        pid = f"P{p}"
        state = ProfileState(pid, T0 - timedelta(days=p))
        for t in rng.sample(TYPES, rng.randint(1, 4)):
            ident = _ident(t, len(pool))
            pool.append(ident)
            graph[(ident.type, ident.hash)] = pid
            state.counts[t] = state.counts.get(t, 0) + 1
            if t in ("email", "phone") and rng.random() < 0.15:
                state.provisional[(ident.type, ident.hash)] = len(pool)
        profiles[pid] = state
    pool += [_ident(rng.choice(TYPES), 1000 + n) for n in range(4)]  # stored nowhere
    return graph, profiles, pool


def _batch(rng: random.Random, pool: list[Identifier], graph: dict[tuple[str, str], str]) -> list[EventIdentity]:
    events = []
    for n in range(rng.randint(1, 8)):
        source = pool
        if rng.random() < 0.5:  # a returning person: identifiers of one profile
            pid = rng.choice(sorted(set(graph.values()))) if graph else None
            source = [i for i in pool if graph.get((i.type, i.hash)) == pid] or pool
        idents = list({i.hash: i for i in rng.sample(source, rng.randint(0, min(3, len(source))))}.values())
        trusted = rng.random() < 0.6
        protect = not trusted and rng.random() < 0.8
        verified = frozenset((i.type, i.hash) for i in idents if rng.random() < 0.3)
        events.append(EventIdentity(idents, T0 + timedelta(minutes=n), trusted, verified, protect))
    return events


@pytest.mark.parametrize("seed", range(400))
def test_steady_events_are_left_alone_by_the_planner(seed):
    rng = random.Random(seed)
    graph, profiles, pool = _world(rng)
    events = _batch(rng, pool, graph)
    suppressed = {(i.type, i.hash) for i in pool if rng.random() < 0.05}
    graph = {k: v for k, v in graph.items() if k not in suppressed}
    provisional = {k for p in profiles.values() for k in p.provisional}
    keys = [[(i.type, i.hash) for i in e.identifiers] for e in events]
    steady = steady_events(keys, [may_be_steady(e.identifiers, e.trusted, e.verified, e.protect) for e in events], graph, provisional, suppressed)

    counter = itertools.count()
    plan = plan_identities(events, graph, profiles, IdentityRules(), new_profile_id=lambda: f"N{next(counter)}")
    touched = {x.event_index for x in [*plan.links, *plan.merges, *plan.moves, *plan.decisions]}
    merged = {m.absorbed for m in plan.merges} | {m.survivor for m in plan.merges}
    for index, pid in steady.items():
        assert plan.event_profiles[index] == pid
        assert index not in touched
        assert pid not in merged
        assert not any(i.type == t and i.hash == h for i in events[index].identifiers for t, h in plan.confirmed)


def test_an_event_on_a_profile_another_event_changes_is_planned():
    a, e = ("anonymous_id", "a1"), ("email", "e1")
    owner = {a: "P"}
    # the second event links a new email to P: the first is planned with it, in order
    assert steady_events([[a], [a, e]], [True, True], owner, set(), set()) == {}
    assert steady_events([[a], [a]], [True, True], owner, set(), set()) == {0: "P", 1: "P"}


def test_what_is_never_steady():
    a, b, e = ("anonymous_id", "a1"), ("anonymous_id", "b1"), ("email", "e1")
    owner = {a: "P", b: "Q", e: "P"}
    assert steady_events([[a, b]], [True], owner, set(), set()) == {}  # two profiles: a merge
    assert steady_events([[a, ("device_id", "new")]], [True], owner, set(), set()) == {}  # a new identifier
    assert steady_events([[a, e]], [True], owner, {e}, set()) == {}  # provisional
    assert steady_events([[a]], [True], owner, set(), {a}) == {}  # suppressed
    assert steady_events([[a]], [False], owner, set(), set()) == {}  # not eligible
    assert steady_events([[]], [True], owner, set(), set()) == {}  # nothing to resolve
    email = Identifier("email", "x", e[1])
    assert not may_be_steady([email], False, frozenset(), True)  # no home: its email would be left out
    anon = Identifier("anonymous_id", "y", a[1])
    assert may_be_steady([anon, email], False, frozenset(), True)
    assert may_be_steady([email], False, frozenset({e}), True)
    assert may_be_steady([email], True, frozenset(), True)
