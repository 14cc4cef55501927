"""Audiences benchmark: what incremental membership and computed-trait upkeep add to the cost
of an event, and how fast a segment preview answers at scale.

    python -m bench.audiences [--events 20000] [--repeat 2] [--interval S]   # upkeep overhead
    python -m bench.audiences --preview [--profiles 100000 1000000]         # preview latency

Overhead: the same traffic (bench/traffic.py, posted through a real ingest process, as in
bench.workers) is drained by a burst worker while the scheduler's audience jobs (upkeep,
then emission: the functions of workers/audience_jobs.py and workers/audience_emit.py) run
beside it every ``--interval`` seconds (default: the scheduler's interval) on one long-lived
connection, once with nothing defined and once with five computed traits and ten dynamic
segments; runs alternate, each on a fresh database. The upkeep runs until its mark has
passed the worker's last commit, so every touched profile is handled. Cost per event =
worker CPU (exact rusage, start-up subtracted) + the upkeep's own CPU (its passes, start-up
excluded) + the bench database's Postgres backends (bench/costs.py); the upkeep's backend
is also reported alone. The overhead is the ratio of the two runs' costs, read within one
invocation (absolute numbers are noisy on a shared machine). The lag from the worker's last
commit to the end of the upkeep run that covered it is reported too.

Preview: profiles (traits, lifecycles, counters, emails) and events generated inside
Postgres, then ``POST /api/v1/cdp/segments/preview`` timed through a real read API process.
Writes bench/results/audiences.json or audiences_preview.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psutil
import psycopg

from bench import workers as bench_workers
from bench.common import RESULTS, create_source, prepare, table, wait_http, write_results
from bench.costs import CostMeter, wait_cpu_s
from bench.workers import _queue_traffic, _stored

# Its own ingest port, so it can run beside bench.workers on one machine.
bench_workers.INGEST_PORT = 18117

COMPUTED_TRAITS = (
    {"name": "orders_30d", "function": "count", "event": "Order Completed", "within_days": 30},
    {"name": "spend_30d", "function": "sum", "event": "Order Completed", "property": "total", "within_days": 30},
    {"name": "checkouts_7d", "function": "count", "event": "Checkout Started", "within_days": 7},
    {"name": "views_7d", "function": "count", "event": "Product Viewed", "within_days": 7},
    {"name": "products_30d", "function": "unique", "event": "Product Viewed", "property": "product_id",
     "within_days": 30},
)
DYNAMIC_SEGMENTS = (
    {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    {"all": [{"counter": "events", "op": "gte", "value": 5}]},
    {"all": [{"computed": "orders_30d", "op": "gte", "value": 1}]},
    {"all": [{"computed": "views_7d", "op": "gte", "value": 3}, {"trait": "plan", "op": "eq", "value": "free"}]},
    {"all": [{"lifecycle": "customer"}]},
    {"all": [{"identifier": "email", "op": "exists"}]},
    {"all": [{"event": "Checkout Started", "within_days": 7, "count": {"op": "gte", "value": 1}}]},
    {"any": [{"counter": "purchases", "op": "gte", "value": 1}, {"computed": "spend_30d", "op": "gt", "value": 100}]},
    {"all": [{"identifier": "phone", "op": "exists"}, {"counter": "revenue", "op": "gt", "value": 0}]},
    {"all": [{"computed": "products_30d", "op": "gte", "value": 2}, {"lifecycle": ["known", "customer"]},
             {"event": "Product Viewed", "within_days": 1}]},
)


def define_audiences(database_url: str, tenant_id: str) -> None:
    """Five computed traits and ten dynamic segments, created as the API creates them."""
    from read_api import computed_traits, segments

    with psycopg.connect(database_url, autocommit=True) as conn:
        for body in COMPUTED_TRAITS:
            computed_traits._create(conn, tenant_id, dict(body))
        for i, rules in enumerate(DYNAMIC_SEGMENTS):
            segments._create(conn, tenant_id, {"name": f"bench-{i}", "kind": "dynamic", "rules": rules})


def _upkeep_mark(database_url: str) -> datetime | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT mark FROM scheduler_marks WHERE name = 'audience_upkeep'").fetchone()
    return row[0] if row else None


def _wait_for_upkeep(database_url: str, since: datetime, timeout_s: float = 300) -> float:
    """Seconds until the upkeep's mark passes ``since`` (every profile touched before then is handled)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        mark = _upkeep_mark(database_url)
        if mark is not None and mark >= since:
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise RuntimeError("the scheduler's upkeep did not catch up")


