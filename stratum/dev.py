"""``stratum dev``: the whole pipeline on one machine, for a first look and for demos.

1. Refuses to start, in one line and exit 2, when the ingest or read port is taken (a plain
   bind, as the servers themselves bind: stratum/api_server.py).
2. Uses the configured Postgres and Redis when they answer, otherwise (or with
   ``--embedded``, always) embedded ones (stratum/services.py), and prints the URLs it uses
   as ``STRATUM_DATABASE_URL=...`` / ``STRATUM_REDIS_URL=...`` lines and one ``export``
   line to paste into another terminal. A STRATUM_SECRET_KEY is generated into the data
   directory when none is set.
3. Migrates; starts ingest, read, N workers, the scheduler and the delivery process as
   child processes (destinations may point at local receivers), their output prefixed by
   process name (``ingest | ...``) and at log level WARNING unless STRATUM_LOG_LEVEL says
   otherwise, so job chatter does not bury the keys.
4. Creates the demo tenant and source, or reuses them (stratum/dev_demo.py); posts sample
   traffic; prints where to look.
5. Ctrl-C (or SIGTERM) stops every child, then the embedded services it started, and says
   so in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stratum.settings import Settings


def _wait_http(url: str, timeout_s: float, failed=lambda: False) -> bool:
    """True once ``url`` answers 200; False after ``timeout_s`` or as soon as ``failed()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not failed():
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


