"""Worker failure handling: kill -9 mid-run then automatic recovery by the reaper, SIGTERM
finishing the current job, poison batches going to the failed registry and replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from rq.registry import FailedJobRegistry, StartedJobRegistry

from stratum.queue import events_queue
from stratum.queue.liveness import alive_key, reap_abandoned_jobs


def _env(settings) -> dict[str, str]:
    return {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
            "STRATUM_QUEUE_NAME": settings.queue_name}


def _post_batches(client, tenant, n_batches: int, per_batch: int, prefix: str) -> int:
    now = datetime.now(UTC).isoformat()
    for b in range(n_batches):
        events = [{"event_name": "Viewed", "event_time": now, "idempotency_key": f"{prefix}-{b}-{i}",
                   "identifiers": [{"type": "anonymous_id", "value": f"{prefix}-anon-{(b * per_batch + i) % 97}"},
                                   {"type": "external_id", "value": f"{prefix}-user-{(b * per_batch + i) % 97}"}]}
                  for i in range(per_batch)]
        r = client.post("/api/v1/cdp/events", json={"events": events},
                        headers={"Authorization": f"Bearer {tenant.write_key}"})
        assert r.status_code == 202, r.text
    return n_batches * per_batch


def _wait(predicate, timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def test_jobs_of_a_killed_worker_run_again_with_exact_counts(ingest_client, tenant, settings, redis_conn, db, drain):
    total = _post_batches(ingest_client, tenant, n_batches=40, per_batch=100, prefix="k9")
    queue = events_queue(redis_conn, settings.queue_name)
    worker = subprocess.Popen([sys.executable, "-m", "stratum.cli", "worker"], env=_env(settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill it while it holds a job.
        assert _wait(lambda: StartedJobRegistry(queue=queue).count > 0, 30, 0.01), "worker never started a job"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    abandoned = StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
    assert abandoned, "the killed worker left no started job (it finished too fast to test)"
    # Its heartbeat key is still alive for up to ALIVE_TTL_S; the reaper waits for that.
    worker_keys = list(redis_conn.scan_iter("stratum:alive:*"))
    for k in worker_keys:
        redis_conn.expire(k, 1)  # fast-forward the TTL instead of sleeping 20 s
    assert _wait(lambda: not any(redis_conn.exists(k) for k in worker_keys), 5)
    requeued = reap_abandoned_jobs(redis_conn, queue)
    assert set(abandoned) <= set(requeued)
    assert drain() == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == total
    assert db.execute("SELECT count(*) FROM event_keys").fetchone()[0] == total
    assert db.execute("SELECT sum(event_count) FROM profiles WHERE merged_into IS NULL").fetchone()[0] == total
    assert db.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0] == 97


def test_reaper_leaves_jobs_of_live_workers_alone(settings, redis_conn):
    from rq.job import Job

    queue = events_queue(redis_conn, settings.queue_name)
    job = queue.enqueue("workers.jobs.process_batch", b"x")
    registry = StartedJobRegistry(queue=queue)
    redis_conn.zadd(registry.key, {f"{job.id}:exec-1": time.time() + 600})
    redis_conn.hset(Job.key_for(job.id), "worker_name", "w-alive")
    redis_conn.lrem(queue.key, 0, job.id)
    redis_conn.set(alive_key("w-alive"), "1", ex=20)
    assert reap_abandoned_jobs(redis_conn, queue) == []
    redis_conn.delete(alive_key("w-alive"))
    assert reap_abandoned_jobs(redis_conn, queue) == [job.id]
    assert queue.job_ids == [job.id]


def test_sigterm_finishes_the_current_job(ingest_client, tenant, settings, redis_conn, db):
    total = _post_batches(ingest_client, tenant, n_batches=30, per_batch=100, prefix="term")
    queue = events_queue(redis_conn, settings.queue_name)
    worker = subprocess.Popen([sys.executable, "-m", "stratum.cli", "worker"], env=_env(settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: StartedJobRegistry(queue=queue).count > 0, 30, 0.01)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    # Nothing half-done: no job left started, none failed; what ran is complete.
    assert StartedJobRegistry(queue=queue).count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert stored % 100 == 0 and 0 < stored <= total
    assert queue.count == (total - stored) // 100


def test_poison_batch_fails_alone_and_can_be_replayed(settings, redis_conn, db, drain, tenant, ingest_client):
    from stratum.queue.status import failed_jobs, replay_failed

    queue = events_queue(redis_conn, settings.queue_name)
    queue.enqueue("workers.jobs.process_batch", b"\x93not a batch", result_ttl=0)
    _post_batches(ingest_client, tenant, n_batches=1, per_batch=10, prefix="ok")
    assert drain() == 1
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 10
    failed = failed_jobs(settings, redis_conn)
    assert len(failed) == 1 and failed[0]["reason"]
    assert replay_failed(settings, None, redis_conn) == 1
    assert queue.count == 1
    assert drain() == 1  # still poison: fails again, and still alone


@pytest.mark.parametrize("burst", [True])
def test_worker_cli_burst_drains_and_exits_zero(ingest_client, tenant, settings, redis_conn, db, burst):
    total = _post_batches(ingest_client, tenant, n_batches=3, per_batch=10, prefix="burst")
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "worker", "--burst"], env=_env(settings),
                         capture_output=True, timeout=120)
    assert out.returncode == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == total
