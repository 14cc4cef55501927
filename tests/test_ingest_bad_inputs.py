"""A corpus of bad inputs for both ingest surfaces: the native batch (CONTRACT 4.1) and the
Segment batch (4.2). Whatever the client sends, the answer is never a 5xx: a request the
API cannot use is a 4xx with a JSON error body holding ``code`` and ``message`` (4.2, 4.6).
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime

import pytest

NATIVE = "/api/v1/cdp/events"
SEGMENT = "/v1/batch"
MAX_REQUEST_BYTES = 4 * 1024 * 1024


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def native_event(**overrides) -> dict:
    ev = {"event_name": "Clicked", "event_time": now_iso(),
          "identifiers": [{"type": "external_id", "value": "u-1"}]}
    ev.update(overrides)
    return ev


def segment_msg(**overrides) -> dict:
    m = {"type": "track", "event": "Clicked", "userId": "u-1", "messageId": str(uuid.uuid4()),
         "timestamp": now_iso()}
    m.update(overrides)
    return m


def native_body(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def segment_body(*messages) -> bytes:
    return json.dumps({"batch": list(messages), "sentAt": now_iso()}).encode()


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def raw_event_with_property(kind: str, json_value: str) -> bytes:
    """One event whose ``properties.x`` is the raw JSON text ``json_value``."""
    if kind == "native":
        return (b'{"events": [{"event_name": "Clicked", "event_time": "' + now_iso().encode()
                + b'", "identifiers": [{"type": "external_id", "value": "u-1"}], "properties": {"x": '
                + json_value.encode() + b"}}]}")
    return (b'{"batch": [{"type": "track", "event": "Clicked", "userId": "u-1", "properties": {"x": '
            + json_value.encode() + b"}}]}")


def raw_top(kind: str, events_json: str) -> bytes:
    key = "events" if kind == "native" else "batch"
    return b'{"' + key.encode() + b'": ' + events_json.encode() + b"}"


def one(kind: str, **overrides) -> bytes:
    return native_body(native_event(**overrides)) if kind == "native" else segment_body(segment_msg(**overrides))


# Each case: id -> function(kind) returning the request body bytes (auth is added by the test).
BODIES = {
    # not JSON
    "empty_body": lambda k: b"",
    "truncated_json": lambda k: b'{"events": [' if k == "native" else b'{"batch": [',
    "not_json": lambda k: b"hello world",
    "trailing_garbage": lambda k: one(k) + b"}}}",
    "single_quotes": lambda k: b"{'events': []}",
    "nan_literal": lambda k: raw_event_with_property(k, "NaN"),
    "invalid_utf8_in_string": lambda k: raw_event_with_property(k, '"ok"').replace(b'"ok"', b'"\xff\xfe\xfa"'),
    "invalid_utf8_in_key": lambda k: one(k).replace(b"{", b'{"\xc3\x28": 1, ', 1),
    "lone_surrogate_escape": lambda k: raw_event_with_property(k, '"\\ud800"'),
    "utf16_bom_body": lambda k: "\ufeff".encode("utf-16-le") + one(k).decode().encode("utf-16-le"),
    # wrong top-level types
    "top_list": lambda k: b"[]",
    "top_list_of_events": lambda k: json.dumps([native_event()] if k == "native" else [segment_msg()]).encode(),
    "top_string": lambda k: b'"events"',
    "top_number": lambda k: b"42",
    "top_null": lambda k: b"null",
    "top_true": lambda k: b"true",
    "top_empty_object": lambda k: b"{}",
    # envelope of the wrong shape
    "events_object": lambda k: raw_top(k, "{}"),
    "events_string": lambda k: raw_top(k, '"abc"'),
    "events_null": lambda k: raw_top(k, "null"),
    "events_number": lambda k: raw_top(k, "7"),
    "events_of_strings": lambda k: raw_top(k, '["a", "b"]'),
    "events_of_nulls": lambda k: raw_top(k, "[null]"),
    "events_of_lists": lambda k: raw_top(k, "[[1, 2]]"),
    "empty_batch": lambda k: raw_top(k, "[]"),
    "write_key_not_string": lambda k: one(k)[:-1] + b', "writeKey": 5, "api_key": [], "sentAt": 1}',
    # wrong field types inside the one event
    "name_number": lambda k: one(k, event_name=5) if k == "native" else one(k, event=5),
    "time_number": lambda k: one(k, event_time=1714560000) if k == "native" else one(k, timestamp=1714560000),
    "time_garbage": lambda k: one(k, event_time="yesterday") if k == "native" else one(k, timestamp="yesterday"),
    "identifiers_object": lambda k: one(k, identifiers={"type": "email"}) if k == "native" else one(k, userId={"id": 1}),
    "identifier_value_list": lambda k: (one(k, identifiers=[{"type": "email", "value": ["a@b.co"]}])
                                        if k == "native" else one(k, userId=["u"])),
    "properties_list": lambda k: one(k, properties=[1, 2]),
    "properties_string": lambda k: one(k, properties="x"),
    "context_number": lambda k: one(k, context=3),
    "type_number": lambda k: one(k, consent={"ads": "yes"}) if k == "native" else one(k, type=5),
    "bool_ids": lambda k: (one(k, identifiers=[{"type": "external_id", "value": True}])
                           if k == "native" else one(k, userId=True, anonymousId=False)),
    "no_identifier": lambda k: one(k, identifiers=[]) if k == "native" else one(k, userId=None),
    "blocked_identifiers_only": lambda k: (one(k, identifiers=[{"type": "anonymous_id", "value": "undefined"}])
                                           if k == "native" else one(k, userId="[object Object]")),
    "nul_in_text": lambda k: one(k, properties={"note": "a\u0000b"}),
    "nul_in_key": lambda k: one(k, properties={"a\u0000": 1}),
    "huge_string_id": lambda k: (one(k, identifiers=[{"type": "external_id", "value": "x" * 100_000}])
                                 if k == "native" else one(k, userId="x" * 100_000)),
    "timestamp_year_1": lambda k: (one(k, event_time="0001-01-01T00:00:00+01:00")
                                   if k == "native" else one(k, timestamp="0001-01-01T00:00:00+01:00")),
    "timestamp_year_9999": lambda k: (one(k, event_time="9999-12-31T23:59:59-01:00")
                                      if k == "native" else one(k, timestamp="9999-12-31T23:59:59-01:00")),
    "sent_at_far_from_timestamp": lambda k: (
        one(k, event_time="0001-01-01T00:00:00Z") if k == "native" else
        json.dumps({"batch": [segment_msg(timestamp="0001-01-01T00:00:00Z")],
                    "sentAt": "9999-12-31T23:59:59Z"}).encode()),
    # huge numbers
    "float_1e400": lambda k: raw_event_with_property(k, "1e400"),
    "float_minus_1e400": lambda k: raw_event_with_property(k, "-1e400"),
    "int_5000_digits": lambda k: raw_event_with_property(k, "9" * 5000),
    "unknown_field_1e400": lambda k: one(k).replace(b"{", b'{"junk": 1e400, ', 2),
    "unknown_field_1e400_with_nul": lambda k: one(k, properties={"note": "\u0000"}).replace(b"{", b'{"junk": 1e400, ', 2),
    # deep nesting
    "nested_10000_arrays_in_properties": lambda k: raw_event_with_property(k, nested(10_000)),
    "nested_10000_objects_in_properties": lambda k: raw_event_with_property(k, '{"a":' * 10_000 + "1" + "}" * 10_000),
    "nested_600_arrays_with_nul": lambda k: raw_event_with_property(k, nested(600, '"\\u0000"')),
    "nested_10000_arrays_top_level": lambda k: nested(10_000).encode(),
    "nested_10000_arrays_as_events": lambda k: raw_top(k, nested(10_000)),
}

# Bodies that a lenient server may legitimately accept (only "never a 5xx" applies).
MAY_BE_ACCEPTED = {"trailing_garbage", "invalid_utf8_in_key", "write_key_not_string", "lone_surrogate_escape",
                   "int_5000_digits", "unknown_field_1e400", "huge_string_id"}


def auth_for(kind: str, write_key: str) -> dict[str, str]:
    if kind == "native":
        return {"Authorization": f"Bearer {write_key}"}
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


def path_for(kind: str) -> str:
    return NATIVE if kind == "native" else SEGMENT


def assert_client_error(r, *, may_succeed: bool = False) -> None:
    request = f"{r.request.method} {r.request.url.path} ({len(r.request.content)} bytes)"
    assert r.status_code < 500, f"{request} -> {r.status_code} {r.text[:500]}"
    if may_succeed and r.status_code in (200, 202):
        return
    assert 400 <= r.status_code < 500, f"{request} -> {r.status_code} {r.text[:500]}"
    try:
        body = r.json()
    except ValueError:
        pytest.fail(f"{request} -> {r.status_code} with a non-JSON body: {r.text[:300]!r}")
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body


@pytest.mark.parametrize("kind", ["native", "segment"])
@pytest.mark.parametrize("case", list(BODIES))
def test_bad_body_is_a_4xx_with_an_error_body(ingest_client, tenant, kind, case):
    body = BODIES[case](kind)
    r = ingest_client.post(path_for(kind), content=body,
                           headers={"Content-Type": "application/json", **auth_for(kind, tenant.write_key)})
    assert_client_error(r, may_succeed=case in MAY_BE_ACCEPTED)


@pytest.mark.parametrize("kind", ["native", "segment"])
@pytest.mark.parametrize("value", [2**70, -(2**70), 2**64, 2**64 - 1, -(2**63)],
                         ids=["2**70", "-2**70", "2**64", "2**64-1", "-2**63"])
def test_big_integers_in_properties_are_not_a_server_error(ingest_client, tenant, drain, db, kind, value):
    # JSON has no integer range; the contract only bounds the event size. Accepting the event
    # or rejecting it (4xx) are both fine; a 500 is not.
    body = raw_event_with_property(kind, str(value))
    r = ingest_client.post(path_for(kind), content=body,
                           headers={"Content-Type": "application/json", **auth_for(kind, tenant.write_key)})
    assert_client_error(r, may_succeed=True)
    if r.status_code in (200, 202):
        assert drain() == 0
        assert db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 1


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_big_integer_user_id_is_not_a_server_error(ingest_client, tenant, kind):
    body = (native_body(native_event(identifiers=[{"type": "external_id", "value": str(2**70)}]))
            if kind == "native" else segment_body(segment_msg(userId=2**70)))
    r = ingest_client.post(path_for(kind), content=body,
                           headers={"Content-Type": "application/json", **auth_for(kind, tenant.write_key)})
    assert_client_error(r, may_succeed=True)


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_oversize_request_is_413(ingest_client, tenant, kind):
    pad = "x" * (MAX_REQUEST_BYTES + 1)
    body = one(kind, properties={"pad": pad})
    r = ingest_client.post(path_for(kind), content=body,
                           headers={"Content-Type": "application/json", **auth_for(kind, tenant.write_key)})
    assert_client_error(r)
    assert r.status_code == 413


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_oversize_request_without_auth_is_4xx(ingest_client, tenant, kind):
    body = one(kind, properties={"pad": "x" * (MAX_REQUEST_BYTES + 1)})
    r = ingest_client.post(path_for(kind), content=body, headers={"Content-Type": "application/json"})
    assert_client_error(r)


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_gzip_bomb_is_413(ingest_client, tenant, kind):
    inflated = one(kind, properties={"pad": "0" * (MAX_REQUEST_BYTES * 8)})
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 200_000
    r = ingest_client.post(path_for(kind), content=bomb, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", **auth_for(kind, tenant.write_key)})
    assert_client_error(r)
    assert r.status_code == 413


@pytest.mark.parametrize("kind", ["native", "segment"])
@pytest.mark.parametrize("encoding, body", [
    ("gzip", b"not gzip at all"),
    ("gzip", gzip.compress(b'{"events": []}')[:-6]),   # truncated stream
    ("br", b"whatever"),
    ("deflate", b"\x00\x01\x02"),
])
def test_bad_content_encoding_is_4xx(ingest_client, tenant, kind, encoding, body):
    r = ingest_client.post(path_for(kind), content=body, headers={
        "Content-Type": "application/json", "Content-Encoding": encoding, **auth_for(kind, tenant.write_key)})
    assert_client_error(r)


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_ten_thousand_events_is_4xx(ingest_client, tenant, kind):
    if kind == "native":
        body = native_body(*[native_event() for _ in range(10_000)])
    else:
        body = segment_body(*[segment_msg() for _ in range(10_000)])
    assert len(body) < MAX_REQUEST_BYTES
    r = ingest_client.post(path_for(kind), content=body,
                           headers={"Content-Type": "application/json", **auth_for(kind, tenant.write_key)})
    assert_client_error(r)


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_1001_events_is_4xx_and_1000_is_accepted(ingest_client, tenant, kind):
    make = (lambda n: native_body(*[native_event() for _ in range(n)])) if kind == "native" else (
        lambda n: segment_body(*[segment_msg() for _ in range(n)]))
    headers = {"Content-Type": "application/json", **auth_for(kind, tenant.write_key)}
    r = ingest_client.post(path_for(kind), content=make(1001), headers=headers)
    assert_client_error(r)
    r = ingest_client.post(path_for(kind), content=make(1000), headers=headers)
    assert r.status_code == (202 if kind == "native" else 200), r.text[:300]


@pytest.mark.parametrize("kind", ["native", "segment"])
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic"},
    {"Authorization": "Basic Og=="},            # ":" - empty user name
    {"Authorization": "Basic //79"},            # not UTF-8 after base64
    {"Authorization": "Basic ???"},
    {"Authorization": "Token abc"},
    {"Authorization": "Bearer wk_does_not_exist"},
], ids=["none", "empty", "bearer_no_value", "bearer_blank", "basic_no_value", "basic_empty_user",
        "basic_not_utf8", "basic_not_base64", "unknown_scheme", "unknown_key"])
def test_missing_or_bad_auth_is_401(ingest_client, tenant, kind, headers):
    r = ingest_client.post(path_for(kind), content=one(kind), headers={"Content-Type": "application/json", **headers})
    assert_client_error(r)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("kind", ["native", "segment"])
def test_body_key_of_the_wrong_type_is_4xx(ingest_client, tenant, kind):
    body = (json.dumps({"events": [native_event()], "writeKey": {"k": 1}}).encode() if kind == "native"
            else json.dumps({"batch": [segment_msg()], "writeKey": 12345}).encode())
    r = ingest_client.post(path_for(kind), content=body, headers={"Content-Type": "application/json"})
    assert_client_error(r)


@pytest.mark.parametrize("path", ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias"])
@pytest.mark.parametrize("body", [b"", b"[]", b"null", b'"x"', b"{", nested(10_000).encode(),
                                  b'{"userId": "u", "event": "x", "timestamp": "0001-01-01T00:00:00+01:00"}',
                                  b'{"userId": "u", "event": "x", "properties": {"x": ' + nested(10_000).encode() + b"}}"],
                         ids=["empty", "list", "null", "string", "truncated", "deep", "year_1", "deep_properties"])
def test_single_event_paths_bad_bodies_are_4xx(ingest_client, tenant, path, body):
    r = ingest_client.post(path, content=body, headers={"Content-Type": "application/json",
                                                        **auth_for("segment", tenant.write_key)})
    assert_client_error(r)


def test_wrong_method_and_unknown_path_are_json_4xx(ingest_client, tenant):
    assert_client_error(ingest_client.get(NATIVE))
    assert_client_error(ingest_client.get(SEGMENT))
    assert_client_error(ingest_client.post("/v1/nope", content=b"{}"))
