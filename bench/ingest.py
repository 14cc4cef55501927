"""Ingest API benchmark (issue: one ingest process, 100-event Segment batches).

    python -m bench.ingest [--seconds 10] [--quick]

Measures, in one run on this machine: requests/s at saturation of one `stratum ingest-api`
process (wrk), p50/p95/p99 latency at half that load (constant-rate client), and the
saturation of a bare Litestar + msgspec + Redis RPUSH endpoint served the same way, with
the ratio between the two. Also the CPU each request cost, read from the operating
system's counters of the server process (and its children) and of redis-server over each
saturation phase: on a machine shared with other work the requests/s move with the
outside load, the CPU per request much less, and the ratio of the two processes' CPU per
request is what their requests/s would be on a core of their own. Writes
bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.costs import process_cpu_s
from bench.loadgen import have_wrk, run_constant_rate, run_wrk, segment_batch

INGEST_PORT = 18100
BARE_PORT = 18101


def _saturate(r, pid: int, url: str, auth: str, template: str, secs: int, connections: int):
    """wrk at saturation, and the CPU microseconds per request of the server process (with
    its children: granian's worker) and of redis-server over the same phase."""
    redis_pid = int(r.info("server")["process_id"])
    before = process_cpu_s(pid), process_cpu_s(redis_pid, with_children=False)
    result = run_wrk(url, "/v1/batch", auth, template, secs, connections)
    after = process_cpu_s(pid), process_cpu_s(redis_pid, with_children=False)
    requests = max(1.0, result.requests_per_s * secs)
    return result, {"server": round((after[0] - before[0]) / requests * 1e6, 1),
                    "redis": round((after[1] - before[1]) / requests * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="3-second phases")
    args = ap.parse_args(argv)
    secs = 3 if args.quick else args.seconds
    if not have_wrk():
        print("wrk is required (apt-get install wrk): a Python client would be the bottleneck", file=sys.stderr)
        return 2

    env = prepare()
    _, _, write_key = create_source(env)
    auth = f"Bearer {write_key}"
    template = segment_batch("@@ID@@").decode()
    results: dict = {"batch_events": 100, "batch_bytes": len(template), "seconds": secs}
    try:
        ingest_proc = env.stratum("ingest-api", "--port", str(INGEST_PORT), "--workers", "1")
        bare_proc = env.start(sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--port", str(BARE_PORT),
                  "--workers", "1", "--no-ws", "bench.bare_app:create_app",
                  env=env.env(BENCH_REDIS_URL=env.redis_url))
        wait_http(f"http://127.0.0.1:{INGEST_PORT}/health")
        wait_http(f"http://127.0.0.1:{BARE_PORT}/schema", 30)

        r = env.redis()
        bare, bare_cpu = _saturate(r, bare_proc.pid, f"http://127.0.0.1:{BARE_PORT}", auth, template, secs,
                                   args.connections)
        r.delete("bench:bare")
        sat, ingest_cpu = _saturate(r, ingest_proc.pid, f"http://127.0.0.1:{INGEST_PORT}", auth, template, secs,
                                    args.connections)
        queued = r.llen(f"rq:queue:{env.queue_name}")
        r.flushdb()
        half = sat.requests_per_s / 2
        counter = iter(range(10**9))
        lat = run_constant_rate("127.0.0.1", INGEST_PORT, "/v1/batch", auth,
                                lambda i: segment_batch(f"h{next(counter)}"), half, secs)
        results.update({
            "ingest_saturation_rps": round(sat.requests_per_s, 1),
            "ingest_saturation_p99_ms": sat.p99_ms,
            "ingest_errors": sat.errors + sat.non_2xx,
            "jobs_queued_during_saturation": queued,
            "bare_saturation_rps": round(bare.requests_per_s, 1),
            "ratio_vs_bare": round(sat.requests_per_s / bare.requests_per_s, 3),
            "half_load_target_rps": round(half, 1),
            "half_load_achieved_rps": round(lat.achieved_rps, 1),
            "half_load_p50_ms": round(lat.p50_ms, 2),
            "half_load_p95_ms": round(lat.p95_ms, 2),
            "half_load_p99_ms": round(lat.p99_ms, 2),
            "half_load_statuses": lat.statuses,
            "generator_lag_p99_ms": round(lat.generator_lag_ms, 2),
            "ingest_cpu_us_per_request": ingest_cpu,
            "bare_cpu_us_per_request": bare_cpu,
            "cpu_ratio_vs_bare": round(bare_cpu["server"] / ingest_cpu["server"], 3),
        })
    finally:
        env.stop_all()
    path = write_results("ingest", results)
    print(table([
        ("metric", "value", "target"),
        ("ingest requests/s (saturation, 100-event batches)", f"{results['ingest_saturation_rps']:.0f}", ">= 1000"),
        ("bare Litestar+msgspec+RPUSH requests/s", f"{results['bare_saturation_rps']:.0f}", ""),
        ("ingest / bare", f"{results['ratio_vs_bare']:.2f}", ">= 0.40"),
        ("p50 / p95 / p99 ms at half load",
         f"{results['half_load_p50_ms']:.1f} / {results['half_load_p95_ms']:.1f} / {results['half_load_p99_ms']:.1f}",
         "p99 < 15"),
        ("achieved rps at half load", f"{results['half_load_achieved_rps']:.0f}", ""),
        ("CPU us/request, server process: ingest / bare",
         f"{ingest_cpu['server']:.0f} / {bare_cpu['server']:.0f}", ""),
        ("CPU us/request, redis-server: ingest / bare", f"{ingest_cpu['redis']:.0f} / {bare_cpu['redis']:.0f}", ""),
        ("ingest / bare by CPU per request (server process)", f"{results['cpu_ratio_vs_bare']:.2f}", ">= 0.40"),
        ("errors + non-2xx at saturation", str(results["ingest_errors"]), "0"),
        ("load generator lag p99 ms", f"{results['generator_lag_p99_ms']:.1f}", "~0 (else generator-bound)"),
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
