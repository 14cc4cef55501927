"""The door's per-request Python taken apart: CPU microseconds of each step of the Segment
batch path for one 100-event batch of the bench traffic, in one process, no sockets.

    python -m bench.ingest_parts

Steps: the envelope decode, the per-event screen (``core.segment.screen_segment_event``
with the request's ``ScreenMemo``), the queue blob of each event, the dedupe marks, the
Redis script's arguments (``JobWriter.call``), and the whole loop as ``ingest_api.segment``
runs it. What a served request costs beyond the loop is the framework, the HTTP server and
the Redis round trip (``bench.ingest`` measures those served). Minimum of 7 runs of 300.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from bench.loadgen import segment_batch
from core.event_time import oldest_event_time
from core.schemas import QueuedSegmentEvent, encode_event
from core.segment import screen_segment_event
from core.segment_screen import ScreenMemo
from ingest_api.auth import Source
from ingest_api.pipeline import dedupe_marker, new_event_id
from ingest_api.segment import _batch_decoder
from stratum.queue.writer import JobWriter, PendingEvent

_SOURCE = Source("00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b", "server", True,
                 None, None, (), frozenset())


def _cpu_us(fn: Callable[[], object], runs: int = 7, n: int = 300) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return round(best, 1)


def measure(body: bytes) -> dict[str, float]:
    """CPU us per request of each step for the batch ``body``."""
    now = datetime.now(UTC)
    writer = JobWriter("bench", 3600, 600, 86400, 0)

    def screens(env):
        return partial(screen_segment_event, path_type=None, batch_sent_at=env.sentAt, received_at=now,
                       max_event_bytes=32 * 1024, max_future_s=86400, phone_region=None,
                       oldest_event_time=oldest_event_time(now, 13), extra_blocked=frozenset(), memo=ScreenMemo())

    def whole() -> list[PendingEvent]:
        env = _batch_decoder.decode(body)
        screen, mark = screens(env), dedupe_marker(_SOURCE)
        pending = []
        for raw in env.batch:
            raw_bytes = bytes(raw)
            s = screen(raw_bytes)
            event_id = new_event_id()
            blob = encode_event(QueuedSegmentEvent(event_id, s.dedupe_key or event_id, s.event_type, s.event_time,
                                                   raw_bytes))
            pending.append(PendingEvent(blob, event_id, mark(s.dedupe_key) if s.dedupe_key else None))
        writer.call(event_id, "t", "s", 0, b"h" * 31, pending, time.time())
        return pending

    env = _batch_decoder.decode(body)
    raws = [bytes(r) for r in env.batch]
    screened = [screens(env)(r) for r in raws]
    pending = whole()
    mark = dedupe_marker(_SOURCE)
    return {
        "envelope_decode": _cpu_us(lambda: _batch_decoder.decode(body)),
        "screen_all_events": _cpu_us(lambda: [s(r) for s in (screens(env),) for r in raws]),
        "queue_blobs": _cpu_us(lambda: [encode_event(QueuedSegmentEvent(new_event_id(), s.dedupe_key, s.event_type,
                                                                         s.event_time, r))
                                        for s, r in zip(screened, raws, strict=True)]),
        "dedupe_marks": _cpu_us(lambda: [mark(s.dedupe_key) for s in screened]),
        "script_arguments": _cpu_us(lambda: writer.call("j", "t", "s", 0, b"h" * 31, pending, time.time())),
        "whole_loop": _cpu_us(whole),
    }


def main() -> int:
    parts = measure(segment_batch("parts"))
    for name, us in parts.items():
        print(f"{name:20s} {us:8.1f} us per 100-event request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
