"""Fuzzing both HTTP APIs.

1. Schemathesis, in-process through its ASGI transport, against the OpenAPI schema each app
   serves at /schema/openapi.json: every operation gets a bounded number of generated
   requests (positive and negative data) with a valid key, and no answer may be a 5xx;
   /health still answers 200 afterwards. The ingest routes read their body by hand, so their
   schema declares no request body and Schemathesis would send none: the test adds loose
   body schemas (native envelope, Segment batch and message) to the loaded schema so the
   handlers really get fuzzed. Read API path ids are sometimes replaced by ids of real
   objects, so handlers get past their 404.
2. Hypothesis-generated Segment batches posted to /v1/batch: random types, ids (null,
   numbers, unicode, blocked values such as 'undefined'), traits with good and bad emails
   and phones, nested properties, good and bad timestamps. Every answer is 200 or 4xx with a
   JSON body (200: ``{"success": true}`` plus optional ``rejected``; 4xx: code + message),
   never a 5xx; after a worker run every accepted event is stored exactly once and no job
   failed.
3. The bugs these fuzzers found, each pinned by a small deterministic test (at the end).

By default (and in CI) every run generates the same examples: tests/conftest.py loads a
derandomized Hypothesis profile without an example database, and the Schemathesis runs use
a fixed seed. ``STRATUM_FUZZ=long`` is the exploratory run (random seeds, ten times the
examples); the README's test section gives the command.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from conftest import FUZZ_SCALE, FUZZ_SEED, make_tenant, stored_dedupe_key
from hypothesis import HealthCheck, Phase, event, given, note, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rq.registry import FailedJobRegistry
from schemathesis.checks import not_a_server_error
from test_reliability_support import assert_exact_and_consistent, failed_job_details

from stratum.queue import events_queue

pytestmark = [pytest.mark.timeout(90 * FUZZ_SCALE),
              # raised inside Schemathesis' own strategies, not ours
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]

SCHEMA_PATH = "/schema/openapi.json"
# Deterministic by default (tests/conftest.py: same examples every run); STRATUM_FUZZ=long
# multiplies the counts and randomizes the seeds.
EXAMPLES_PER_OPERATION = 30 * FUZZ_SCALE
SEGMENT_EXAMPLES = 50 * FUZZ_SCALE

# --- Schemathesis --------------------------------------------------------------------------

# Schemas of valid requests (Schemathesis' negative mode breaks them in every way), with
# realistic values (``enum``, ``pattern``) so that the positive cases pass validation and
# reach the queue.
_NOW = datetime.now(UTC)
_RECENT = [(_NOW - timedelta(minutes=m)).isoformat() for m in (0, 1, 30, 600)]
_TIME = {"enum": _RECENT}  # bad times come from negative mode and the Segment test below
_ID = {"anyOf": [{"type": "string", "pattern": "^[a-z0-9-]{4,20}$"}, {"type": "string", "maxLength": 40},
                 {"type": "integer"}, {"type": "null"}]}
_TRAITS = {"type": "object", "properties": {
    "email": {"anyOf": [{"enum": ["ann@example.com", " Bob@Example.ORG "]}, {"type": "string", "format": "email"},
                        {"type": "string", "maxLength": 30}]},
    "phone": {"type": "string", "maxLength": 20}, "name": {"type": "string"}}}
_SEGMENT_MESSAGE = {
    "type": "object",
    "properties": {
        "type": {"enum": ["track", "identify", "page", "screen", "group", "alias", "other"]},
        "messageId": _ID, "userId": _ID, "anonymousId": _ID, "previousId": _ID, "groupId": _ID,
        "event": {"type": "string", "maxLength": 60}, "name": {"type": "string"},
        "timestamp": _TIME, "originalTimestamp": _TIME, "sentAt": _TIME,
        "traits": _TRAITS, "properties": {"type": "object"},
        "context": {"type": "object", "properties": {"traits": _TRAITS, "device": {
            "type": "object", "properties": {"id": _ID}}}},
    },
}
_SEGMENT_BATCH = {"type": "object", "required": ["batch"], "properties": {
    "batch": {"type": "array", "minItems": 1, "maxItems": 5, "items": _SEGMENT_MESSAGE},
    "sentAt": _TIME, "context": {"type": "object"}}}
_NATIVE = {"type": "object", "required": ["events"], "properties": {"events": {
    "type": "array", "minItems": 1, "maxItems": 5, "items": {
        "type": "object", "required": ["event_name", "event_time", "identifiers"],
        "properties": {
            "event_name": {"type": "string", "minLength": 1, "maxLength": 255},
            "event_time": _TIME,
            "identifiers": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"anyOf": [
                {"type": "object", "required": ["type", "value"], "properties": {
                    "type": {"enum": ["anonymous_id", "external_id", "device_id"]},
                    "value": {"type": "string", "pattern": "^[a-z0-9-]{4,20}$"}}},
                {"type": "object", "required": ["type", "value"], "properties": {
                    "type": {"enum": ["email"]}, "value": {"enum": ["ann@example.com", " Bob@Example.ORG "]}}},
                {"type": "object", "required": ["type", "value"], "properties": {
                    "type": {"enum": ["phone"]}, "value": {"enum": ["+14155552671", "(415) 555-2671"]}}},
            ]}},
            "idempotency_key": {"type": "string", "maxLength": 140},
            "properties": {"type": "object"}, "context": {"type": "object"},
            "consent": {"type": "object", "properties": {k: {"type": "boolean"} for k in
                                                         ("analytics", "ads", "email", "sms", "all")}},
        }}}}}
_INGEST_BODIES = {"/api/v1/cdp/events": _NATIVE, "/v1/batch": _SEGMENT_BATCH, "/v1/import": _SEGMENT_BATCH,
                  "/v1/b": _SEGMENT_BATCH, **{f"/v1/{t}": _SEGMENT_MESSAGE
                                              for t in ("track", "identify", "page", "screen", "group", "alias")}}


def _with_ingest_bodies(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    for path, body in _INGEST_BODIES.items():
        op = raw["paths"].get(path, {}).get("post")
        if op is not None and "requestBody" not in op:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return raw


def _load_schema(app, augment=None):
    loaded = schemathesis.openapi.from_asgi(SCHEMA_PATH, app)
    if augment is None:
        return loaded
    schema = schemathesis.openapi.from_dict(augment(loaded.raw_schema))
    schema.app = app
    schema.location = SCHEMA_PATH
    return schema


def _with_fuzz_seed(test):
    return test if FUZZ_SEED is None else seed(FUZZ_SEED)(test)


def _fuzz(schema, headers: dict[str, str], known: dict[str, list[str]] | None = None
          ) -> tuple[Counter, list[str]]:
    """Run every operation for EXAMPLES_PER_OPERATION examples; return (status counts, failures)."""
    known = known or {}
    calls: Counter = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        # Schemathesis' own runner applies its ``seed`` setting as ``hypothesis.seed``; this
        # test drives the strategies itself, so it does the same with the fixed seed.
        @_with_fuzz_seed
        @hsettings(max_examples=EXAMPLES_PER_OPERATION, phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
               | operation.as_strategy(schemathesis.GenerationMode.NEGATIVE), data=st.data())
        def run(case, data):
            for name in list(case.path_parameters or {}):
                if known.get(name) and data.draw(st.booleans(), label=f"real {name}"):
                    case.path_parameters[name] = data.draw(st.sampled_from(known[name]))
            response = case.call(headers=headers, timeout=30)
            calls[response.status_code] += 1
            note(f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:500]!r} -> "
                 f"{response.status_code} {response.text[:500]!r}")
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then fail once
            notes = "\n".join(getattr(exc, "__notes__", []))
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:800]}\n{notes[-1500:]}")
    return calls, failures


@pytest.fixture
def stop_asgi_lifespans():
    """Schemathesis keeps an app's lifespan (pools, Redis client) open for the process; close it."""
    yield
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


