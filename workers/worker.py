"""Running an RQ worker for the events queue, through outages of Redis and Postgres.

RQ's ``SimpleWorker`` waits for Redis only while it waits for a job: a Redis error anywhere
else (the heartbeat after a job, the suspension check, maintenance, the bookkeeping of a
finishing job) ends its work loop, and the process exits. ``ResilientWorker`` waits
instead, with backoff, as long as the outage lasts. A job cut short by an outage (its
bookkeeping failed, or its own retries ran out: ``ServiceUnavailable``) is not failed: once
Redis answers it goes back to the front of its queue, with the batches it had coalesced,
and the worker waits for the database before it takes the next job. Running a job again is
safe: processing is idempotent. A stop request (SIGTERM) ends any wait; a job left started
then is requeued by the reaper once this worker's liveness key expires.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import psycopg
from redis import Redis
from redis.client import Pipeline, PubSubWorkerThread
from rq import SimpleWorker, worker_registration
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from stratum.queue import MsgpackSerializer, events_queue
from stratum.queue.claims import release_claims
from stratum.queue.liveness import Heartbeat
from stratum.settings import Settings
from workers import runtime
from workers.failed_jobs import scrub_failed_job
from workers.outages import REDIS_OUTAGE, ServiceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# RQ's worker key TTL between jobs. Liveness during jobs is stratum/queue/liveness.py's heartbeat.
WORKER_TTL_S = 20
# Waiting for a service that does not answer: 0.5 s doubling up to 10 s, with jitter.
OUTAGE_BACKOFF_START_S = 0.5
OUTAGE_BACKOFF_MAX_S = 10.0


class _JobInterrupted(Exception):
    """A job met an outage (its ``__cause__``); it is requeued, not failed."""


class ResilientWorker(SimpleWorker):
    """A ``SimpleWorker`` that never exits because Redis or Postgres blinked."""

    def _backoff(self, delay: float, what: str, exc: BaseException, since: float | None) -> float:
        if self._stop_requested:
            raise StopRequested from exc
        if since is None:
            self.log.warning("Worker %s: %s unreachable (%s); waiting for it", self.name, what, type(exc).__name__)
        time.sleep(delay * (0.5 + random.random() / 2))
        return min(OUTAGE_BACKOFF_MAX_S, delay * 2)

    def until_redis_answers(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried with backoff for as long as Redis is unreachable."""
        delay, since = OUTAGE_BACKOFF_START_S, None
        while True:
            try:
                result = fn()
            except REDIS_OUTAGE as exc:
                delay = self._backoff(delay, "Redis", exc, since)
                since = since or time.monotonic()
                continue
            if since is not None:
                self.log.warning("Worker %s: Redis answers again after %.1fs", self.name, time.monotonic() - since)
                self._register_again()
            return result

    def until_database_answers(self) -> None:
        """Return once the worker's database connection answers a query."""
        rt = runtime.current()
        delay, since = OUTAGE_BACKOFF_START_S, None
        while True:
            try:
                rt.connection().execute("SELECT 1")
            except psycopg.Error as exc:
                rt.reset_connection()
                delay = self._backoff(delay, "Postgres", exc, since)
                since = since or time.monotonic()
                continue
            if since is not None:
                self.log.warning("Worker %s: Postgres answers again after %.1fs", self.name, time.monotonic() - since)
            return

    def _register_again(self) -> None:
        """After an outage Redis may have lost this worker's key (no persistence, or it
        expired meanwhile): write it again so ``stratum status`` counts this worker."""
        with contextlib.suppress(*REDIS_OUTAGE), self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    # Every Redis call of RQ's work loop outside its dequeue wait, made to wait for Redis.
    def register_birth(self) -> None:
        self.until_redis_answers(super().register_birth)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        return self.until_redis_answers(lambda: SimpleWorker.heartbeat(self, timeout))

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline)
        return self.until_redis_answers(lambda: SimpleWorker.set_state(self, state))

    def check_for_suspension(self, burst: bool) -> None:
        self.until_redis_answers(lambda: SimpleWorker.check_for_suspension(self, burst))

    def run_maintenance_tasks(self) -> None:
        self.until_redis_answers(super().run_maintenance_tasks)

    def request_stop(self, signum: Any, frame: Any) -> None:
        """Warm shutdown: the running job finishes its current round (and the one prepared
        ahead) instead of all of its rounds (workers/jobs.py)."""
        runtime.current().stop_requested = True
        super().request_stop(signum, frame)

    def unsubscribe(self) -> None:
        """Stop the pubsub thread before leaving the channel. RQ leaves first: when the
        thread reads the reply before it is told to stop, it goes back to waiting up to
        60 s for a subscription, and the worker's exit waits out the whole second of RQ's
        join timeout (seen in a burst worker's profile). Told first, the reply ends its
        loop."""
        # RQ declares the attribute as None only; subscribe() sets the thread
        thread = cast("PubSubWorkerThread | None", self.pubsub_thread)
        if thread is not None:
            thread.stop()
        super().unsubscribe()

    def set_shutdown_requested_date(self) -> None:
        with contextlib.suppress(*REDIS_OUTAGE):  # runs in the signal handler: never block there
            super().set_shutdown_requested_date()

    def register_death(self) -> None:
        try:
            super().register_death()
        except REDIS_OUTAGE:  # stopping during an outage: the key expires by itself
            self.log.warning("Worker %s: Redis unreachable, could not record the stop", self.name)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """A job that failed because of an outage is not failed: hand it to ``execute_job``."""
        exc = exc_info[1]
        if isinstance(exc, (ServiceUnavailable, *REDIS_OUTAGE)):
            raise _JobInterrupted from exc
        super().handle_exception(job, *exc_info)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except (_JobInterrupted, *REDIS_OUTAGE) as exc:
            cause = exc.__cause__ if isinstance(exc, _JobInterrupted) else exc
            self.log.warning("Worker %s: job %s interrupted by an outage (%s); it goes back on the queue",
                             self.name, job.id, type(cause).__name__)
            self.until_redis_answers(lambda: self._requeue_interrupted(job, queue))
            if isinstance(cause, ServiceUnavailable):
                self.until_database_answers()
            self.set_state(WorkerStatus.IDLE)

    def _requeue_interrupted(self, job: Job, queue: Queue) -> None:
        """Undo this worker's hold on ``job`` and put it at the front of its queue, with the
        batches it had claimed. Safe to repeat."""
        executions = [x for x in self.executions.values() if x.job_id == job.id]
        with self.connection.pipeline() as pipe:
            for execution in executions:
                execution.delete(job=job, pipeline=pipe)
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            pipe.execute()
        for execution in executions:  # forgotten only once Redis has them deleted
            self.executions.pop(execution.id, None)
        release_claims(self.connection, queue.key, job.id)
        if self.connection.exists(job.key) and self.connection.lpos(queue.key, job.id) is None:
            queue.enqueue_job(job, at_front=True)


