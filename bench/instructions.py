"""The worker's Python cost per event in instructions: a figure that does not move with
the machine's load, for comparing two versions of the code on a busy shared box, where
CPU seconds per event move by 10-25% from run to run.

    python -m bench.instructions [--events 5000]

Bench traffic is queued through a real ingest process (as ``bench.workers`` does), the
queued payloads are saved, and one process replays them in process under
``valgrind --tool=callgrind`` three times: loading only, then decoding and preparing
every event, then the whole worker step (``workers.jobs.persist_payloads``: preparation,
the transaction's Python and psycopg, against the real database). The differences,
divided by the events stored, are the instructions per event of preparation and of the
whole step. Postgres's own work is not counted (``bench.workers`` measures its CPU).
The replay runs with the worker's GC settings; the database is fresh for each replay.
Needs valgrind (`apt-get install valgrind`). Writes bench/results/instructions.json.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, table, write_results

MODES = ("idle", "prepare", "worker")


def _queue(n_events: int, out: Path) -> None:
    """A fresh bench database and the payloads of ``n_events`` queued events, saved."""
    from bench.workers import _queue_traffic
    from stratum.queue import layout

    env = _queue_traffic(n_events, seed=1)
    r = env.redis()
    ids = [i.decode() for i in r.lrange(f"rq:queue:{env.queue_name}", 0, -1)]
    payloads = [layout.payload_of(r.hget(f"rq:job:{i}", "data")) for i in ids]
    r.flushdb()
    out.write_bytes(pickle.dumps({"database_url": env.database_url, "redis_url": env.redis_url,
                                  "payloads": payloads}))


def replay(mode: str, saved: Path) -> int:
    """Run under callgrind: load everything, then do ``mode``'s work; return events done."""
    from core.schemas import decode_batch
    from stratum.settings import Settings
    from workers import runtime
    from workers.jobs import persist_payloads
    from workers.prepare import prepare_event
    from workers.worker import GC_THRESHOLDS

    data = pickle.loads(saved.read_bytes())
    rt = runtime.install(runtime.WorkerRuntime(Settings(database_url=data["database_url"],
                                                        redis_url=data["redis_url"])))
    rt.connection()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if mode == "prepare":
        batches = [decode_batch(p) for p in data["payloads"]]
        return sum(len([prepare_event(b, q) for q in b.events]) for b in batches)
    if mode == "worker":
        return persist_payloads(data["payloads"])["stored"]
    return 0


def _instructions(mode: str, saved: Path, valgrind: str) -> tuple[int, int]:
    """(instructions, events done) of one replay under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([valgrind, "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable,
                            "-m", "bench.instructions", "--replay", mode, str(saved)],
                           cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "0"})  # str hashes steer dicts and sets
    collected = re.search(r"Collected : (\d+)", p.stderr)
    done = re.search(r"^done (\d+)$", p.stdout, re.M)
    if collected is None or done is None:
        raise RuntimeError(f"replay {mode} printed no count:\n{p.stdout}\n{p.stderr[-2000:]}")
    return int(collected.group(1)), int(done.group(1))


def measure(n_events: int, valgrind: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "payloads.pickle"
        _queue(n_events, saved)
        # idle and prepare write nothing: the worker replay still finds a fresh database
        counts = {mode: _instructions(mode, saved, valgrind) for mode in MODES}
    idle = counts["idle"][0]
    stored = counts["worker"][1]
    return {"events_queued": n_events, "events_stored": stored,
            "prepare_instructions_per_event": (counts["prepare"][0] - idle) // max(1, counts["prepare"][1]),
            "worker_instructions_per_event": (counts["worker"][0] - idle) // max(1, stored)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5_000, help="events queued, replayed as one batch")
    ap.add_argument("--replay", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.replay:
        print(f"done {replay(args.replay[0], Path(args.replay[1]))}")
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is required: apt-get install valgrind", file=sys.stderr)
        return 2
    result = measure(args.events, valgrind)
    path = write_results("instructions", result)
    print(table([
        ("worker step, per event", "instructions", ""),
        ("preparation (decode, map, normalize, scrub, COPY row)", f"{result['prepare_instructions_per_event']:,}", ""),
        ("whole step (preparation + transaction, Python side)", f"{result['worker_instructions_per_event']:,}",
         f"{result['events_stored']} events stored"),
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
