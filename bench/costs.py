"""The cost model: CPU seconds per event of the worker processes, of Postgres and of Redis,
read from the operating system's process CPU counters (user + system), never estimated.

- Stratum processes (workers, ingest): the process and all its descendants, sampled with
  psutil; a burst worker that exits is measured exactly from ``os.wait4`` (its rusage).
- Postgres: every backend connected to the bench database (``pg_stat_activity.datname``),
  sampled every ``period_s`` by a thread that connects to the ``postgres`` database so it
  never counts itself; a backend that appears during the run starts from zero. Backends
  that exit between two samples lose at most ``period_s`` of CPU (the benchmark's
  connections live for the whole run). The instance's shared background processes
  (WAL writer, checkpointer, background writer, autovacuum) are reported apart, since on
  a shared machine they also work for other databases.
- Redis: the ``redis-server`` process (its pid from ``INFO server``). One Redis serves
  every database number, so on a shared machine this includes other clients' commands;
  the idle rate measured just before the run is reported beside it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil
import psycopg
from redis import Redis

from stratum.db.connect import database_name
from stratum.settings import libpq_url

_PG_BACKGROUND = ("walwriter", "checkpointer", "background writer", "autovacuum", "walsender")


def process_cpu_s(pid: int, with_children: bool = True) -> float:
    """User + system CPU seconds of a live process (and its live descendants); 0 if gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)] if with_children else [proc]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wait_cpu_s(pid: int) -> tuple[int, float]:
    """Wait for a child process to exit: (exit code, its CPU seconds incl. reaped children)."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


@dataclass
class _PerPid:
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def see(self, pid: int, cpu: float, baseline: bool) -> None:
        if pid not in self.first:
            self.first[pid] = cpu if baseline else 0.0
        self.last[pid] = cpu

    def total(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last)


class PostgresCpu(threading.Thread):
    """Samples the CPU of the bench database's backends (and the shared background
    processes) until ``stop()``; ``backends_s`` and ``background_s`` are the deltas."""

    def __init__(self, database_url: str, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.dbname = database_name(database_url)
        conninfo = psycopg.conninfo.make_conninfo(libpq_url(database_url), dbname="postgres")
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.period_s = period_s
        self._backends = _PerPid()
        self._background = _PerPid()
        self._halt = threading.Event()
        self._sample(baseline=True)

    def _sample(self, baseline: bool) -> None:
        rows = self.conn.execute(
            "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()").fetchall()
        for pid, datname, backend_type in rows:
            if datname == self.dbname and backend_type == "client backend":
                target = self._backends
            elif backend_type and backend_type.startswith(_PG_BACKGROUND):
                target = self._background
            else:
                continue
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            # A background process present at the start is measured from then; a client
            # backend that shows up later was forked during the run and starts at zero.
            target.see(pid, t.user + t.system, baseline or target is self._background)

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self._sample(baseline=False)

    def stop(self) -> tuple[float, float]:
        """Stop sampling: (bench database backends CPU s, shared background CPU s)."""
        self._halt.set()
        self.join()
        self._sample(baseline=False)
        self.conn.close()
        return self._backends.total(), self._background.total()


class RedisCpu:
    """CPU of the redis-server process between ``__init__`` and ``stop()``."""

    def __init__(self, redis: Redis, idle_probe_s: float = 1.0) -> None:
        self.pid = int(redis.info("server")["process_id"])
        a = process_cpu_s(self.pid, with_children=False)
        time.sleep(idle_probe_s)
        b = process_cpu_s(self.pid, with_children=False)
        self.idle_cpu_per_s = (b - a) / idle_probe_s  # others' load on a shared Redis
        self.start_cpu, self.start_t = b, time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """(CPU s since start, the idle share over the same wall time)."""
        cpu = process_cpu_s(self.pid, with_children=False) - self.start_cpu
        return cpu, self.idle_cpu_per_s * (time.perf_counter() - self.start_t)


class CostMeter:
    """One measured run: start before the work, ``finish(events)`` after it.

    ``process_pids`` are Stratum processes alive for the whole run (ingest, long-running
    workers); burst workers that exit are added with ``add_exited(cpu_s)``.
    """

    def __init__(self, database_url: str, redis: Redis, process_pids: dict[str, list[int]] | None = None) -> None:
        self.redis_cpu = RedisCpu(redis)
        self.process_pids = process_pids or {}
        self.proc_start = {k: sum(process_cpu_s(p) for p in pids) for k, pids in self.process_pids.items()}
        self.exited: dict[str, float] = {}
        self.pg = PostgresCpu(database_url)
        self.pg.start()
        self.t0 = time.perf_counter()

    def add_exited(self, role: str, cpu_s: float) -> None:
        self.exited[role] = self.exited.get(role, 0.0) + cpu_s

    def finish(self, events: int) -> dict:
        """CPU seconds and microseconds per event, per role, plus wall time and events/s."""
        wall = time.perf_counter() - self.t0
        pg_s, pg_bg_s = self.pg.stop()
        redis_s, redis_idle_s = self.redis_cpu.stop()
        cpu = {k: sum(process_cpu_s(p) for p in pids) - self.proc_start[k] for k, pids in self.process_pids.items()}
        for k, v in self.exited.items():
            cpu[k] = cpu.get(k, 0.0) + v
        cpu.update(postgres=pg_s, postgres_background=pg_bg_s, redis=redis_s)
        n = max(events, 1)
        return {"events": events, "wall_s": round(wall, 3), "events_per_s": round(events / wall, 1),
                "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
                "us_per_event": {k: round(v / n * 1e6, 1) for k, v in cpu.items()},
                "redis_idle_us_per_event": round(redis_idle_s / n * 1e6, 1)}

