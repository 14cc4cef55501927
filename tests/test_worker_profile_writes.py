"""A batch writes each profile once: a profile it creates is inserted with its final
counters, traits and lifecycle (the foreign keys to it are checked at commit, migration
0014), and a stored profile it changes is rewritten once. A trigger records every UPDATE
of a profile row while the batch runs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest


@pytest.fixture
def profile_updates(db):
    db.execute("CREATE TABLE test_profile_updates (id uuid)")
    db.execute("CREATE FUNCTION test_log_profile_update() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN INSERT INTO test_profile_updates VALUES (NEW.id); RETURN NEW; END $$")
    db.execute("CREATE TRIGGER test_profile_update AFTER UPDATE ON profiles FOR EACH ROW"
               " EXECUTE FUNCTION test_log_profile_update()")
    yield lambda: [r[0] for r in db.execute("SELECT id::text FROM test_profile_updates")]
    db.execute("DROP TRIGGER test_profile_update ON profiles")
    db.execute("DROP FUNCTION test_log_profile_update()")
    db.execute("DROP TABLE test_profile_updates")


def _post(ingest_client, tenant, events: list[dict]) -> None:
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events},
                           headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text


def _event(external_id: str, name: str, **extra) -> dict:
    return {"event_name": name, "event_time": datetime.now(UTC).isoformat(),
            "identifiers": [{"type": "external_id", "value": external_id}], **extra}


def test_new_profiles_are_inserted_once_and_stored_ones_rewritten_once(ingest_client, tenant, drain, db,
                                                                        profile_updates):
    _post(ingest_client, tenant, [_event("known", "Signed Up")])
    assert drain() == 0
    (known,) = db.execute("SELECT id::text FROM profiles").fetchone()
    db.execute("TRUNCATE test_profile_updates")

    _post(ingest_client, tenant, [
        _event("known", "Page Viewed"), _event("known", "Order Completed", properties={"revenue": 12.5}),
        _event("fresh", "Page Viewed", traits={"plan": "pro"}),
        _event("fresh", "Order Completed", properties={"revenue": 3}, traits={"plan": "team"}),
    ])
    assert drain() == 0
    assert profile_updates() == [known]  # the new profile: no UPDATE at all
    counters = "SELECT event_count, purchase_count, revenue, lifecycle, traits FROM profiles"
    fresh = db.execute(f"{counters} WHERE id <> %s", (known,)).fetchall()
    assert fresh == [(2, 1, Decimal(3), "customer", {"plan": "team"})]
    assert db.execute(f"{counters} WHERE id = %s", (known,)).fetchone()[:4] == (3, 1, Decimal("12.5"), "customer")
