"""``stratum scheduler``: periodic upkeep (partitions ahead; later retention and reaping)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from stratum.db.connect import connect
from stratum.db.partitions import prepare_months_ahead
from stratum.settings import Settings

log = logging.getLogger("stratum.scheduler")


def run_periodic_jobs(settings: Settings) -> None:
    with connect(settings.database_url, autocommit=True) as conn:
        created = prepare_months_ahead(conn, datetime.now(UTC), settings.partitions_ahead_months)
        if created:
            log.info("created event partitions: %s", ", ".join(created))


def run_scheduler(settings: Settings, *, once: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            run_periodic_jobs(settings)
        except Exception:
            log.exception("periodic jobs failed; trying again in %.0fs", settings.scheduler_interval_s)
        if once or stop.wait(settings.scheduler_interval_s):
            return
