"""``stratum read-api --workers N`` serves the read API from N processes (CONTRACT 3), each
with its own pool, and a lookup answers through them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from test_read_support import auth, event, ingest_and_drain

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, key: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=auth(key))
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()


def test_read_api_workers_flag_starts_that_many_processes(settings, ingest_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Viewed", ("email", "procs@example.com")))
    port = _free_port()
    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url}
    proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", "read-api", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "2"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{base}/health", "")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "read API did not start"
            time.sleep(0.2)
        servers = [p for p in psutil.Process(proc.pid).children() if p.is_running()]
        assert len(servers) == 2, servers
        for _ in range(10):
            status, body = _get(f"{base}/api/v1/cdp/profiles?identifier_type=email&identifier_value=procs@example.com",
                                tenant.api_key)
            assert status == 200 and b'"identifiers"' in body
    finally:
        # The whole process group: killing only the main process would orphan its workers.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