def upkeep_loop(interval_s: float, cpu_out: str) -> int:
    """The scheduler's audience jobs (upkeep, then emission) every ``interval_s`` on one
    connection, as the scheduler's rounds run them, until SIGTERM; the pass under way
    finishes. Writes the CPU seconds of the passes (start-up excluded) to ``cpu_out``."""
    from redis import Redis

    from stratum.db.connect import connect
    from stratum.settings import settings_from_env
    from workers.audience_emit import emit_audience_messages
    from workers.audience_jobs import upkeep_audiences

    settings = settings_from_env()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    cpu = {"process": 0.0, "upkeep_backend": 0.0, "emit_backend": 0.0, "profiles_handled": 0, "passes": 0}
    redis = Redis.from_url(settings.redis_url)
    with connect(settings.database_url, autocommit=True) as conn:
        backend = psutil.Process(conn.info.backend_pid)
        while not stop:
            t0, c0, b0 = time.monotonic(), time.process_time(), _cpu(backend)
            cpu["profiles_handled"] += upkeep_audiences(conn, settings, redis)
            cpu["passes"] += 1
            b1 = _cpu(backend)
            emit_audience_messages(conn, redis)
            b2 = _cpu(backend)
            cpu["process"] += time.process_time() - c0
            cpu["upkeep_backend"] += b1 - b0
            cpu["emit_backend"] += b2 - b1
            time.sleep(max(0.0, interval_s - (time.monotonic() - t0)))
    Path(cpu_out).write_text(json.dumps(cpu))
    return 0


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run_once(n_events: int, defined: bool, seed: int, interval_s: float) -> dict:
    env = _queue_traffic(n_events, seed)
    with psycopg.connect(env.database_url) as conn:
        tenant_id = str(conn.execute("SELECT id FROM tenants ORDER BY created_at LIMIT 1").fetchone()[0])
    if defined:
        define_audiences(env.database_url, tenant_id)
    meter = CostMeter(env.database_url, env.redis())
    cpu_file = RESULTS / "audiences-upkeep-cpu.txt"
    cpu_file.unlink(missing_ok=True)
    upkeep = env.start(sys.executable, "-m", "bench.audiences", "--upkeep-loop", str(interval_s), str(cpu_file))
    worker = env.stratum("worker", "--burst")
    worker.returncode, worker_s = wait_cpu_s(worker.pid)
    with psycopg.connect(env.database_url) as conn:
        drained_at = conn.execute("SELECT now()").fetchone()[0]
    lag_s = _wait_for_upkeep(env.database_url, drained_at)
    os.killpg(upkeep.pid, signal.SIGTERM)
    upkeep.returncode, _ = wait_cpu_s(upkeep.pid)
    upkeep_cpu = json.loads(cpu_file.read_text())
    upkeep_s = upkeep_cpu["process"]
    cpu_file.unlink()
    env.procs.remove(upkeep)
    env.procs.remove(worker)
    meter.add_exited("worker_total", worker_s)
    meter.add_exited("upkeep", upkeep_s)
    stored = _stored(env)
    costs = meter.finish(stored)
    idle = env.stratum("worker", "--burst")
    idle.returncode, startup_s = wait_cpu_s(idle.pid)
    env.procs.remove(idle)
    worker_net = max(0.0, worker_s - startup_s)
    with psycopg.connect(env.database_url) as conn:
        members = conn.execute("SELECT count(*) FROM segment_members").fetchone()[0]
        changes = conn.execute("SELECT count(*) FROM segment_events").fetchone()[0]
        with_values = conn.execute("SELECT count(*) FROM profiles WHERE computed <> '{}'").fetchone()[0]
    env.stop_all()
    cpu = costs["cpu_s"]
    total_s = worker_net + cpu["upkeep"] + cpu["postgres"]
    us = lambda s: round(s / max(stored, 1) * 1e6, 1)  # noqa: E731
    return {"defined": defined, "events_stored": stored, "wall_s": costs["wall_s"],
            "us_per_event": {"worker": us(worker_net), "upkeep": us(cpu["upkeep"]),
                             "postgres": us(cpu["postgres"]), "total": us(total_s),
                             "postgres_upkeep": us(upkeep_cpu["upkeep_backend"]),
                             "postgres_emit": us(upkeep_cpu["emit_backend"]),
                             "postgres_background": costs["us_per_event"]["postgres_background"],
                             "redis": costs["us_per_event"]["redis"]},
            "upkeep_passes": upkeep_cpu["passes"], "profiles_handled": upkeep_cpu["profiles_handled"],
            "worker_startup_s": round(startup_s, 3), "upkeep_lag_after_last_commit_s": round(lag_s, 2),
            "segment_members": members, "membership_changes": changes, "profiles_with_computed": with_values}


