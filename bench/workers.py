"""Worker throughput benchmark: events/s through 1 and 2 workers with identity resolution,
against a raw COPY of the same rows in the same run.

    python -m bench.workers [--events 100000] [--quick]

Batches of realistic Segment traffic (bench/traffic.py) are posted through a real ingest
process first, so the queue holds exactly what production would hold; then N burst
workers drain it and the clock stops when the last job is done. Writes
bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.traffic import TrafficGenerator

INGEST_PORT = 18110


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


def run_workers(n_workers: int, n_events: int, seed: int) -> dict:
    env = prepare()
    _, _, write_key = create_source(env)
    gen = TrafficGenerator(seed=seed, people=max(1000, n_events // 10))
    batches = [gen.batch(100) for _ in range(n_events // 100)]
    try:
        env.stratum("ingest-api", "--port", str(INGEST_PORT))
        wait_http(f"http://127.0.0.1:{INGEST_PORT}/health")
        _post_all(INGEST_PORT, write_key, batches)
    finally:
        env.stop_all()
    jobs = env.redis().llen(f"rq:queue:{env.queue_name}")
    start = time.perf_counter()
    workers = [env.stratum("worker", "--burst") for _ in range(n_workers)]
    for w in workers:
        w.wait(3600)
    elapsed = time.perf_counter() - start
    stored = _stored(env)
    failed = env.redis().zcard(f"rq:failed:{env.queue_name}")
    from bench.copy_baseline import copy_baseline

    copy_s = copy_baseline(env.database_url, stored)
    return {"workers": n_workers, "jobs": jobs, "events_stored": stored, "seconds": round(elapsed, 2),
            "events_per_s": round(stored / elapsed, 1), "copy_seconds": round(copy_s, 3),
            "copy_events_per_s": round(stored / copy_s, 1), "ratio_vs_copy": round((stored / elapsed) / (stored / copy_s), 3),
            "failed_jobs": failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="20,000 events")
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.events
    runs = [run_workers(1, n, seed=1), run_workers(2, n, seed=1)]
    path = write_results("workers", {"events_posted": n, "runs": runs})
    rows = [("workers", "events/s", "COPY events/s, ratio")]
    for r in runs:
        rows.append((str(r["workers"]), f"{r['events_per_s']:.0f}",
                     f"{r['copy_events_per_s']:.0f}, {r['ratio_vs_copy']:.3f} (stored {r['events_stored']}, "
                     f"failed jobs {r['failed_jobs']})"))
    print(table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
