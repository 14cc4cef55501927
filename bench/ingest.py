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


class _RequestCost:
    """CPU microseconds per request of a server process (and its children) and the Redis
    time of its one command per request (``INFO commandstats``: the command's own usec,
    which on a shared Redis also counts other clients of that command)."""

    def __init__(self, redis, pid: int, command: str) -> None:
        self.redis, self.pid, self.command = redis, pid, command

    def _command_usec(self) -> int:
        return int(self.redis.info("commandstats").get(f"cmdstat_{self.command}", {}).get("usec", 0))

    def __enter__(self) -> _RequestCost:
        self.cpu0, self.usec0 = process_cpu_s(self.pid), self._command_usec()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu_s, self.usec = process_cpu_s(self.pid) - self.cpu0, self._command_usec() - self.usec0

    def per_request(self, requests: float) -> dict[str, float]:
        n = max(requests, 1.0)
        return {"server": round(self.cpu_s / n * 1e6, 1), "redis_command": round(self.usec / n, 1)}


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
        with _RequestCost(r, bare_proc.pid, "rpush") as bare_cost:
            bare = run_wrk(f"http://127.0.0.1:{BARE_PORT}", "/v1/batch", auth, template, secs, args.connections)
        r.delete("bench:bare")
        with _RequestCost(r, ingest_proc.pid, "evalsha") as ingest_cost:
            sat = run_wrk(f"http://127.0.0.1:{INGEST_PORT}", "/v1/batch", auth, template, secs, args.connections)
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
            "ingest_cpu_us_per_request": ingest_cost.per_request(sat.requests_per_s * secs),
            "bare_cpu_us_per_request": bare_cost.per_request(bare.requests_per_s * secs),
        })
        ing, bar = results["ingest_cpu_us_per_request"], results["bare_cpu_us_per_request"]
        results["cost_ratio_vs_bare"] = round((bar["server"] + bar["redis_command"])
                                              / (ing["server"] + ing["redis_command"]), 3)
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
        ("errors + non-2xx at saturation", str(results["ingest_errors"]), "0"),
        ("CPU us/request, server + Redis command: ingest",
         "{server} + {redis_command}".format(**results["ingest_cpu_us_per_request"]), ""),
        ("CPU us/request, server + Redis command: bare",
         "{server} + {redis_command}".format(**results["bare_cpu_us_per_request"]), ""),
        ("bare / ingest CPU per request (load-independent twin of the ratio)",
         f"{results['cost_ratio_vs_bare']:.2f}", ">= 0.40"),
        ("load generator lag p99 ms", f"{results['generator_lag_p99_ms']:.1f}", "~0 (else generator-bound)"),
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
