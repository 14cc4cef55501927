"""A job runs rounds back to back (workers/jobs.py): while one round's statements wait for
Postgres, the job's thread claims and prepares the next in steps (stratum/db/overlap.py). Every event is stored once, each
round's jobs are deleted once it committed, and a failure gives back only what no round
committed."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from rq.registry import FailedJobRegistry

from stratum.queue import events_queue
from stratum.queue.layout import CLAIM_OWNERS_KEY, job_key
from workers import jobs
from workers.outages import ServiceUnavailable


def _post(client, tenant, prefix: str, n: int) -> list[str]:
    events = [{"event_name": "Viewed", "event_time": datetime.now(UTC).isoformat(),
               "identifiers": [{"type": "external_id", "value": f"{prefix}-{i % 13}"}]} for i in range(n)]
    r = client.post("/api/v1/cdp/events", json={"events": events},
                    headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text
    return [x["event_id"] for x in r.json()["results"]]


@pytest.fixture
def small_rounds(settings, worker_runtime):
    """Rounds of at most 40 events (two batches of 20), at most 3 per job."""
    worker_runtime.settings = settings.replace(worker_coalesce_max_events=40, worker_rounds_per_job=3)
    return worker_runtime


def _queue_batches(ingest_client, tenant, n_batches: int) -> list[str]:
    ids: list[str] = []
    for b in range(n_batches):
        ids += _post(ingest_client, tenant, f"r{b}", 20)
    return ids


def test_a_job_runs_rounds_and_stores_everything_once(ingest_client, tenant, drain, db, redis_conn, settings,
                                                      small_rounds, monkeypatch):
    rounds: list[int] = []
    real = jobs._persist_round

    def counting(rt, rnd, *args, **kw):
        rounds.append(sum(len(items) for items in rnd.by_tenant.values()))
        return real(rt, rnd, *args, **kw)

    monkeypatch.setattr(jobs, "_persist_round", counting)
    ids = _queue_batches(ingest_client, tenant, 9)  # 180 events: 40 + 40 + 40, then a second job
    assert drain() == 0
    assert rounds == [40, 40, 40, 40, 20], "rounds of 40 events, at most three per job"
    stored = db.execute("SELECT event_id::text FROM events").fetchall()
    assert sorted(r[0] for r in stored) == sorted(ids)
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == 180
    assert redis_conn.keys("stratum:claimed:*") == [] and not redis_conn.exists(CLAIM_OWNERS_KEY)
    assert events_queue(redis_conn, settings.queue_name).count == 0


def test_one_round_per_job_prepares_nothing_ahead(ingest_client, tenant, drain, db, settings, worker_runtime,
                                                  monkeypatch):
    worker_runtime.settings = settings.replace(worker_coalesce_max_events=40, worker_rounds_per_job=1)
    sides: list[bool] = []
    real = jobs._prepare_steps
    monkeypatch.setattr(jobs, "_prepare_steps", lambda *a, side=False, **kw: sides.append(side) or real(*a, side=side, **kw))
    _queue_batches(ingest_client, tenant, 5)
    assert drain() == 0
    assert sides == [False, False, False], "three jobs of one round each, all prepared on the job's thread"
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 100


def test_an_outage_in_a_later_round_gives_back_only_what_was_not_stored(
        ingest_client, tenant, db, redis_conn, settings, small_rounds, monkeypatch):
    """Round 2's transaction fails: round 1 stays stored and its coalesced job deleted;
    round 2's jobs and the round prepared ahead go back to the queue, with the running job
    itself (RQ requeues it; its events, stored by round 1, are duplicates when it runs
    again), and a later run stores the rest exactly once."""
    from workers.worker import build_worker

    calls = {"n": 0}
    real = jobs._persist_prepared

    def failing_second(rt, rnd, sink, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ServiceUnavailable("database unreachable (test)")
        return real(rt, rnd, sink, **kw)

    monkeypatch.setattr(jobs, "_persist_prepared", failing_second)
    ids = _queue_batches(ingest_client, tenant, 8)
    queue = events_queue(redis_conn, settings.queue_name)
    all_jobs = list(queue.job_ids)
    worker = build_worker(settings, redis_conn)
    monkeypatch.setattr(worker, "until_database_answers", lambda: None)
    worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 40, "round 1 committed"
    assert not redis_conn.exists(job_key(all_jobs[1])), "round 1's coalesced job is deleted"
    assert sorted(queue.job_ids) == sorted([all_jobs[0], *all_jobs[2:]]), "everything else is queued again"
    assert redis_conn.keys("stratum:claimed:*") == []

    monkeypatch.setattr(jobs, "_persist_prepared", real)
    build_worker(settings, redis_conn).work(burst=True, logging_level="WARNING")
    assert FailedJobRegistry(queue=queue).count == 0
    stored = [r[0] for r in db.execute("SELECT event_id::text FROM events").fetchall()]
    assert sorted(stored) == sorted(ids)
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == 160, "nothing counted twice"


def test_a_warm_shutdown_starts_no_further_round(ingest_client, tenant, drain, db, settings, small_rounds,
                                                 monkeypatch):
    """SIGTERM while a round runs (ResilientWorker.request_stop sets the flag): the job
    stores that round and the one already prepared ahead, and claims nothing more."""
    sides: list[bool] = []
    real_prepare, real_persist = jobs._prepare_steps, jobs._persist_round
    monkeypatch.setattr(jobs, "_prepare_steps",
                        lambda *a, side=False, **kw: sides.append(side) or real_prepare(*a, side=side, **kw))

    def stop_during_first(rt, *args, **kw):
        rt.stop_requested = True
        return real_persist(rt, *args, **kw)

    monkeypatch.setattr(jobs, "_persist_round", stop_during_first)
    _queue_batches(ingest_client, tenant, 9)
    assert drain() == 0
    # job 1: its own round, then the one prepared ahead; the three jobs after: one round each
    assert sides == [False, True, False, False, False]
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 180


def test_the_next_round_is_prepared_while_the_statements_wait(ingest_client, tenant, drain, db, small_rounds,
                                                             monkeypatch):
    """The round prepared ahead is prepared in steps, and its steps run inside the job
    connection's waits for Postgres (not only after the round, when ``result`` finishes it)."""
    from stratum.db import overlap

    in_waits = {"steps": 0}
    real_step = overlap.Overlap.step

    def counting_step(self):
        conn = small_rounds._conn  # the job's connection: a statement in flight?
        if conn is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE:
            in_waits["steps"] += 1
        return real_step(self)

    monkeypatch.setattr(overlap.Overlap, "step", counting_step)
    _queue_batches(ingest_client, tenant, 6)
    assert drain() == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 120
    assert in_waits["steps"] > 0, "no step of a round prepared ahead ran while a statement waited"


