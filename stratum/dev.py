"""``stratum dev``: the whole pipeline on one machine, for a first look and for demos.

Uses the configured Postgres and Redis when they answer, otherwise embedded ones
(stratum/services.py); migrates; starts ingest, read, N workers, the scheduler and the
delivery process as child processes (destinations may point at local receivers; a
STRATUM_SECRET_KEY is generated into the data directory when none is set); creates a demo
tenant and source; posts sample traffic; prints where to look. Ctrl-C (or SIGTERM) stops
every child, then the embedded services.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stratum.settings import Settings


def _wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _request(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                        **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def sample_events(now: datetime) -> dict:
    """A small native batch: an anonymous visit, a sign-up that links an email, a purchase."""
    t = [(now - timedelta(minutes=m)).isoformat() for m in (3, 2, 1)]
    anon = {"type": "anonymous_id", "value": "demo-anon-1"}
    return {"events": [
        {"event_name": "Page Viewed", "event_time": t[0], "identifiers": [anon],
         "properties": {"path": "/pricing"}, "context": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}},
        {"event_name": "Signed Up", "event_time": t[1],
         "identifiers": [anon, {"type": "email", "value": "Ada.Lovelace@Example.com"}],
         "traits": {"name": "Ada"}, "properties": {"plan": "pro"}, "consent": {"analytics": True, "email": True}},
        {"event_name": "Order Completed", "event_time": t[2], "idempotency_key": "demo-order-1001",
         "identifiers": [{"type": "email", "value": "ada.lovelace@example.com"}, {"type": "phone", "value": "(650) 555-1212"}],
         "properties": {"order_id": "1001", "total": 129.0, "currency": "USD"}},
    ]}


def segment_sample(now: datetime) -> dict:
    ts = now.isoformat()
    return {"batch": [
        {"type": "identify", "messageId": "demo-seg-1", "userId": "user-1001", "anonymousId": "demo-anon-1",
         "traits": {"email": "ada.lovelace@example.com", "plan": "pro"}, "timestamp": ts},
        {"type": "track", "messageId": "demo-seg-2", "userId": "user-1001", "event": "Feature Used",
         "properties": {"feature": "export"}, "timestamp": ts},
    ], "sentAt": ts}


def dev_secret_key(data_dir: Path) -> str:
    """STRATUM_SECRET_KEY for ``stratum dev`` when none is set: generated once and kept in
    ``<data_dir>/secret_key`` (owner-only), so identity secrets stored by one run still
    decrypt in the next."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()

    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


class _Children:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, *args: str) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", *args], env=self.env,
                                start_new_session=True)
        self.procs.append((name, proc))

    def dead(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_dev(settings: Settings, *, workers: int, data_dir: Path, check: bool = False) -> int:
    """Run until interrupted (or, with ``check``, until the demo is verified). Returns an exit code."""
    from stratum.cli import migrate
    from stratum.db.connect import connect
    from stratum.services import ensure_services

    data_dir.mkdir(parents=True, exist_ok=True)
    print("==> services")
    services = ensure_services(settings.database_url, settings.redis_url, data_dir)
    if services.embedded:
        print(f"    started embedded {', '.join(services.embedded)} (data in {data_dir}/)")
    settings = settings.replace(database_url=services.database_url, redis_url=services.redis_url,
                                secret_key=settings.secret_key or dev_secret_key(data_dir))
    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
           # local receivers are the point of a dev setup (CONTRACT 2)
           "STRATUM_DESTINATIONS_ALLOW_PRIVATE": "true", "STRATUM_SECRET_KEY": settings.secret_key}
    children = _Children(env)
    stopping = False

    def on_signal(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print("==> migrate")
        migrate(settings)
        ingest = f"http://{settings.ingest_host}:{settings.ingest_port}"
        read = f"http://{settings.read_host}:{settings.read_port}"
        print(f"==> starting ingest ({ingest}), read ({read}), {workers} worker(s), scheduler, deliver")
        children.start("ingest", "ingest-api")
        children.start("read", "read-api")
        for _ in range(workers):
            children.start("worker", "worker")
        children.start("scheduler", "scheduler")
        children.start("deliver", "deliver")
        if not (_wait_http(ingest + "/health", 30) and _wait_http(read + "/health", 30)):
            print(f"error: the APIs did not come up (dead: {children.dead()}); is port {settings.ingest_port} "
                  f"or {settings.read_port} taken? Set STRATUM_INGEST_PORT / STRATUM_READ_PORT.", file=sys.stderr)
            return 1

        print("==> demo tenant and source")
        from stratum.admin import create_source, create_tenant

        with connect(settings.database_url) as conn:
            tenant = create_tenant(conn, "demo")
            source = create_source(conn, tenant.owner_id, "demo website", "server", "US")
            conn.commit()
        auth = {"Authorization": f"Bearer {source.key}"}
        now = datetime.now(UTC)
        status, native = _request("POST", ingest + "/api/v1/cdp/events", sample_events(now), auth)
        print(f"    native batch: HTTP {status}, accepted={native.get('accepted')}")
        status, seg = _request("POST", ingest + "/v1/batch", segment_sample(now), auth)
        print(f"    Segment batch: HTTP {status} {seg}")

        lookup = f"{read}/api/v1/cdp/profiles?identifier_type=email&identifier_value=ada.lovelace@example.com"
        profile: dict = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, profile = _request("GET", lookup, headers={"Authorization": f"Bearer {tenant.key}"})
            if code == 200 and profile.get("counters", {}).get("events", 0) >= 3:
                break
            time.sleep(0.3)
        ok = profile.get("counters", {}).get("events", 0) >= 3
        print(f"    demo profile: {json.dumps(profile.get('counters'))} lifecycle={profile.get('lifecycle')}")
        print(f"""
Stratum CDP is running.
  ingest API   {ingest}      (OpenAPI: {ingest}/schema)
  read API     {read}      (OpenAPI: {read}/schema)
  web pages    {read}/cdp-calculator   {read}/profiles (tenant key)   {read}/ops (operator key)
  tenant id    {tenant.owner_id}
  tenant key   {tenant.key}
  write key    {source.key}

Try:
  curl -s -X POST {ingest}/api/v1/cdp/events -H 'Authorization: Bearer {source.key}' \\
    -d '{{"events":[{{"event_name":"Page Viewed","event_time":"{datetime.now(UTC).isoformat(timespec="seconds")}","identifiers":[{{"type":"email","value":"Grace@Example.com"}}]}}]}}'
  curl -s '{read}/api/v1/cdp/profiles?identifier_type=email&identifier_value=grace@example.com' \\
    -H 'Authorization: Bearer {tenant.key}'
  curl -s '{lookup}' -H 'Authorization: Bearer {tenant.key}'
  stratum status        # queues, workers, failures (with STRATUM_DATABASE_URL/REDIS_URL as above)
  stratum operator create ops   # an operator key for {read}/ops

Press Ctrl-C to stop.""", flush=True)
        if check:
            return 0 if ok else 1
        while not stopping:
            if dead := children.dead():
                print(f"error: {', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("==> stopping")
        children.stop()
        services.stop()
