"""Running an RQ worker for the events queue."""

from __future__ import annotations

import logging

from redis import Redis
from rq import SimpleWorker

from stratum.queue import MsgpackSerializer, events_queue
from stratum.queue.liveness import Heartbeat
from stratum.settings import Settings
from workers import runtime

# RQ's worker key TTL between jobs. Liveness during jobs is stratum/queue/liveness.py's heartbeat.
WORKER_TTL_S = 20


def build_worker(settings: Settings, connection: Redis, queues: list[str] | None = None) -> SimpleWorker:
    """An RQ worker that runs jobs in its own process (no fork per job).

    Forking per job would cost a new database connection and cold caches for every batch;
    a crash of the process is covered by the reaper instead (jobs are idempotent).
    """
    names = queues or settings.worker_queues  # RQ takes them in order: the import lane last
    return SimpleWorker(
        [events_queue(connection, n) for n in names],
        connection=connection,
        serializer=MsgpackSerializer,
        worker_ttl=WORKER_TTL_S,
        job_monitoring_interval=5,
    )


def run_worker(settings: Settings, *, burst: bool = False, queues: list[str] | None = None) -> bool:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime.install(runtime.WorkerRuntime(settings))
    connection = Redis.from_url(settings.redis_url)
    worker = build_worker(settings, connection, queues)
    heartbeat = Heartbeat(Redis.from_url(settings.redis_url), worker.name).start()
    try:
        # SIGTERM: RQ finishes the current job, then exits (warm shutdown).
        return worker.work(burst=burst, logging_level="INFO")
    finally:
        heartbeat.stop()
