"""Prometheus metrics of the read API (summed over a server's processes: stratum.prometheus),
and the middleware that records them."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

from stratum.prometheus import render_metrics


class ReadMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("stratum_read_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "stratum_read_request_seconds", "Request latency (for streams: until the headers)",
            ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )

        # The labelled children by (route, method, status): ``labels()`` validates and joins
        # its arguments on every call, a noticeable share of a lookup; the set stays small
        # (route templates, not paths).
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return render_metrics(self.registry)


def metrics_middleware(app, metrics: ReadMetrics):
    """ASGI middleware: count and time every request, labelled by route template
    (``/api/v1/cdp/profiles/{profile_id}``), so ids cannot explode the label set."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_recording)
        finally:
            route = scope.get("path_template") or "other"
            metrics.observe(route, scope.get("method", ""), status[0], time.perf_counter() - started)

    return middleware
