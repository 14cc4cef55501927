"""The end-to-end benchmark: real processes (ingest, N workers, read API) on the real
services, realistic Segment traffic (bench/traffic.py).

    python -m bench            # full run (a few minutes)
    python -m bench --quick    # under a minute

Measures, in one run: ingest requests/s at saturation (wrk) and p50/p95/p99 at half that
load; end-to-end events/s (first request to last event committed) with identity
resolution; ingest-to-queryable latency (event posted until the read API shows it); a raw
COPY of the same number of rows and the ratio; worker RSS, database and Redis size; read
API lookups/s and p99. Writes bench/results/latest.json and prints a table with targets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

import msgspec
import psutil
import psycopg

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.copy_baseline import copy_baseline
from bench.costs import CostMeter
from bench.loadgen import have_wrk, run_constant_rate, run_wrk, segment_batch
from bench.traffic import TrafficGenerator

INGEST, READ = 18200, 18201


def _get(url: str, key: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post(path: str, body: bytes, write_key: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{INGEST}{path}", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


class QueryableProbe(threading.Thread):
    """Every ``period_s``: post one event with a fresh external id, then poll the read API
    until the profile answers; records the delay."""

    def __init__(self, write_key: str, api_key: str, period_s: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.write_key, self.api_key, self.period_s, self.stop = write_key, api_key, period_s, stop
        self.latencies: list[float] = []
        self.timeouts = 0

    def run(self) -> None:
        while not self.stop.is_set():
            uid = f"probe-{uuid.uuid4().hex[:12]}"
            body = msgspec.json.encode({"batch": [{"type": "track", "event": "Probe", "userId": uid,
                                                   "messageId": uid, "timestamp": datetime.now(UTC).isoformat()}]})
            t0 = time.perf_counter()
            _post("/v1/batch", body, self.write_key)
            url = (f"http://127.0.0.1:{READ}/api/v1/cdp/profiles?identifier_type=external_id"
                   f"&identifier_value={uid}")
            while time.perf_counter() - t0 < 10:
                if _get(url, self.api_key) == 200:
                    self.latencies.append(time.perf_counter() - t0)
                    break
                time.sleep(0.005)
            else:
                self.timeouts += 1
            self.stop.wait(self.period_s)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _queue_idle(env) -> bool:
    r = env.redis()
    return (r.llen(f"rq:queue:{env.queue_name}") == 0 and r.zcard(f"rq:wip:{env.queue_name}") == 0
            and not list(r.scan_iter("stratum:claimed:*", count=100)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--events", type=int, default=200_000, help="events for the end-to-end phase")
    args = ap.parse_args(argv)
    secs = 3 if args.quick else 10
    n_events = 20_000 if args.quick else args.events
    if not have_wrk():
        print("wrk is required: apt-get install wrk (a Python generator would be the bottleneck)", file=sys.stderr)
        return 2
    env = prepare()
    tenant_id, api_key, write_key = create_source(env)
    out: dict = {"quick": args.quick, "workers": args.workers}
    try:
        ingest = env.stratum("ingest-api", "--port", str(INGEST))
        env.stratum("read-api", "--port", str(READ))
        wait_http(f"http://127.0.0.1:{INGEST}/health")
        wait_http(f"http://127.0.0.1:{READ}/health")

        # 1. ingest alone at saturation (no workers: the queue just grows)
        sat = run_wrk(f"http://127.0.0.1:{INGEST}", "/v1/batch", f"Bearer {write_key}",
                      segment_batch("@@ID@@").decode(), secs, 16)
        out.update(ingest_saturation_rps=round(sat.requests_per_s, 1), ingest_saturation_errors=sat.errors + sat.non_2xx)
        env.redis().flushdb()

        # 2. pipeline under half load: latency at the door, and ingest-to-queryable
        workers = [env.stratum("worker") for _ in range(args.workers)]
        gen = TrafficGenerator(seed=3, people=50_000)
        stop = threading.Event()
        # bodies are built before the clock starts, so the generator does not lag
        probe = QueryableProbe(write_key, api_key, 0.1, stop)
        half_bodies = [gen.batch(100) for _ in range(int(sat.requests_per_s / 2 * secs) + 1)]
        probe.start()
        half = run_constant_rate("127.0.0.1", INGEST, "/v1/batch", f"Bearer {write_key}", lambda i: half_bodies[i],
                                 sat.requests_per_s / 2, secs, connections=16)
        stop.set()
        probe.join(15)
        out.update(half_load_target_rps=round(half.target_rps, 1), half_load_achieved_rps=round(half.achieved_rps, 1),
                   half_load_p50_ms=round(half.p50_ms, 2), half_load_p95_ms=round(half.p95_ms, 2),
                   half_load_p99_ms=round(half.p99_ms, 2), half_load_statuses=half.statuses,
                   generator_lag_p99_ms=round(half.generator_lag_ms, 2),
                   queryable_p50_ms=round(_quantile(probe.latencies, 0.5) * 1000, 1),
                   queryable_p99_ms=round(_quantile(probe.latencies, 0.99) * 1000, 1),
                   queryable_samples=len(probe.latencies), queryable_timeouts=probe.timeouts)
        deadline = time.monotonic() + 600
        while not _queue_idle(env) and time.monotonic() < deadline:
            time.sleep(0.2)

        # 3. end to end: N events as fast as the door takes them, until the last is committed
        with psycopg.connect(env.database_url) as conn:
            before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        bodies = [gen.batch(100) for _ in range(n_events // 100)]
        meter = CostMeter(env.database_url, env.redis(),
                          {"ingest": [ingest.pid], "worker": [w.pid for w in workers]})
        t0 = time.perf_counter()
        sent = run_constant_rate("127.0.0.1", INGEST, "/v1/batch", f"Bearer {write_key}", lambda i: bodies[i],
                                 rps=10_000, seconds=len(bodies) / 10_000, connections=16)
        while not _queue_idle(env) and time.monotonic() < deadline:
            time.sleep(0.05)
        e2e_s = time.perf_counter() - t0 - 0.5  # run_constant_rate starts sending after 0.5 s
        with psycopg.connect(env.database_url) as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0] - before
            failed = env.redis().zcard(f"rq:failed:{env.queue_name}")
        costs = meter.finish(stored)
        copy_s = copy_baseline(env.database_url, stored)
        out.update(e2e_events_posted=n_events, e2e_events_stored=stored, e2e_seconds=round(e2e_s, 2),
                   e2e_events_per_s=round(stored / e2e_s, 1), e2e_post_statuses=sent.statuses,
                   copy_events_per_s=round(stored / copy_s, 1), e2e_vs_copy=round(copy_s / e2e_s, 3),
                   failed_jobs=failed, e2e_costs=costs)

        # 4. footprint
        rss = [psutil.Process(w.pid).memory_info().rss for w in workers if w.poll() is None]
        with psycopg.connect(env.database_url) as conn:
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            profiles = conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
            total_events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        out.update(worker_rss_mb=[round(x / 2**20, 1) for x in rss], db_mb=round(db_bytes / 2**20, 1),
                   redis_mb=round(env.redis().info("memory")["used_memory"] / 2**20, 1),
                   loaded_profiles=profiles, loaded_events=total_events)

        # 5. read API lookups at the loaded size
        emails = [f"user{p}@example.com" for p in range(0, 2000, 7)]
        lookups = [f"/api/v1/cdp/profiles?identifier_type=email&identifier_value={e}" for e in emails]
        t0 = time.perf_counter()
        lat = []
        for path in lookups[:200]:
            s = time.perf_counter()
            _get(f"http://127.0.0.1:{READ}{path}", api_key)
            lat.append(time.perf_counter() - s)
        from bench.loadgen import run_wrk_get

        rd = run_wrk_get(f"http://127.0.0.1:{READ}", lookups, f"Bearer {api_key}", secs, 16)
        out.update(read_lookups_per_s=round(rd.requests_per_s, 1), read_p99_ms_at_saturation=rd.p99_ms,
                   read_sequential_p50_ms=round(statistics.median(lat) * 1000, 2),
                   read_sequential_p99_ms=round(_quantile(lat, 0.99) * 1000, 2))
        del ingest
    finally:
        env.stop_all()

    path = write_results("latest", out)
    print(table([
        ("metric", "value", "target"),
        ("ingest requests/s at saturation (100-event batches)", f"{out['ingest_saturation_rps']:.0f}", ""),
        ("ingest p50/p95/p99 ms at half load", f"{out['half_load_p50_ms']:.1f}/{out['half_load_p95_ms']:.1f}/"
         f"{out['half_load_p99_ms']:.1f}", "p99 <= 10"),
        ("end-to-end events/s (with identity resolution)", f"{out['e2e_events_per_s']:.0f}", ">= 20000"),
        ("raw COPY events/s, same rows", f"{out['copy_events_per_s']:.0f}", ""),
        ("end-to-end / COPY", f"{out['e2e_vs_copy']:.3f}", ">= 0.14 (stretch 0.35)"),
        ("end-to-end CPU us/event: ingest / workers / postgres / redis",
         " / ".join(f"{out['e2e_costs']['us_per_event'][k]:.0f}" for k in ("ingest", "worker", "postgres", "redis")),
         ""),
        ("ingest-to-queryable p50/p99 ms at half load", f"{out['queryable_p50_ms']}/{out['queryable_p99_ms']}",
         "p99 <= 1000"),
        ("read API lookups/s, p99 ms (saturation)", f"{out['read_lookups_per_s']:.0f}, {out['read_p99_ms_at_saturation']}",
         ""),
        ("worker RSS MB", ", ".join(str(x) for x in out["worker_rss_mb"]), ""),
        ("database MB / Redis MB", f"{out['db_mb']} / {out['redis_mb']}", ""),
        ("events stored / failed jobs", f"{out['e2e_events_stored']} / {out['failed_jobs']}", "failed = 0"),
        ("load generator lag p99 ms", f"{out['generator_lag_p99_ms']}", "~0"),
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
