"""Reliability: SIGTERM to a worker that holds coalesced jobs (stratum/queue/claims.py).

tests/test_worker_failures.py::test_sigterm_finishes_the_current_job covers a plain job.
Here the worker is stopped while its job has claimed other queued batches: after the warm
shutdown every event is either stored or still queued (none lost in a claim, none half
written), no claim is left behind, and a burst worker then finishes the rest with exact
counts.

To make sure the SIGTERM lands inside a coalesced job (a job of 5,000 events takes about
0.3 s), the test holds an EXCLUSIVE lock on ``events`` so the worker waits inside its
transaction with its claims taken. ``blocked``: SIGTERM while it waits, then the lock is
released. ``racing``: the lock is released first and SIGTERM follows a few milliseconds
later, while the worker writes, commits or moves on to the next job.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from rq.registry import FailedJobRegistry, StartedJobRegistry
from test_reliability_support import (
    ROOT,
    assert_exact_and_consistent,
    assert_person_graph,
    claimed_keys,
    one,
    person_events,
    post_native,
    queued_events,
    start_worker,
    stop_process,
    wait_until,
    worker_env,
)

from stratum.queue import events_queue
from stratum.settings import libpq_url

pytestmark = pytest.mark.timeout(90)

N_PERSONS, ANON_PER_PERSON, BATCHES, PER_BATCH = 150, 3, 60, 100


@pytest.mark.parametrize("timing", ["blocked", "racing"])
def test_sigterm_with_claimed_jobs_keeps_every_event_stored_or_queued(
        timing, ingest_client, settings, redis_conn, db, new_tenant, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    tenant = new_tenant(source_type="server")
    events = person_events(rng, "term", N_PERSONS, ANON_PER_PERSON, n_events=BATCHES * PER_BATCH)
    posted = post_native(ingest_client, tenant.write_key, events, PER_BATCH)
    queue = events_queue(redis_conn, settings.queue_name)

    locker = psycopg.connect(libpq_url(settings.database_url))
    locker.execute("SET lock_timeout = '20s'")
    locker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        assert wait_until(lambda: StartedJobRegistry(queue=queue).count > 0 and claimed_keys(redis_conn), 20,
                          0.02), "the worker never held a coalesced job"
        claims_at_term = len(claimed_keys(redis_conn))
        if timing == "racing":
            locker.commit()
            time.sleep(rng.uniform(0.0, 0.2))
        worker.send_signal(signal.SIGTERM)
        locker.commit()
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        locker.close()
        stop_process(worker)
    print(f"{timing}: claims held at SIGTERM: {claims_at_term}")

    # After the warm shutdown: nothing half done, nothing lost.
    assert StartedJobRegistry(queue=queue).count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    assert claimed_keys(redis_conn) == [], "coalescing claims left behind by a clean shutdown"
    stored = one(db, "SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,))
    still_queued = queued_events(redis_conn, settings.queue_name)
    assert stored > 0, "the job the worker held was not finished"
    assert stored + still_queued == posted, f"stored {stored} + queued {still_queued} != posted {posted}"
    assert one(db, "SELECT count(*) FROM event_keys WHERE tenant_id = %s", (tenant.id,)) == stored

    # A burst worker finishes the rest.
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "worker", "--burst"], cwd=ROOT,
                         env=worker_env(settings), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode()[-3000:]
    assert queue.count == 0 and FailedJobRegistry(queue=queue).count == 0
    assert claimed_keys(redis_conn) == []
    assert_exact_and_consistent(db, tenant.id, posted)
    assert_person_graph(db, tenant.id, N_PERSONS, ANON_PER_PERSON)
