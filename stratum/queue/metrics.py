"""Prometheus view of the queue and the worker pool, read from Redis at scrape time.

Workers have no HTTP port, so what they did is read from where RQ already records it:
the queue's registries (``stratum.queue.status``) and each live worker's job counters.
The ingest API's ``/metrics`` serves these (docs/OPERATIONS.md). Every ingest process
reports the same queue-wide values, so dashboards take ``max`` over instances, never ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from stratum.queue.status import queue_status, workers_status
from stratum.settings import Settings

# A scrape must answer even when Redis does not: fail fast and report stratum_queue_up 0.
_REDIS_TIMEOUT_S = 2.0


class QueueCollector(Collector):
    """Collects, on each scrape:

    - ``stratum_queue_up``: 1 when Redis answered, else 0 (and nothing below);
    - ``stratum_queue_jobs{queue,state}``: jobs queued, started, scheduled (waiting for a
      retry) and failed, as ``stratum status`` counts them;
    - ``stratum_queue_oldest_age_seconds{queue}``: age of the oldest queued job;
    - ``stratum_workers``: registered RQ workers;
    - ``stratum_worker_jobs_total{worker,outcome}``: jobs each live worker finished
      (``successful``) or failed; per worker, so each series only grows and
      ``sum(rate(...))`` is the pool's throughput. A job is one ingest batch.
    """

    def __init__(self, settings: Settings, connection: Redis | None = None) -> None:
        self._settings = settings
        self._connection = connection or Redis.from_url(
            settings.redis_url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S)

    def describe(self) -> list:
        return []  # collected live; nothing to check at registration

    def collect(self) -> Iterator:
        up = GaugeMetricFamily("stratum_queue_up", "1 when the queue's Redis answered this scrape")
        try:
            status = queue_status(self._settings, self._connection)
            workers = workers_status(self._settings, self._connection)
        except (RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("stratum_queue_jobs", "Jobs of the queue by state", labels=["queue", "state"])
        age = GaugeMetricFamily("stratum_queue_oldest_age_seconds", "Age of the oldest queued job",
                                labels=["queue"])
        for name, q in status["queues"].items():
            for state in ("queued", "started", "scheduled", "failed"):
                jobs.add_metric([name, state], q[state])
            age.add_metric([name], q["oldest_queued_age_s"])
        yield jobs
        yield age
        yield GaugeMetricFamily("stratum_workers", "Registered RQ workers", value=status["workers"])
        done = CounterMetricFamily("stratum_worker_jobs", "Jobs finished by each live worker",
                                   labels=["worker", "outcome"])
        for w in workers:
            done.add_metric([w["name"], "successful"], w["successful_jobs"] or 0)
            done.add_metric([w["name"], "failed"], w["failed_jobs"] or 0)
        yield done