def overhead(n_events: int, repeat: int, interval_s: float) -> int:
    runs = []
    for i in range(repeat):
        # Alternate which run of a pair goes first, so an order effect cancels out.
        for defined in ((False, True) if i % 2 == 0 else (True, False)):
            r = run_once(n_events, defined, seed=1, interval_s=interval_s)
            runs.append(r)
            print(("with   " if defined else "without"), i, r["us_per_event"], "lag",
                  r["upkeep_lag_after_last_commit_s"], flush=True)
    base = [r["us_per_event"]["total"] for r in runs if not r["defined"]]
    with_ = [r["us_per_event"]["total"] for r in runs if r["defined"]]
    pairs = [w / b - 1 for b, w in zip(base, with_, strict=True)]
    # The upkeep's own CPU (its process and its Postgres backend) over the same pair's
    # baseline: immune to the run-to-run noise of the worker's CPU.
    own = [r["us_per_event"]["upkeep"] + r["us_per_event"]["postgres_upkeep"] + r["us_per_event"]["postgres_emit"]
           for r in runs if r["defined"]]
    attributed = [o / b for o, b in zip(own, base, strict=True)]
    result = {"events_posted": n_events, "upkeep_interval_s": interval_s,
              "computed_traits": list(COMPUTED_TRAITS), "segments": list(DYNAMIC_SEGMENTS), "runs": runs,
              "overhead_per_pair": [round(p, 3) for p in pairs],
              "overhead_median": round(statistics.median(pairs), 3),
              "upkeep_own_share_per_pair": [round(a, 3) for a in attributed],
              "upkeep_own_share_median": round(statistics.median(attributed), 3)}
    path = write_results("audiences", result)
    rows = [("run", "us/event", "worker / upkeep / postgres; lag after last commit; members, changes")]
    for r in runs:
        u = r["us_per_event"]
        rows.append(("with" if r["defined"] else "without", f"{u['total']:.0f}",
                     f"{u['worker']:.0f} / {u['upkeep']:.0f} / {u['postgres']:.0f}; "
                     f"{r['upkeep_lag_after_last_commit_s']} s; {r['segment_members']}, {r['membership_changes']}"))
    rows.append(("overhead", f"{100 * result['overhead_median']:.1f}%",
                 "median over pairs " + ", ".join(f"{100 * p:.1f}%" for p in pairs) + " (target <= 20%)"))
    rows.append(("upkeep's own", f"{100 * result['upkeep_own_share_median']:.1f}%",
                 "its process + its Postgres backend over the baseline, per pair "
                 + ", ".join(f"{100 * a:.1f}%" for a in attributed)))
    print(table(rows))
    print(f"wrote {path}")
    return 0


PREVIEW_RULES = {
    "three traits/counters": {"all": [
        {"trait": "plan", "op": "eq", "value": "pro"},
        {"counter": "events", "op": "gte", "value": 5},
        {"lifecycle": ["known", "customer"]}]},
    "trait, identifier, event count": {"all": [
        {"trait": "country", "op": "in", "value": ["DE", "FR"]},
        {"identifier": "email", "op": "exists"},
        {"event": "Order Completed", "within_days": 30, "count": {"op": "gte", "value": 1}}]},
}