def test_schemathesis_ingest_api_has_no_server_errors(settings, redis_conn, db, tenant, drain,
                                                      stop_asgi_lifespans):
    from ingest_api.app import create_app

    app = create_app(settings)
    schema = _load_schema(app, _with_ingest_bodies)
    started = time.monotonic()
    calls, failures = _fuzz(schema, {"Authorization": f"Bearer {tenant.write_key}"})
    print(f"ingest: {calls.total()} calls in {time.monotonic() - started:.1f}s, by status {sorted(calls.items(), key=str)}")
    assert calls.total() >= 100
    assert calls[202] + calls[200] >= 10, "the fuzzer never got past validation: check the body schemas"
    assert failures == [], "\n\n".join(failures)
    with schemathesis.python.asgi.get_client(app) as client:
        assert client.get("/health").status_code == 200
    # Whatever the fuzzer got accepted is processable: no poison job.
    assert drain() == 0, failed_job_details(redis_conn, settings.queue_name)


def test_schemathesis_read_api_has_no_server_errors(settings, redis_conn, db, tenant, ingest_client, drain,
                                                    stop_asgi_lifespans):
    from read_api.app import create_app

    # Real objects for path parameters: a few profiles with events.
    now = datetime.now(UTC).isoformat()
    r = ingest_client.post("/api/v1/cdp/events", headers={"Authorization": f"Bearer {tenant.write_key}"}, json={
        "events": [{"event_name": "Viewed", "event_time": now, "properties": {"price": 3},
                    "identifiers": [{"type": "email", "value": f"fuzz{i}@example.com"},
                                    {"type": "anonymous_id", "value": f"fuzz-anon-{i}"}]} for i in range(5)]})
    assert r.status_code == 202, r.text
    event_ids = [x["event_id"] for x in r.json()["results"]]
    assert drain() == 0
    profile_ids = [str(p) for (p,) in db.execute("SELECT id FROM profiles WHERE tenant_id = %s", (tenant.id,))]
    known = {"profile_id": profile_ids, "event_id": event_ids, "source_id": [tenant.source_id]}

    app = create_app(settings)
    schema = _load_schema(app)
    started = time.monotonic()
    calls, failures = _fuzz(schema, {"Authorization": f"Bearer {tenant.api_key}"}, known)
    print(f"read: {calls.total()} calls in {time.monotonic() - started:.1f}s, by status {sorted(calls.items(), key=str)}")
    assert calls.total() >= 100
    assert calls[200] >= 10, "the fuzzer never got a 200: check the key and the path ids"
    assert failures == [], "\n\n".join(failures)
    with schemathesis.python.asgi.get_client(app) as client:
        assert client.get("/health").status_code == 200


