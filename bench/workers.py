"""Worker throughput benchmark and cost model: events/s through 1 and 2 workers with
identity resolution, against a raw COPY of the same rows in the same run, and the CPU
microseconds per event spent by the workers, by Postgres and by Redis (bench/costs.py).

    python -m bench.workers [--events 100000] [--quick] [--repeat 2]
    python -m bench.workers --events 50000 --profile worker.txt   # py-spy, one worker

Batches of realistic Segment traffic (bench/traffic.py) are posted through a real ingest
process first, so the queue holds exactly what production would hold; then N burst
workers drain it and the clock stops when the last job is done. A burst worker's CPU is
its exact rusage; the CPU of starting one (imports, connections: a burst worker on an
empty queue, measured in the same run) is reported apart and subtracted. Writes
bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.costs import CostMeter, wait_cpu_s
from bench.traffic import TrafficGenerator

# Several checkouts may run benchmarks on one machine: a port taken by another's ingest
# process would answer 401 to this run's write key.
INGEST_PORT = int(os.environ.get("STRATUM_BENCH_INGEST_PORT", "18110"))


def _post_all(port: int, write_key: str, batches: list[bytes]) -> None:
    for body in batches:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/batch", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {write_key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200, r.status


def _stored(env) -> int:
    import psycopg

    with psycopg.connect(env.database_url) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def _queue_traffic(n_events: int, seed: int, people: int | None = None):
    """A fresh bench database and a queue holding ``n_events`` of bench traffic from
    ``people`` persons (default: one per ten events, at least 1,000)."""
    env = prepare()
    _, _, write_key = create_source(env)
    gen = TrafficGenerator(seed=seed, people=people or max(1000, n_events // 10))
    batches = [gen.batch(100) for _ in range(n_events // 100)]
    try:
        env.stratum("ingest-api", "--port", str(INGEST_PORT))
        wait_http(f"http://127.0.0.1:{INGEST_PORT}/health")
        _post_all(INGEST_PORT, write_key, batches)
    finally:
        env.stop_all()
    return env


def profile_worker(n_events: int, seed: int, out: str, rate_hz: int = 200) -> None:
    """One burst worker draining the queue under ``py-spy record`` (raw collapsed stacks,
    for flamegraph.pl or a per-function sum). No timing is reported: sampling costs CPU."""
    env = _queue_traffic(n_events, seed)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    p = env.start(py_spy, "record", "--idle", "--threads", "-r", str(rate_hz), "-f", "raw", "-o", out, "--", sys.executable, "-m",
                  "stratum.cli", "worker", "--burst")
    p.wait(3600)
    print(f"wrote {out} ({_stored(env)} events stored)")


_DEFERRALS = re.compile(rb"; (\d+) times an event waited for a later round")


def _deferrals(log) -> int:
    """How many times an event of this worker's jobs was deferred to a later round (its
    identifier held by another worker): the jobs' own log lines."""
    log.seek(0)
    return sum(int(m.group(1)) for m in _DEFERRALS.finditer(log.read()))


def _failure_reasons(env) -> list[str]:
    """Why jobs failed (the last line of each exception), so a failed run explains itself."""
    from stratum.queue.status import failed_jobs
    from stratum.settings import Settings

    settings = Settings(database_url=env.database_url, redis_url=env.redis_url, queue_name=env.queue_name)
    return sorted({job["reason"] for job in failed_jobs(settings, env.redis())})