def _fill_profiles(database_url: str, tenant_id: str, source_id: str, n_profiles: int, n_events: int) -> None:
    """Profiles with varied traits, lifecycles and counters; an email for two in three; events
    spread over the last 60 days (one in ten an order)."""
    from stratum.db.partitions import ensure_partitions, month_start

    with psycopg.connect(database_url, autocommit=True) as conn:
        now = datetime.now(UTC)
        ensure_partitions(conn, {month_start(now - timedelta(days=d)) for d in range(62)})
        conn.execute("SET synchronous_commit = off")
        conn.execute(
            "INSERT INTO profiles (id, tenant_id, lifecycle, traits, first_seen, last_seen, event_count,"
            " purchase_count, revenue, identifier_count)"
            " SELECT md5('p' || g)::uuid, %s, (ARRAY['anonymous', 'known', 'customer', 'churned'])[1 + g %% 4],"
            " jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[1 + g %% 3],"
            "                    'country', (ARRAY['DE', 'FR', 'US', 'GB', 'ES'])[1 + g %% 5], 'age', 18 + g %% 60),"
            " now() - interval '300 days', now(), g %% 20, g %% 3, (g %% 7) * 10, 2"
            " FROM generate_series(1, %s) g", (tenant_id, n_profiles))
        conn.execute(
            "INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)"
            " SELECT %s, 'email', encode(sha256(convert_to('user' || g || '@example.com', 'UTF8')), 'hex'),"
            " md5('p' || g)::uuid, now(), now() FROM generate_series(1, %s) g WHERE g %% 3 <> 0",
            (tenant_id, n_profiles))
        conn.execute(
            "INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key,"
            " event_type, event_name, properties, context, identifiers, emq)"
            " SELECT %s, md5('e' || g)::uuid, now() - (g %% (60 * 86400)) * interval '1 second', now(), %s,"
            " md5('p' || ((g %% %s) + 1))::uuid, 'e' || g, 'track',"
            " CASE WHEN g %% 10 = 0 THEN 'Order Completed' ELSE 'Product Viewed' END,"
            " '{\"total\": 49.0}', '{}', '[]', 60 FROM generate_series(1, %s) g",
            (tenant_id, source_id, n_profiles, n_events))
        conn.execute("VACUUM ANALYZE")


def _post_ms(port: int, key: str, path: str, body: dict) -> tuple[float, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=msgspec.json.encode(body), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = msgspec.json.decode(r.read())
    return (time.perf_counter() - t0) * 1000, answer


def preview(sizes: list[int], events_per_profile: int, tries: int) -> int:
    port = 18311
    results = []
    for n in sizes:
        env = prepare()
        tenant_id, api_key, _ = create_source(env)
        with psycopg.connect(env.database_url) as conn:
            source_id = str(conn.execute("SELECT id FROM sources WHERE tenant_id = %s", (tenant_id,)).fetchone()[0])
        t0 = time.perf_counter()
        _fill_profiles(env.database_url, tenant_id, source_id, n, n * events_per_profile)
        fill_s = time.perf_counter() - t0
        try:
            env.stratum("read-api", "--port", str(port))
            wait_http(f"http://127.0.0.1:{port}/health")
            for name, rules in PREVIEW_RULES.items():
                times, size = [], None
                for _ in range(tries):
                    ms, answer = _post_ms(port, api_key, "/api/v1/cdp/segments/preview", {"rules": rules})
                    times.append(ms)
                    size = answer["size"]
                times.sort()
                r = {"profiles": n, "events": n * events_per_profile, "rules": name, "size": size,
                     "min_ms": round(times[0], 1), "median_ms": round(statistics.median(times), 1),
                     "max_ms": round(times[-1], 1), "fill_s": round(fill_s, 1)}
                results.append(r)
                print(r, flush=True)
        finally:
            env.stop_all()
    path = write_results("audiences_preview", {"tries": tries, "results": results})
    rows = [("profiles", "median ms", "rules; max ms; size (target < 1000 ms at 1M)")]
    rows += [(f"{r['profiles']:,}", f"{r['median_ms']:.0f}", f"{r['rules']}; {r['max_ms']:.0f}; {r['size']}")
             for r in results]
    print(table(rows))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.audiences")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2, help="pairs of runs (without, with)")
    ap.add_argument("--preview", action="store_true", help="instead: preview latency")
    ap.add_argument("--profiles", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--events-per-profile", type=int, default=3)
    ap.add_argument("--tries", type=int, default=7)
    ap.add_argument("--interval", type=float, default=None,
                    help="seconds between upkeep passes (default: the scheduler's setting)")
    ap.add_argument("--upkeep-loop", nargs=2, metavar=("INTERVAL_S", "CPU_OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.upkeep_loop is not None:
        return upkeep_loop(float(args.upkeep_loop[0]), args.upkeep_loop[1])
    if args.preview:
        return preview(args.profiles, args.events_per_profile, args.tries)
    from stratum.settings import Settings

    interval = args.interval if args.interval is not None else Settings().scheduler_interval_s
    return overhead(args.events, args.repeat, interval)


if __name__ == "__main__":
    sys.exit(main())