# --- Hypothesis: Segment batches -------------------------------------------------------------

BLOCKED = ["undefined", "null", "None", "nil", "NaN", "true", "false", "0", "-1", "000", "--", "anonymous",
           "guest", "unknown", "test", "[object Object]", "", "   "]
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                       st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), c, max_size=3)),
                           max_leaves=12)
ids = st.one_of(st.none(), st.sampled_from(BLOCKED), st.text(min_size=1, max_size=24),
                st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.floats(allow_nan=False, allow_infinity=False),
                st.booleans(), st.just({"id": 1}), st.just([1]))
emails = st.one_of(st.emails(), st.sampled_from(["bad", "a@b", "  Mixed.Case@Example.COM ", "x@y.z", "@x.com",
                                                 "a b@c.de", "undefined", ""]), st.text(max_size=20))
phones = st.one_of(st.sampled_from(["+14155552671", "(415) 555-2671", "+44 20 7946 0958", "+1 202-555-0143",
                                    "123", "not a phone", "", "0000000000"]),
                   st.text(alphabet="+0123456789 -()", max_size=16), st.integers())
traits = st.fixed_dictionaries({}, optional={"email": emails, "phone": phones, "name": st.text(max_size=10),
                                             "nested": json_values})


def _good_times():
    now = datetime.now(UTC)
    good = st.integers(-3600, 600).map(lambda s: (now + timedelta(seconds=s)).isoformat())
    zulu = st.integers(-3600, 0).map(lambda s: (now + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return st.one_of(good, zulu)


def _timestamps():
    bad = st.sampled_from(["not a date", "2024-13-45T00:00:00Z", "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z",
                           "2024-05-01T12:00:00", "", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00"])
    return st.one_of(_good_times(), bad, st.integers(0, 2 ** 40), st.none())


def _messages():
    """Two thirds plausible SDK messages (valid types, string/number/blocked/null ids, good
    or missing timestamps, traits with good and bad emails and phones), one third wild ones
    (any JSON in any field)."""
    good_ts = st.one_of(st.none(), _good_times())
    plain_ids = st.one_of(st.none(), st.sampled_from(BLOCKED), st.text(min_size=1, max_size=24),
                          st.integers(min_value=-(2 ** 53), max_value=2 ** 53))
    context = st.fixed_dictionaries({}, optional={
        "traits": traits, "device": st.fixed_dictionaries({}, optional={"id": plain_ids}),
        "ip": st.sampled_from(["203.0.113.7", "not-an-ip"]), "userAgent": st.text(max_size=30),
        "campaign": st.dictionaries(st.sampled_from(["name", "source", "medium"]), st.text(max_size=10))})
    plausible = st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
         "event": st.text(min_size=1, max_size=30),
         "anonymousId": st.one_of(st.uuids().map(str), st.uuids().map(str), plain_ids)},
        optional={"userId": plain_ids, "previousId": plain_ids, "groupId": plain_ids,
                  "name": st.text(max_size=20), "traits": traits, "context": context,
                  "properties": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
                  "timestamp": good_ts, "originalTimestamp": good_ts, "sentAt": good_ts})
    ts = _timestamps()
    wild = st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "Track", "bogus"])},
        optional={"userId": ids, "anonymousId": ids, "previousId": ids, "groupId": ids,
                  "event": st.one_of(st.text(max_size=30), st.none(), st.integers()),
                  "name": st.text(max_size=20), "traits": st.one_of(traits, json_values),
                  "context": context, "properties": st.one_of(st.dictionaries(st.text(max_size=10), json_values,
                                                                              max_size=4), json_values),
                  "timestamp": ts, "originalTimestamp": ts, "sentAt": ts, "integrations": json_values})
    return st.one_of(plausible, plausible, wild)


