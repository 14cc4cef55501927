"""Coalescing claims (stratum/queue/claims.py): counted in events, and never lost.

Jobs are written by the ingest script itself (stratum/queue/writer.py), so the event
count the claims read is the one production writes.
"""

from __future__ import annotations

import uuid

import pytest
from redis import Redis

from stratum.queue.claims import Coalescer
from stratum.queue.layout import events_queue, job_key, queue_key
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