class _Output:
    """Standard output shared by this process and the children's relays: one writer at a
    time, so a child's line never lands inside the block of keys."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.muted = False  # once stopping, the children's goodbyes are not relayed

    def print(self, text: str = "", *, file=None) -> None:
        with self.lock:
            print(text, file=file or sys.stdout, flush=True)

    def relay(self, name: str, stream) -> None:
        """Copy ``stream`` (a child's output) line by line as ``name | line`` until it closes."""
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not self.muted:
                self.print(f"{name} | {line}")
        stream.close()


class _Children:
    def __init__(self, env: dict[str, str], out: _Output) -> None:
        self.env = env
        self.out = out
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.relays: list[threading.Thread] = []

    def start(self, name: str, *args: str) -> None:
        # Own session: Ctrl-C in the terminal reaches ``stratum dev`` only, which stops the
        # children in order.
        proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", *args], env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        relay = threading.Thread(target=self.out.relay, args=(name, proc.stdout), daemon=True)
        relay.start()
        self.procs.append((name, proc))
        self.relays.append(relay)

    def dead(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is not None]

    def summary(self) -> str:
        """``ingest, read, 2 workers, scheduler, deliver``: what was started, in order."""
        names = [name for name, _ in self.procs]
        parts: list[str] = []
        for name in dict.fromkeys(names):
            n = names.count(name)
            parts.append(f"{n} {name}s" if n > 1 else name)
        return ", ".join(parts)

    def stop(self, timeout_s: float = 15.0) -> None:
        self.out.muted = True
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
        for relay in self.relays:
            relay.join(1.0)


def ports_taken(settings: Settings) -> str | None:
    """The line to print when the ingest or read port cannot be bound; None when both can."""
    from stratum.api_server import PortInUse, check_port_free

    for api, var, flag, host, port in (
            ("ingest API", "STRATUM_INGEST_PORT", "--ingest-port", settings.ingest_host, settings.ingest_port),
            ("read API", "STRATUM_READ_PORT", "--read-port", settings.read_host, settings.read_port)):
        try:
            check_port_free(host, port)
        except PortInUse as exc:
            return (f"cannot serve the {api} on {host}:{port}: {exc.reason} (another stratum dev?); "
                    f"stop it, or choose another port with {flag} or {var}")
    return None


def service_lines(database_url: str, redis_url: str, secret_file: Path | None) -> list[str]:
    """The URLs as ``NAME=value`` lines, then one ``export`` line for another terminal (the
    secret key by reference to its file, so it is not echoed)."""
    lines = [f"STRATUM_DATABASE_URL={shlex.quote(database_url)}", f"STRATUM_REDIS_URL={shlex.quote(redis_url)}"]
    export = "export " + " ".join(lines)
    if secret_file is not None:
        export += f' STRATUM_SECRET_KEY="$(cat {shlex.quote(str(secret_file))})"'
    return [*lines, export]


def run_dev(settings: Settings, *, workers: int, data_dir: Path, check: bool = False,
            embedded: bool = False) -> int:
    """Run until interrupted (or, with ``check``, until the demo is verified). Returns an exit
    code: 0, 1 when the pipeline failed, 2 when a port is taken, 3 when Postgres or Redis
    cannot be had."""
    out = _Output()
    if problem := ports_taken(settings):
        out.print(f"error: {problem}", file=sys.stderr)
        return 2
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    services, children, interrupted = None, None, False
    try:
        with _interrupt_on_signals():
            try:
                services, settings, urls = _services(settings, out, data_dir, embedded)
            except RuntimeError as exc:  # neither a configured nor an embedded server to be had
                out.print(f"error: {exc}", file=sys.stderr)
                return 3
            children = _Children(_child_env(settings), out)
            return _run(settings, out, children, workers=workers, data_dir=data_dir, check=check, urls=urls)
    except KeyboardInterrupt:
        interrupted = True
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if children is not None:
            children.stop()
        if services is not None:
            services.stop()
        if services is not None or interrupted:  # (not after a failure to get the services)
            out.print(_stopped_line(children, services, data_dir))


def _services(settings: Settings, out: _Output, data_dir: Path, embedded: bool):
    """(services, settings pointing at them, the URL lines printed)."""
    from stratum.services import ensure_services

    out.print("==> services")
    configured_db, configured_redis = settings.database_url, settings.redis_url
    services = ensure_services(settings.database_url, settings.redis_url, data_dir, force_embedded=embedded,
                               notify=lambda line: out.print(f"    {line}"))
    secret_file = None if settings.secret_key else data_dir / "secret_key"
    settings = settings.replace(database_url=services.database_url, redis_url=services.redis_url,
                                secret_key=settings.secret_key or dev_secret_key(data_dir))
    def origin(name: str, configured: str, used: str) -> str:
        if name.lower() in services.embedded:
            return f"{name} embedded, started now (data in {data_dir}/)"
        return f"{name} embedded, already running" if used != configured else f"{name} as configured"

    out.print(f"    {origin('Postgres', configured_db, services.database_url)}; "
              f"{origin('Redis', configured_redis, services.redis_url)}")
    urls = service_lines(settings.database_url, settings.redis_url, secret_file)
    for line in urls:
        out.print(line)
    return services, settings, urls


def _child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
            "STRATUM_INGEST_HOST": settings.ingest_host, "STRATUM_INGEST_PORT": str(settings.ingest_port),
            "STRATUM_READ_HOST": settings.read_host, "STRATUM_READ_PORT": str(settings.read_port),
            # job-by-job INFO lines would bury the keys; STRATUM_LOG_LEVEL=INFO brings them back
            "STRATUM_LOG_LEVEL": os.environ.get("STRATUM_LOG_LEVEL") or "WARNING",
            "PYTHONUNBUFFERED": "1",  # lines reach the relay as they are written
            # local receivers are the point of a dev setup (CONTRACT 2)
            "STRATUM_DESTINATIONS_ALLOW_PRIVATE": "true", "STRATUM_SECRET_KEY": settings.secret_key or ""}


