"""Shared bench plumbing: a separate database and Redis db, child processes, results file."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

BENCH_DB_URL = os.environ.get("STRATUM_BENCH_DATABASE_URL", "postgresql:///stratum_bench")
BENCH_REDIS_URL = os.environ.get("STRATUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")


@dataclass
class BenchEnv:
    database_url: str
    redis_url: str
    queue_name: str = "stratum-bench-events"
    procs: list[subprocess.Popen] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "STRATUM_DATABASE_URL": self.database_url, "STRATUM_REDIS_URL": self.redis_url,
                "STRATUM_QUEUE_NAME": self.queue_name, "STRATUM_DEFAULT_RATE_LIMIT_PER_S": "0",
                "STRATUM_QUEUE_HIGH_WATER": "0", **extra}

    def start(self, *args: str, env: dict | None = None, log: IO[bytes] | None = None) -> subprocess.Popen:
        """``log``: where the process's output goes (discarded by default)."""
        out = log if log is not None else subprocess.DEVNULL
        p = subprocess.Popen(list(args), env=env or self.env(), cwd=ROOT, stdout=out,
                             stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stratum(self, *args: str, env: dict | None = None, log: IO[bytes] | None = None) -> subprocess.Popen:
        return self.start(sys.executable, "-m", "stratum.cli", *args, env=env, log=log)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)


def prepare(fresh: bool = True) -> BenchEnv:
    """Services up (embedded if needed), bench database migrated and emptied, Redis db flushed."""
    from stratum.cli import migrate
    from stratum.db.connect import database_name
    from stratum.services import ensure_services
    from stratum.settings import Settings, libpq_url

    svc = ensure_services(BENCH_DB_URL, BENCH_REDIS_URL, ROOT / ".stratum" / "bench")
    env = BenchEnv(svc.database_url, svc.redis_url)
    name = database_name(env.database_url)
    assert "bench" in name, f"refusing to use database {name!r} for a benchmark"
    if fresh:
        admin = psycopg.conninfo.make_conninfo(libpq_url(env.database_url), dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    migrate(Settings(database_url=env.database_url, redis_url=env.redis_url), quiet=True)
    env.redis().flushdb()
    return env


def create_source(env: BenchEnv, source_type: str = "server") -> tuple[str, str, str]:
    """(tenant_id, tenant api key, write key) of a fresh bench tenant."""
    from stratum.admin import create_source as _create_source
    from stratum.admin import create_tenant
    from stratum.db.connect import connect

    with connect(env.database_url) as conn:
        t = create_tenant(conn, "bench")
        s = _create_source(conn, t.owner_id, "bench", source_type, "US")
        conn.commit()
    return str(t.owner_id), t.key, s.key


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                **data}, indent=2))
    return path


def table(rows: list[tuple[str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)
