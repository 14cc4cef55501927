"""Unit tests of the Segment/RudderStack wire mapping (CONTRACT 4.2): core.segment.

Pure: no network, no clock (the receipt time is passed in).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.intake import Accepted, Rejection
from core.segment import SegmentMessage, corrected_time, intake_segment_message, parse_timestamp

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MAX_EVENT_BYTES = 32 * 1024


def intake(msg: dict | bytes, *, path_type: str | None = None, batch_context: dict | None = None,
           batch_integrations: dict | None = None, batch_sent_at: str | None = None,
           phone_region: str | None = "US", max_event_bytes: int = MAX_EVENT_BYTES,
           received_at: datetime = RECEIVED, event_id: str = "evt-generated") -> Accepted | Rejection:
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    return intake_segment_message(
        raw, path_type=path_type, batch_context=batch_context, batch_integrations=batch_integrations,
        batch_sent_at=batch_sent_at, event_id=event_id, received_at=received_at, phone_region=phone_region,
        max_event_bytes=max_event_bytes, max_future_s=24 * 3600,
    )


def accepted(msg: dict | bytes, **kw) -> Accepted:
    out = intake(msg, **kw)
    assert isinstance(out, Accepted), out
    return out


def rejected(msg: dict | bytes, **kw) -> Rejection:
    out = intake(msg, **kw)
    assert isinstance(out, Rejection), out
    return out


def ids(out: Accepted) -> set[tuple[str, str]]:
    return set(out.event.identifiers)


def track(**fields) -> dict:
    return {"type": "track", "event": "Clicked", "timestamp": "2024-05-01T11:59:00Z", **fields}


# --------------------------------------------------------------------------- identity mapping

def test_user_id_maps_to_external_id():
    assert ids(accepted(track(userId="user-1"))) == {("external_id", "user-1")}


@pytest.mark.parametrize("value, expected", [(42, "42"), (42.0, "42"), (0.5, "0.5")])
def test_numeric_user_id_is_read_as_text(value, expected):
    assert ids(accepted(track(userId=value))) == {("external_id", expected)}


def test_anonymous_id_maps_to_anonymous_id():
    assert ids(accepted(track(anonymousId="anon-1"))) == {("anonymous_id", "anon-1")}


def test_traits_email_maps_to_normalized_email():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"email": "  Jane.Doe@Example.COM "}})
    assert ids(out) == {("external_id", "u1"), ("email", "jane.doe@example.com")}


def test_context_traits_email_maps_to_normalized_email():
    out = accepted(track(anonymousId="a1", context={"traits": {"email": "Bob@Example.org"}}))
    assert ids(out) == {("anonymous_id", "a1"), ("email", "bob@example.org")}


def test_email_alone_identifies():
    out = accepted(track(context={"traits": {"email": "solo@example.com"}}))
    assert ids(out) == {("email", "solo@example.com")}


def test_traits_phone_uses_the_source_phone_region():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"phone": "(650) 555-1212"}}, phone_region="US")
    assert ("phone", "+16505551212") in ids(out)


def test_context_traits_phone_maps_to_phone():
    out = accepted(track(userId="u1", context={"traits": {"phone": "+44 20 7946 0958"}}), phone_region=None)
    assert ("phone", "+442079460958") in ids(out)


def test_national_phone_without_region_does_not_identify_or_reject():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"phone": "(650) 555-1212"}}, phone_region=None)
    assert ids(out) == {("external_id", "u1")}
    assert any("phone" in w for w in out.warnings)


def test_context_device_id_maps_to_device_id():
    out = accepted(track(context={"device": {"id": "dev-123", "model": "Pixel"}}))
    assert ids(out) == {("device_id", "dev-123")}


def test_alias_links_previous_id_as_anonymous_id_with_user_id():
    out = accepted({"type": "alias", "userId": "u1", "previousId": "anon-9"})
    assert ids(out) == {("external_id", "u1"), ("anonymous_id", "anon-9")}
    assert out.event.previous_id == "anon-9"
    assert out.event.event_type == "alias"


def test_previous_id_outside_alias_is_ignored():
    out = accepted(track(userId="u1", previousId="anon-9"))
    assert ids(out) == {("external_id", "u1")}
    assert out.event.previous_id is None


def test_all_identifier_sources_together():
    out = accepted({"type": "identify", "userId": 7, "anonymousId": "a-7",
                    "traits": {"email": "X@Y.io", "phone": "650-555-1212"},
                    "context": {"device": {"id": "d-7"}}})
    assert ids(out) == {("external_id", "7"), ("anonymous_id", "a-7"), ("email", "x@y.io"),
                        ("phone", "+16505551212"), ("device_id", "d-7")}


def test_traits_email_wins_over_context_traits_email():
    out = accepted({"type": "identify", "userId": "u", "traits": {"email": "first@example.com"},
                    "context": {"traits": {"email": "second@example.com"}}})
    emails = {v for t, v in out.event.identifiers if t == "email"}
    assert emails == {"first@example.com"}


# --------------------------------------------------------------------------- absent and bad ids

def test_null_ids_are_absent():
    out = accepted(track(userId=None, anonymousId="anon-1", context={"device": {"id": None},
                                                                     "traits": {"email": None}}))
    assert ids(out) == {("anonymous_id", "anon-1")}
    assert out.warnings == []


def test_empty_string_ids_are_absent():
    out = accepted(track(userId="", anonymousId="  ", context={"traits": {"email": "e@example.com"}}))
    assert ids(out) == {("email", "e@example.com")}


def test_invalid_email_in_traits_warns_but_does_not_reject():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"email": "not an email"}})
    assert ids(out) == {("external_id", "u1")}
    assert any("email" in w for w in out.warnings)
    assert out.event.warnings == out.warnings


def test_invalid_phone_in_traits_warns_but_does_not_reject():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"phone": "12"}})
    assert ids(out) == {("external_id", "u1")}
    assert any("phone" in w for w in out.warnings)


def test_non_string_email_in_traits_warns_but_does_not_reject():
    out = accepted({"type": "identify", "userId": "u1", "traits": {"email": ["a@b.co"]}})
    assert ids(out) == {("external_id", "u1")}
    assert out.warnings


def test_no_identifier_at_all_is_unusable():
    out = rejected(track())
    assert out.code == "no_usable_identifier"


def test_only_invalid_identifiers_is_unusable():
    out = rejected(track(userId=None, context={"traits": {"email": "nope"}}))
    assert out.code == "no_usable_identifier"


@pytest.mark.parametrize("blocked", ["undefined", "[object Object]", "null", "0", "  Undefined "])
def test_blocked_values_are_dropped_with_a_warning(blocked):
    out = accepted(track(userId=blocked, anonymousId="anon-ok"))
    assert ids(out) == {("anonymous_id", "anon-ok")}
    assert any("blocked" in w for w in out.warnings)


def test_only_blocked_values_is_unusable():
    out = rejected(track(userId="undefined", anonymousId="[object Object]"))
    assert out.code == "no_usable_identifier"


def test_extra_blocked_values_of_the_tenant_are_dropped():
    raw = json.dumps(track(userId="dummy-user", anonymousId="a1")).encode()
    out = intake_segment_message(
        raw, path_type=None, batch_context=None, batch_integrations=None, batch_sent_at=None,
        event_id="e", received_at=RECEIVED, phone_region=None, max_event_bytes=MAX_EVENT_BYTES,
        max_future_s=86400, extra_blocked=frozenset({"dummy-user"}),
    )
    assert isinstance(out, Accepted)
    assert ids(out) == {("anonymous_id", "a1")}


def test_device_id_object_is_not_an_identifier():
    out = accepted(track(userId="u", context={"device": {"id": {"nested": 1}}}))
    assert ids(out) == {("external_id", "u")}


# --------------------------------------------------------------------------- types and names

def test_track_without_event_is_rejected():
    assert rejected({"type": "track", "userId": "u"}).code == "missing_field"
    assert rejected({"type": "track", "userId": "u", "event": ""}).code == "missing_field"


@pytest.mark.parametrize("etype", ["purchase", "TRACK", "", None])
def test_unknown_or_missing_type_is_rejected(etype):
    out = rejected({"type": etype, "event": "x", "userId": "u"})
    assert out.code == "invalid_type"


def test_path_type_overrides_missing_type():
    out = accepted({"event": "Clicked", "userId": "u"}, path_type="track")
    assert out.event.event_type == "track"
    assert out.event.event_name == "Clicked"


def test_track_event_name():
    out = accepted(track(userId="u", event="Order Completed", properties={"total": 9.5}))
    assert out.event.event_type == "track"
    assert out.event.event_name == "Order Completed"
    assert out.event.properties == {"total": 9.5}


@pytest.mark.parametrize("etype", ["page", "screen"])
def test_page_and_screen_names(etype):
    out = accepted({"type": etype, "userId": "u", "name": "Pricing", "category": "Docs",
                    "properties": {"path": "/pricing"}})
    assert out.event.event_type == etype
    assert out.event.event_name == "Pricing"
    assert out.event.properties == {"path": "/pricing", "category": "Docs"}


@pytest.mark.parametrize("etype", ["page", "screen"])
def test_page_and_screen_without_name_use_the_type(etype):
    out = accepted({"type": etype, "anonymousId": "a"})
    assert out.event.event_name == etype


def test_group_puts_traits_under_properties():
    out = accepted({"type": "group", "userId": "u", "groupId": 99, "traits": {"name": "Acme", "plan": "pro"}})
    assert out.event.event_type == "group"
    assert out.event.properties["group_id"] == "99"
    assert out.event.properties["group_traits"] == {"name": "Acme", "plan": "pro"}
    assert out.event.traits == {}


def test_identify_traits_go_to_event_traits():
    out = accepted({"type": "identify", "userId": "u", "traits": {"name": "Jane", "plan": "pro"}})
    assert out.event.event_type == "identify"
    assert out.event.event_name == "identify"
    assert out.event.traits == {"name": "Jane", "plan": "pro"}


def test_track_traits_do_not_become_profile_traits():
    out = accepted(track(userId="u", traits={"plan": "pro"}))
    assert out.event.traits == {}


def test_alias_event_name():
    out = accepted({"type": "alias", "userId": "u", "previousId": "p"})
    assert out.event.event_name == "alias"


# --------------------------------------------------------------------------- context

def test_batch_context_is_merged_into_item_context_item_keys_win():
    out = accepted(track(userId="u", context={"ip": "10.0.0.2", "locale": "fr-FR"}),
                   batch_context={"ip": "10.0.0.1", "library": {"name": "analytics.js"}})
    assert out.event.context["ip"] == "10.0.0.2"
    assert out.event.context["locale"] == "fr-FR"
    assert out.event.context["library"] == {"name": "analytics.js"}


def test_batch_context_used_when_item_has_none():
    out = accepted(track(userId="u"), batch_context={"ip": "10.0.0.1"})
    assert out.event.context["ip"] == "10.0.0.1"


def test_batch_context_traits_email_identifies_the_item():
    out = accepted(track(userId="u"), batch_context={"traits": {"email": "ctx@example.com"}})
    assert ("email", "ctx@example.com") in ids(out)


def test_batch_integrations_are_kept_item_keys_win():
    out = accepted(track(userId="u", integrations={"Mixpanel": False}),
                   batch_integrations={"All": True, "Mixpanel": True})
    assert out.event.context["integrations"] == {"All": True, "Mixpanel": False}


# --------------------------------------------------------------------------- time

def test_clock_skew_corrected_with_batch_sent_at():
    # The client clock is 1 h fast: it stamped the event 10 s before it sent the batch.
    out = accepted(track(userId="u", timestamp="2024-05-01T13:00:00Z"), batch_sent_at="2024-05-01T13:00:10Z")
    assert out.event.event_time == RECEIVED - timedelta(seconds=10)


def test_clock_skew_corrected_with_message_sent_at():
    out = accepted(track(userId="u", timestamp="2024-05-01T10:00:00.000+00:00", sentAt="2024-05-01T10:00:30Z"))
    assert out.event.event_time == RECEIVED - timedelta(seconds=30)


def test_message_sent_at_wins_over_batch_sent_at():
    out = accepted(track(userId="u", timestamp="2024-05-01T10:00:00Z", sentAt="2024-05-01T10:00:05Z"),
                   batch_sent_at="2024-05-01T10:01:00Z")
    assert out.event.event_time == RECEIVED - timedelta(seconds=5)


def test_original_timestamp_is_the_client_time_when_present():
    out = accepted(track(userId="u", originalTimestamp="2024-05-01T09:00:00Z", timestamp="2024-05-01T09:59:00Z",
                         sentAt="2024-05-01T09:00:20Z"))
    assert out.event.event_time == RECEIVED - timedelta(seconds=20)


def test_client_clock_in_1970_is_corrected():
    out = accepted(track(userId="u", timestamp="1970-01-01T00:00:05Z"), batch_sent_at="1970-01-01T00:00:10Z")
    assert out.event.event_time == RECEIVED - timedelta(seconds=5)


def test_without_sent_at_the_client_timestamp_is_used():
    out = accepted(track(userId="u", timestamp="2024-05-01T11:00:00+02:00"))
    assert out.event.event_time == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    assert out.event.event_time.utcoffset() == timedelta(0)


def test_without_timestamp_the_receipt_time_is_used():
    msg = track(userId="u")
    del msg["timestamp"]
    assert accepted(msg, batch_sent_at="2024-05-01T11:59:59Z").event.event_time == RECEIVED


def test_timestamp_without_timezone_is_read_as_utc():
    out = accepted(track(userId="u", timestamp="2024-05-01T11:00:00"))
    assert out.event.event_time == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01T25:00:00Z", "12/05/2024"])
def test_unparsable_timestamp_is_rejected(bad):
    out = rejected(track(userId="u", timestamp=bad))
    assert out.code == "invalid_timestamp"
    assert out.field == "timestamp"


def test_unparsable_sent_at_is_rejected():
    assert rejected(track(userId="u"), batch_sent_at="not a time").code == "invalid_timestamp"


def test_non_string_timestamp_is_rejected():
    assert isinstance(intake(track(userId="u", timestamp=1714560000)), Rejection)


def test_timestamp_far_in_the_future_is_rejected():
    out = rejected(track(userId="u", timestamp="2024-05-03T12:00:01Z"))
    assert out.code == "event_in_future"
    assert out.field == "timestamp"


def test_timestamp_before_2000_is_rejected():
    assert rejected(track(userId="u", timestamp="1999-12-31T23:59:59Z")).code == "event_too_old"


@pytest.mark.parametrize("timestamp, sent_at", [
    ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),   # skew correction leaves the calendar
    ("0001-01-01T00:00:00+01:00", None),                # before year 1 in UTC
    ("9999-12-31T23:59:59-01:00", None),                # after year 9999 in UTC
])
def test_timestamp_at_the_edges_of_the_calendar_is_rejected_not_raised(timestamp, sent_at):
    # CONTRACT 4.2/4.6: an unusable event is rejected alone with a code; an OverflowError
    # escaping here would be a 500 for the whole request.
    out = intake(track(userId="u", timestamp=timestamp), batch_sent_at=sent_at)
    assert isinstance(out, Rejection)
    assert out.code in ("invalid_timestamp", "event_too_old", "event_in_future")


def test_parse_timestamp():
    assert parse_timestamp(None) is None
    assert parse_timestamp("") is None
    assert parse_timestamp("2024-05-01T12:00:00Z") == RECEIVED
    assert parse_timestamp("2024-05-01T12:00:00.123456+00:00") == RECEIVED + timedelta(microseconds=123456)
    assert parse_timestamp("2024-05-01T14:00:00+02:00") == RECEIVED
    assert parse_timestamp("2024-05-01T12:00:00") == RECEIVED
    assert parse_timestamp("2024-05-01T12:00:00").tzinfo is not None
    with pytest.raises(ValueError):
        parse_timestamp("nope")


def test_corrected_time_directly():
    msg = SegmentMessage(type="track", timestamp="2024-05-01T00:00:00Z")
    assert corrected_time(msg, "2024-05-01T00:01:00Z", RECEIVED) == RECEIVED - timedelta(minutes=1)
    assert corrected_time(msg, None, RECEIVED) == datetime(2024, 5, 1, tzinfo=UTC)
    assert corrected_time(SegmentMessage(type="track"), "2024-05-01T00:01:00Z", RECEIVED) == RECEIVED
    own = SegmentMessage(type="track", timestamp="2024-05-01T00:00:00Z", sentAt="2024-05-01T00:00:02Z")
    assert corrected_time(own, "2024-05-01T00:01:00Z", RECEIVED) == RECEIVED - timedelta(seconds=2)


def test_dedupe_key_does_not_depend_on_timestamp():
    a = accepted(track(userId="u", messageId="m-1", timestamp="2024-05-01T11:00:00Z"))
    b = accepted(track(userId="u", messageId="m-1", timestamp="2024-05-01T11:30:00Z"),
                 batch_sent_at="2024-05-01T11:30:01Z", event_id="other-id")
    assert a.event.dedupe_key == b.event.dedupe_key == "m-1"


# --------------------------------------------------------------------------- size, text, dedupe key

def test_event_over_max_event_bytes_is_rejected():
    msg = track(userId="u", properties={"blob": "x" * (MAX_EVENT_BYTES + 10)})
    out = rejected(msg)
    assert out.code == "event_too_large"


def test_event_at_the_limit_is_accepted():
    base = track(userId="u", properties={"blob": ""})
    pad = MAX_EVENT_BYTES - len(json.dumps(base).encode())
    msg = track(userId="u", properties={"blob": "x" * pad})
    assert len(json.dumps(msg).encode()) == MAX_EVENT_BYTES
    accepted(msg)


@pytest.mark.parametrize("where", ["properties", "event", "context", "traits_key"])
def test_nul_character_is_rejected(where):
    msg = track(userId="u")
    if where == "properties":
        msg["properties"] = {"note": "a\u0000b"}
    elif where == "event":
        msg["event"] = "bad\u0000name"
    elif where == "context":
        msg["context"] = {"page": {"title": ["ok", "\u0000"]}}
    else:
        msg["traits"] = {"k\u0000": 1}
    raw = json.dumps(msg).encode()
    assert b"\\u0000" in raw
    assert rejected(raw).code == "nul_character"


def test_escaped_backslash_followed_by_u0000_text_is_not_a_nul():
    # the JSON text "\\u0000" is a backslash followed by "u0000", not a NUL character
    out = accepted(track(userId="u", properties={"path": "C:\\u0000"}))
    assert out.event.properties["path"] == "C:\\u0000"


def test_message_id_becomes_the_dedupe_key():
    out = accepted(track(userId="u", messageId="msg-123"))
    assert out.event.dedupe_key == "msg-123"
    assert out.client_dedupe_key == "msg-123"
    assert out.event.event_id == "evt-generated"


def test_numeric_message_id_becomes_text():
    out = accepted(track(userId="u", messageId=12345))
    assert out.event.dedupe_key == "12345"


def test_missing_message_id_gets_the_event_id():
    out = accepted(track(userId="u"), event_id="0190-generated")
    assert out.event.dedupe_key == "0190-generated"
    assert out.client_dedupe_key is None


def test_null_message_id_gets_the_event_id():
    out = accepted(track(userId="u", messageId=None), event_id="0190-generated")
    assert out.event.dedupe_key == "0190-generated"
    assert out.client_dedupe_key is None


def test_invalid_json_is_rejected():
    assert rejected(b'{"type": "track",').code == "invalid_json"


def test_wrong_field_types_are_rejected():
    assert rejected(track(userId="u", properties=["not", "an", "object"])).code == "invalid_event"
    assert rejected(track(userId=True)).code == "invalid_event"


def test_emq_is_scored():
    out = accepted({"type": "identify", "userId": "u", "traits": {"email": "a@example.com"},
                    "timestamp": "2024-05-01T11:59:00Z"})
    assert 0 <= out.event.emq <= 100
    assert out.event.emq >= 40 + 20  # email + fresh event time


# --------------------------------------------------------------------------- malformed input is rejected, never raised
# intake_segment_message must turn every unusable message into a Rejection: an exception
# escaping it fails the whole request with a 500 (CONTRACT 4.2: "rejected alone").

def _prop_raw(json_value: bytes) -> bytes:
    return b'{"type": "track", "event": "x", "userId": "u", "properties": {"x": ' + json_value + b"}}"


@pytest.mark.parametrize("raw", [
    _prop_raw(b'"\xff\xfe"'),                                  # invalid UTF-8 inside a string
    _prop_raw(b"[" * 10_000 + b"]" * 10_000),                  # nesting deeper than the decoder allows
    _prop_raw(b"[" * 600 + b'"\\u0000"' + b"]" * 600),          # NUL deep inside nested arrays
    b'{"type": "track", "event": "x", "userId": "u", "junk": 1e400, "properties": {"n": "\\u0000"}}',
], ids=["invalid_utf8", "nested_10000", "nested_600_with_nul", "unknown_field_1e400_with_nul"])
def test_malformed_message_is_rejected_not_raised(raw):
    out = intake(raw, max_event_bytes=10**6)
    assert isinstance(out, Rejection)


def test_out_of_range_number_in_properties_is_rejected():
    assert isinstance(intake(_prop_raw(b"1e400")), Rejection)
