"""Webhook delivery benchmarks (issue 12):

1. worker cost: one burst worker storing the same traffic with no destination, then with
   one destination subscribed to ``event.received`` (the outbox rows written with the
   events), ``--repeat`` times interleaved. Reported as events/s (wall time) and as CPU
   microseconds per event of the worker process plus the Postgres backends serving it: on
   a shared machine the CPU figure is the one whose ratio holds still;
2. delivery rate: deliveries/s from one ``stratum deliver`` process to one local receiver.

    python -m bench.deliveries [--events 20000] [--repeat 1] [--deliveries 20000]
                               [--in-flight 4] [--batch-size 1 100] [--skip-worker]

Delivered rows are lean ``event.received`` rows of stored events, as the worker writes them
(the bodies are built by Postgres at claim time). ``--batch-size`` sets the destination's
opt-in batching (1: one message per request). Delivery rates count from the start of the
``stratum deliver`` process (its start-up included); the rate after the first recorded
outcome is printed beside it. The receiver is a minimal asyncio HTTP server in its own
process answering 200, so the number measures the delivery process (claim, sign, send,
record), not the receiver. Writes bench/results/deliveries.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import statistics
import sys
import threading
import time
import uuid

import psycopg

from bench.common import create_source, prepare, table, wait_http, write_results
from bench.traffic import TrafficGenerator
from bench.workers import _post_all, _stored

BENCH_SECRET_KEY = "bench-secret-key-" + "x" * 32


def _receiver(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _add_destination(database_url: str, tenant_id: str, url: str, batch_size: int = 1) -> str:
    from core.webhooks import new_secret
    from stratum.secret_storage import destination_secret_context, encrypt_secret

    did = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO destinations (id, tenant_id, name, url, topics, batch_size, secret) VALUES"
                     " (%s, %s, %s, %s, %s, %s, %s)",
                     (did, tenant_id, f"bench-{did[:8]}", url, ["event.received"], batch_size,
                      encrypt_secret(BENCH_SECRET_KEY, new_secret(), destination_secret_context(did))))
    return did


def worker_events_per_s(n_events: int, with_destination: bool) -> dict:
    env = prepare()
    tenant_id, _, write_key = create_source(env)
    if with_destination:
        _add_destination(env.database_url, tenant_id, "http://127.0.0.1:9/never")
    gen = TrafficGenerator(seed=1, people=max(1000, n_events // 10))
    batches = [gen.batch(100) for _ in range(n_events // 100)]
    # A free port, not bench.workers' fixed one: another bench on the machine may hold that.
    port = _free_port()
    try:
        env.stratum("ingest-api", "--port", str(port))
        wait_http(f"http://127.0.0.1:{port}/health")
        _post_all(port, write_key, batches)
    finally:
        env.stop_all()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with BackendCpu(env.database_url) as backends:
        start = time.perf_counter()
        env.stratum("worker", "--burst").wait(3600)
        elapsed = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    stored = _stored(env)
    with psycopg.connect(env.database_url) as conn:
        outbox = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    cpu = worker_cpu + backends.seconds
    return {"destination": with_destination, "events_stored": stored, "outbox_rows": outbox,
            "seconds": round(elapsed, 2), "events_per_s": round(stored / elapsed, 1),
            "worker_cpu_s": round(worker_cpu, 2), "postgres_cpu_s": round(backends.seconds, 2),
            "cpu_us_per_event": round(cpu / stored * 1e6, 1)}


class BackendCpu:
    """CPU seconds used by the Postgres backends serving a database while the block runs
    (read from /proc every 50 ms; Postgres on this machine), so the worker's cost per event
    counts what its statements cost the server, not only its own process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.ticks: dict[int, tuple[int, int]] = {}  # pid -> (ticks at first sight, last ticks)
        self.stop = threading.Event()
        self.seconds = 0.0

    @staticmethod
    def _ticks(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return int(fields[11]) + int(fields[12])  # utime + stime

    def _poll(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            own = conn.info.backend_pid
            while not self.stop.is_set():
                pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                                   " AND backend_type = 'client backend' AND pid <> %s", (own,))]
                for pid in pids:
                    ticks = self._ticks(pid)
                    if ticks is not None:
                        first = self.ticks.get(pid, (ticks, ticks))[0]
                        self.ticks[pid] = (first, ticks)
                self.stop.wait(0.05)

    def __enter__(self) -> BackendCpu:
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        hz = os.sysconf("SC_CLK_TCK")
        self.seconds = sum(last - first for first, last in self.ticks.values()) / hz


