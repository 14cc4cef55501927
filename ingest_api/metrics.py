"""Prometheus metrics of the ingest API (summed over a server's processes: stratum.prometheus;
see docs/OPERATIONS.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from stratum.prometheus import render_metrics


class IngestMetrics:
    def __init__(self, queue_collector: Collector | None = None) -> None:
        """``queue_collector`` (stratum.queue.metrics.QueueCollector) adds the queue's and
        the worker pool's metrics, read from Redis at scrape time."""
        self.registry = CollectorRegistry()
        self._live = [queue_collector] if queue_collector is not None else []
        for collector in self._live:
            self.registry.register(collector)
        self.requests = Counter("stratum_ingest_requests_total", "HTTP requests", ["route", "status"],
                                registry=self.registry)
        self.events = Counter("stratum_ingest_events_total", "Events by outcome", ["outcome"],
                              registry=self.registry)
        self.latency = Histogram(
            "stratum_ingest_request_seconds", "Request latency", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        # mostrecent: with processes sharing metric files, the latest reading of any of them
        self.queue_depth = Gauge("stratum_queue_depth", "Jobs waiting in the events queue", registry=self.registry,
                                 multiprocess_mode="mostrecent")
        self._accepted = self.events.labels("accepted")
        self._rejected = self.events.labels("rejected")
        self._duplicate = self.events.labels("duplicate")

    def count_events(self, accepted: int, rejected: int, duplicate: int) -> None:
        if accepted:
            self._accepted.inc(accepted)
        if rejected:
            self._rejected.inc(rejected)
        if duplicate:
            self._duplicate.inc(duplicate)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return render_metrics(self.registry, self._live)
