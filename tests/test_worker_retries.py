"""What a worker retries, and what it must not: only transient errors are retried, RQ's job
timeout is never swallowed, and a retried transaction sees exactly the inputs of the first."""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import UTC, datetime

import msgspec
import psycopg
import pytest
from rq.registry import FailedJobRegistry

from core.schemas import QUEUE_FORMAT_VERSION, QueuedBatch, QueuedEvent
from stratum.db.connect import connect
from stratum.queue import events_queue
from stratum.queue.status import failed_jobs
from workers import jobs
from workers.identity_store import SnapshotChanged
from workers.isolation import persist_isolating
from workers.outages import ServiceUnavailable, is_transient
from workers.prepare import prepare_batch


@pytest.mark.parametrize(("exc", "transient"), [
    (psycopg.OperationalError("server closed the connection unexpectedly"), True),
    (psycopg.errors.AdminShutdown(), True),
    (psycopg.errors.CannotConnectNow(), True),
    (psycopg.errors.ConnectionFailure(), True),
    (psycopg.errors.SerializationFailure(), True),
    (psycopg.errors.DeadlockDetected(), True),
    (psycopg.errors.LockNotAvailable(), True),
    (SnapshotChanged(), True),
    (psycopg.errors.DiskFull(), False),
    (psycopg.errors.QueryCanceled(), False),
    (psycopg.errors.OutOfMemory(), False),
    (psycopg.errors.NumericValueOutOfRange(), False),
    (psycopg.errors.CheckViolation(), False),
    (ValueError("x"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_only_transient_errors_count_as_transient(exc, transient):
    assert is_transient(exc) is transient


def test_a_cancelled_query_is_not_retried(worker_runtime, db):
    """QueryCanceled is an OperationalError; it must fail at once, not be retried 10 times."""
    calls = []

    def cancelled():
        calls.append(1)
        conn = worker_runtime.connection()
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 1")
            conn.execute("SELECT pg_sleep(1)")

    with pytest.raises(psycopg.errors.QueryCanceled):
        jobs._with_retry(worker_runtime, "test", cancelled)
    assert calls == [1]


def test_transient_errors_are_retried_then_reported_as_an_outage(worker_runtime):
    calls = []

    def deadlocked():
        calls.append(1)
        raise psycopg.errors.DeadlockDetected()

    worker_runtime.settings = worker_runtime.settings.replace(db_retry_attempts=3)
    with pytest.raises(ServiceUnavailable):
        jobs._with_retry(worker_runtime, "test", deadlocked)
    assert len(calls) == 3


def test_a_retried_transaction_sees_unchanged_inputs(worker_runtime, tenant, db):
    """Suppressed identifiers are dropped from copies: the events handed in stay as they were."""
    from core.identifiers import normalize_identifier
    from core.identity import IdentityRules
    from workers.persist import persist_tenant_events

    gone = normalize_identifier("email", "gone@example.com")
    db.execute("INSERT INTO suppressed_identifiers (tenant_id, type, hash) VALUES (%s, 'email', %s)",
               (tenant.id, gone.hash))
    now = datetime.now(UTC)
    batch = QueuedBatch(1, tenant.id, tenant.source_id, "server", "US", now, "req-1", None, None, [
        QueuedEvent("0190a000-0000-7000-8000-000000000001", "k-1", "track", "E", now,
                    [("email", "gone@example.com"), ("anonymous_id", "a-1")], {}, {}, {}, None, 0, [])])
    events = prepare_batch(batch)
    before = copy.deepcopy(events)
    conn = worker_runtime.connection()
    for _attempt in range(2):
        with pytest.raises(RuntimeError), conn.transaction():
            persist_tenant_events(conn, tenant.id, events, IdentityRules())
            raise RuntimeError("roll back, as a failed attempt does")
        assert events == before
    with conn.transaction():
        assert persist_tenant_events(conn, tenant.id, events, IdentityRules()).stored == 1
    decisions = db.execute("SELECT decisions FROM events").fetchone()[0]
    assert [d["kind"] for d in decisions] == ["suppressed"]


def test_the_job_timeout_is_not_swallowed_by_coalescing(ingest_client, tenant, drain, db, redis_conn, settings,
                                                        settings_timeout_s=2):
    """A coalesced job that outlives its timeout fails as RQ decides (it used to be caught and
    run again alone); the batches it claimed go back on the queue and are stored."""
    now = datetime.now(UTC).isoformat()
    for b in range(3):
        r = ingest_client.post("/api/v1/cdp/events", headers={"Authorization": f"Bearer {tenant.write_key}"},
                               json={"events": [{"event_name": "E", "event_time": now,
                                                 "identifiers": [{"type": "external_id", "value": f"t-{b}-{i}"}]}
                                                for i in range(5)]})
        assert r.status_code == 202
    queue = events_queue(redis_conn, settings.queue_name)
    first = queue.job_ids[0]
    redis_conn.hset(f"rq:job:{first}", "timeout", settings_timeout_s)
    locker = connect(settings.database_url, autocommit=False)
    locker.execute("LOCK TABLE event_keys IN EXCLUSIVE MODE")  # the first job waits on it past its timeout
    release = threading.Timer(settings_timeout_s + 2, locker.commit)
    release.start()
    try:
        failed = drain()
    finally:
        release.cancel()
        locker.close()
    assert failed == 1
    assert FailedJobRegistry(queue=queue).get_job_ids() == [first]
    assert "JobTimeoutException" in failed_jobs(settings, redis_conn)[0]["reason"]
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 10  # the two claimed batches
    assert redis_conn.keys("stratum:claimed:*") == []


@pytest.mark.parametrize(("exc", "split"), [
    (psycopg.errors.NumericValueOutOfRange(), True),
    (psycopg.errors.CheckViolation(), True),
    (psycopg.errors.UntranslatableCharacter(), True),
    (psycopg.errors.ProgramLimitExceeded(), True),
    (psycopg.DataError("client-side: cannot dump"), True),
    (ValueError("unexpected value"), True),
    (psycopg.errors.DiskFull(), False),
    (psycopg.errors.QueryCanceled(), False),
    (psycopg.errors.InternalError_(), False),
    (psycopg.errors.SerializationFailure(), False),
    (ServiceUnavailable(), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_only_errors_caused_by_the_data_split_a_batch(exc, split):
    """A full disk would fail every half alike: it must fail the job, not scatter it into
    one failed job per event."""
    calls = []

    def store(items):
        calls.append(list(items))
        if "bad" in items:
            raise exc
        return len(items)

    isolated = []
    items = ["a", "b", "bad", "c"]
    if split:
        assert persist_isolating(store, items, lambda i, e: isolated.append(i), lambda a, b: a + b, 0) == 3
        assert isolated == ["bad"]
    else:
        with pytest.raises(type(exc)):
            persist_isolating(store, items, lambda i, e: isolated.append(i), lambda a, b: a + b, 0)
        assert calls == [items] and isolated == []


def test_a_full_lock_table_stores_the_batch_in_halves():
    """Out of shared memory (in practice the lock table: an advisory lock per identifier):
    the batch is stored in halves that fit, and nothing is isolated; an event that still
    fails alone fails the job, as any error not caused by the data."""
    calls: list[list[str]] = []

    def store(items):
        calls.append(list(items))
        if len(items) > 2:
            raise psycopg.errors.OutOfMemory()
        return len(items)

    isolated: list[str] = []
    assert persist_isolating(store, list("abcdef"), lambda i, e: isolated.append(i), lambda a, b: a + b, 0) == 6
    assert isolated == [] and [len(c) for c in calls] == [6, 3, 1, 2, 3, 1, 2]

    def never_fits(items):
        raise psycopg.errors.OutOfMemory()

    with pytest.raises(psycopg.errors.OutOfMemory):
        persist_isolating(never_fits, ["a", "b"], lambda i, e: isolated.append(i), lambda a, b: a + b, 0)
    assert isolated == []


def test_a_round_with_more_identifiers_than_the_lock_table_holds_is_stored(worker_runtime, db, tenant):
    """A transaction takes an advisory lock per identifier; a round holding more distinct
    identifiers than the server's lock table (about max_locks_per_transaction x
    max_connections) is stored in smaller transactions instead of failing."""
    per_tx = int(db.execute("SHOW max_locks_per_transaction").fetchone()[0])
    conns = int(db.execute("SHOW max_connections").fetchone()[0])
    n = min(per_tx * conns * 3 // 2, 40_000)  # events, two identifiers each: beyond the table
    now = datetime.now(UTC)
    payloads = []
    for start in range(0, n, 500):
        events = [QueuedEvent(str(uuid.uuid4()), f"k{i}", "track", "Viewed", now, [("external_id", f"x{i}"),
                  ("email", f"u{i}@example.com")], {}, {}, {}, None, 0, []) for i in range(start, min(n, start + 500))]
        payloads.append(msgspec.msgpack.encode(QueuedBatch(QUEUE_FORMAT_VERSION, tenant.id, tenant.source_id,
                                                           "server", "US", now, "req", None, None, events)))
    out = jobs.persist_payloads(payloads)
    assert out["stored"] == n and out["isolated"] == 0
    assert db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone() == (n,)