# Stored events the delivery bench sends as lean ``event.received`` rows (bodies built by
# Postgres at claim time, as for live traffic); a typical e-commerce event, ~700 bytes sent.
_EVENTS_SQL = """
INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, profile_id, dedupe_key, event_type,
                    event_name, properties, context, identifiers, emq)
SELECT %(t)s, gen_random_uuid(), now() - g * interval '1 ms', now(), %(s)s, gen_random_uuid(), md5(g::text), 'track',
       'Product Viewed', '{"sku": "A-1", "price": 19.9, "currency": "USD"}',
       '{"page": {"url": "https://shop.example.com/p/1"}, "ip": "203.0.113.9"}',
       jsonb_build_array(jsonb_build_array('anonymous_id', md5(g::text || 'a'))), 85
FROM generate_series(1, %(n)s) g
"""
_LEAN_ROWS_SQL = """
INSERT INTO deliveries (tenant_id, destination_id, message_id, topic, profile_id, event_time)
SELECT tenant_id, %(d)s, 'msg_' || event_id, 'event.received', profile_id, event_time FROM events WHERE tenant_id = %(t)s
"""


def deliveries_per_s(n: int, in_flight: int, batch_size: int = 1) -> dict:
    env = prepare()
    tenant_id, _, _ = create_source(env)
    port = _free_port()
    receiver = multiprocessing.Process(target=_receiver, args=(port,), daemon=True)
    receiver.start()
    did = _add_destination(env.database_url, tenant_id, f"http://127.0.0.1:{port}/hook", batch_size)
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        source_id = conn.execute("SELECT id FROM sources WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]
        conn.execute(_EVENTS_SQL, {"t": tenant_id, "s": source_id, "n": n})
        conn.execute(_LEAN_ROWS_SQL, {"t": tenant_id, "d": did})
        conn.execute("VACUUM ANALYZE deliveries")
    try:
        start = time.perf_counter()
        env.stratum("deliver", env=env.env(STRATUM_DESTINATIONS_ALLOW_PRIVATE="true",
                                           STRATUM_SECRET_KEY=BENCH_SECRET_KEY,
                                           STRATUM_DELIVERY_MAX_IN_FLIGHT=str(in_flight),
                                           STRATUM_DELIVERY_POLL_INTERVAL_S="0.05"))
        first = None  # when the first outcome was recorded: the process has started and claimed
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            while True:
                done = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'delivered'").fetchone()[0]
                if done and first is None:
                    first = (time.perf_counter(), done)
                if done >= n or time.perf_counter() - start > 600:
                    break
                time.sleep(0.1)
        elapsed = time.perf_counter() - start
        steady = (done - first[1]) / (time.perf_counter() - first[0]) if first and done > first[1] else 0.0
    finally:
        env.stop_all()
        receiver.terminate()
    return {"deliveries": n, "delivered": done, "in_flight": in_flight, "batch_size": batch_size,
            "seconds": round(elapsed, 2), "deliveries_per_s": round(done / elapsed, 1),
            "after_first_outcome_per_s": round(steady, 1)}



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--deliveries", type=int, default=20_000)
    ap.add_argument("--in-flight", type=int, nargs="*", default=[4])
    ap.add_argument("--batch-size", type=int, nargs="*", default=[1, 100])
    ap.add_argument("--repeat", type=int, default=1,
                    help="worker runs per configuration, interleaved (without, with, without, ...); medians")
    ap.add_argument("--skip-worker", action="store_true", help="only the delivery rate")
    args = ap.parse_args(argv)
    runs: list[dict] = []
    if not args.skip_worker:
        for _ in range(args.repeat):
            runs += [worker_events_per_s(args.events, False), worker_events_per_s(args.events, True)]
    sends = [deliveries_per_s(args.deliveries, n, b) for b in args.batch_size for n in args.in_flight]
    rows = [("measure", "value", "detail")]
    summary = {}
    if runs:
        def median(dest: bool, key: str) -> float:
            return statistics.median(r[key] for r in runs if r["destination"] is dest)

        summary = {"wall_cost_increase": round(median(False, "events_per_s") / median(True, "events_per_s") - 1, 3),
                   "cpu_cost_increase": round(median(True, "cpu_us_per_event") / median(False, "cpu_us_per_event") - 1,
                                              3)}
        rows += [("worker events/s, no destination (median)", f"{median(False, 'events_per_s'):.0f}",
                  f"{args.repeat} run(s) of {runs[0]['events_stored']} events"),
                 ("worker events/s, 1 destination (median)", f"{median(True, 'events_per_s'):.0f}",
                  f"{runs[1]['outbox_rows']} outbox rows"),
                 ("worker + Postgres CPU us/event, no destination", f"{median(False, 'cpu_us_per_event'):.0f}", ""),
                 ("worker + Postgres CPU us/event, 1 destination", f"{median(True, 'cpu_us_per_event'):.0f}", ""),
                 ("worker cost increase, wall time", f"{summary['wall_cost_increase']:.1%}", "target <= 15%"),
                 ("worker cost increase, CPU time", f"{summary['cpu_cost_increase']:.1%}", "target <= 15%")]
    path = write_results("deliveries", {"worker": runs, **summary, "delivery": sends})
    rows += [(f"deliveries/s, batch {s['batch_size']}, {s['in_flight']} in flight", f"{s['deliveries_per_s']:.0f}",
              f"{s['delivered']} of {s['deliveries']} from process start ({s['after_first_outcome_per_s']:.0f}/s after"
              " the first outcome), target >= 5000") for s in sends]
    print(table(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
