"""Coalescing claims (stratum/queue/claims.py): counted in events, and never lost.

Jobs are written by the ingest script itself (stratum/queue/writer.py), so the event
count the claims read is the one production writes.
"""

from __future__ import annotations

import uuid

import pytest
from redis import Redis
from rq.registry import StartedJobRegistry

from stratum.queue.claims import Coalescer, release_orphaned_claims
from stratum.queue.layout import (
    CLAIM_OWNERS_KEY,
    alive_key,
    claimed_key,
    events_queue,
    job_key,
    queue_key,
)
from stratum.queue.liveness import ALIVE_TTL_S, reap_abandoned_jobs
from stratum.queue.writer import ENQUEUE_SCRIPT, JobWriter, PendingEvent

FULL_BATCH = 1000


def _write_job(settings, redis_conn: Redis, n_events: int) -> str:
    """Queue a job of ``n_events`` events with the ingest script; return its id."""
    writer = JobWriter(settings.queue_name, settings.dedupe_window_s, settings.job_timeout_s,
                       settings.failed_job_ttl_s, high_water=0)
    job_id = str(uuid.uuid4())
    events = [PendingEvent(b"\xc0", str(uuid.uuid4()), None) for _ in range(n_events)]
    keys, args = writer.call(job_id, "tenant", "source", 0, b"\x9a", events, 1_700_000_000.0)
    status, queued, _ = redis_conn.register_script(ENQUEUE_SCRIPT)(keys=keys, args=args)
    assert (status, queued) == (b"queued", n_events)
    return job_id


def _start(settings, redis_conn: Redis, sizes: list[int]) -> tuple[str, list[str]]:
    """Queue jobs of ``sizes`` events; take the first off the queue as a worker would."""
    ids = [_write_job(settings, redis_conn, n) for n in sizes]
    assert redis_conn.lpop(queue_key(settings.queue_name)).decode() == ids[0]
    return ids[0], ids[1:]


@pytest.mark.parametrize(("sizes", "max_events", "n_claimed"), [
    ([1000] * 8, 5000, 4),  # a batch of 1000 events counts 1000: 1000 + 4 x 1000
    ([10] * 30, 100, 9),  # small batches: 10 + 9 x 10
    ([100, 300, 900, 100], 1000, 1),  # stops at the first that does not fit, order is kept
    ([1000, 10, 10], 500, 0),  # a batch above the limit runs alone
    ([5, 1000], 1000, 0),
])
def test_claims_count_events_not_jobs(settings, redis_conn, sizes, max_events, n_claimed):
    owner, queued = _start(settings, redis_conn, sizes)
    claimed = Coalescer(redis_conn).claim(queue_key(settings.queue_name), owner, max_events, FULL_BATCH)
    assert [job_id for job_id, _ in claimed] == queued[:n_claimed]
    assert [data for _, data in claimed] == [redis_conn.hget(job_key(j), "data") for j in queued[:n_claimed]]
    assert events_queue(redis_conn, settings.queue_name).job_ids == queued[n_claimed:]


def test_a_job_without_an_event_count_counts_as_a_full_batch(settings, redis_conn):
    """Jobs written without the count (by RQ's own enqueue) are assumed as large as allowed."""
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [10, 10])
    unknown = [queue.enqueue("workers.jobs.process_batch", b"x").id for _ in range(3)]
    # 10 + 10 + 1000 fits in 1100; a second unknown job does not
    claimed = Coalescer(redis_conn).claim(queue.key, owner, 1100, FULL_BATCH)
    assert [job_id for job_id, _ in claimed] == [queued[0], unknown[0]]
    assert queue.job_ids == unknown[1:]


def test_gone_jobs_are_dropped_from_the_queue_not_claimed(settings, redis_conn):
    owner, queued = _start(settings, redis_conn, [10, 10, 10, 10, 10])
    redis_conn.delete(job_key(queued[1]))
    claimed = Coalescer(redis_conn).claim(queue_key(settings.queue_name), owner, 30, FULL_BATCH)
    assert [job_id for job_id, _ in claimed] == [queued[0], queued[2]]
    assert events_queue(redis_conn, settings.queue_name).job_ids == [queued[3]]


def _run_on(redis_conn: Redis, job_id: str, worker_name: str, *, alive: bool) -> None:
    """Mark ``job_id`` started on ``worker_name`` as RQ does, with or without a heartbeat."""
    redis_conn.hset(job_key(job_id), mapping={"status": "started", "worker_name": worker_name})
    if alive:
        redis_conn.set(alive_key(worker_name), "1", ex=ALIVE_TTL_S)


def test_claims_never_expire(settings, redis_conn):
    owner, queued = _start(settings, redis_conn, [10, 10, 10])
    Coalescer(redis_conn).claim(queue_key(settings.queue_name), owner, 30, FULL_BATCH)
    assert redis_conn.smembers(claimed_key(owner)) == {j.encode() for j in queued[:2]}
    assert redis_conn.ttl(claimed_key(owner)) == -1, "claimed jobs would vanish when the claim expires"
    assert redis_conn.ttl(CLAIM_OWNERS_KEY) == -1
    assert redis_conn.hget(CLAIM_OWNERS_KEY, owner) == queue_key(settings.queue_name).encode()


