"""Poison values never lose a batch (CONTRACT 6).

A revenue the counter cannot hold is left out with a warning on its event; an event the
database still refuses is isolated by splitting the batch, alone in the failed registry
with its reason, while every other event of its job (coalesced batches included) is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry

from core.schemas import decode_batch
from stratum.queue import MsgpackSerializer, events_queue
from stratum.queue.status import failed_jobs, replay_failed

POISON_NAME = "Poison-Pill"


def _post(client, tenant, events) -> dict:
    r = client.post("/api/v1/cdp/events", json={"events": events},
                    headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text
    return r.json()


def _event(user: str, name: str = "Viewed", **properties) -> dict:
    return {"event_name": name, "event_time": datetime.now(UTC).isoformat(),
            "identifiers": [{"type": "external_id", "value": user}], "properties": properties}


def _warnings(db, event_id: str) -> list[str]:
    decisions = db.execute("SELECT decisions FROM events WHERE event_id = %s", (event_id,)).fetchone()[0] or []
    return [d["message"] for d in decisions if d["kind"] == "warning"]


@pytest.mark.parametrize("poison", [99999999999999, "99999999999999.99999", "1e999999999", "NaN", True,
                                    "12,50", 1e300, "-99999999999999.99995", [1], {"v": 1}])
def test_a_revenue_the_counter_cannot_hold_is_left_out_with_a_warning(ingest_client, tenant, drain, db, poison):
    body = _post(ingest_client, tenant, [_event("rev-a", "Purchase", revenue=10),
                                         _event("rev-a", "Purchase", revenue=poison),
                                         _event("rev-b", "Viewed")])
    ids = [r["event_id"] for r in body["results"]]
    assert drain() == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    row = db.execute("SELECT p.revenue, p.purchase_count FROM profiles p JOIN events e ON e.profile_id = p.id"
                     " WHERE e.event_id = %s", (ids[1],)).fetchone()
    warnings = _warnings(db, ids[1])
    if poison == 99999999999999:
        # storable alone, but the sum with the 10 before would not fit: the total stays
        assert row == (Decimal("10.0000"), 2)
        assert any("total would exceed" in w for w in warnings), warnings
    else:
        assert row == (Decimal("10.0000"), 2)
        assert any("properties.revenue left out" in w for w in warnings), warnings
    assert not any(str(poison) in w for w in warnings), "a warning echoes the submitted value"
    assert _warnings(db, ids[0]) == [] and _warnings(db, ids[2]) == []


def test_profile_totals_never_overflow_on_merge(ingest_client, tenant, drain, db):
    near = "99999999999000"
    now = datetime.now(UTC).isoformat()

    def anon(*values: str, name: str = "Purchase") -> dict:
        return {"event_name": name, "event_time": now, "properties": {"revenue": near},
                "identifiers": [{"type": "anonymous_id", "value": v} for v in values]}

    _post(ingest_client, tenant, [anon("m-a"), anon("m-b")])
    assert drain() == 0
    _post(ingest_client, tenant, [anon("m-a", "m-b", name="Viewed")])  # merges the two profiles
    assert drain() == 0
    assert db.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0] == 1
    assert db.execute("SELECT revenue FROM profiles WHERE merged_into IS NULL").fetchone()[0] == \
        Decimal("99999999999999.9999")


@pytest.fixture
def poison_constraint(db):
    """A CHECK the events table gains for this test: events named ``POISON_NAME`` are refused
    by Postgres itself (CheckViolation), as any value the database cannot take would be."""
    db.execute(f"ALTER TABLE events ADD CONSTRAINT test_poison CHECK (event_name <> '{POISON_NAME}')")
    yield
    db.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS test_poison")


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "alone"])
def test_a_bad_event_is_isolated_and_its_neighbours_stored(ingest_client, tenant, drain, db, redis_conn,
                                                           settings, worker_runtime, poison_constraint, coalesce):
    if not coalesce:
        worker_runtime.settings = settings.replace(worker_coalesce_max_events=100)
    total = 0
    poison_ids = []
    for b in range(4):
        events = [_event(f"iso-{b}-{i % 7}", "Purchase" if i % 3 == 0 else "Viewed", revenue=i) for i in range(40)]
        if b in (1, 3):
            events[17 + b]["event_name"] = POISON_NAME
        body = _post(ingest_client, tenant, events)
        total += len(events)
        poison_ids += [body["results"][17 + b]["event_id"]] if b in (1, 3) else []
    assert drain() == 2, "only the two bad events may fail"
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == total - 2
    assert db.execute("SELECT count(*) FROM events WHERE event_id = ANY(%s::uuid[])", (poison_ids,)).fetchone()[0] == 0
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == total - 2

    queue = events_queue(redis_conn, settings.queue_name)
    isolated = []
    for job_id in FailedJobRegistry(queue=queue).get_job_ids():
        job = Job.fetch(job_id, connection=redis_conn, serializer=MsgpackSerializer)
        batch = decode_batch(job.args[0])
        assert len(batch.events) == 1 and batch.tenant_id == tenant.id
        isolated.append(batch.events[0].event_id)
    assert sorted(isolated) == sorted(poison_ids)
    reasons = [f["reason"] for f in failed_jobs(settings, redis_conn)]
    assert all("CheckViolation" in r for r in reasons), reasons
    assert not any(POISON_NAME in r for r in reasons), "the reason echoes the submitted value"
    assert redis_conn.keys("stratum:claimed:*") == []

    # Once the database takes them, a replay stores exactly the isolated events.
    db.execute("ALTER TABLE events DROP CONSTRAINT test_poison")
    assert replay_failed(settings, None, redis_conn) == 2
    assert drain() == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == total


def test_an_unreadable_coalesced_batch_fails_alone(ingest_client, tenant, drain, db, redis_conn, settings):
    queue = events_queue(redis_conn, settings.queue_name)
    _post(ingest_client, tenant, [_event(f"u-{i}") for i in range(10)])
    bad = queue.enqueue("workers.jobs.process_batch", b"\x93not a batch", result_ttl=0)
    _post(ingest_client, tenant, [_event(f"v-{i}") for i in range(10)])
    assert drain() == 1
    assert FailedJobRegistry(queue=queue).get_job_ids() == [bad.id]
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 20
    assert redis_conn.keys("stratum:claimed:*") == []


def test_isolated_payload_is_a_replayable_batch(ingest_client, tenant, drain, redis_conn, settings,
                                                poison_constraint):
    _post(ingest_client, tenant, [_event("p-1"), _event("p-2", POISON_NAME)])
    assert drain() == 1
    queue = events_queue(redis_conn, settings.queue_name)
    job = Job.fetch(FailedJobRegistry(queue=queue).get_job_ids()[0], connection=redis_conn,
                    serializer=MsgpackSerializer)
    assert job.func_name == "workers.jobs.process_batch" and job.origin == queue.name
    assert msgspec.msgpack.decode(job.args[0])[0] == 1  # queue format version leads the payload


def test_an_event_the_worker_cannot_even_prepare_is_isolated(tenant, drain, db, redis_conn, settings):
    """A queued Segment event whose raw JSON does not map (a bug or a corrupted payload)
    fails alone; the native event beside it is stored."""
    from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent

    now = datetime.now(UTC)
    good = QueuedEvent("0190a000-0000-7000-8000-0000000000a1", "k-good", "track", "Viewed", now,
                       [("external_id", "prep-1")], {}, {}, {}, None, 0, [])
    bad = QueuedSegmentEvent("0190a000-0000-7000-8000-0000000000a2", "k-bad", "track", now, b"{not json")
    batch = QueuedBatch(1, tenant.id, tenant.source_id, "server", "US", now, "req-prep", None, None, [good, bad])
    queue = events_queue(redis_conn, settings.queue_name)
    queue.enqueue("workers.jobs.process_batch", msgspec.msgpack.encode(batch), result_ttl=0)
    assert drain() == 1
    assert db.execute("SELECT event_id::text FROM events").fetchall() == [(good.event_id,)]
    job = Job.fetch(FailedJobRegistry(queue=queue).get_job_ids()[0], connection=redis_conn,
                    serializer=MsgpackSerializer)
    assert [e.event_id for e in decode_batch(job.args[0]).events] == [bad.event_id]
