"""Knowing which workers are alive, and re-running the jobs of dead ones (the reaper).

RQ's own signal is the worker key's TTL, but a ``SimpleWorker`` stretches it to the job
timeout + 60 s while a job runs, and RQ's cleanup of abandoned jobs runs only every
maintenance interval (ten minutes). So each worker process also runs a small heartbeat
thread refreshing ``stratum:alive:{worker}`` every ``HEARTBEAT_INTERVAL_S``; a worker
killed with ``kill -9`` stops refreshing and its key expires after ``ALIVE_TTL_S``. The
scheduler's reaper then puts that worker's started jobs back on the queue, so they run
again well within a minute, together with the jobs they had claimed for coalescing
(``stratum/queue/claims.py``). Running a job twice is safe: processing is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from redis import Redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from stratum.queue.claims import release_claims, release_orphaned_claims
from stratum.queue.layout import alive_key, intermediate_key, job_key, stranded_key

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
ALIVE_TTL_S = 20
# A worker moves a dequeued job from RQ's intermediate list into the started registry
# within milliseconds; one still sitting there after this long lost its worker.
INTERMEDIATE_GRACE_S = 10.0


class Heartbeat:
    """Background thread keeping ``alive_key(worker_name)`` fresh while the process lives."""

    def __init__(self, connection: Redis, worker_name: str) -> None:
        self._redis = connection
        self._key = alive_key(worker_name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stratum-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def _beat(self) -> None:
        try:
            self._redis.set(self._key, "1", ex=ALIVE_TTL_S)
        except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself goes on
            log.warning("heartbeat to Redis failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):  # the key expires by itself anyway
            self._redis.delete(self._key)


def reap_abandoned_jobs(connection: Redis, queue: Queue) -> list[str]:
    """Requeue started jobs whose worker is no longer alive, and jobs stranded between
    dequeue and start; return their ids. The jobs such jobs (or any job no live worker
    runs) had claimed for coalescing go back to the queue as well."""
    registry = StartedJobRegistry(queue=queue)
    requeued: list[str] = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        job = Job.fetch(job_id, connection=connection, serializer=queue.serializer) if connection.exists(
            job_key(job_id)) else None
        entry = f"{job_id}:{execution_id}" if execution_id else job_id
        if job is None:
            connection.zrem(registry.key, entry)
            continue
        if job.worker_name and connection.exists(alive_key(job.worker_name)):
            continue
        if not connection.zrem(registry.key, entry):
            continue  # the worker finished it meanwhile, or another reaper took it
        if execution_id:
            # Drop the dead execution everywhere RQ lists it; a stale listing would make the
            # job's next, successful run fail when RQ looks the execution up.
            execution = Execution.from_composite_key(entry, connection)
            with contextlib.suppress(ValueError):
                execution.refresh()
            with connection.pipeline() as pipe:
                execution.delete(job, pipe)
                pipe.execute()
        release_claims(connection, queue.key, job_id)  # batches it had coalesced
        queue.enqueue_job(job, at_front=True)
        requeued.append(job_id)
        log.warning("requeued job %s abandoned by dead worker %s", job_id, job.worker_name)
    requeued += reap_stranded_jobs(connection, queue)
    release_orphaned_claims(connection, queue.key)
    return requeued


def reap_stranded_jobs(connection: Redis, queue: Queue, now: float | None = None) -> list[str]:
    """Requeue jobs left in RQ's intermediate list by a worker killed between dequeuing a
    job and starting it (RQ itself would only fail them, ten minutes later). A job is
    requeued once it has been seen there for ``INTERMEDIATE_GRACE_S``."""
    now = time.time() if now is None else now
    started = {job_id for job_id, _ in StartedJobRegistry(queue=queue).get_job_and_execution_ids(cleanup=False)}
    requeued: list[str] = []
    for raw in connection.lrange(intermediate_key(queue.key), 0, -1):
        job_id = raw.decode()
        marker = stranded_key(job_id)
        if job_id in started:
            connection.delete(marker)
            continue
        connection.set(marker, str(now), nx=True, ex=600)
        first_seen = float(connection.get(marker) or now)
        if now - first_seen < INTERMEDIATE_GRACE_S:
            continue
        if not connection.lrem(intermediate_key(queue.key), 1, job_id):
            continue  # started or requeued meanwhile
        connection.delete(marker)
        if connection.exists(job_key(job_id)):
            queue.enqueue_job(Job.fetch(job_id, connection=connection, serializer=queue.serializer), at_front=True)
            requeued.append(job_id)
            log.warning("requeued job %s stranded between dequeue and start", job_id)
    return requeued