def test_a_preparation_that_fails_ahead_fails_after_the_round_it_overlapped(
        ingest_client, tenant, db, redis_conn, settings, small_rounds, monkeypatch):
    """An outage met while the next round is prepared (here its claim) does not disturb the
    transaction whose waits it ran in: that round commits, then the job ends as for an
    outage, giving back what the preparation claimed, and a later run stores every event
    exactly once."""
    from workers.worker import build_worker

    calls = {"n": 0}
    real = jobs._claim_and_prepare

    def failing_first(rt, claim, sink):
        calls["n"] += 1
        if calls["n"] == 1:
            claim(with_owner=False)  # claims, then the database is lost
            yield
            raise ServiceUnavailable("database unreachable (test)")
        return (yield from real(rt, claim, sink))

    monkeypatch.setattr(jobs, "_claim_and_prepare", failing_first)
    ids = _queue_batches(ingest_client, tenant, 8)
    worker = build_worker(settings, redis_conn)
    monkeypatch.setattr(worker, "until_database_answers", lambda: None)
    worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    assert calls["n"] == 1
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 40, "the first round committed"
    assert redis_conn.keys("stratum:claimed:*") == [], "what the failed preparation claimed went back"

    build_worker(settings, redis_conn).work(burst=True, logging_level="WARNING")
    assert FailedJobRegistry(queue=events_queue(redis_conn, settings.queue_name)).count == 0
    stored = [r[0] for r in db.execute("SELECT event_id::text FROM events").fetchall()]
    assert sorted(stored) == sorted(ids)
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == 160
    assert not redis_conn.exists(CLAIM_OWNERS_KEY)