@contextlib.contextmanager
def _interrupt_on_signals():
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so startup
    waits end at once too (run_dev then ignores further signals while it stops everything)."""
    def interrupt(*_):
        raise KeyboardInterrupt

    saved = [(sig, signal.signal(sig, interrupt)) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        yield
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)


def _stopped_line(children: _Children | None, services, data_dir: Path) -> str:
    stopped = (children.summary() if children else "") or "no process had started"
    if services is None:
        return f"stopped: {stopped}"
    if services.embedded:
        return (f"stopped: {stopped}; embedded {' and '.join(services.embedded)} (data kept in {data_dir}/)")
    return f"stopped: {stopped}; Postgres and Redis were not started here and keep running"


def _run(settings: Settings, out: _Output, children: _Children, *, workers: int, data_dir: Path,
         check: bool, urls: list[str]) -> int:
    from stratum.cli import migrate

    out.print("==> migrate")
    migrate(settings)
    ingest = f"http://{settings.ingest_host}:{settings.ingest_port}"
    read = f"http://{settings.read_host}:{settings.read_port}"
    out.print(f"==> starting ingest ({ingest}), read ({read}), {workers} worker(s), scheduler, deliver")
    children.start("ingest", "ingest-api")
    children.start("read", "read-api")
    for _ in range(workers):
        children.start("worker", "worker")
    children.start("scheduler", "scheduler")
    children.start("deliver", "deliver")
    if not (_wait_http(ingest + "/health", 30, children.dead) and _wait_http(read + "/health", 30, children.dead)):
        out.print(f"error: the APIs did not come up (exited: {', '.join(children.dead()) or 'none'}); "
                  "see their lines above", file=sys.stderr)
        return 1

    out.print("==> demo tenant and source")
    from stratum.db.connect import connect
    from stratum.dev_demo import ensure_demo

    with connect(settings.database_url) as conn:
        demo, what = ensure_demo(conn, data_dir, settings.secret_key)
        conn.commit()
    out.print(f"    {what} (tenant {demo.tenant_id}; keys kept in {data_dir / 'demo.json'})")
    ok = _post_samples(out, ingest, read, demo)
    out.print(_banner(ingest, read, demo, urls) + ("" if check else "\n\nPress Ctrl-C to stop."))
    if check:
        return 0 if ok else 1
    while True:
        if dead := children.dead():
            out.print(f"error: {', '.join(dead)} exited; stopping", file=sys.stderr)
            return 1
        time.sleep(0.5)


def _post_samples(out: _Output, ingest: str, read: str, demo) -> bool:
    """Post the sample batches and wait for the demo profile; True when it holds them."""
    auth = {"Authorization": f"Bearer {demo.write_key}"}
    now = datetime.now(UTC)
    status, native = _request("POST", ingest + "/api/v1/cdp/events", sample_events(now), auth)
    out.print(f"    native batch: HTTP {status}, accepted={native.get('accepted')}")
    status, seg = _request("POST", ingest + "/v1/batch", segment_sample(now), auth)
    out.print(f"    Segment batch: HTTP {status} {seg}")
    profile: dict = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, profile = _request("GET", _lookup_url(read), headers={"Authorization": f"Bearer {demo.tenant_key}"})
        if code == 200 and profile.get("counters", {}).get("events", 0) >= 3:
            break
        time.sleep(0.3)
    out.print(f"    demo profile: {json.dumps(profile.get('counters'))} lifecycle={profile.get('lifecycle')}")
    return profile.get("counters", {}).get("events", 0) >= 3


def _lookup_url(read: str) -> str:
    return f"{read}/api/v1/cdp/profiles?identifier_type=email&identifier_value=ada.lovelace@example.com"


def _banner(ingest: str, read: str, demo, urls: list[str]) -> str:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""
Stratum CDP is running.
  ingest API   {ingest}      (OpenAPI: {ingest}/schema)
  read API     {read}      (OpenAPI: {read}/schema)
  web pages    {read}/cdp-calculator   {read}/profiles (tenant key)   {read}/ops (operator key)
  tenant id    {demo.tenant_id}
  tenant key   {demo.tenant_key}
  write key    {demo.write_key}

In another terminal, to use the same database and Redis:
  {urls[-1]}

Try:
  curl -s -X POST {ingest}/api/v1/cdp/events -H 'Authorization: Bearer {demo.write_key}' \\
    -d '{{"events":[{{"event_name":"Page Viewed","event_time":"{now}","identifiers":[{{"type":"email","value":"Grace@Example.com"}}]}}]}}'
  curl -s '{read}/api/v1/cdp/profiles?identifier_type=email&identifier_value=grace@example.com' \\
    -H 'Authorization: Bearer {demo.tenant_key}'
  curl -s '{_lookup_url(read)}' -H 'Authorization: Bearer {demo.tenant_key}'
  stratum status                # queues, workers, failures (after the export line above)
  stratum operator create ops   # an operator key for {read}/ops"""
