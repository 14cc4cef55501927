"""The planner's trust rules applied to the database (CONTRACT 6: verified identity, public
keys cannot fill a profile, caps): website events carrying a customer's identifiers never
change that customer, provisional identifiers move or are displaced with their flag kept in
profile_identifiers, and decision lists stay bounded.

Real Postgres. The two prepared-event fields (``verified``, ``protect``) are set here on
a copy of ``prepare_batch``'s output (``dataclasses.replace``, which derives the event's
planner view again) instead of from signatures.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import make_tenant

from core.identifiers import normalize_identifier
from core.identity import MAX_EVENT_DECISIONS, IdentityRules
from core.schemas import QUEUE_FORMAT_VERSION, QueuedBatch, QueuedEvent
from workers.persist import persist_tenant_events
from workers.prepare import prepare_batch

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def key(id_type: str, value: str) -> tuple[str, str]:
    i = normalize_identifier(id_type, value, default_region="US")
    return (i.type, i.hash)


class Store:
    """Sends one event per call through prepare_batch and persist_tenant_events."""

    def __init__(self, db, tenant) -> None:
        self.db, self.tenant, self.n = db, tenant, 0

    def send(self, ids: list[tuple[str, str]], *, source: str = "website", signed=(), traits=None,
             event_type: str = "identify") -> str:
        self.n += 1
        eid = str(uuid.uuid4())
        event = QueuedEvent(eid, eid, event_type, event_type, T0 + timedelta(seconds=self.n), list(ids), {}, {},
                            dict(traits or {}), None, 0, [])
        batch = QueuedBatch(QUEUE_FORMAT_VERSION, self.tenant.id, self.tenant.source_id,
                            "server" if source == "server" else "website", "US", T0, "req", None, None, [event])
        [prepared] = prepare_batch(batch)
        prepared = dataclasses.replace(prepared, verified=frozenset(key(*raw) for raw in signed),
                                       protect=source == "website")
        with self.db.transaction():
            persist_tenant_events(self.db, self.tenant.id, [prepared], IdentityRules())
        return eid

    def profile_of(self, id_type: str, value: str) -> str | None:
        t, h = key(id_type, value)
        row = self.db.execute("SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s"
                              " AND hash = %s", (self.tenant.id, t, h)).fetchone()
        return row[0] if row else None

    def provisional(self, id_type: str, value: str) -> bool:
        t, h = key(id_type, value)
        return self.db.execute("SELECT provisional_since IS NOT NULL FROM profile_identifiers WHERE tenant_id = %s"
                               " AND type = %s AND hash = %s", (self.tenant.id, t, h)).fetchone()[0]

    def event(self, event_id: str) -> tuple[str | None, list[dict]]:
        pid, decisions = self.db.execute("SELECT profile_id::text, decisions FROM events WHERE event_id = %s",
                                         (event_id,)).fetchone()
        return pid, decisions or []

    def traits(self, pid: str) -> dict:
        return self.db.execute("SELECT traits FROM profiles WHERE id = %s", (pid,)).fetchone()[0]

    def check_counts(self) -> None:
        """identifier_count of every live profile matches its rows; no merge was recorded."""
        rows = self.db.execute(
            "SELECT p.id, p.identifier_count, count(pi.hash) FROM profiles p LEFT JOIN profile_identifiers pi"
            " ON pi.profile_id = p.id WHERE p.tenant_id = %s AND p.merged_into IS NULL GROUP BY 1, 2",
            (self.tenant.id,)).fetchall()
        assert all(stored == actual for _pid, stored, actual in rows), rows


@pytest.fixture
def store(db):
    return Store(db, make_tenant(db, source_type="website"))


def kinds(decisions: list[dict]) -> list[str]:
    """Identity decisions of an event (prepare_batch also warns of each unsigned claim)."""
    return [d["kind"] for d in decisions if d["kind"] != "warning"]


def test_unverified_claim_of_a_customers_email_changes_nothing_of_the_customer(store) -> None:
    store.send([("external_id", "cust-1"), ("email", "victim@example.com")], source="server",
               traits={"name": "Real"})
    customer = store.profile_of("email", "victim@example.com")
    eid = store.send([("anonymous_id", "attacker"), ("email", "victim@example.com"),
                      ("email", "attacker@example.com")], traits={"name": "Hacked"})
    pid, decisions = store.event(eid)
    assert pid == store.profile_of("anonymous_id", "attacker") != customer
    assert kinds(decisions) == ["unverified_claim"]
    assert store.traits(customer)["name"] == "Real"
    assert store.profile_of("email", "attacker@example.com") == pid and store.provisional("email", "attacker@example.com")
    assert store.db.execute("SELECT count(*) FROM profile_merges").fetchone()[0] == 0
    store.check_counts()


def test_an_event_with_no_home_is_stored_without_a_profile(store) -> None:
    store.send([("email", "victim@example.com")], source="server")
    eid = store.send([("email", "victim@example.com")])
    pid, decisions = store.event(eid)
    assert pid is None and kinds(decisions) == ["unverified_claim"]


def test_legitimate_website_flows_still_unify(store) -> None:
    store.send([("anonymous_id", "visitor")])
    store.send([("anonymous_id", "visitor"), ("email", "new@example.com")])  # signs up
    visitor = store.profile_of("anonymous_id", "visitor")
    assert store.profile_of("email", "new@example.com") == visitor and store.provisional("email", "new@example.com")
    store.send([("external_id", "cust-2"), ("email", "known@example.com")], source="server")
    store.send([("anonymous_id", "laptop")])
    eid = store.send([("anonymous_id", "laptop"), ("email", "known@example.com")],
                     signed=[("email", "known@example.com")])  # logs in with a signed email
    customer = store.profile_of("external_id", "cust-2")
    assert store.event(eid)[0] == customer == store.profile_of("anonymous_id", "laptop")
    store.check_counts()


def test_a_server_event_moves_a_provisional_email_instead_of_merging(store) -> None:
    store.send([("external_id", "cust-1")], source="server")
    store.send([("anonymous_id", "attacker"), ("email", "victim@example.com")])  # pre-claim
    attacker = store.profile_of("anonymous_id", "attacker")
    assert store.profile_of("email", "victim@example.com") == attacker
    eid = store.send([("external_id", "cust-1"), ("email", "victim@example.com")], source="server")
    customer = store.profile_of("external_id", "cust-1")
    assert store.profile_of("email", "victim@example.com") == customer != attacker
    assert not store.provisional("email", "victim@example.com")
    assert kinds(store.event(eid)[1]) == ["unverified_claim"]
    assert store.db.execute("SELECT count(*) FROM profile_merges").fetchone()[0] == 0
    store.check_counts()


def test_server_identifier_displaces_junk_at_the_limit(store) -> None:
    store.send([("external_id", "cust-1"), ("anonymous_id", "browser")], source="server")
    customer = store.profile_of("external_id", "cust-1")
    for i in range(5):
        store.send([("anonymous_id", "browser"), ("email", f"junk{i}@example.com")])
    eid = store.send([("external_id", "cust-1"), ("email", "real@example.com")], source="server")
    assert store.profile_of("email", "real@example.com") == customer
    assert not store.provisional("email", "real@example.com")
    displaced = store.profile_of("email", "junk4@example.com")
    assert displaced not in (None, customer) and store.provisional("email", "junk4@example.com")
    assert [(d["kind"], d["hash"]) for d in store.event(eid)[1]] == [("limit", key("email", "junk4@example.com")[1])]
    assert all(store.profile_of("email", f"junk{i}@example.com") == customer for i in range(4))
    store.check_counts()


def test_a_flooded_event_stores_a_summarized_decision_list(store) -> None:
    store.send([("anonymous_id", "x")])
    eid = store.send([("anonymous_id", "x")] + [("email", f"e{i}@example.com") for i in range(40)])
    _pid, decisions = store.event(eid)
    assert len(decisions) == MAX_EVENT_DECISIONS + 1
    # 35 emails over the type limit, plus a warning for each of the 40 unsigned claims
    assert decisions[-1]["kind"] == "summary" and decisions[-1]["omitted"] == 35 + 40 - MAX_EVENT_DECISIONS


def test_shared_device_never_drags_an_anonymous_profile_into_another_customer(ingest_client, new_tenant, drain, db):
    """Issue 10.4 end to end (ingest API, queue, worker): device D is on u1's profile; a
    browser profile (anonymous a) logs in as u2 on D. D is left out before any merge."""
    tenant = new_tenant(source_type="server")

    def post(*ids: tuple[str, str]) -> None:
        event = {"event_name": "E", "event_time": datetime.now(UTC).isoformat(),
                 "identifiers": [{"type": t, "value": v} for t, v in ids]}
        r = ingest_client.post("/api/v1/cdp/events", json={"events": [event]},
                               headers={"Authorization": f"Bearer {tenant.write_key}"})
        assert r.status_code == 202, r.text
        assert drain() == 0

    post(("device_id", "D"), ("external_id", "u1"))
    post(("anonymous_id", "a"))
    post(("device_id", "D"), ("external_id", "u2"), ("anonymous_id", "a"))
    store = Store(db, tenant)
    assert store.profile_of("anonymous_id", "a") == store.profile_of("external_id", "u2")
    assert store.profile_of("device_id", "D") == store.profile_of("external_id", "u1") != store.profile_of(
        "anonymous_id", "a")
    assert db.execute("SELECT count(*) FROM profile_merges WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 0
    [decisions] = db.execute("SELECT decisions FROM events WHERE tenant_id = %s AND decisions IS NOT NULL",
                             (tenant.id,)).fetchone()
    assert [(d["kind"], d["type"]) for d in decisions] == [("limit", "device_id")]
