"""Reliability: workers killed with ``kill -9`` again and again during a load run.

60 batches of 100 events are queued first, and 5 more batches arrive every round. Two worker
processes (``python -m stratum.cli worker``) run at a time; each round one of them is killed
with SIGKILL and replaced, 4 to 6 times. The reaper (stratum/queue/liveness.py) puts the jobs of
dead workers back on the queue, together with the batches they had claimed for coalescing
(stratum/queue/claims.py). At the end every event is stored exactly once, the identity graph is
consistent, and no coalescing claim is left behind.

A worker persists a coalesced job of 5,000 events in about 0.3 s, so a kill after a random
delay would mostly hit an idle worker. To make the kills land inside jobs, the test holds
an EXCLUSIVE lock on ``events`` while it waits for the kill: the workers then sit inside
their transaction (dedupe keys inserted, profiles written, COPY into ``events`` waiting),
holding their job and its claimed batches. Each round picks the timing at random: kill
while blocked, then release the lock; or release the lock first and kill a few
milliseconds later, while the worker writes and commits.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time

import psycopg
import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from test_reliability_support import (
    assert_exact_and_consistent,
    assert_person_graph,
    claimed_keys,
    person_events,
    post_native,
    rq_worker_name,
    start_worker,
    stop_process,
    wait_until,
)

from stratum.queue import events_queue
from stratum.queue.liveness import ALIVE_TTL_S, alive_key, reap_abandoned_jobs
from stratum.settings import libpq_url

pytestmark = pytest.mark.timeout(90)

N_PERSONS, ANON_PER_PERSON = 200, 3
INITIAL_BATCHES, BATCHES_PER_ROUND, PER_BATCH, MAX_ROUNDS = 60, 5, 100, 6


def _busy_worker_names(redis, queue) -> set[str]:
    """Names of the workers holding a started job of the queue."""
    names = set()
    for job_id in StartedJobRegistry(queue=queue).get_job_ids(cleanup=False):
        name = redis.hget(Job.key_for(job_id), "worker_name")
        if name:
            names.add(name.decode())
    return names


def _fast_forward_death(redis, worker_name: str | None) -> None:
    """In production the heartbeat key of a killed worker expires after ALIVE_TTL_S (20 s)
    and the scheduler reaps every STRATUM_SCHEDULER_INTERVAL_S (10 s), so its jobs run again
    within about 30 s. Here the key gets a 1 s TTL instead of waiting 20 s."""
    if worker_name:
        redis.expire(alive_key(worker_name), 1)


def _reap_dead(redis, queue, killed: list[str]) -> list[str]:
    """The scheduler's reaping, once the killed workers' heartbeat keys are gone."""
    assert wait_until(lambda: not any(redis.exists(alive_key(n)) for n in killed), 5), \
        "heartbeat keys of killed workers did not expire"
    return reap_abandoned_jobs(redis, queue)


def test_repeated_kill9_of_workers_loses_nothing_and_stores_nothing_twice(
        ingest_client, settings, redis_conn, db, drain, new_tenant, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed={seed}")
    tenant = new_tenant(source_type="server")
    rounds = rng.randint(4, MAX_ROUNDS)
    n_total = (INITIAL_BATCHES + rounds * BATCHES_PER_ROUND) * PER_BATCH
    events = person_events(rng, "k9", N_PERSONS, ANON_PER_PERSON, n_events=n_total)
    posted = post_native(ingest_client, tenant.write_key, events[:INITIAL_BATCHES * PER_BATCH], PER_BATCH)
    queue = events_queue(redis_conn, settings.queue_name)
    assert queue.count == INITIAL_BATCHES

    locker = psycopg.connect(libpq_url(settings.database_url))
    locker.execute("SET lock_timeout = '20s'")
    log = tmp_path / "workers.log"
    live: list = []
    killed: list[str] = []
    history: list[str] = []
    kills_while_busy = kills_with_claims = requeued = 0
    started = time.monotonic()
    try:
        locker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        live = [start_worker(settings, log) for _ in range(2)]
        for r in range(rounds):
            if r:
                locker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                requeued += len(_reap_dead(redis_conn, queue, killed))
            chunk = events[posted:posted + BATCHES_PER_ROUND * PER_BATCH]
            posted += post_native(ingest_client, tenant.write_key, chunk, PER_BATCH)

            def live_busy() -> set[str]:
                names = {rq_worker_name(redis_conn, w.pid) for w in live}
                return _busy_worker_names(redis_conn, queue) & names

            assert wait_until(lambda: bool(live_busy()), 20, 0.02), f"round {r}: no worker took a job"
            racing = r > 0 and rng.random() < 0.5
            if racing:  # release first: the kill lands while the worker writes or commits
                locker.commit()
                time.sleep(rng.uniform(0.0, 0.15))
            else:
                time.sleep(rng.uniform(0.02, 0.3))
            busy = _busy_worker_names(redis_conn, queue)
            names = {w.pid: rq_worker_name(redis_conn, w.pid) for w in live}
            victim = rng.choice([w for w in live if names[w.pid] in busy] or live)
            claims = len(claimed_keys(redis_conn))
            stop_process(victim, signal.SIGKILL)
            locker.commit()
            live.remove(victim)
            was_busy = names[victim.pid] in busy
            kills_while_busy += was_busy
            kills_with_claims += was_busy and claims > 0
            history.append(f"round {r}: {'racing' if racing else 'blocked'} kill, busy={was_busy}, "
                           f"claims held={claims}")
            if names[victim.pid]:
                killed.append(names[victim.pid])
            _fast_forward_death(redis_conn, names[victim.pid])
            live.append(start_worker(settings, log))
    finally:
        with contextlib.suppress(psycopg.Error):
            locker.rollback()
        locker.close()
        # The survivors stop the graceful way (they finish their current job).
        for w in live:
            stop_process(w, signal.SIGTERM, timeout_s=30)
    elapsed = time.monotonic() - started
    print(f"{rounds} kills, {kills_while_busy} of a busy worker, {requeued} jobs reaped in the loop, "
          f"{elapsed:.1f}s: {history}")
    assert posted == n_total
    assert kills_while_busy >= 1, f"no kill hit a worker holding a job: {history}"
    assert kills_with_claims >= 1, f"no kill hit a worker holding coalescing claims: {history}"

    # Recovery: the killed workers' heartbeat keys expire (fast-forwarded above), then the
    # reaper requeues whatever they still held, claimed batches included.
    _reap_dead(redis_conn, queue, killed)
    assert drain() == 0
    assert FailedJobRegistry(queue=queue).count == 0
    assert StartedJobRegistry(queue=queue).count == 0
    assert queue.count == 0
    stuck = redis_conn.lrange(queue.intermediate_queue_key, 0, -1)
    assert stuck == [], f"jobs dequeued by killed workers but never run again: {stuck}"
    assert claimed_keys(redis_conn) == [], "coalescing claims left behind"

    assert_exact_and_consistent(db, tenant.id, n_total)
    assert_person_graph(db, tenant.id, N_PERSONS, ANON_PER_PERSON)


def test_job_dequeued_by_a_worker_killed_before_it_started_runs_again(
        ingest_client, settings, redis_conn, db, drain, new_tenant):
    """A worker killed right after RQ dequeued a job, before the job entered the started
    registry. RQ 3 dequeues with BLMOVE from the queue into ``rq:queue:NAME:intermediate``
    and only then records the execution (StartedJobRegistry) and the worker name, so for a
    moment the job is in neither the queue nor the started registry. The state such a kill
    leaves is made here directly (one LMOVE, as RQ's dequeue does), since the window is too
    short to hit with a real kill reliably.

    The reaper (stratum/queue/liveness.py reap_abandoned_jobs, run by the scheduler) looks only
    at the started registry, so it never requeues this job; ``stratum status`` counts it
    nowhere; RQ's own maintenance (every 10 minutes, in some worker) moves it to the failed
    registry after a minute or more, where it waits for ``stratum replay-failed``. Expected:
    like any job of a dead worker, it runs again by itself within ALIVE_TTL_S plus a
    scheduler round."""
    tenant = new_tenant(source_type="server")
    total = post_native(ingest_client, tenant.write_key,
                        person_events(random.Random(7), "im", 10, 2, n_events=100), per_batch=100)
    queue = events_queue(redis_conn, settings.queue_name)
    job_id = redis_conn.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    assert job_id is not None and queue.count == 0

    def recovered() -> bool:
        reap_abandoned_jobs(redis_conn, queue)  # the scheduler's round
        drain()  # the workers
        return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == total

    assert wait_until(recovered, ALIVE_TTL_S + 5, 0.5), (
        f"job {job_id.decode()} stayed in {queue.intermediate_queue_key} (queued: {queue.count}, started: "
        f"{StartedJobRegistry(queue=queue).count}, failed: {FailedJobRegistry(queue=queue).count}): its "
        f"{total} events are not stored and nothing requeues them")
    assert redis_conn.llen(queue.intermediate_queue_key) == 0
    assert_exact_and_consistent(db, tenant.id, total)
