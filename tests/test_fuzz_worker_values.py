"""Fuzzing the values that reach counters and columns, through ingest and a worker.

Hypothesis (derandomized: the same examples on every run) builds native and Segment batches
whose fields hold extreme numbers, strings and types: revenue and total (huge, tiny, NaN,
infinite, exponents, numbers as text, booleans, objects), event names, times (odd offsets,
far past and future), consent values, ip and user agent, traits and properties. Whatever the
door accepts, the worker must store, or isolate alone in the failed registry
(workers/isolation.py): no job may fail as a whole, and no accepted event may be lost.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import make_tenant
from hypothesis import HealthCheck, Phase, event, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rq.job import Job
from rq.registry import FailedJobRegistry

from core.schemas import decode_batch
from stratum.queue import MsgpackSerializer, events_queue

pytestmark = pytest.mark.timeout(180)

_NOW = datetime.now(UTC)

_NUMBERS = st.one_of(
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.sampled_from([0, -1, 99999999999999, 10 ** 14, -(10 ** 14), 2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 99999999999999.99, 1e14, 0.00005]),
)
_NUMERIC_TEXT = st.sampled_from([
    "99999999999999.99999", "-99999999999999.99995", "1e999999999", "-1e999999999", "1e-999999999", "NaN", "-nan",
    "sNaN", "Infinity", "-inf", "1_000", " 12.5 ", "12,50", "0x10", "", " ", "€10", "1e14", "9" * 400, "0.00005",
])
_SCALARS = st.one_of(_NUMBERS, _NUMERIC_TEXT, st.booleans(), st.none(), st.text(max_size=40))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=6)
_KEYS = st.one_of(st.sampled_from(["revenue", "total", "price", "email", "n", "nested"]), st.text(max_size=12))
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)


def _times():
    offsets = st.sampled_from(["Z", "+00:00", "+14:00", "-12:00", "+05:45", "-00:30"])
    near = st.integers(min_value=-3 * 24 * 3600, max_value=23 * 3600).map(
        lambda s: (_NOW + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%f"))
    far = st.sampled_from(["0001-01-01T00:00:00", "1970-01-01T00:00:00", "9999-12-31T23:59:59.999999",
                           (_NOW - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%S"),
                           (_NOW + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")])
    return st.tuples(st.one_of(near, near, far), offsets).map(lambda t: t[0] + t[1])


# Amounts at the edge of profiles.revenue (numeric(18, 4)): alone or summed, they overflow it.
_EDGE_AMOUNTS = st.sampled_from([99999999999999, "99999999999999.99999", 99999999999999.99, 5e13, 6e13,
                                 "-99999999999999.99995", "99999999999999.9999", -(10 ** 14)])


def _properties():
    revenue = st.one_of(_EDGE_AMOUNTS, _EDGE_AMOUNTS, _NUMBERS, _NUMERIC_TEXT, st.booleans(), st.none(), _VALUES)
    amounts = st.one_of(st.fixed_dictionaries({"revenue": revenue}), st.fixed_dictionaries({"total": revenue}),
                        st.fixed_dictionaries({}, optional={"revenue": revenue, "total": revenue}))
    return st.tuples(amounts, st.dictionaries(_KEYS, _VALUES, max_size=3)).map(lambda t: {**t[1], **t[0]})


def _context():
    return st.fixed_dictionaries({}, optional={
        "ip": st.one_of(_TEXT, _NUMBERS, st.sampled_from(["203.0.113.7", "::1", "999.1.1.1", "x" * 200])),
        "user_agent": st.one_of(_TEXT, st.sampled_from(["Mozilla/5.0 " * 60, "\u00e9" * 2000]), _NUMBERS),
        "userAgent": _SCALARS, "campaign": _VALUES})


_NAMES = st.one_of(st.sampled_from(["Purchase", "Order Completed", "order_completed", "Viewed", "x" * 255]),
                   st.sampled_from(["Purchase", "Order Completed"]),
                   st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                           min_size=1, max_size=255))
_CONSENT = st.dictionaries(st.sampled_from(["analytics", "ads", "email", "sms", "all"]),
                           st.one_of(st.booleans(), st.booleans(), _SCALARS), max_size=5)


@st.composite
def _native_event(draw, user: str) -> dict:
    e = {"event_name": draw(_NAMES), "event_time": draw(_times()),
         "identifiers": [{"type": "external_id", "value": user},
                         {"type": "anonymous_id", "value": f"{user}-{draw(st.integers(0, 3))}"}],
         "properties": draw(_properties()), "context": draw(_context()),
         "traits": draw(st.dictionaries(_KEYS, _VALUES, max_size=4))}
    if draw(st.booleans()):
        e["consent"] = draw(_CONSENT)
    return e


@st.composite
def _segment_message(draw, user: str) -> dict:
    return {"type": draw(st.sampled_from(["track", "track", "identify", "page"])), "event": draw(_NAMES),
            "userId": user, "messageId": uuid.uuid4().hex, "timestamp": draw(_times()),
            "properties": draw(_properties()), "traits": draw(st.dictionaries(_KEYS, _VALUES, max_size=3)),
            "context": {**draw(_context()), "traits": draw(st.dictionaries(_KEYS, _VALUES, max_size=2))}}


def _failed_single_events(redis, queue, seen: set[str]) -> tuple[set[str], list[str]]:
    """Event ids held by new failed jobs, and the new failed jobs that are not one isolated event."""
    isolated, whole = set(), []
    for job_id in FailedJobRegistry(queue=queue).get_job_ids():
        if job_id in seen:
            continue
        seen.add(job_id)
        job = Job.fetch(job_id, connection=redis, serializer=MsgpackSerializer)
        result = job.latest_result()
        exc = (result.exc_string if result is not None else "") or ""
        batch = decode_batch(job.args[0])
        if len(batch.events) == 1 and "isolated from its batch" in exc:
            isolated.add(batch.events[0].event_id)
            event(f"isolated: {exc.strip().splitlines()[-1]}")
        else:
            whole.append(f"{job_id}: {exc.strip()[-1500:]}")
    return isolated, whole


# Derandomized and without shrinking (a failing example is shown by its notes): the same
# examples on every run, in bounded time.
@hsettings(max_examples=30, deadline=None, database=None, derandomize=True,
           phases=[Phase.explicit, Phase.generate],
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_extreme_values_are_stored_or_isolated_never_fail_a_job(data, settings, db, redis_conn, ingest_client,
                                                                drain):
    tenant = make_tenant(db, source_type="server")
    users = [f"fz-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    native = [data.draw(_native_event(users[i % 3]), label=f"event {i}") for i in range(data.draw(st.integers(1, 6)))]
    segment = [data.draw(_segment_message(users[i % 3]), label=f"message {i}")
               for i in range(data.draw(st.integers(0, 4)))]
    headers = {"Authorization": f"Bearer {tenant.write_key}", "Content-Type": "application/json"}

    r = ingest_client.post("/api/v1/cdp/events", content=json.dumps({"events": native}), headers=headers)
    note(f"native {r.status_code} {r.text[:2000]}")
    assert r.status_code in (202, 400), r.text
    body = r.json()
    accepted = {x["event_id"] for x in body.get("results", []) if x["status"] == "accepted"}
    for x in body.get("results", []):
        event(f"native {x['status']}: {x.get('error', {}).get('code', '')}")
    expected = len(accepted)
    if segment:
        r = ingest_client.post("/v1/batch", content=json.dumps({"batch": segment}), headers=headers)
        note(f"segment {r.status_code} {r.text[:2000]}")
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            expected += len(segment) - len(r.json().get("rejected", []))
            for x in r.json().get("rejected", []):
                event(f"segment rejected: {x['code']}")
    event(f"accepted {expected}")

    queue = events_queue(redis_conn, settings.queue_name)
    seen = set(FailedJobRegistry(queue=queue).get_job_ids())
    drain()
    isolated, whole = _failed_single_events(redis_conn, queue, seen)
    assert whole == [], "jobs failed as a whole:\n" + "\n".join(whole)
    stored = db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert stored + len(isolated) == expected, (stored, isolated, expected)
    stored_ids = {str(i) for (i,) in db.execute("SELECT event_id FROM events WHERE tenant_id = %s", (tenant.id,))}
    assert accepted <= stored_ids | isolated
