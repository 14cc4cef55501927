"""Profiles a batch cannot change are loaded without their identifier counts
(workers/identity_store.py, ``load_snapshot(events=...)``; ``core.identity.profiles_to_plan``):
a known profile, or a customer, whose events all sit wholly on it. Their events are
attributed without planning and their stored ``identifier_count`` is written back as it
was; every profile a batch's plan can touch still has its counts read."""

from __future__ import annotations

import pytest
from conftest import make_tenant, prepared_event

from core.identity import IdentityRules
from workers.identity_store import load_snapshot
from workers.persist import persist_tenant_events
from workers.prepare import PreparedEvent


@pytest.fixture
def server_tenant(db):
    return make_tenant(db, source_type="server")


def _store(db, tenant, events: list[PreparedEvent]):
    with db.transaction():
        return persist_tenant_events(db, tenant.id, events, IdentityRules())


def _profile(db, tenant, id_type: str, value_hash: str) -> tuple[str, str, int, int]:
    return db.execute(
        "SELECT p.id::text, p.lifecycle, p.identifier_count, p.event_count FROM profiles p"
        " JOIN profile_identifiers pi ON pi.tenant_id = p.tenant_id AND pi.profile_id = p.id"
        " WHERE p.tenant_id = %s AND pi.type = %s AND pi.hash = %s", (tenant.id, id_type, value_hash)).fetchone()


def _keys(e: PreparedEvent) -> list[tuple[str, str]]:
    return [(i.type, i.hash) for i in e.identifiers]


def test_only_profiles_a_plan_can_change_have_their_counts_read(db, server_tenant):
    tenant = server_tenant
    known = prepared_event(tenant, 1, ("email", "ann@example.com"), ("external_id", "ann"), ("anonymous_id", "a-1"))
    anonymous = prepared_event(tenant, 2, ("anonymous_id", "a-2"))
    other = prepared_event(tenant, 3, ("email", "bob@example.com"))
    _store(db, tenant, [known, anonymous, other])

    again = prepared_event(tenant, 4, ("external_id", "ann"))  # wholly on Ann's known profile
    anon_again = prepared_event(tenant, 5, ("anonymous_id", "a-2"))  # an anonymous profile: counts are read
    bob_new = prepared_event(tenant, 6, ("email", "bob@example.com"), ("phone", "+16505550101"))  # a new identifier
    batch = [again, anon_again, bob_new]
    keys = {k for e in batch for k in _keys(e)}
    with db.transaction():
        snap = load_snapshot(db, tenant.id, keys, events=[e.identity for e in batch])
        by_key = {k: snap.profiles[pid] for k, pid in snap.graph.items()}
        ann, anon, bob = by_key[_keys(again)[0]], by_key[_keys(anon_again)[0]], by_key[_keys(bob_new)[0]]
        assert (ann.detailed, ann.counts, ann.identifier_count) == (False, {}, 3)
        assert (anon.detailed, anon.counts) == (True, {"anonymous_id": 1})
        assert (bob.detailed, bob.counts) == (True, {"email": 1})
        assert ann.known and ann.total_identifiers == 3


def test_settled_profiles_keep_their_counts_and_lifecycle(db, server_tenant):
    tenant = server_tenant
    first = prepared_event(tenant, 1, ("email", "ann@example.com"), ("external_id", "ann"), ("anonymous_id", "a-1"))
    _store(db, tenant, [first])
    email = _keys(first)[0]
    pid, lifecycle, count, events = _profile(db, tenant, *email)
    assert (lifecycle, count, events) == ("known", 3, 1)

    later = [prepared_event(tenant, n, ("anonymous_id", "a-1")) for n in range(2, 6)]
    out = _store(db, tenant, later)
    assert (out.stored, out.profiles_created, out.merges) == (4, 0, 0)
    assert _profile(db, tenant, *email) == (pid, "known", 3, 5)


def test_a_profile_settled_for_one_event_and_merged_by_another_has_its_counts_read(db, server_tenant):
    """Event 1 sits wholly on Ann's profile; event 2 joins Ann's and Bob's: both are read
    with their counts, and the survivor ends with every identifier counted once."""
    tenant = server_tenant
    ann = prepared_event(tenant, 1, ("external_id", "ann"), ("anonymous_id", "a-1"))
    anon = prepared_event(tenant, 2, ("anonymous_id", "a-2"), ("email", "x@example.com"))
    _store(db, tenant, [ann, anon])

    on_ann = prepared_event(tenant, 3, ("anonymous_id", "a-1"))
    join = prepared_event(tenant, 4, ("external_id", "ann"), ("anonymous_id", "a-2"), event_type="identify")
    out = _store(db, tenant, [on_ann, join])
    assert out.merges == 1
    pid, lifecycle, count, events = _profile(db, tenant, *_keys(ann)[0])
    assert (lifecycle, count, events) == ("known", 4, 4)
    stored = db.execute("SELECT count(*) FROM profile_identifiers WHERE tenant_id = %s AND profile_id = %s",
                        (tenant.id, pid)).fetchone()[0]
    assert stored == 4


def _traits(db, tenant, key: tuple[str, str]) -> dict:
    return db.execute("SELECT p.traits FROM profiles p JOIN profile_identifiers pi ON pi.tenant_id = p.tenant_id"
                      " AND pi.profile_id = p.id WHERE p.tenant_id = %s AND pi.type = %s AND pi.hash = %s",
                      (tenant.id, *key)).fetchone()[0]


def test_traits_are_read_only_where_the_batch_can_change_them(db, server_tenant):
    """The snapshot reads no traits; the batch reads those of the profiles its
    trait-carrying events and merges touch, and leaves every other profile's as stored."""
    tenant = server_tenant
    ann = prepared_event(tenant, 1, ("external_id", "ann"), event_type="identify", traits={"plan": "pro"})
    bob = prepared_event(tenant, 2, ("external_id", "bob"), ("anonymous_id", "b-1"), event_type="identify",
                         traits={"plan": "free", "city": "Oslo"})
    cat = prepared_event(tenant, 3, ("anonymous_id", "c-1"), event_type="identify", traits={"team": "blue"})
    _store(db, tenant, [ann, bob, cat])

    with db.transaction():
        snap = load_snapshot(db, tenant.id, _keys(ann), events=[ann.identity])
        [row] = snap.profiles.values()
        assert not row.traits_loaded
        with pytest.raises(RuntimeError):
            dict(row.traits)

    batch = [prepared_event(tenant, 4, ("external_id", "ann")),  # no traits: Ann's stay as stored
             prepared_event(tenant, 5, ("external_id", "bob"), event_type="identify", traits={"city": "Bergen"}),
             prepared_event(tenant, 6, ("anonymous_id", "c-1"), ("external_id", "bob"), event_type="alias")]  # merges Cat
    out = _store(db, tenant, batch)
    assert (out.stored, out.merges) == (3, 1)
    assert _traits(db, tenant, _keys(ann)[0]) == {"plan": "pro"}
    assert _traits(db, tenant, _keys(bob)[0]) == {"plan": "free", "city": "Bergen", "team": "blue"}