# messageId kinds: absent or blank ids get a generated key (stored once each); distinct
# strings and integers are their own keys; "dup" reuses an earlier message's id.
_ID_KINDS = ["absent", "null", "blank", "string", "string", "int", "dup"]


def _dedupe_key(mid) -> str | None:
    if mid is None:
        return None
    text = str(mid)
    return text if text.strip() else None


@_with_fuzz_seed
@hsettings(max_examples=SEGMENT_EXAMPLES,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                  HealthCheck.data_too_large])
@given(batch=st.lists(_messages(), min_size=1, max_size=8), data=st.data(),
       top=st.fixed_dictionaries({}, optional={
           "sentAt": _timestamps(), "integrations": json_values,
           "context": st.fixed_dictionaries({}, optional={"traits": traits, "library": json_values})}))
def test_segment_batches_fuzzed_never_5xx_and_stored_exactly_once(batch, data, top, settings, db, redis_conn,
                                                                  ingest_client, drain):
    tenant = make_tenant(db)
    example = uuid.uuid4().hex[:10]
    messages = []
    keys: list[str | None] = []
    for i, msg in enumerate(batch):
        kind = data.draw(st.sampled_from(_ID_KINDS), label=f"messageId kind {i}")
        if kind == "dup" and any(k is not None for k in keys):
            mid = data.draw(st.sampled_from([k for k in keys if k is not None]))
        elif kind == "string":
            mid = f"{example}-{i}-" + data.draw(st.text(max_size=12), label="id text")
        elif kind == "int":
            mid = 10 ** 15 + i
        elif kind == "blank":
            mid = data.draw(st.sampled_from(["", "  "]))
        else:
            mid = None
        if kind != "absent":
            msg = {**msg, "messageId": mid}
        messages.append(msg)
        keys.append(_dedupe_key(mid))
    body = {"batch": messages, **top}
    note(json.dumps(body, default=str)[:3000])
    raw = json.dumps(body).encode()
    auth = base64.b64encode(f"{tenant.write_key}:".encode()).decode()
    r = ingest_client.post("/v1/batch", content=raw, headers={"Authorization": f"Basic {auth}",
                                                              "Content-Type": "text/plain"})
    note(f"{r.status_code} {r.text[:1000]}")
    assert r.status_code < 500, r.text
    out = r.json()
    if r.status_code == 200:
        assert out["success"] is True and set(out) <= {"success", "rejected"}, out
        rejected = {x["index"] for x in out.get("rejected", [])}
        for x in out.get("rejected", []):
            assert isinstance(x["code"], str) and isinstance(x["message"], str), x
        assert len(rejected) < len(messages)
        accepted = [keys[i] for i in range(len(messages)) if i not in rejected]
    else:
        assert 400 <= r.status_code < 500, r.text
        assert isinstance(out.get("code"), str) and isinstance(out.get("message"), str), out
        accepted = []
    expected = sum(1 for k in accepted if k is None) + len({k for k in accepted if k is not None})
    event(f"status {r.status_code}, {'some' if expected else 'no'} events stored")
    for x in out.get("rejected", []):
        event(f"rejected: {x['code']}")

    assert drain() == 0, failed_job_details(redis_conn, settings.queue_name)
    assert FailedJobRegistry(queue=events_queue(redis_conn, settings.queue_name)).count == 0
    assert_exact_and_consistent(db, tenant.id, expected)
    stored_keys = {k for (k,) in db.execute("SELECT dedupe_key FROM events WHERE tenant_id = %s", (tenant.id,))}
    assert {stored_dedupe_key(tenant, k) for k in accepted if k is not None} <= stored_keys


