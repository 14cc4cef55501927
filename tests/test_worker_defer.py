"""Deferring instead of waiting (``persist_tenant_events(..., defer=True)``, used by every
round of a job but its last): an event carrying an identifier that another transaction
holds, by its advisory lock or by its profile's row lock, is neither stored nor claimed
and comes back for a later transaction; the batch's other events are stored as usual. A
job carries deferred events into its next round and keeps their jobs claimed until a round
has stored them; its last round waits for the locks, so every event is stored once."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from conftest import make_tenant, prepared_event

from core.identifiers import normalize_identifier
from core.identity import IdentityRules
from stratum.db.connect import connect
from stratum.identity_locks import advisory_key
from stratum.queue import events_queue
from stratum.queue.layout import CLAIM_OWNERS_KEY
from workers import jobs
from workers.persist import persist_tenant_events
from workers.prepare import PreparedEvent


def _key(id_type: str, value: str) -> tuple[str, str]:
    i = normalize_identifier(id_type, value, default_region="US")
    return (i.type, i.hash)


def _ids(events: list[PreparedEvent]) -> list[str]:
    return [e.event.event_id for e in events]


@pytest.fixture
def server_tenant(db):
    return make_tenant(db, source_type="server")


@pytest.fixture
def other(settings):
    """A second connection, in a transaction the test commits (or rolls back) itself."""
    conn = connect(settings.database_url)
    yield conn
    conn.rollback()
    conn.close()


def _stored(db, tenant_id: str) -> tuple[list[str], list[str]]:
    """(event ids stored, event ids whose dedupe key is claimed), sorted."""
    events = db.execute("SELECT event_id::text FROM events WHERE tenant_id = %s ORDER BY 1", (tenant_id,)).fetchall()
    keys = db.execute("SELECT event_id::text FROM event_keys WHERE tenant_id = %s ORDER BY 1", (tenant_id,)).fetchall()
    return [r[0] for r in events], [r[0] for r in keys]


def test_an_event_whose_identifier_another_transaction_locked_is_deferred_unclaimed(db, server_tenant, other):
    tenant = server_tenant
    e1 = prepared_event(tenant, 1, ("external_id", "a"))
    e2 = prepared_event(tenant, 2, ("external_id", "b"))
    e3 = prepared_event(tenant, 3, ("external_id", "c"), ("external_id", "a"))
    other.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(tenant.id, *_key("external_id", "a")),))

    with db.transaction():
        out = persist_tenant_events(db, tenant.id, [e1, e2, e3], IdentityRules(), defer=True)
    assert (out.stored, out.duplicates, _ids(out.deferred)) == (1, 0, _ids([e1, e3]))
    assert _stored(db, tenant.id) == ([e2.event.event_id], [e2.event.event_id])
    assert db.execute("SELECT count(*) FROM profile_identifiers WHERE tenant_id = %s", (tenant.id,)).fetchone() == (1,)

    other.commit()  # the other transaction ends: the deferred events go through, once
    with db.transaction():
        out = persist_tenant_events(db, tenant.id, out.deferred, IdentityRules(), defer=True)
    assert (out.stored, out.duplicates, out.deferred) == (2, 0, [])
    with db.transaction():
        again = persist_tenant_events(db, tenant.id, [e1, e2, e3], IdentityRules(), defer=True)
    assert (again.stored, again.duplicates, again.deferred) == (0, 3, [])
    assert _stored(db, tenant.id) == (sorted(_ids([e1, e2, e3])),) * 2
    assert db.execute("SELECT sum(event_count) FROM profiles WHERE tenant_id = %s", (tenant.id,)).fetchone() == (3,)


def test_an_event_whose_profile_row_another_transaction_locked_is_deferred(db, server_tenant, other):
    """The profile is held through another identifier than the batch's (no advisory lock
    in common): its row lock defers the event too, where waiting would block."""
    tenant = server_tenant
    with db.transaction():
        persist_tenant_events(db, tenant.id, [prepared_event(tenant, 0, ("external_id", "a"), ("email", "z@example.com"))],
                              IdentityRules())
    [(pid,)] = db.execute("SELECT id::text FROM profiles WHERE tenant_id = %s", (tenant.id,)).fetchall()
    other.execute("SELECT 1 FROM profiles WHERE id = %s FOR UPDATE", (pid,))

    e1, e2 = prepared_event(tenant, 1, ("email", "z@example.com")), prepared_event(tenant, 2, ("external_id", "new"))
    with db.transaction():
        out = persist_tenant_events(db, tenant.id, [e1, e2], IdentityRules(), defer=True)
    assert (out.stored, _ids(out.deferred)) == (1, _ids([e1]))
    assert e1.event.event_id not in _stored(db, tenant.id)[1]

    # Without defer the same batch waits for the row (cut short here by a lock timeout).
    with pytest.raises(psycopg.errors.LockNotAvailable), db.transaction():
        db.execute("SET LOCAL lock_timeout = '200ms'")
        persist_tenant_events(db, tenant.id, [e1], IdentityRules())
    other.commit()
    with db.transaction():
        out = persist_tenant_events(db, tenant.id, [e1], IdentityRules(), defer=True)
    assert (out.stored, out.deferred) == (1, [])
    assert db.execute("SELECT event_count FROM profiles WHERE id = %s", (pid,)).fetchone() == (2,)


def _two_batches(ingest_client, tenant, prefix: str) -> list[str]:
    """Two queued batches of 20 events; event i of batch b carries external_id
    ``{prefix}{b}-{i % 13}``. Returns their event ids."""
    ids: list[str] = []
    for b in range(2):
        events = [{"event_name": "Viewed", "event_time": datetime.now(UTC).isoformat(),
                   "identifiers": [{"type": "external_id", "value": f"{prefix}{b}-{i % 13}"}]} for i in range(20)]
        r = ingest_client.post("/api/v1/cdp/events", json={"events": events},
                               headers={"Authorization": f"Bearer {tenant.write_key}"})
        assert r.status_code == 202, r.text
        ids += [x["event_id"] for x in r.json()["results"]]
    return ids


def test_a_job_carries_deferred_events_into_a_last_round_that_waits(ingest_client, tenant, drain, db, redis_conn,
                                                                    settings, worker_runtime, other, monkeypatch):
    """Two batches of 20 make one round; an identifier of the second is locked elsewhere
    until that round ends. The queue is then empty, so the deferred events get one more
    round, which waits for locks; their job is deleted only once they are stored."""
    worker_runtime.settings = settings.replace(worker_coalesce_max_events=40, worker_rounds_per_job=3)
    ids = _two_batches(ingest_client, tenant, "b")
    second_job = events_queue(redis_conn, settings.queue_name).job_ids[1]
    other.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(tenant.id, *_key("external_id", "b1-0")),))

    rounds: list[tuple[int, bool, int, bool]] = []
    real = jobs._persist_round

    def recording(rt, rnd, sink, coalescer, owner, totals, *, defer=False):
        deferred = real(rt, rnd, sink, coalescer, owner, totals, defer=defer)
        rounds.append((sum(len(i) for i in rnd.by_tenant.values()), defer, len(deferred),
                       redis_conn.exists(f"rq:job:{second_job}") == 1))
        other.commit()  # the lock is let go once the first round is over
        return deferred

    monkeypatch.setattr(jobs, "_persist_round", recording)
    assert drain() == 0
    # b1-0 is the identifier of events 0 and 13 of the second batch
    assert rounds == [(40, True, 2, True), (2, False, 0, False)]
    assert _stored(db, tenant.id) == (sorted(ids),) * 2
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone() == (40,)
    assert redis_conn.keys("stratum:claimed:*") == [] and not redis_conn.exists(CLAIM_OWNERS_KEY)
    assert events_queue(redis_conn, settings.queue_name).count == 0


def test_one_round_per_job_never_defers(ingest_client, tenant, drain, settings, worker_runtime, monkeypatch):
    worker_runtime.settings = settings.replace(worker_coalesce_max_events=40, worker_rounds_per_job=1)
    flags: list[bool] = []
    real = jobs._persist_prepared
    monkeypatch.setattr(jobs, "_persist_prepared",
                        lambda rt, rnd, sink, *, defer=False: flags.append(defer) or real(rt, rnd, sink, defer=defer))
    for b in range(3):
        r = ingest_client.post("/api/v1/cdp/events", json={"events": [
            {"event_name": "Viewed", "event_time": datetime.now(UTC).isoformat(),
             "identifiers": [{"type": "external_id", "value": f"x{b}"}]}]},
            headers={"Authorization": f"Bearer {tenant.write_key}"})
        assert r.status_code == 202
    assert drain() == 0
    assert flags and not any(flags)


def test_an_outage_after_a_deferral_gives_the_waiting_job_back(ingest_client, tenant, db, redis_conn, settings,
                                                               worker_runtime, other, monkeypatch):
    """Round 1 defers two events of the second job; the round that would store them hits
    an outage. The second job, still claimed, goes back to the queue with the running job;
    a later run stores what is missing, and nothing twice."""
    from rq.registry import FailedJobRegistry

    from workers.outages import ServiceUnavailable
    from workers.worker import build_worker

    worker_runtime.settings = settings.replace(worker_coalesce_max_events=40, worker_rounds_per_job=3)
    ids = _two_batches(ingest_client, tenant, "o")
    queue = events_queue(redis_conn, settings.queue_name)
    first_job, second_job = queue.job_ids
    other.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(tenant.id, *_key("external_id", "o1-0")),))

    calls = {"n": 0}
    real = jobs._persist_prepared

    def failing_second(rt, rnd, sink, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            other.commit()
            raise ServiceUnavailable("database unreachable (test)")
        return real(rt, rnd, sink, **kw)

    monkeypatch.setattr(jobs, "_persist_prepared", failing_second)
    worker = build_worker(settings, redis_conn)
    monkeypatch.setattr(worker, "until_database_answers", lambda: None)
    worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    assert db.execute("SELECT count(*) FROM events").fetchone() == (38,), "round 1 stored all but the deferred"
    assert sorted(queue.job_ids) == sorted([first_job, second_job]), "both jobs are queued again"
    assert redis_conn.keys("stratum:claimed:*") == []

    monkeypatch.setattr(jobs, "_persist_prepared", real)
    build_worker(settings, redis_conn).work(burst=True, logging_level="WARNING")
    assert FailedJobRegistry(queue=queue).count == 0 and queue.count == 0
    assert _stored(db, tenant.id) == (sorted(ids),) * 2
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone() == (40,), "nothing counted twice"
