"""The worker's store step alone: CPU microseconds per event of ``persist_tenant_events``
in the calling process and in its Postgres backend, on the bench traffic, in rounds.

    python -m bench.persist [--events 30000] [--rounds 3] [--chunk 5000] [--warm 30000]

The traffic is queued through a real ingest process (as ``bench.workers`` does), then read
back and prepared once in this process; each round empties the data tables and stores the
same prepared events again, ``--chunk`` events per transaction (the size coalescing builds),
so every round starts from the same empty graph; the garbage collector is tuned as in a
worker process. The CPU is this process's
``time.process_time`` around the store calls and the backend's utime + stime from
``/proc/<pid>/stat`` (same machine only), so preparing, Redis and the other processes do not
count, and outside load moves the figures much less than it moves rates. Two code versions
are compared by alternating runs from their checkouts; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.common import table
from bench.workers import _queue_traffic

_TABLES = ("deliveries", "events", "event_keys", "event_outcomes", "consent_history", "consents", "profile_merges",
           "identity_links", "identity_decisions", "profile_identifiers", "profiles")


def _backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prepared(env, n_events: int):
    """The queued traffic, decoded and prepared as a worker does: (tenant id, events)."""
    from core.schemas import decode_batch
    from stratum.queue import layout
    from stratum.settings import Settings
    from workers import runtime
    from workers.prepare import prepare_event

    settings = Settings(database_url=env.database_url, redis_url=env.redis_url, queue_name=env.queue_name)
    rt = runtime.install(runtime.WorkerRuntime(settings))
    r = env.redis()
    events, tenant_id = [], None
    for job_id in r.lrange(layout.queue_key(env.queue_name), 0, -1):
        batch = decode_batch(layout.payload_of(r.hget(layout.job_key(job_id.decode()), "data")))
        config = rt.tenant_config(batch.tenant_id, batch.source_id)
        identity = config.source_identity(batch.source_id, batch.source_type)
        events += [prepare_event(batch, q, config.extra_blocked, identity) for q in batch.events]
        tenant_id = batch.tenant_id
    return rt, tenant_id, events[:n_events]


def _store(conn, tenant_id: str, events: list, chunk: int) -> int:
    from datetime import timedelta

    from core.identity import IdentityRules
    from workers.persist import persist_tenant_events

    stored = 0
    for start in range(0, len(events), chunk):
        with conn.transaction():
            stored += persist_tenant_events(conn, tenant_id, events[start:start + chunk], IdentityRules(),
                                            touch_granularity=timedelta(hours=1)).stored
    return stored


def run(n_events: int, rounds: int, chunk: int, warm: int = 0) -> list[dict]:
    from stratum.db.connect import connect
    from workers.worker import tune_garbage_collection

    env = _queue_traffic(n_events + warm, seed=1)
    tune_garbage_collection()  # as a worker process does at start
    rt, tenant_id, events = _prepared(env, n_events + warm)
    conn = connect(env.database_url, autocommit=True)
    backend = conn.info.backend_pid
    out = []
    for _ in range(rounds):
        conn.execute(f"TRUNCATE {', '.join(_TABLES)} CASCADE")
        _store(conn, tenant_id, events[:warm], chunk)  # people seen before (not timed)
        conn.execute("VACUUM ANALYZE")  # every round starts from the same table state
        py0, pg0, wall0 = time.process_time(), _backend_cpu_s(backend), time.perf_counter()
        stored = _store(conn, tenant_id, events[warm:], chunk)
        py, pg, wall = time.process_time() - py0, _backend_cpu_s(backend) - pg0, time.perf_counter() - wall0
        out.append({"stored": stored, "python_us": py / stored * 1e6, "postgres_us": pg / stored * 1e6,
                    "wall_s": wall})
    conn.close()
    del rt
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=5_000)
    ap.add_argument("--warm", type=int, default=0, metavar="N",
                    help="store N events of the same traffic first, untimed: the timed events then come mostly "
                         "from people already known (the steady state)")
    args = ap.parse_args(argv)
    runs = run(args.events, args.rounds, args.chunk, args.warm)
    rows = [("round", "stored", "store CPU us/event: python / postgres (wall s)")]
    rows += [(str(n + 1), str(r["stored"]), f"{r['python_us']:.1f} / {r['postgres_us']:.1f} ({r['wall_s']:.2f})")
             for n, r in enumerate(runs)]
    warm = runs[1:] or runs  # the first round also warms caches and prepared statements
    rows.append(("median", "", f"{statistics.median(r['python_us'] for r in warm):.1f} / "
                              f"{statistics.median(r['postgres_us'] for r in warm):.1f} (rounds after the first)"))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
