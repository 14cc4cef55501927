"""Prometheus metrics that add up across the processes of one server.

``stratum ingest-api --workers N`` and ``read-api --workers N`` run N processes behind one
port, and a scrape reaches one of them at random, so per-process counters would jump
between scrapes. With more than one worker, the command gives the processes a shared
directory (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set before
the processes start): every process writes its values there, and whichever process
answers a scrape renders the sum over all of them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

# prometheus-client chooses where values live when it is first imported, so the serving
# command must not import it before the directory is set (granian may fork its workers);
# hence the imports inside render_metrics.

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics_between_processes(workers: int) -> str | None:
    """Before starting ``workers`` server processes: when more than one, create a fresh
    directory for their metric files and hand it to them through the environment they
    inherit. Returns the directory (the caller removes it when the server stops), or None."""
    if workers <= 1:
        return None
    directory = tempfile.mkdtemp(prefix="stratum-metrics-")
    os.environ[_MULTIPROC_ENV] = directory  # read by prometheus-client in each child, at import
    return directory


def render_metrics(registry: CollectorRegistry, live: Iterable[Collector] = ()) -> bytes:
    """The Prometheus text of ``registry``, or, when this process shares its metric files
    with its siblings, of all of them summed; ``live`` collectors (computed at scrape time,
    the same in every process) are added once."""
    from prometheus_client import CollectorRegistry, generate_latest, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if values.ValueClass is values.MutexValue:
        return generate_latest(registry)
    merged = CollectorRegistry()
    MultiProcessCollector(merged)
    for collector in live:
        merged.register(collector)
    return generate_latest(merged)