def run_workers(n_workers: int, n_events: int, seed: int, rounds_per_job: int | None = None,
                people: int | None = None) -> dict:
    """``rounds_per_job``: the workers' ``STRATUM_WORKER_ROUNDS_PER_JOB`` (None: the default)."""
    env = _queue_traffic(n_events, seed, people)
    jobs = env.redis().llen(f"rq:queue:{env.queue_name}")
    meter = CostMeter(env.database_url, env.redis())
    extra = {} if rounds_per_job is None else {"STRATUM_WORKER_ROUNDS_PER_JOB": str(rounds_per_job)}
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(n_workers)]
        start = time.perf_counter()
        workers = [env.stratum("worker", "--burst", env=env.env(**extra), log=log) for log in logs]
        for w in workers:
            w.returncode, cpu_s = wait_cpu_s(w.pid)
            meter.add_exited("worker_total", cpu_s)
        elapsed = time.perf_counter() - start
        deferrals = sum(_deferrals(log) for log in logs)
    stored = _stored(env)
    costs = meter.finish(stored)
    # What starting a worker costs (imports, connections), measured on the now empty queue.
    idle = env.stratum("worker", "--burst")
    idle.returncode, startup_s = wait_cpu_s(idle.pid)
    worker_s = max(0.0, costs["cpu_s"]["worker_total"] - n_workers * startup_s)
    costs["cpu_s"].update(worker=round(worker_s, 3), worker_startup_each=round(startup_s, 3))
    costs["us_per_event"]["worker"] = round(worker_s / max(stored, 1) * 1e6, 1)
    failed = env.redis().zcard(f"rq:failed:{env.queue_name}")
    failures = _failure_reasons(env) if failed else []
    from bench.copy_baseline import copy_baseline

    copy_s = copy_baseline(env.database_url, stored)
    cpu = costs["cpu_s"]
    # How much of the machine the run kept busy: two workers can give twice one only while
    # this stays under the cores there are.
    busy = (cpu["worker_total"] + cpu["postgres"] + cpu["postgres_background"] + cpu["redis"]) / max(elapsed, 1e-9)
    return {"cores_busy": round(busy, 2), "deferrals": deferrals, "workers": n_workers, "rounds_per_job": rounds_per_job, "people": people, "jobs": jobs, "events_stored": stored, "seconds": round(elapsed, 2),
            "events_per_s": round(stored / elapsed, 1), "copy_seconds": round(copy_s, 3),
            "copy_events_per_s": round(stored / copy_s, 1), "ratio_vs_copy": round((stored / elapsed) / (stored / copy_s), 3),
            "failed_jobs": failed, "failure_reasons": failures, "costs": costs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="20,000 events")
    ap.add_argument("--repeat", type=int, default=1, help="measure each worker count this many times")
    ap.add_argument("--profile", metavar="FILE", help="instead: profile one burst worker with py-spy into FILE")
    ap.add_argument("--rounds-per-job", type=int, nargs="+", metavar="N",
                    help="run each worker count with each of these STRATUM_WORKER_ROUNDS_PER_JOB values, alternating"
                         " (e.g. 1 8: rounds off and on)")
    ap.add_argument("--people", type=int, metavar="N",
                    help="persons the traffic is drawn from (default: one per ten events): more persons, fewer"
                         " identifiers shared by two workers' batches")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.events
    if args.profile:
        profile_worker(n, seed=1, out=args.profile)
        return 0
    rounds = args.rounds_per_job or [None]
    runs = [run_workers(w, n, seed=1, rounds_per_job=r, people=args.people) for _ in range(args.repeat) for w in (1, 2) for r in rounds]
    path = write_results("workers", {"events_posted": n, "runs": runs})
    cores = os.cpu_count() or 1
    rows = [("workers", "events/s", f"COPY events/s, ratio; CPU us/event: worker / postgres / redis; cores busy"
                                    f" (of {cores})")]
    for r in runs:
        us = r["costs"]["us_per_event"]
        label = str(r["workers"]) + (f", {r['rounds_per_job']} rounds" if r["rounds_per_job"] is not None else "")
        rows.append((label, f"{r['events_per_s']:.0f}",
                     f"{r['copy_events_per_s']:.0f}, {r['ratio_vs_copy']:.3f}; {us['worker']:.0f} / "
                     f"{us['postgres']:.0f} / {us['redis']:.0f}; {r['cores_busy']:.2f} (deferrals {r['deferrals']}, pg background {us['postgres_background']:.0f}, "
                     f"redis idle share {r['costs']['redis_idle_us_per_event']:.0f}, worker start "
                     f"{r['costs']['cpu_s']['worker_startup_each']:.2f} s each; stored {r['events_stored']}, "
                     f"failed jobs {r['failed_jobs']})"))
        rows += [("", "", f"failed: {reason}") for reason in r["failure_reasons"]]
    print(table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
