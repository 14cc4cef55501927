"""Claiming dedupe keys (workers/persist.py, ``_claim_dedupe_keys``): a batch's keys are
copied in, in a savepoint; a key stored already fails that COPY and the batch goes through
the insert that skips stored keys. Either way each key is won once, by the first event of
the batch carrying it, and the others are recorded as duplicates of the stored event."""

from __future__ import annotations

import pytest
from conftest import make_tenant, prepared_event

from core.identity import IdentityRules
from workers import persist
from workers.persist import persist_tenant_events


def _keyed(tenant, key: str, n: int):
    return prepared_event(tenant, n, ("external_id", f"person-{n}"), key=key)


@pytest.fixture
def server_tenant(db):
    return make_tenant(db, source_type="server")


def _outcomes(db, tenant_id: str) -> dict[str, str]:
    rows = db.execute("SELECT event_id::text, duplicate_of::text FROM event_outcomes WHERE tenant_id = %s"
                      " AND status = 'duplicate'", (tenant_id,)).fetchall()
    return dict(rows)


def _stored(db, tenant_id: str) -> list[str]:
    return sorted(r[0] for r in db.execute("SELECT event_id::text FROM events WHERE tenant_id = %s",
                                           (tenant_id,)).fetchall())


def test_repeats_inside_a_batch_lose_to_its_first_event_without_the_fallback(db, server_tenant, monkeypatch):
    tenant = server_tenant
    first, again, other = _keyed(tenant, "k-1", 1), _keyed(tenant, "k-1", 2), _keyed(tenant, "k-2", 3)

    def no_fallback(*args):
        raise AssertionError("a batch without stored keys needs no fallback")

    monkeypatch.setattr(persist, "_insert_dedupe_keys", no_fallback)
    with db.transaction():
        out = persist_tenant_events(db, tenant.id, [first, again, other], IdentityRules())
    assert (out.stored, out.duplicates) == (2, 1)
    assert _stored(db, tenant.id) == sorted([first.event.event_id, other.event.event_id])
    assert _outcomes(db, tenant.id) == {again.event.event_id: first.event.event_id}


def test_a_batch_holding_a_stored_key_stores_the_rest_once(db, server_tenant):
    tenant = server_tenant
    stored = _keyed(tenant, "k-1", 1)
    with db.transaction():
        persist_tenant_events(db, tenant.id, [stored], IdentityRules())

    late, fresh, fresh_again = _keyed(tenant, "k-1", 2), _keyed(tenant, "k-2", 3), _keyed(tenant, "k-2", 4)
    with db.transaction():
        out = persist_tenant_events(db, tenant.id, [fresh, late, fresh_again], IdentityRules())
    assert (out.stored, out.duplicates) == (1, 2)
    assert _stored(db, tenant.id) == sorted([stored.event.event_id, fresh.event.event_id])
    assert _outcomes(db, tenant.id) == {late.event.event_id: stored.event.event_id,
                                        fresh_again.event.event_id: fresh.event.event_id}
    keys = db.execute("SELECT count(*) FROM event_keys WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert keys == 2
    profiles = db.execute("SELECT sum(event_count) FROM profiles WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert profiles == 2, "the duplicates are counted on no profile"


def test_the_same_batch_twice_stores_nothing_the_second_time(db, server_tenant):
    tenant = server_tenant
    events = [_keyed(tenant, f"k-{n}", n) for n in range(5)]
    with db.transaction():
        first = persist_tenant_events(db, tenant.id, events, IdentityRules())
    with db.transaction():
        second = persist_tenant_events(db, tenant.id, events, IdentityRules())
    assert (first.stored, first.duplicates, second.stored, second.duplicates) == (5, 0, 0, 5)
    assert _stored(db, tenant.id) == sorted(e.event.event_id for e in events)
