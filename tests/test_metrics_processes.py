"""``stratum ingest-api --workers 2``: /metrics sums the counters of both processes
(prometheus-client multiprocess mode, stratum.prometheus), so every scrape, whichever
process answers it, reports every request the server handled."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
HEALTH_COUNT = re.compile(r'^stratum_ingest_requests_total\{route="/health",status="200"\} (\S+)$', re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    # a new connection per request, so requests spread over the server's processes
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Connection": "close"}), timeout=5) as r:
        return r.status, r.read().decode()


def test_ingest_metrics_add_up_across_worker_processes(settings, redis_conn, db):
    port = _free_port()
    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
           "STRATUM_QUEUE_NAME": settings.queue_name, "STRATUM_SECRET_KEY": "metrics-test-key"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", "ingest-api", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "2"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "ingest API did not start"
            time.sleep(0.2)
        assert len([p for p in psutil.Process(proc.pid).children() if p.is_running()]) == 2
        for _ in range(40):
            assert _get(f"{base}/health")[0] == 200
        for _ in range(6):
            status, text = _get(f"{base}/metrics")
            assert status == 200
            counts = HEALTH_COUNT.findall(text)
            assert counts == ["40.0"], counts
            assert "stratum_queue_up 1.0" in text and 'stratum_queue_jobs{queue="' in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
