"""deploy/grafana/stratum.json queries only metrics the processes export (CONTRACT 10):
every metric name in every PromQL expression appears in /metrics of the real ingest and
read apps, with a worker registered so the worker-pool series exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "stratum.json"

# PromQL functions, aggregations and keywords the dashboard may use; any other identifier
# left after removing strings, label matchers, ranges and grouping clauses is a metric name.
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
                "by", "without", "on", "ignoring", "and", "or", "unless", "offset", "clamp_min", "delta"}


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    return [t["expr"] for p in panels for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS}


def _sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_metric_names_are_parsed_from_promql():
    assert metric_names('histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a="b"}[5m])))') == {"x_bucket"}
    assert metric_names('max by (state) (q{state=~"a|b"}) / ignoring(x) y') == {"q", "y"}


def test_every_dashboard_metric_is_exported(settings, ingest_client, read_client, redis_conn):
    from workers.worker import build_worker

    worker = build_worker(settings, redis_conn)
    worker.register_birth()
    try:
        assert ingest_client.get("/health").status_code == 200
        assert read_client.get("/health").status_code == 200
        exported = _sample_names(ingest_client.get("/metrics").text) | _sample_names(read_client.get("/metrics").text)
    finally:
        worker.register_death()
    used = set()
    for expr in _expressions():
        names = metric_names(expr)
        assert names, expr
        used |= names
    assert used - exported == set(), f"queried but not exported: {sorted(used - exported)}"
    # the panels the operators' issue asks for
    for needed in ("stratum_ingest_events_total", "stratum_ingest_request_seconds_bucket", "stratum_queue_jobs",
                   "stratum_queue_oldest_age_seconds", "stratum_worker_jobs_total", "stratum_read_request_seconds_bucket"):
        assert needed in used, needed


def test_queue_metrics_report_a_failed_scrape_of_redis(settings):
    from prometheus_client import CollectorRegistry, generate_latest

    from stratum.queue.metrics import QueueCollector

    registry = CollectorRegistry()
    # nothing listens on port 1: the collector reports stratum_queue_up 0, never raises
    registry.register(QueueCollector(settings.replace(redis_url="redis://127.0.0.1:1/0")))
    text = generate_latest(registry).decode()
    assert "stratum_queue_up 0.0" in text
    assert "stratum_queue_jobs" not in text
