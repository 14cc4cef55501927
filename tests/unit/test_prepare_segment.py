"""The worker's one-pass preparation of a Segment event (workers/prepare.py) against the
reference: the same event mapped (``core.segment.map_segment_event``) and then prepared as
a mapped event (scrubbed, identifiers normalized again). Both must give equal prepared
events, field by field, for realistic traffic and for hostile messages (PII in odd places,
blocked values, signatures, every message type, batch-level context)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from core.schemas import QUEUE_FORMAT_VERSION, QueuedBatch, QueuedSegmentEvent
from core.segment import map_segment_event, screen_segment_event
from workers.prepare import _prepare_mapped_event, prepare_event
from workers.runtime import SourceIdentity

_NOW = datetime.now(UTC).replace(microsecond=0)
_SECRET = "s3cret-identity-key"
_TENANT, _SOURCE = "7e1a0000-0000-4000-8000-000000000001", "5c0e0000-0000-4000-8000-000000000001"


def _batch(raws: list[bytes], region: str | None = "US", context: dict | None = None,
           integrations: dict | None = None, source_type: str = "server") -> QueuedBatch:
    events = []
    for i, raw in enumerate(raws):
        screened = screen_segment_event(raw, path_type=None, batch_sent_at=None, received_at=_NOW,
                                        max_event_bytes=65_536, max_future_s=86_400, phone_region=region)
        if hasattr(screened, "code"):  # rejected at the door: never queued
            continue
        event_id = f"0190b0c4-0000-7000-8000-{i:012d}"
        events.append(QueuedSegmentEvent(event_id, screened.dedupe_key or event_id, screened.event_type,
                                         screened.event_time, raw))
    return QueuedBatch(QUEUE_FORMAT_VERSION, _TENANT, _SOURCE, source_type, region, _NOW, "r1", context, integrations,
                       events)


def _reference(batch: QueuedBatch, queued: QueuedSegmentEvent, blocked: frozenset[str], identity: SourceIdentity):
    mapped = map_segment_event(
        queued.raw, event_type=queued.event_type, event_id=queued.event_id, dedupe_key=queued.dedupe_key,
        event_time=queued.event_time, received_at=batch.received_at, batch_context=batch.context,
        batch_integrations=batch.integrations, phone_region=batch.phone_region, extra_blocked=blocked)
    return _prepare_mapped_event(batch, mapped, blocked, identity)


def _assert_same(batch: QueuedBatch, blocked: frozenset[str] = frozenset(),
                 identity: SourceIdentity | None = None) -> int:
    identity = identity or SourceIdentity(protect=False)
    for queued in batch.events:
        fast = prepare_event(batch, queued, blocked, identity)
        again = prepare_event(batch, queued, blocked, identity)  # through the memo this time
        ref = _reference(batch, queued, blocked, identity)
        assert fast == ref, queued.raw
        assert again == ref, queued.raw
        assert msgspec.msgpack.encode(fast.event) == msgspec.msgpack.encode(ref.event)
    return len(batch.events)


def _traffic(n: int, seed: int = 3) -> list[bytes]:
    """Messages shaped like the benchmark traffic (bench/traffic.py): anonymous tracks,
    email and phone in varied forms in context.traits, identify and alias calls, repeats."""
    rng = random.Random(seed)
    emails, phones = ("{u}@example.com", " {U}@Example.COM "), ("(650) 555-{n:04d}", "+1 650 555 {n:04d}", "650.555.{n:04d}")
    raws = []
    for i in range(n):
        p = rng.randrange(300)
        base = {"type": "track", "event": "Product Viewed", "anonymousId": f"anon-{p}-{p % 3}", "userId": None,
                "messageId": f"m-{i}", "timestamp": (_NOW - timedelta(seconds=rng.random() * 30)).isoformat(),
                "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "library": {"name": "x", "version": "1"}},
                "integrations": {}, "properties": {"product_id": f"sku-{p}", "price": 19.99}}
        roll = rng.random()
        if 0.7 <= roll < 0.9:
            traits = ({"email": rng.choice(emails).format(u=f"user{p}", U=f"User{p}")} if rng.random() < 0.6
                      else {"phone": rng.choice(phones).format(n=p % 1000)})
            base["context"] = {**base["context"], "traits": traits}
        elif 0.9 <= roll < 0.97:
            base.update(type="identify", userId=f"user-{p}", traits={"email": f"user{p}@example.com", "plan": "pro"})
        elif roll >= 0.97:
            base.update(type="alias", userId=f"user-{p}", previousId=base["anonymousId"])
        raws.append(msgspec.json.encode(base))
    return raws


def test_bench_traffic_prepares_as_the_reference():
    raws = _traffic(600)
    assert _assert_same(_batch(raws)) > 550
    assert _assert_same(_batch(raws), blocked=frozenset({"+16505550100", "user7@example.com", "anon-7-1"})) > 550


def _msg(**fields) -> bytes:
    return msgspec.json.encode({"messageId": "m-1", "timestamp": (_NOW - timedelta(seconds=5)).isoformat(),
                                **fields})


HOSTILE = [
    _msg(type="identify", userId="Jane@Example.com", traits={"email": " Jane@Example.COM ", "Phone": "650 555 0100",
                                                              "e-mail": "x@y.io", "mobile_number": 6505550101}),
    _msg(type="track", event="Signed up jane@example.com", anonymousId="a%40b.com",
         properties={"note": "mail me at jo@ex.com", "url": "https://x.io/?e=jo%2540ex.com", "writeKey": "wk"},
         context={"traits": {"email": 12, "phone": 6505550100.0}, "write_key": "wk", "device": {"id": "d-1"}}),
    _msg(type="alias", userId="u-1", previousId="jane@example.com", messageId="jane@example.com"),
    _msg(type="alias", userId="u-1", previousId="anon-7-1"),
    _msg(type="group", userId=42, groupId=7.0, traits={"email": "g@example.com", "name": "Acme"}),
    _msg(type="page", anonymousId="a-1", name="Pricing", category="Docs", properties={"tel": ["+1 650 555 0100", 7]}),
    _msg(type="screen", anonymousId="a-1", context={"traits": {"email": "not-an-email", "phone": "12"}}),
    _msg(type="track", event="x", userId="undefined", anonymousId="a-2", context={"device": {"id": {"x": 1}}}),
    _msg(type="track", event="x", userId="user-7", anonymousId="anon-7-1",
         context={"traits": {"email": "user7@example.com", "phone": "+16505550100"}}),
    _msg(type="track", event="x", userId=" spaced ", anonymousId="sha256:" + "a" * 64,
         context={"identity_signature": "deadbeef", "campaign": {"name": "c"}, "ip": "1.2.3.4"}),
    _msg(type="identify", userId=12345678901, traits={"emails": ["a@b.co", "c@d.co"], "nested": {"phone": "+1 650"}}),
]


@pytest.mark.parametrize("region", ["US", None])
def test_hostile_messages_prepare_as_the_reference(region):
    blocked = frozenset({"+16505550100", "user7@example.com", "anon-7-1", "12345678901"})
    batch = _batch(HOSTILE, region=region)
    assert _assert_same(batch) == len(HOSTILE)
    assert _assert_same(batch, blocked) == len(HOSTILE)
    assert _assert_same(batch, identity=SourceIdentity(protect=True, secrets=(_SECRET,))) == len(HOSTILE)
    merged = _batch(HOSTILE, region=region, context={"ip": "9.9.9.9", "traits": {"email": "ctx@example.com"}},
                    integrations={"All": True}, source_type="website")
    assert _assert_same(merged, blocked, SourceIdentity(protect=True)) == len(HOSTILE)


_TEXT = st.one_of(st.sampled_from(["", " ", "null", "a@b.co", "%40", "x%2540y.io", "+1 650 555 0100", "sha256:" + "b" * 64,
                                   "0", "e-mail", "writeKey", "Identity_Signature"]), st.text(max_size=12))
_VALUE = st.recursive(st.one_of(_TEXT, st.integers(-10, 10 ** 12), st.floats(allow_nan=False), st.booleans(),
                                st.none()),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
                      max_leaves=8)
_ID = st.one_of(st.none(), _TEXT, st.integers(-5, 10 ** 12), st.floats(allow_nan=False, allow_infinity=False))


@hsettings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
    "event": st.text(min_size=1, max_size=10), "userId": _ID, "anonymousId": _ID, "previousId": _ID, "groupId": _ID,
    "name": st.one_of(st.none(), _TEXT), "category": st.one_of(st.none(), _TEXT),
    "properties": st.dictionaries(_TEXT, _VALUE, max_size=4), "traits": st.dictionaries(_TEXT, _VALUE, max_size=4),
    "context": st.dictionaries(st.one_of(_TEXT, st.sampled_from(["traits", "device", "identity_signature"])),
                               _VALUE, max_size=4),
    "integrations": st.dictionaries(_TEXT, _VALUE, max_size=2),
}), st.booleans())
def test_generated_messages_prepare_as_the_reference(fields, with_batch_context):
    raw = _msg(**fields)
    ctx = {"traits": {"phone": "+1 650 555 0102"}, "k": "v@w.io"} if with_batch_context else None
    batch = _batch([raw, _msg(**{**fields, "anonymousId": "anon-fallback"})], context=ctx,
                   integrations={"x": 1} if with_batch_context else None)
    _assert_same(batch, frozenset({"a@b.co", "+16505550100"}), SourceIdentity(protect=True, secrets=(_SECRET,)))


def test_outcome_memos_stay_bounded_across_regions_and_blocked_values(monkeypatch):
    import core.resting_identifiers as resting

    monkeypatch.setattr(resting, "_MAX_MEMO", 50)
    resting._MEMOS.clear()
    monkeypatch.setattr(resting, "_memo_size", 0)
    for i in range(400):
        outcome = resting.candidate_outcome("anonymous_id", f"a-{i}", "US", frozenset({f"tenant-{i % 7}"}))
        assert outcome.stored is not None and outcome.stored.value == f"a-{i}"
        assert sum(len(m) for m in resting._MEMOS.values()) <= 50
    resting._MEMOS.clear()
