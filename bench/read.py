"""Read API lookup benchmark: lookups by email through `stratum read-api` with 1 and 2
processes, against a bare Litestar + psycopg endpoint serving the same profile documents
from one indexed statement (bench/bare_read_app.py), in the same run.

    python -m bench.read [--profiles 10000] [--events 100000] [--seconds 10] [--quick]

Per phase: lookups/s at saturation (wrk, 16 connections) with the CPU microseconds per
lookup of the serving processes and of Postgres (bench/costs.py), then p50/p99 at half of
that saturation (constant-rate client); with one process also the sequential latency of a
lookup and of a timeline's first page. Writes bench/results/read.json.
"""

from __future__ import annotations

import argparse
import random
import sys

import psycopg

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.costs import CostMeter
from bench.loadgen import have_wrk, run_constant_rate_get, run_wrk_get
from bench.scale import _fill, _latencies

READ_PORT = 18301  # bench.scale's _latencies talks to this port
BARE_PORT = 18302


def _add_consents_and_traits(database_url: str, tenant_id: str, source_id: str, n_profiles: int) -> None:
    """Give every profile two consents and a few traits, so documents have every part."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at, source_id)"
            " SELECT md5('p' || g)::uuid, t, %s, g %% 2 = 0, now(), %s FROM generate_series(1, %s) g,"
            " unnest(ARRAY['analytics', 'email']) t", (tenant_id, source_id, n_profiles))
        conn.execute("UPDATE profiles SET traits = jsonb_build_object('plan', 'pro', 'name', 'Person ' || event_count,"
                     " 'company', 'Example Inc', 'seats', 12) WHERE tenant_id = %s", (tenant_id,))
        conn.execute("VACUUM ANALYZE")


def _phase(env, port: int, paths: list[str], auth: str, seconds: int, pids: list[int]) -> dict:
    """Saturation with its CPU cost per lookup, then latency at half that load."""
    meter = CostMeter(env.database_url, env.redis(), {"server": pids})
    sat = run_wrk_get(f"http://127.0.0.1:{port}", paths, auth, seconds, 16)
    cost = meter.finish(int(sat.requests_per_s * seconds))
    half = run_constant_rate_get("127.0.0.1", port, paths, auth, sat.requests_per_s / 2, seconds, 16)
    return {"lookups_per_s": round(sat.requests_per_s, 1), "p99_ms_at_saturation": sat.p99_ms,
            "errors": sat.errors + sat.non_2xx, "cpu_us_per_lookup": cost["us_per_event"],
            "half_load_rps": round(half.achieved_rps, 1), "half_load_p50_ms": round(half.p50_ms, 2),
            "half_load_p99_ms": round(half.p99_ms, 2), "half_load_statuses": half.statuses,
            "generator_lag_p99_ms": round(half.generator_lag_ms, 2)}


def _stop(env, proc) -> None:
    import os
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(15)
    env.procs.remove(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.read")
    ap.add_argument("--profiles", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3-second phases")
    args = ap.parse_args(argv)
    secs = 3 if args.quick else args.seconds
    if not have_wrk():
        print("wrk is required: apt-get install wrk (a Python generator would be the bottleneck)", file=sys.stderr)
        return 2
    env = prepare()
    tenant_id, api_key, _ = create_source(env)
    with psycopg.connect(env.database_url) as conn:
        source_id = str(conn.execute("SELECT id FROM sources WHERE tenant_id = %s", (tenant_id,)).fetchone()[0])
    _fill(env, tenant_id, source_id, (0, args.profiles), (0, args.events))
    _add_consents_and_traits(env.database_url, tenant_id, source_id, args.profiles)
    rng = random.Random(5)
    emails = [f"user{rng.randrange(1, args.profiles + 1)}@example.com" for _ in range(500)]
    lookups = [f"/api/v1/cdp/profiles?identifier_type=email&identifier_value={e}" for e in emails]
    bare_paths = [f"/lookup?identifier_value={e}" for e in emails]
    with psycopg.connect(env.database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT md5('p' || g)::uuid::text FROM generate_series(1, 200) g")]
    timelines = [f"/api/v1/cdp/profiles/{pid}/events?limit=50" for pid in ids]
    auth = f"Bearer {api_key}"
    out: dict = {"profiles": args.profiles, "events": args.events, "seconds": secs}
    try:
        bare = env.start(sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port",
                         str(BARE_PORT), "--workers", "1", "--no-ws", "bench.bare_read_app:create_app",
                         env=env.env(BENCH_DATABASE_URL=env.database_url, BENCH_TENANT_ID=tenant_id))
        wait_http(f"http://127.0.0.1:{BARE_PORT}/schema", 30)
        out["bare_1"] = _phase(env, BARE_PORT, bare_paths, auth, secs, [bare.pid])
        _stop(env, bare)
        for n in (1, 2):
            proc = env.stratum("read-api", "--port", str(READ_PORT), "--workers", str(n))
            wait_http(f"http://127.0.0.1:{READ_PORT}/health")
            if n == 1:
                _latencies(lookups, api_key, 200)  # warm the pool and the caches
                lk = _latencies(lookups, api_key, 1000)
                tl = _latencies(timelines, api_key, 500)
                out.update(sequential_lookup_p50_ms=round(lk[len(lk) // 2], 2),
                           sequential_timeline_p50_ms=round(tl[len(tl) // 2], 2),
                           timeline_vs_lookup=round(tl[len(tl) // 2] / lk[len(lk) // 2], 2))
            out[f"stratum_{n}"] = _phase(env, READ_PORT, lookups, auth, secs, [proc.pid])
            _stop(env, proc)
    finally:
        env.stop_all()
    out["ratio_vs_bare"] = round(out["stratum_1"]["lookups_per_s"] / out["bare_1"]["lookups_per_s"], 3)
    path = write_results("read", out)
    rows = [("metric", "value", "target")]
    for key, label in (("bare_1", "bare Litestar+psycopg, 1 process"), ("stratum_1", "read-api --workers 1"),
                       ("stratum_2", "read-api --workers 2")):
        r = out[key]
        rows.append((f"{label}: lookups/s (p99 ms at saturation)", f"{r['lookups_per_s']:.0f} ({r['p99_ms_at_saturation']})",
                     ">= 3000" if key == "stratum_2" else ""))
        rows.append((f"{label}: p50 / p99 ms at half load", f"{r['half_load_p50_ms']} / {r['half_load_p99_ms']}",
                     "p99 < 10" if key != "bare_1" else ""))
        rows.append((f"{label}: CPU us/lookup server / postgres",
                     f"{r['cpu_us_per_lookup']['server']:.0f} / {r['cpu_us_per_lookup']['postgres']:.0f}", ""))
    rows.append(("read-api (1 process) / bare", f"{out['ratio_vs_bare']:.2f}", ">= 0.8"))
    rows.append(("sequential p50 ms: lookup / timeline first page",
                 f"{out['sequential_lookup_p50_ms']} / {out['sequential_timeline_p50_ms']}", "timeline <= 1.5x lookup"))
    print(table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
