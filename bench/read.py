"""Read API lookup benchmark: lookups by email through `stratum read-api` with 1 and 2
processes, against a bare Litestar + psycopg endpoint serving the same profile documents
from one indexed statement (bench/bare_read_app.py), in the same run.

    python -m bench.read [--profiles 10000] [--events 100000] [--seconds 10] [--quick]

Per server: lookups/s at saturation (wrk, 16 connections) with the CPU microseconds per
lookup of the serving processes and of Postgres (bench/costs.py), in rounds that alternate
between the servers (medians, and ratios taken within a round), then p50/p99 at half of
that saturation (constant-rate client); also the sequential latency of a lookup and of a
timeline's first page. Writes bench/results/read.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

import psycopg

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.costs import CostMeter
from bench.loadgen import have_wrk, run_constant_rate_get, run_wrk_get
from bench.read_parts import measure_framework, measure_parts
from bench.scale import _fill, _latencies

# bench.scale's _latencies talks to 18301, so the one-process read API listens there.
PORTS = {"stratum_1": 18301, "bare_1": 18302, "stratum_2": 18303}


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


def _saturate(env, port: int, paths: list[str], auth: str, seconds: int, pids: list[int]) -> dict:
    """Lookups/s at saturation with the CPU cost per lookup of the server and Postgres."""
    meter = CostMeter(env.database_url, env.redis(), {"server": pids})
    sat = run_wrk_get(f"http://127.0.0.1:{port}", paths, auth, seconds, 16)
    cost = meter.finish(int(sat.requests_per_s * seconds))
    return {"lookups_per_s": round(sat.requests_per_s, 1), "p99_ms": sat.p99_ms, "errors": sat.errors + sat.non_2xx,
            "cpu_us_per_lookup": cost["us_per_event"]}


def _half_load(port: int, paths: list[str], auth: str, rps: float, seconds: int) -> dict:
    half = run_constant_rate_get("127.0.0.1", port, paths, auth, rps, seconds, 16)
    return {"rps": round(half.achieved_rps, 1), "p50_ms": round(half.p50_ms, 2), "p99_ms": round(half.p99_ms, 2),
            "statuses": half.statuses, "generator_lag_p99_ms": round(half.generator_lag_ms, 2)}


TARGETS = (("bare_1", "bare Litestar+psycopg, 1 process"), ("stratum_1", "read-api --workers 1"),
           ("stratum_2", "read-api --workers 2"))


def _summary(rounds: list[dict]) -> dict:
    """Medians over the rounds; ratios are taken per round (same moment), then the median."""
    out: dict = {"rounds": rounds}
    for key, _ in TARGETS:
        runs = [r[key] for r in rounds]
        out[key] = {"lookups_per_s": statistics.median(r["lookups_per_s"] for r in runs),
                    "p99_ms_at_saturation": statistics.median(r["p99_ms"] or 0 for r in runs),
                    "cpu_us_per_lookup": {k: statistics.median(r["cpu_us_per_lookup"][k] for r in runs)
                                          for k in ("server", "postgres")}}
    out["ratio_vs_bare"] = round(statistics.median(
        r["stratum_1"]["lookups_per_s"] / r["bare_1"]["lookups_per_s"] for r in rounds), 3)
    out["ratio_2_vs_1"] = round(statistics.median(
        r["stratum_2"]["lookups_per_s"] / r["stratum_1"]["lookups_per_s"] for r in rounds), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.read")
    ap.add_argument("--profiles", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="saturation rounds, alternating the servers")
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
    paths = {"bare_1": [f"/lookup?identifier_value={e}" for e in emails], "stratum_1": lookups, "stratum_2": lookups}
    with psycopg.connect(env.database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT md5('p' || g)::uuid::text FROM generate_series(1, 200) g")]
    timelines = [f"/api/v1/cdp/profiles/{pid}/events?limit=50" for pid in ids]
    auth = f"Bearer {api_key}"
    out: dict = {"profiles": args.profiles, "events": args.events, "seconds": secs, "shared_machine": True}
    try:
        # All three servers run for the whole benchmark (an idle one costs nothing), and the
        # rounds alternate between them, so a burst of load from elsewhere on the machine
        # hits every server alike and the per-round ratios stay comparable.
        procs = {
            "bare_1": env.start(sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port",
                                str(PORTS["bare_1"]), "--workers", "1", "--no-ws", "bench.bare_read_app:create_app",
                                env=env.env(BENCH_DATABASE_URL=env.database_url, BENCH_TENANT_ID=tenant_id)),
            "stratum_1": env.stratum("read-api", "--port", str(PORTS["stratum_1"]), "--workers", "1"),
            "stratum_2": env.stratum("read-api", "--port", str(PORTS["stratum_2"]), "--workers", "2"),
        }
        wait_http(f"http://127.0.0.1:{PORTS['bare_1']}/schema", 30)
        for key in ("stratum_1", "stratum_2"):
            wait_http(f"http://127.0.0.1:{PORTS[key]}/health")
        _latencies(lookups, api_key, 200)  # warm the pool and the caches
        lk = _latencies(lookups, api_key, 1000)
        tl = _latencies(timelines, api_key, 500)
        out.update(sequential_lookup_p50_ms=round(lk[len(lk) // 2], 2),
                   sequential_timeline_p50_ms=round(tl[len(tl) // 2], 2),
                   timeline_vs_lookup=round(tl[len(tl) // 2] / lk[len(lk) // 2], 2))
        out["parts_us"] = measure_parts(env.database_url, tenant_id, api_key, emails)
        out["parts_us"].update(measure_framework(env.database_url, env.redis_url, tenant_id, api_key, emails))
        rounds = [{key: _saturate(env, PORTS[key], paths[key], auth, secs, [procs[key].pid]) for key, _ in TARGETS}
                  for _ in range(args.rounds)]
        out.update(_summary(rounds))
        for key, _ in TARGETS:
            out[key]["half_load"] = _half_load(PORTS[key], paths[key], auth, out[key]["lookups_per_s"] / 2, secs)
    finally:
        env.stop_all()
    path = write_results("read", out)
    print(table(_rows(out)))
    print(f"wrote {path}")
    return 0


def _rows(out: dict) -> list[tuple[str, str, str]]:
    rows = [("metric (medians of the rounds; shared machine)", "value", "target")]
    for key, label in TARGETS:
        r = out[key]
        rows.append((f"{label}: lookups/s (p99 ms at saturation)", f"{r['lookups_per_s']:.0f} ({r['p99_ms_at_saturation']})",
                     ">= 3000" if key == "stratum_2" else ""))
        rows.append((f"{label}: p50 / p99 ms at half load", f"{r['half_load']['p50_ms']} / {r['half_load']['p99_ms']}",
                     "p99 < 10" if key != "bare_1" else ""))
        rows.append((f"{label}: CPU us/lookup server / postgres",
                     f"{r['cpu_us_per_lookup']['server']:.0f} / {r['cpu_us_per_lookup']['postgres']:.0f}", ""))
    rows.append(("read-api (1 process) / bare, per round", f"{out['ratio_vs_bare']:.2f}", ">= 0.8"))
    rows.append(("read-api 2 processes / 1 process, per round", f"{out['ratio_2_vs_1']:.2f}", ""))
    parts = out["parts_us"]
    rows.append(("parts, us/lookup: auth / normalize+hash (first, memo) / statement client CPU",
                 f"{parts['auth_key_cache_hit']} / {parts['normalize_and_hash_first_sight']}, "
                 f"{parts['normalize_and_hash_memoized']} / {parts['statement_client_cpu']}", ""))
    rows.append(("parts, us/lookup: round trip wall / decode / encode",
                 f"{parts['statement_round_trip_wall']} / {parts['decode_document_to_struct']} / "
                 f"{parts['encode_struct_to_json']}", ""))
    rows.append(("in process, no sockets, us/lookup: read API / bare / difference",
                 f"{parts['read_api_in_process']} / {parts['bare_in_process']} / {parts['framework_difference']}", ""))
    rows.append(("sequential p50 ms: lookup / timeline first page",
                 f"{out['sequential_lookup_p50_ms']} / {out['sequential_timeline_p50_ms']}", "timeline <= 1.5x lookup"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
