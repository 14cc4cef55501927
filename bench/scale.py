"""Scale check: lookups and timelines at 100,000 events, then at 10,000,000 events and
1,000,000 profiles (data generated inside Postgres with generate_series: no client-side
bottleneck), measured through a real read API process.

    python -m bench.scale [--profiles 1000000] [--events 10000000] [--small-events 100000]

Writes bench/results/scale.json. Run by hand (it takes several minutes and a few GB);
CI does not run it.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import time
from datetime import UTC, datetime

import psycopg

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.loadgen import run_wrk_get
from stratum.db.partitions import add_months, ensure_partitions, month_start

READ = 18301
MONTHS = 12


def _fill(env, tenant_id: str, source_id: str, profiles: tuple[int, int], events: tuple[int, int]) -> None:
    """Add profiles (lo, hi] and events (lo, hi]; event g belongs to profile (g % hi_profiles) + 1."""
    p_lo, p_hi = profiles
    e_lo, e_hi = events
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        start = add_months(month_start(datetime.now(UTC)), -(MONTHS - 1))
        ensure_partitions(conn, [add_months(start, i) for i in range(MONTHS + 1)])
        conn.execute("SET synchronous_commit = off")
        if p_hi > p_lo:
            conn.execute(
                "INSERT INTO profiles (id, tenant_id, lifecycle, first_seen, last_seen, event_count, identifier_count)"
                " SELECT md5('p' || g)::uuid, %s, 'known', now() - interval '300 days', now(), %s, 2"
                " FROM generate_series(%s::int, %s::int) g", (tenant_id, max(1, e_hi // p_hi), p_lo + 1, p_hi))
            conn.execute(
                "INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)"
                " SELECT %s, t.type, encode(sha256(convert_to(t.v, 'UTF8')), 'hex'), md5('p' || g)::uuid, now(), now()"
                " FROM generate_series(%s::int, %s::int) g, LATERAL (VALUES ('email', 'user' || g || '@example.com'),"
                " ('anonymous_id', 'anon-' || g)) AS t(type, v)", (tenant_id, p_lo + 1, p_hi))
        if e_hi > e_lo:
            conn.execute(
                "INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key,"
                " event_type, event_name, properties, context, identifiers, emq)"
                " SELECT %s, md5('e' || g)::uuid, %s::timestamptz + (g %% (%s * 30 * 86400)) * interval '1 second',"
                " now(), %s, md5('p' || ((g %% %s) + 1))::uuid, 'e' || g, 'track', 'Product Viewed',"
                " '{\"product_id\": \"sku-1\", \"price\": 19.99}', '{\"ip\": \"203.0.113.9\"}', '[]', 60"
                " FROM generate_series(%s::int, %s::int) g",
                (tenant_id, datetime.combine(start, datetime.min.time(), UTC), MONTHS, source_id, p_hi, e_lo + 1, e_hi))
            conn.execute(
                "INSERT INTO event_keys (tenant_id, key_hash, event_id, event_time)"
                " SELECT %s, sha256(convert_to('e' || g, 'UTF8')), md5('e' || g)::uuid, now()"
                " FROM generate_series(%s::int, %s::int) g",
                (tenant_id, e_lo + 1, e_hi))
        conn.execute("VACUUM ANALYZE")


def _latencies(paths: list[str], key: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", READ, timeout=10)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.request("GET", paths[i % len(paths)], headers={"Authorization": f"Bearer {key}"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"{paths[i % len(paths)]} answered {r.status}")
        out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return sorted(out)


def _measure(api_key: str, n_profiles: int, seconds: int) -> dict:
    rng = random.Random(5)
    picks = [rng.randrange(1, n_profiles + 1) for _ in range(2000)]
    lookups = [f"/api/v1/cdp/profiles?identifier_type=email&identifier_value=user{g}@example.com" for g in picks]
    with psycopg.connect(prepare_url) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT md5('p' || g)::uuid::text FROM unnest(%s::int[]) g", (picks[:500],)).fetchall()]
    timelines = [f"/api/v1/cdp/profiles/{pid}/events?limit=50" for pid in ids]
    lk = _latencies(lookups, api_key, 1000)
    tl = _latencies(timelines, api_key, 500)
    sat = run_wrk_get(f"http://127.0.0.1:{READ}", lookups[:500], f"Bearer {api_key}", seconds, 16)
    q = lambda v, p: round(v[min(len(v) - 1, int(p * len(v)))], 2)  # noqa: E731
    return {"lookup_p50_ms": q(lk, .5), "lookup_p99_ms": q(lk, .99), "timeline_p50_ms": q(tl, .5),
            "timeline_p99_ms": q(tl, .99), "lookups_per_s": round(sat.requests_per_s, 1),
            "lookup_p99_ms_at_saturation": sat.p99_ms, "errors": sat.errors + sat.non_2xx}


prepare_url = ""


def main(argv: list[str] | None = None) -> int:
    global prepare_url
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--profiles", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--small-profiles", type=int, default=10_000)
    ap.add_argument("--small-events", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args(argv)
    env = prepare()
    prepare_url = env.database_url
    tenant_id, api_key, _ = create_source(env)
    with psycopg.connect(env.database_url) as conn:
        source_id = str(conn.execute("SELECT id FROM sources WHERE tenant_id = %s", (tenant_id,)).fetchone()[0])
    results: dict = {}
    try:
        t0 = time.perf_counter()
        _fill(env, tenant_id, source_id, (0, args.small_profiles), (0, args.small_events))
        env.stratum("read-api", "--port", str(READ))
        wait_http(f"http://127.0.0.1:{READ}/health")
        results["small"] = {"profiles": args.small_profiles, "events": args.small_events,
                            "fill_s": round(time.perf_counter() - t0, 1),
                            **_measure(api_key, args.small_profiles, args.seconds)}
        print("small:", results["small"], flush=True)
        # Grow to the large size: the same tenant, more profiles and events.
        t0 = time.perf_counter()
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM events")
            conn.execute("DELETE FROM event_keys")
        _fill(env, tenant_id, source_id, (args.small_profiles, args.profiles), (0, args.events))
        with psycopg.connect(env.database_url) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        results["large"] = {"profiles": args.profiles, "events": args.events,
                            "fill_s": round(time.perf_counter() - t0, 1), "db_gb": round(size / 2**30, 2),
                            **_measure(api_key, args.profiles, args.seconds)}
        print("large:", results["large"], flush=True)
    finally:
        env.stop_all()
    s, lg = results["small"], results["large"]
    results["ratios"] = {"lookup_p99": round(lg["lookup_p99_ms"] / s["lookup_p99_ms"], 2),
                         "timeline_p99": round(lg["timeline_p99_ms"] / s["timeline_p99_ms"], 2)}
    path = write_results("scale", results)
    print(table([
        ("metric", "small / large", "target"),
        ("lookup p50 / p99 ms", f"{s['lookup_p50_ms']}/{s['lookup_p99_ms']}  {lg['lookup_p50_ms']}/{lg['lookup_p99_ms']}",
         "p99 < 5 ms, large/small <= 1.5"),
        ("timeline first page p50 / p99 ms",
         f"{s['timeline_p50_ms']}/{s['timeline_p99_ms']}  {lg['timeline_p50_ms']}/{lg['timeline_p99_ms']}",
         "p99 < 10 ms, large/small <= 1.5"),
        ("lookups/s (wrk, 16 connections)", f"{s['lookups_per_s']:.0f}  {lg['lookups_per_s']:.0f}", ">= 3000"),
        ("ratios large/small (lookup, timeline p99)",
         f"{results['ratios']['lookup_p99']}, {results['ratios']['timeline_p99']}", "<= 1.5"),
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
