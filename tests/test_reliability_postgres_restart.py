"""Reliability: PostgreSQL restarts (``pg_ctl restart -m fast``) in the middle of a run.

The test starts a PostgreSQL server of its own (own data folder under /tmp, own loopback
port; the shared server is never touched), migrates it, and runs the pipeline against it:
an ingest app (in-process) and a worker process (``python -m stratum.cli worker``). While
the worker holds a coalesced job, Postgres restarts; the fast shutdown disconnects every
client. Posts keep coming during the restart: each answer is a 2xx or a 503 with
``Retry-After`` (never a 500), and a client retrying on 503 gets every batch accepted. The
worker process must survive and go on with the next jobs by itself; a job that failed
meanwhile (its retries ran out while the server was down) is replayed with
``replay_failed``, the way an operator runs ``stratum replay-failed --all``. At the end every
event is stored exactly once and the identity graph is consistent.

To make sure the restart hits a job in flight (a coalesced job of 5,000 events takes about
0.3 s), the test holds an EXCLUSIVE lock on ``events`` until the restart: the worker waits
inside its transaction with its claims taken, and the shutdown cuts it there.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from conftest import make_tenant
from litestar.testing import TestClient
from rq.registry import FailedJobRegistry, StartedJobRegistry
from test_reliability_support import (
    ROOT,
    PrivatePostgres,
    assert_exact_and_consistent,
    assert_person_graph,
    claimed_keys,
    person_events,
    start_worker,
    stop_process,
    wait_until,
    worker_env,
)

from ingest_api.app import create_app
from stratum.cli import migrate
from stratum.queue import events_queue
from stratum.queue.status import replay_failed

pytestmark = pytest.mark.timeout(90)

N_PERSONS, ANON_PER_PERSON, PER_BATCH = 150, 3, 100
BEFORE, DURING_MAX, TOTAL_BATCHES = 40, 10, 60


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    try:
        pg.init_and_start()
        yield pg
    finally:
        pg.destroy()


def _post_until_accepted(client, write_key: str, batch: list[dict], statuses: list[int],
                         deadline: float) -> None:
    """POST one batch like a client that honours 503 + Retry-After (with a short pause)."""
    body = json.dumps({"events": batch})
    while True:
        started = time.monotonic()
        r = client.post("/api/v1/cdp/events", content=body,
                        headers={"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"})
        assert time.monotonic() - started < 15, "a post took longer than 15 s"
        statuses.append(r.status_code)
        if r.status_code == 202:
            out = r.json()
            assert out["rejected"] == 0 and out["accepted"] + out["duplicates"] == len(batch), out
            assert out["duplicates"] == 0, f"a batch answered 503 before was partly queued: {out}"
            return
        assert r.status_code == 503, f"{r.status_code}: {r.text}"
        assert int(r.headers["retry-after"]) > 0 and r.json()["code"], r.text
        assert time.monotonic() < deadline, "the ingest API did not accept posts again after the restart"
        time.sleep(0.2)


@pytest.mark.parametrize(("down_s", "max_failed"), [(0.0, None), (4.0, 3)], ids=["restart", "outage-4s"])
def test_postgres_restart_mid_run_loses_nothing_and_stores_nothing_twice(
        down_s, max_failed, private_pg, settings, redis_conn, tmp_path):
    """``restart``: pg_ctl restart -m fast (down well under a second here). ``outage-4s``:
    down for 4 s, longer than the worker's retries of one job (STRATUM_DB_RETRY_ATTEMPTS=5,
    about 1 s in all), so the job in flight may fail and is replayed. But a short outage must
    not fail the backlog: with each job retried for about a second (twice for a coalesced
    job: together, then alone), at most ``max_failed`` jobs can run out of retries in 4 s;
    the jobs queued behind them stay queued and run once Postgres is back."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    s = settings.replace(database_url=private_pg.url)
    migrate(s, quiet=True)
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        tenant = make_tenant(conn, source_type="server")
    events = person_events(rng, "pgr", N_PERSONS, ANON_PER_PERSON, n_events=TOTAL_BATCHES * PER_BATCH)
    batches = [events[i:i + PER_BATCH] for i in range(0, len(events), PER_BATCH)]
    queue = events_queue(redis_conn, s.queue_name)
    statuses: list[int] = []
    log = tmp_path / "worker.log"
    worker = None
    locker = psycopg.connect(private_pg.url)
    try:
        with TestClient(app=create_app(s)) as client:
            for batch in batches[:BEFORE]:
                _post_until_accepted(client, tenant.write_key, batch, statuses, time.monotonic() + 30)
            locker.execute("SET lock_timeout = '20s'")
            locker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            worker = start_worker(s, log)
            assert wait_until(lambda: StartedJobRegistry(queue=queue).count > 0, 20, 0.02), \
                "the worker never took a job"
            time.sleep(rng.uniform(0.05, 0.3))
            restart = subprocess.Popen(private_pg.restart_command(down_s), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                # Posts while Postgres goes down and comes back.
                sent = BEFORE
                deadline = time.monotonic() + 45
                while restart.poll() is None and sent < BEFORE + DURING_MAX and time.monotonic() < deadline:
                    _post_until_accepted(client, tenant.write_key, batches[sent], statuses, deadline)
                    sent += 1
                restart_out = restart.communicate(timeout=45)[0]
            finally:
                if restart.poll() is None:
                    restart.kill()
                    restart.wait(5)
            assert restart.returncode == 0, restart_out
            for batch in batches[sent:]:
                _post_until_accepted(client, tenant.write_key, batch, statuses, time.monotonic() + 30)
        print(f"statuses: {statuses.count(202)} x 202, {statuses.count(503)} x 503")

        # The worker survives the restart and works the queue off by itself.
        assert worker.poll() is None, f"the worker died with the restart: {log.read_text()[-3000:]}"
        assert wait_until(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0, 40, 0.1), \
            f"the worker did not drain the queue after the restart: {log.read_text()[-3000:]}"
        assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
    finally:
        with contextlib.suppress(psycopg.Error):
            locker.close()
        if worker is not None:
            stop_process(worker, signal.SIGTERM, timeout_s=30)

    failed = FailedJobRegistry(queue=queue).count
    print(f"jobs failed across the restart: {failed} of {len(batches)}")
    assert replay_failed(s, None, redis_conn) == failed
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "worker", "--burst"], cwd=ROOT,
                         env=worker_env(s), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode()[-3000:]
    assert FailedJobRegistry(queue=queue).count == 0 and queue.count == 0
    assert claimed_keys(redis_conn) == [], "coalescing claims left behind"
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        assert_exact_and_consistent(conn, tenant.id, len(events))
        assert_person_graph(conn, tenant.id, N_PERSONS, ANON_PER_PERSON)
    if max_failed is not None:
        assert failed <= max_failed, (
            f"{failed} of the {len(batches)} jobs were failed during a {down_s:.0f} s Postgres outage: "
            "the worker fails every job at once, without retrying, while the database is unreachable, "
            "so a short outage moves the whole backlog into the failed registry (it needs "
            "`stratum replay-failed`). workers/jobs.py persist_payloads calls rt.tenant_config() "
            "(a query) outside _persist_with_retry, so its OperationalError is never retried.")
