"""Queueing accepted events: one call of the queue's job writer script per request.

The script, its keys and the job layout are ``stratum/queue/writer.py``'s; this is the
ingest API's asyncio side of it.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from stratum.queue.layout import queue_key
from stratum.queue.writer import (
    ENQUEUE_SCRIPT,
    EnqueueResult,
    JobWriter,
    PendingEvent,
    enqueue_result,
)

__all__ = ["BatchEnqueuer", "EnqueueResult", "PendingEvent"]


class BatchEnqueuer:
    """Writes accepted events as one RQ job. The Redis connection is passed in."""

    def __init__(self, redis: Redis, queue_name: str, *, dedupe_window_s: int, job_timeout_s: int,
                 failed_job_ttl_s: int, high_water: int) -> None:
        self._redis = redis
        self._script = redis.register_script(ENQUEUE_SCRIPT)
        self._queue_key = queue_key(queue_name)
        self._writer = JobWriter(queue_name, dedupe_window_s, job_timeout_s, failed_job_ttl_s, high_water)

    async def enqueue(self, job_id: str, tenant_id: str, source_id: str, rate_limit: int,
                      header: bytes, events: list[PendingEvent]) -> EnqueueResult:
        """Queue ``events`` as one job unless the queue is full or the source is over
        ``rate_limit`` events per second (0: no limit); a batch is never split."""
        keys, args = self._writer.call(job_id, tenant_id, source_id, rate_limit, header, events, time.time())
        return enqueue_result(await self._script(keys=keys, args=args), len(events))

    async def queue_depth(self) -> int:
        return int(await self._redis.llen(self._queue_key))
