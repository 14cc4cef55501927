"""``stratum scheduler``: periodic upkeep (partitions ahead, retention, reaping jobs of dead workers)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from redis import Redis

from stratum.db.connect import connect
from stratum.db.partitions import drop_expired_partitions, prepare_months_ahead
from stratum.queue import events_queue
from stratum.queue.liveness import reap_abandoned_jobs
from stratum.settings import Settings
from workers.outbox import purge_expired_deliveries

log = logging.getLogger("stratum.scheduler")


def run_periodic_jobs(settings: Settings, redis: Redis) -> None:
    """One round of upkeep: abandoned jobs back on the queue, partitions ahead, retention."""
    queue = events_queue(redis, settings.queue_name)
    reap_abandoned_jobs(redis, queue)
    with connect(settings.database_url, autocommit=True) as conn:
        now = datetime.now(UTC)
        created = prepare_months_ahead(conn, now, settings.partitions_ahead_months)
        if created:
            log.info("created event partitions: %s", ", ".join(created))
        dropped = drop_expired_partitions(conn, now, settings.retention_months)
        if dropped:
            log.info("retention: dropped event partitions %s", ", ".join(dropped))
        purged = purge_expired_deliveries(conn)
        if purged:
            log.info("retention: deleted %d delivery records", purged)


def run_scheduler(settings: Settings, *, once: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    redis = Redis.from_url(settings.redis_url)
    while True:
        try:
            run_periodic_jobs(settings, redis)
        except Exception:
            log.exception("periodic jobs failed; trying again in %.0fs", settings.scheduler_interval_s)
        if once or stop.wait(settings.scheduler_interval_s):
            return
