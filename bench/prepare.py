"""Micro-benchmark of the worker's per-event Python before persistence (workers/prepare.py).

``python -m bench.prepare [--events N] [--rounds R]``: the bench traffic
(``bench.traffic``) screened as the door screens it and queued as ``QueuedBatch`` payloads
of 100 events, then decoded and prepared as a worker does (``decode_batch`` and
``prepare_event`` per event: Segment mapping, normalization, scrubbing, EMQ, claims), under
the worker's garbage-collector settings, after one pass that loads what a running worker
has loaded (phone metadata, compiled patterns). Prints CPU microseconds per event, best of
R passes, twice: with every memo of identifiers and PII hashes emptied before each pass
(a worker's first batches) and with them filled (a steady-state worker). The traffic has
one person per ten events, as ``bench.workers`` draws it, so even the first pass meets
most identifiers more than once.
Then the per-event Python of the door on the same traffic (ingest_api/segment.py: screen,
event id, queue blob, dedupe mark; not the HTTP server or the Redis call).
Process CPU time, so other load on the machine inflates it less.
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime

import msgspec

from bench.traffic import TrafficGenerator
from core.event_time import oldest_event_time
from core.schemas import (
    QUEUE_FORMAT_VERSION,
    QueuedBatch,
    QueuedSegmentEvent,
    assemble_batch,
    decode_batch,
    encode_batch_header,
    encode_event,
)
from core.segment import screen_segment_event
from ingest_api.auth import Source
from ingest_api.pipeline import new_event_id, pending_event
from ingest_api.segment import _batch_decoder
from workers.prepare import prepare_event
from workers.runtime import SourceIdentity
from workers.worker import GC_THRESHOLDS


def queued_payloads(n_events: int, seed: int = 7, per_batch: int = 100) -> list[bytes]:
    """The bench traffic as queue payloads, built as the ingest API builds them."""
    gen = TrafficGenerator(seed=seed, people=max(1000, n_events // 10))  # as bench.workers draws it
    payloads = []
    for _ in range(max(1, n_events // per_batch)):
        received_at = datetime.now(UTC)
        body = msgspec.json.decode(gen.batch(per_batch, received_at))
        blobs = []
        for i, msg in enumerate(body["batch"]):
            raw = msgspec.json.encode(msg)
            screened = screen_segment_event(raw, path_type=None, batch_sent_at=body["sentAt"],
                                            received_at=received_at, max_event_bytes=32_768,
                                            max_future_s=86_400, phone_region="US")
            event_id = f"0190b0c4-0000-7000-{len(payloads) % 65536:04x}-{i:012x}"
            blobs.append(encode_event(QueuedSegmentEvent(event_id, screened.dedupe_key or event_id,
                                                         screened.event_type, screened.event_time, raw)))
        header = encode_batch_header(QueuedBatch(QUEUE_FORMAT_VERSION, "7e1a0000-0000-4000-8000-000000000001",
                                                 "5c0e0000-0000-4000-8000-000000000001", "server", "US", received_at,
                                                 "r1", None, None, []))
        payloads.append(assemble_batch(header, blobs))
    return payloads


def door_bodies(n_events: int, seed: int = 7, per_batch: int = 100) -> list[tuple[bytes, datetime]]:
    """The bench traffic as request bodies, with their receipt times."""
    gen = TrafficGenerator(seed=seed, people=max(1000, n_events // 10))
    bodies = []
    for _ in range(max(1, n_events // per_batch)):
        received_at = datetime.now(UTC)
        bodies.append((gen.batch(per_batch, received_at), received_at))
    return bodies


def door_all(bodies: list[tuple[bytes, datetime]]) -> int:
    """What the ingest API does per event of a Segment batch before the Redis call
    (ingest_api/segment.py ``_process``): screen, event id, queue blob, dedupe mark."""
    source = Source("s1", "t1", "server", True, "US", None, (), frozenset())
    oldest = oldest_event_time(datetime.now(UTC), 25)
    n = 0
    for body, received_at in bodies:
        envelope = _batch_decoder.decode(body)
        for raw in envelope.batch:
            raw_bytes = bytes(raw)
            screened = screen_segment_event(raw_bytes, path_type=None, batch_sent_at=envelope.sentAt,
                                            received_at=received_at, max_event_bytes=32_768, max_future_s=86_400,
                                            phone_region="US", oldest_event_time=oldest)
            event_id = new_event_id()
            blob = encode_event(QueuedSegmentEvent(event_id, screened.dedupe_key or event_id, screened.event_type,
                                                   screened.event_time, raw_bytes))
            pending_event(source, blob, event_id, screened.dedupe_key)
            n += 1
    return n


def door_us(bodies: list[tuple[bytes, datetime]], rounds: int) -> float:
    door_all(bodies)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        n = door_all(bodies)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def prepare_all(payloads: list[bytes], identity: SourceIdentity) -> int:
    """Decode and prepare every event as the worker does; returns the number prepared."""
    n = 0
    blocked: frozenset[str] = frozenset()
    for payload in payloads:
        batch = decode_batch(payload)
        for queued in batch.events:
            prepare_event(batch, queued, blocked, identity)
            n += 1
    return n


def _empty_memos() -> None:
    """Forget every identifier and PII hash seen (whichever memos this version has)."""
    import core.identifiers
    import core.privacy

    for module in (core.identifiers, core.privacy):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()
    try:
        import core.resting_identifiers
    except ImportError:
        return
    core.resting_identifiers._MEMOS.clear()


def per_event_us(payloads: list[bytes], rounds: int, first_sight: bool) -> float:
    """The best of ``rounds`` passes, in CPU microseconds per event."""
    identity = SourceIdentity(protect=False)
    best = float("inf")
    for _ in range(rounds):
        if first_sight:
            _empty_memos()
        start = time.process_time()
        n = prepare_all(payloads, identity)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # as a worker process runs (workers/worker.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    payloads = queued_payloads(args.events)
    prepare_all(payloads, SourceIdentity(protect=False))  # load what a running worker has loaded
    first = per_event_us(payloads, args.rounds, first_sight=True)
    repeat = per_event_us(payloads, args.rounds, first_sight=False)
    print(f"prepare (decode_batch + prepare_event), {len(payloads) * 100} events of the bench traffic, CPU us/event "
          f"(best of {args.rounds}): identifiers seen first {first:.1f}, seen before {repeat:.1f}")
    door = door_us(door_bodies(args.events), args.rounds)
    print(f"door (screen, event id, queue blob, dedupe mark per event of a Segment batch), CPU us/event "
          f"(best of {args.rounds}): {door:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
