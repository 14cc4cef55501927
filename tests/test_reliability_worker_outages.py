"""Reliability: a worker process rides out Redis and Postgres outages (issue 10.5).

- Redis goes down while the worker holds a job, and stays down while the job's database
  work commits: RQ's bookkeeping of the finished job (and its heartbeat) cannot reach
  Redis. The worker must not exit; once Redis is back on the same port and folder (the
  append-only file keeps the queue), the job is run again (idempotent) and the rest drained.
  Then Redis goes down again while the worker idles; once back, new work is taken.
- Postgres is down when the worker takes its jobs, for longer than the worker's retries of
  one job. No job may be failed for that: the job goes back on the queue, the worker waits
  for the database, and drains everything once it is back.

In both, every event is stored exactly once and nothing lands in the failed registry.
"""

from __future__ import annotations

import contextlib
import signal
import time
from datetime import UTC, datetime

import psycopg
import pytest
from conftest import make_tenant
from litestar.testing import TestClient
from redis import Redis
from rq.registry import FailedJobRegistry, StartedJobRegistry
from test_reliability_support import (
    PrivatePostgres,
    PrivateRedis,
    assert_exact_and_consistent,
    claimed_keys,
    start_worker,
    stop_process,
    wait_until,
)

from ingest_api.app import create_app
from stratum.cli import migrate
from stratum.db.connect import connect
from stratum.queue import events_queue

pytestmark = pytest.mark.timeout(120)

N_BATCHES, PER_BATCH = 12, 50


def _post_all(client, write_key: str, prefix: str) -> int:
    now = datetime.now(UTC).isoformat()
    for b in range(N_BATCHES):
        events = [{"event_name": "Viewed", "event_time": now, "idempotency_key": f"{prefix}-{b}-{i}",
                   "identifiers": [{"type": "external_id", "value": f"{prefix}-user-{(b * PER_BATCH + i) % 31}"},
                                   {"type": "anonymous_id", "value": f"{prefix}-anon-{b}-{i}"}]}
                  for i in range(PER_BATCH)]
        r = client.post("/api/v1/cdp/events", json={"events": events}, headers={"Authorization": f"Bearer {write_key}"})
        assert r.status_code == 202, r.text
    return N_BATCHES * PER_BATCH


def test_worker_survives_redis_going_down_while_it_finishes_a_job(settings, db, new_tenant, tmp_path):
    tenant = new_tenant(source_type="server")
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    s = settings.replace(redis_url=server.url)
    log = tmp_path / "worker.log"
    worker = None
    locker = connect(s.database_url, autocommit=False)
    try:
        with TestClient(app=create_app(s)) as client:
            total = _post_all(client, tenant.write_key, "rdo")
        with Redis.from_url(server.url) as r:
            queue = events_queue(r, s.queue_name)
            # Hold the worker inside its first transaction, so Redis can go away under it.
            locker.execute("LOCK TABLE event_keys IN EXCLUSIVE MODE")
            worker = start_worker(s, log)
            assert wait_until(lambda: StartedJobRegistry(queue=queue).count > 0, 30, 0.02), log.read_text()[-3000:]
        time.sleep(0.5)
        server.stop()
        locker.commit()  # the job commits, then finds Redis gone
        assert not wait_until(lambda: worker.poll() is not None, 4, 0.1), \
            f"the worker exited during the Redis outage: {log.read_text()[-3000:]}"
        server.start()
        with Redis.from_url(server.url) as r:
            queue = events_queue(r, s.queue_name)
            assert wait_until(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0
                              and not r.llen(f"{queue.key}:intermediate"), 60, 0.1), \
                f"the worker did not drain the queue after Redis came back: {log.read_text()[-3000:]}"
            assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
            assert FailedJobRegistry(queue=queue).count == 0
            assert claimed_keys(r) == []
        # Redis goes away again while the worker idles, then comes back with new work.
        server.stop()
        assert not wait_until(lambda: worker.poll() is not None, 3, 0.1), \
            f"the idle worker exited during the Redis outage: {log.read_text()[-3000:]}"
        server.start()
        with TestClient(app=create_app(s)) as client:
            total += _post_all(client, tenant.write_key, "rdo2")
        with Redis.from_url(server.url) as r:
            queue = events_queue(r, s.queue_name)
            assert wait_until(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0, 60, 0.1), \
                f"the worker did not take new jobs after Redis came back: {log.read_text()[-3000:]}"
            assert worker.poll() is None and FailedJobRegistry(queue=queue).count == 0
    finally:
        with contextlib.suppress(psycopg.Error):
            locker.close()
        if worker is not None:
            stop_process(worker, signal.SIGTERM, timeout_s=30)
        server.stop()
    assert_exact_and_consistent(db, tenant.id, total)


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    try:
        pg.init_and_start()
        yield pg
    finally:
        pg.destroy()


def test_worker_waits_out_a_postgres_outage_without_failing_jobs(private_pg, settings, redis_conn, tmp_path):
    s = settings.replace(database_url=private_pg.url)
    migrate(s, quiet=True)
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        tenant = make_tenant(conn, source_type="server")
    with TestClient(app=create_app(s)) as client:
        total = _post_all(client, tenant.write_key, "pgo")
    queue = events_queue(redis_conn, s.queue_name)
    assert queue.count == N_BATCHES
    private_pg._run("pg_ctl", "stop", "-D", str(private_pg.data), "-m", "fast", "-w", "-t", "30")
    log = tmp_path / "worker.log"
    # Two attempts (about 0.1 s) per job: without the wait, the whole backlog would be failed in a second.
    worker = start_worker(s, log, STRATUM_DB_RETRY_ATTEMPTS="2")
    try:
        assert not wait_until(lambda: worker.poll() is not None or FailedJobRegistry(queue=queue).count > 0, 5,
                              0.1), f"a job failed or the worker exited: {log.read_text()[-3000:]}"
        assert "Postgres unreachable" in log.read_text(), log.read_text()[-3000:]
        private_pg._run("pg_ctl", *private_pg._pg_ctl_args("start"))
        assert wait_until(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0, 60, 0.1), \
            f"the worker did not drain the queue after Postgres came back: {log.read_text()[-3000:]}"
        assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
    finally:
        stop_process(worker, signal.SIGTERM, timeout_s=30)
    assert FailedJobRegistry(queue=queue).count == 0
    assert claimed_keys(redis_conn) == []
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        assert_exact_and_consistent(conn, tenant.id, total)


def test_sigterm_ends_the_wait_for_postgres(private_pg, settings, redis_conn, tmp_path):
    """A worker waiting out an outage still stops on request, leaving its job queued."""
    s = settings.replace(database_url=private_pg.url)
    migrate(s, quiet=True)
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        tenant = make_tenant(conn, source_type="server")
    with TestClient(app=create_app(s)) as client:
        _post_all(client, tenant.write_key, "pgt")
    queue = events_queue(redis_conn, s.queue_name)
    private_pg._run("pg_ctl", "stop", "-D", str(private_pg.data), "-m", "fast", "-w", "-t", "30")
    log = tmp_path / "worker.log"
    worker = start_worker(s, log, STRATUM_DB_RETRY_ATTEMPTS="2")
    try:
        assert wait_until(lambda: "Postgres unreachable" in log.read_text(), 30, 0.1), log.read_text()[-3000:]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        stop_process(worker, signal.SIGKILL, timeout_s=5)
    assert queue.count == N_BATCHES and FailedJobRegistry(queue=queue).count == 0
    assert StartedJobRegistry(queue=queue).count == 0 and claimed_keys(redis_conn) == []