def test_a_job_timeout_met_while_preparing_ahead_loses_nothing(
        ingest_client, tenant, db, redis_conn, settings, small_rounds, monkeypatch):
    """RQ's job timeout fires while a step of the next round runs (inside a wait of the
    current round's statements): it is raised once that round has committed, the job
    fails as timed out, what the preparation claimed goes back, both connections are
    dropped (the timeout may have cut a side query short), and a later run stores every
    event exactly once."""
    from rq.timeouts import JobTimeoutException

    from workers.worker import build_worker

    calls = {"n": 0}
    real = jobs._claim_and_prepare

    def timing_out_first(rt, claim, sink):
        calls["n"] += 1
        if calls["n"] == 1:
            rt.side_connection()  # the preparation had opened its side connection
            claim(with_owner=False)
            yield
            raise JobTimeoutException("Task exceeded maximum timeout value (test)")
        return (yield from real(rt, claim, sink))

    monkeypatch.setattr(jobs, "_claim_and_prepare", timing_out_first)
    ids = _queue_batches(ingest_client, tenant, 8)
    queue = events_queue(redis_conn, settings.queue_name)
    first_job = queue.job_ids[0]
    build_worker(settings, redis_conn).work(burst=True, max_jobs=1, logging_level="WARNING")
    assert calls["n"] == 1
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 40, "the round it overlapped committed"
    assert redis_conn.keys("stratum:claimed:*") == [], "what the preparation claimed went back"
    assert first_job in FailedJobRegistry(queue=queue).get_job_ids(), "the job failed as timed out"
    assert small_rounds._conn is None and small_rounds._side is None, "both connections were dropped"

    build_worker(settings, redis_conn).work(burst=True, logging_level="WARNING")
    stored = [r[0] for r in db.execute("SELECT event_id::text FROM events").fetchall()]
    assert sorted(stored) == sorted(ids), "every event stored, none twice"
    assert db.execute("SELECT sum(event_count) FROM profiles").fetchone()[0] == 160
    assert not redis_conn.exists(CLAIM_OWNERS_KEY)


def test_a_burst_worker_leaves_no_pubsub_thread_behind(settings, redis_conn, monkeypatch):
    """A worker's exit stops its pubsub thread before leaving the channel, so the thread
    ends on the reply instead of going back to a 60 s wait that RQ's join gives up on.
    Telling the thread to stop is slowed down here, as a busy process may be: left in
    RQ's order (leave, then stop), the reply would already have been read."""
    import time as _time

    from redis.client import PubSubWorkerThread

    from workers.worker import build_worker

    real_stop = PubSubWorkerThread.stop

    def slow_stop(self):
        _time.sleep(0.2)
        real_stop(self)

    monkeypatch.setattr(PubSubWorkerThread, "stop", slow_stop)
    worker = build_worker(settings, redis_conn)
    threads: list = []
    real_unsubscribe = type(worker).unsubscribe

    def unsubscribe():
        threads.append(worker.pubsub_thread)
        real_unsubscribe(worker)

    monkeypatch.setattr(worker, "unsubscribe", unsubscribe)
    worker.work(burst=True, logging_level="WARNING")
    assert threads and threads[0] is not None, "the worker subscribed"
    assert not threads[0].is_alive(), "the pubsub thread ended before the worker exited"
