"""The door's Segment screen with a per-request memo (core.segment_screen.ScreenMemo) gives
the same verdict for every event as the screen without one, whatever the batch repeats:
the same timestamps with good and bad values, the same ids blocked and not, aliases."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from core.event_time import oldest_event_time
from core.intake import Rejection
from core.segment import screen_segment_event
from core.segment_screen import ScreenedEvent, ScreenMemo

RECEIVED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
TIMES = [None, "", "2026-05-01T11:59:00Z", "2026-05-01T11:59:00.123+02:00", "2026-05-03T12:00:00Z",
         "1999-01-01T00:00:00Z", "not a time", "2026-05-01T11:00:00", "9999-12-31T23:59:59Z"]
IDS = [None, "", " ", "user-1", "anon-1", "undefined", "null", "0000-0000", 42, 42.0, 1.5, "x" * 300, "ok\u0000",
       "[object Object]", "blocked-by-source"]


def _event(rng: random.Random) -> bytes:
    msg = {"type": rng.choice(["track", "identify", "alias", "page", "bogus"]),
           "event": rng.choice([None, "", "Viewed"]),
           "messageId": rng.choice([None, "m-1", "m-2", 7, "k" * 256]),
           "userId": rng.choice(IDS), "anonymousId": rng.choice(IDS), "previousId": rng.choice(IDS),
           "timestamp": rng.choice(TIMES), "originalTimestamp": rng.choice(TIMES), "sentAt": rng.choice(TIMES),
           "traits": rng.choice([None, {"email": "a@example.com"}, {"email": "not-an-email"}])}
    return json.dumps({k: v for k, v in msg.items() if v is not None or rng.random() < 0.5}).encode()


def test_a_shared_memo_never_changes_a_verdict():
    rng = random.Random(11)
    for _ in range(40):
        batch = [_event(rng) for _ in range(60)]
        sent_at = rng.choice(TIMES)
        kwargs = dict(path_type=rng.choice([None, None, "track"]), batch_sent_at=sent_at, received_at=RECEIVED,
                      max_event_bytes=32 * 1024, max_future_s=24 * 3600, phone_region="US",
                      oldest_event_time=oldest_event_time(RECEIVED, 13),
                      extra_blocked=frozenset({"blocked-by-source"}))
        memo = ScreenMemo()
        for raw in batch:
            assert screen_segment_event(raw, memo=memo, **kwargs) == screen_segment_event(raw, **kwargs)


def test_the_memo_holds_what_the_batch_repeated():
    memo = ScreenMemo()
    raws = [json.dumps({"type": "track", "event": "E", "anonymousId": "anon-7", "messageId": f"m-{i}",
                        "timestamp": "2026-05-01T11:59:00Z"}).encode() for i in range(50)]
    out = [screen_segment_event(r, path_type=None, batch_sent_at="2026-05-01T11:59:30Z", received_at=RECEIVED,
                                max_event_bytes=32 * 1024, max_future_s=86400, phone_region=None, memo=memo)
           for r in raws]
    assert all(isinstance(s, ScreenedEvent) for s in out)
    assert [s.dedupe_key for s in out] == [f"m-{i}" for i in range(50)]
    assert out[0].event_time == datetime(2026, 5, 1, 11, 59, 30, tzinfo=UTC)  # skew-corrected
    assert len(memo.times) == 1 and memo.ids == {"anon-7": True}
    late = screen_segment_event(raws[0].replace(b"2026-05-01T11:59:00Z", b"1999-01-01T00:00:00Z"), path_type=None,
                                batch_sent_at=None, received_at=RECEIVED, max_event_bytes=32 * 1024,
                                max_future_s=86400, phone_region=None,
                                oldest_event_time=oldest_event_time(RECEIVED, 13), memo=memo)
    assert isinstance(late, Rejection) and late.code == "event_too_old" and late.field == "timestamp"