# --- Bugs the fuzzers found, pinned -----------------------------------------------------------

def _post_segment(client, write_key: str, body: dict):
    return client.post("/v1/batch", content=json.dumps(body), headers={"Authorization": f"Bearer {write_key}"})


@pytest.mark.parametrize("field", ["context", "integrations"])
def test_segment_envelope_out_of_range_integer_is_a_4xx_not_a_500(field, ingest_client, tenant, drain, db):
    """Found by Schemathesis. A Segment batch whose envelope-level ``context`` or
    ``integrations`` holds an integer outside msgpack's range (here 2**64) is answered 500
    ``internal_error``: ingest_api/pipeline.py queue_events -> core/schemas.py
    encode_batch_header raises OverflowError. Each message is screened for such numbers
    (core/segment.py screen_segment_event), the envelope is not. Contract 4.2: errors are
    JSON {code, message}; invalid input is a 4xx, never a 5xx."""
    body = {"batch": [{"type": "track", "event": "Clicked", "userId": "u-big", "messageId": "m-big"}],
            field: {"n": 2 ** 64}}
    r = _post_segment(ingest_client, tenant.write_key, body)
    assert r.status_code < 500, f"{r.status_code} {r.text}"
    if r.status_code == 200:  # accepted (the number dropped or stored as text): then it is stored
        assert drain() == 0
        assert db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 1
    else:
        assert isinstance(r.json().get("code"), str) and isinstance(r.json().get("message"), str), r.text


@pytest.mark.parametrize("envelope", [{"context": {"ip": "1.2.3.4\x00"}}, {"context": {"a\x00b": 1}},
                                      {"integrations": {"x": "a\x00b"}}],
                         ids=["context-value", "context-key", "integrations-value"])
def test_segment_envelope_nul_is_rejected_not_accepted_then_failed(envelope, ingest_client, tenant, drain, db,
                                                                   redis_conn, settings):
    """Found by the Segment fuzzer. A batch whose envelope-level ``context`` or
    ``integrations`` holds text with \\u0000 is answered 200 {"success": true}, but the
    worker cannot store it (Postgres jsonb refuses \\u0000: UntranslatableCharacter in the
    COPY of events.context) and the job lands in the failed registry: an acknowledged event
    is never stored. Contract 4: text containing \\u0000 is rejected per event; 4.2/6: a 200
    means the data is durably queued (and so stored). The door checks each message
    (core/segment.py screen_segment_event) but not the envelope the worker merges into it."""
    body = {"batch": [{"type": "track", "event": "Clicked", "userId": "u-nul", "messageId": "m-nul"}], **envelope}
    r = _post_segment(ingest_client, tenant.write_key, body)
    assert r.status_code < 500, f"{r.status_code} {r.text}"
    rejected = {x["index"] for x in r.json().get("rejected", [])} if r.status_code == 200 else {0}
    if 0 not in rejected:
        failed = drain()
        assert failed == 0, f"answered {r.status_code} {r.text}, then the job failed:\n" + \
            failed_job_details(redis_conn, settings.queue_name, limit=1)
        assert db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 1


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_source_rate_limit_out_of_range_is_a_4xx_not_a_500(method, read_client, tenant):
    """Found by Schemathesis. ``rate_limit`` of 2**31 or more in POST /api/v1/cdp/sources or
    PATCH /api/v1/cdp/sources/{id} is answered 500 ``internal_error``: the value passes
    validation (read_api/schemas.py: ``int``, > 0) and Postgres refuses it for the
    ``integer`` column (NumericValueOutOfRange in stratum/admin.py create_source /
    update_source). Contract 4.6/5: an invalid value is a 4xx with {code, message, status}."""
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    if method == "POST":
        r = read_client.post("/api/v1/cdp/sources", headers=headers,
                             json={"name": "big", "type": "server", "rate_limit": 2 ** 31})
    else:
        r = read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=headers,
                              json={"rate_limit": 2 ** 31})
    assert 400 <= r.status_code < 500, f"{r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("message"), str), body