def build_worker(settings: Settings, connection: Redis, queues: list[str] | None = None) -> ResilientWorker:
    """An RQ worker that runs jobs in its own process (no fork per job).

    Forking per job would cost a new database connection and cold caches for every batch;
    a crash of the process is covered by the reaper instead (jobs are idempotent).
    """
    names = queues or settings.worker_queues  # RQ takes them in order: the import lane last
    return ResilientWorker(
        [events_queue(connection, n) for n in names],
        connection=connection,
        serializer=MsgpackSerializer,
        worker_ttl=WORKER_TTL_S,
        job_monitoring_interval=5,
        # a failed job keeps only its scrubbed batch (CONTRACT 6)
        exception_handlers=[scrub_failed_job],
    )


# A batch allocates hundreds of thousands of short-lived objects (decoded events, rows,
# plans) next to a large long-lived heap (imports, the identifier memo, RQ and psycopg
# state). With Python's default thresholds (700, 10, 10) the collector ran about 1,500
# times per 30,000 events and took about 30% of the worker's CPU, mostly re-scanning
# objects that never become garbage. Nothing in a batch's data forms reference cycles
# that must be freed early, so collections can be rarer. At 50,000 a collection still ran
# every few hundred events and scanned the round being prepared ahead, about 10% of the
# worker's CPU (0.26 s per 40,000 events); at 500,000, 0.03 s, with the same peak memory
# (docs/PERFORMANCE.md, "Deferring, not waiting").
GC_THRESHOLDS = (500_000, 20, 10)


def tune_garbage_collection() -> None:
    """Move everything alive now (imports, settings, connections) out of the collector's
    reach (``gc.freeze``) and collect young objects every ``GC_THRESHOLDS[0]`` net
    allocations instead of 700. Call once, after start-up, before the first job."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings, *, burst: bool = False, queues: list[str] | None = None) -> bool:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.install(runtime.WorkerRuntime(settings))
    connection = Redis.from_url(settings.redis_url)
    worker = build_worker(settings, connection, queues)
    tune_garbage_collection()
    heartbeat = Heartbeat(Redis.from_url(settings.redis_url), worker.name).start()
    try:
        # SIGTERM: RQ finishes the current job, then exits (warm shutdown).
        return worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        heartbeat.stop()
