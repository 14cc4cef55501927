"""``stratum scheduler``: periodic jobs (reaping jobs of dead workers, partitions ahead,
retention, audience upkeep and refresh, churn, anomalies, and the emission of
segment.entered/exited and anomaly.detected to the outbox).

Each job runs on its own connection holding a session advisory lock named after the job
(``pg_try_advisory_lock``), so two schedulers never run one job at once: the second one
reports it ``skipped``. A job that fails is logged and reported ``error``; the others still
run. Each job has a period; ``--once`` runs every job once, whatever its period.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from redis import Redis

from stratum.db.connect import connect, scalar
from stratum.db.partitions import drop_expired_partitions, prepare_months_ahead
from stratum.queue import events_queue
from stratum.queue.liveness import reap_abandoned_jobs
from stratum.settings import Settings
from workers.audience_emit import emit_audience_messages
from workers.audience_jobs import (
    churn_profiles,
    detect_anomalies,
    refresh_audiences,
    upkeep_audiences,
)
from workers.outbox import purge_expired_deliveries

log = logging.getLogger("stratum.scheduler")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    run: Callable[[psycopg.Connection, Redis, Settings], object]  # what it returns is not used
    period_s: Callable[[Settings], float]


def _requeue_abandoned(_conn: psycopg.Connection, redis: Redis, settings: Settings) -> None:
    for name in settings.worker_queues:  # the events queue and the import lane
        reap_abandoned_jobs(redis, events_queue(redis, name))


def _partitions(conn: psycopg.Connection, _redis: Redis, settings: Settings) -> None:
    created = prepare_months_ahead(conn, datetime.now(UTC), settings.partitions_ahead_months)
    if created:
        log.info("created event partitions: %s", ", ".join(created))


def _retention(conn: psycopg.Connection, _redis: Redis, settings: Settings) -> None:
    dropped = drop_expired_partitions(conn, datetime.now(UTC), settings.retention_months)
    if dropped:
        log.info("retention: dropped event partitions %s", ", ".join(dropped))


def _delivery_retention(conn: psycopg.Connection, _redis: Redis, _settings: Settings) -> None:
    purged = purge_expired_deliveries(conn)
    if purged:
        log.info("retention: deleted %d delivery records", purged)


def _every_round(settings: Settings) -> float:
    return 0.0


JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("requeue_abandoned", _requeue_abandoned, _every_round),
    PeriodicJob("partitions", _partitions, _every_round),
    PeriodicJob("retention", _retention, _every_round),
    PeriodicJob("delivery_retention", _delivery_retention, _every_round),
    PeriodicJob("audience_upkeep", lambda c, r, s: upkeep_audiences(c, s, r), _every_round),
    PeriodicJob("audience_refresh", lambda c, _r, s: refresh_audiences(c, s), lambda s: s.audience_refresh_interval_s),
    PeriodicJob("churn", lambda c, _r, s: churn_profiles(c, s), lambda s: s.churn_interval_s),
    PeriodicJob("anomalies", lambda c, _r, s: detect_anomalies(c, s), lambda s: s.anomaly_interval_s),
    # Last, so the round's membership changes and anomalies leave in the same round.
    PeriodicJob("audience_emit", lambda c, r, _s: emit_audience_messages(c, r), _every_round),
)


def run_job(job: PeriodicJob, settings: Settings, redis: Redis) -> str:
    """Run one job under its advisory lock: ``"ok"``, ``"skipped"`` (another scheduler holds
    it) or ``"error"`` (logged)."""
    try:
        with connect(settings.database_url, autocommit=True) as conn:
            locked = scalar(conn, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                            (f"stratum-scheduler:{job.name}",))
            if not locked:
                return "skipped"
            job.run(conn, redis, settings)
            # Closing the connection releases the lock, also when the job failed.
        return "ok"
    except Exception:
        log.exception("periodic job %s failed", job.name)
        return "error"


def run_periodic_jobs(settings: Settings, redis: Redis, last_run: dict[str, float] | None = None) -> dict[str, str]:
    """One round: every job whose period has passed since ``last_run`` (all when it is None).
    Returns ``{job name: "ok" | "skipped" | "error"}`` for the jobs that were due."""
    results: dict[str, str] = {}
    for job in JOBS:
        now = time.monotonic()
        if last_run is not None and now - last_run.get(job.name, float("-inf")) < job.period_s(settings):
            continue
        results[job.name] = run_job(job, settings, redis)
        if last_run is not None and results[job.name] == "ok":
            last_run[job.name] = now
    return results


def run_scheduler(settings: Settings, *, once: bool = False) -> dict[str, str]:
    """Run rounds every STRATUM_SCHEDULER_INTERVAL_S until SIGINT/SIGTERM; with ``once``, one
    round of every job, returning its results."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redis = Redis.from_url(settings.redis_url)
    if once:
        return run_periodic_jobs(settings, redis)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    last_run: dict[str, float] = {}
    log.info("scheduler started: a round every %s s", settings.scheduler_interval_s)
    while True:
        run_periodic_jobs(settings, redis, last_run)
        if stop.wait(settings.scheduler_interval_s):
            return {}