@pytest.mark.parametrize("owner_state", ["started_on_dead_worker", "failed", "requeued", "gone"])
def test_claims_no_live_worker_runs_are_put_back_whatever_rqs_registries_say(settings, redis_conn, owner_state):
    """A dead worker's claims go back to the queue even when RQ no longer lists its job as
    started (RQ's own cleanup failed it, a timeout ended it, or its hash expired): the
    reaper walks the claim owners, not RQ's started registry, and claims have no expiry."""
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [10, 10, 10, 10])
    Coalescer(redis_conn).claim(queue.key, owner, 30, FULL_BATCH)
    _run_on(redis_conn, owner, "w-dead", alive=False)
    if owner_state == "failed":
        redis_conn.hset(job_key(owner), "status", "failed")
    elif owner_state == "requeued":
        redis_conn.hset(job_key(owner), "status", "queued")
    elif owner_state == "gone":
        redis_conn.delete(job_key(owner))
    assert StartedJobRegistry(queue=queue).count == 0  # nothing for a registry-driven reaper to find

    reap_abandoned_jobs(redis_conn, queue)
    assert sorted(queue.job_ids[:2]) == sorted(queued[:2]) and queue.job_ids[2:] == queued[2:]
    assert not redis_conn.exists(claimed_key(owner))
    assert not redis_conn.hexists(CLAIM_OWNERS_KEY, owner)


def test_claims_of_a_running_job_are_left_alone(settings, redis_conn):
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [10, 10, 10])
    coalescer = Coalescer(redis_conn)
    coalescer.claim(queue.key, owner, 30, FULL_BATCH)
    _run_on(redis_conn, owner, "w-alive", alive=True)
    assert release_orphaned_claims(redis_conn, queue.key) == []
    reap_abandoned_jobs(redis_conn, queue)
    assert queue.job_ids == queued[2:]
    assert redis_conn.scard(claimed_key(owner)) == 2
    # the worker commits the round, then ends the job: claimed jobs and the owner's record are gone
    coalescer.finish_round(owner, queued[:2], stored=queued[:2])
    assert coalescer.give_back(queue.key, owner) == 0
    assert not redis_conn.exists(claimed_key(owner), *(job_key(j) for j in queued[:2]))
    assert not redis_conn.hexists(CLAIM_OWNERS_KEY, owner)


def test_give_back_puts_claims_back_and_forgets_the_owner(settings, redis_conn):
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [10, 10, 10])
    coalescer = Coalescer(redis_conn)
    coalescer.claim(queue.key, owner, 30, FULL_BATCH)
    assert coalescer.give_back(queue.key, owner) == 2
    assert sorted(queue.job_ids[:2]) == sorted(queued[:2]) and queue.job_ids[2:] == queued[2:]
    assert not redis_conn.exists(claimed_key(owner), CLAIM_OWNERS_KEY)


def test_status_counts_claimed_jobs_as_started(settings, redis_conn):
    from stratum.queue.status import queue_status

    owner, queued = _start(settings, redis_conn, [10, 10, 10, 10])
    Coalescer(redis_conn).claim(queue_key(settings.queue_name), owner, 30, FULL_BATCH)
    counts = queue_status(settings, redis_conn)["queues"][settings.queue_name]
    assert (counts["queued"], counts["started"]) == (1, 2)  # the owner itself is not in a registry here


def test_a_later_round_claims_a_full_budget_without_the_owner(settings, redis_conn):
    """A job's next round (workers/jobs.py) takes up to the whole budget: the running job's
    own events were stored by its first round."""
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [1000] * 11)
    coalescer = Coalescer(redis_conn)
    first = coalescer.claim(queue.key, owner, 5000, FULL_BATCH)
    second = coalescer.claim(queue.key, owner, 5000, FULL_BATCH, with_owner=False)
    third = coalescer.claim(queue.key, owner, 5000, FULL_BATCH, with_owner=False)
    assert [len(first), len(second), len(third)] == [4, 5, 1]
    assert [j for j, _ in first + second + third] == queued
    assert redis_conn.scard(claimed_key(owner)) == 10


def test_a_finished_round_leaves_the_claim_and_is_never_given_back(settings, redis_conn):
    """Once a round committed, its jobs are deleted (a failed one keeps its hash for the
    failed registry) and leave the claim; a later failure gives back only the rest."""
    queue = events_queue(redis_conn, settings.queue_name)
    owner, queued = _start(settings, redis_conn, [10] * 7)
    coalescer = Coalescer(redis_conn)
    first = [j for j, _ in coalescer.claim(queue.key, owner, 30, FULL_BATCH)]
    second = [j for j, _ in coalescer.claim(queue.key, owner, 30, FULL_BATCH, with_owner=False)]
    assert (first, second) == (queued[:2], queued[2:5])
    coalescer.finish_round(owner, first, stored=first[:1])  # first[1]: failed, kept for the registry
    assert not redis_conn.exists(job_key(first[0]))
    assert redis_conn.exists(job_key(first[1]))
    assert redis_conn.smembers(claimed_key(owner)) == {j.encode() for j in second}
    assert redis_conn.hget(CLAIM_OWNERS_KEY, owner) == queue.key.encode(), "the claim stays open for the next round"
    assert coalescer.give_back(queue.key, owner) == 3
    assert sorted(queue.job_ids[:3]) == sorted(second) and queue.job_ids[3:] == queued[5:]
