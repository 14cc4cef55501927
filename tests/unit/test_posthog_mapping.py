"""PostHog mapping (core/posthog.py) and $set_once trait folding (core/profiles.py). Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from core.intake import Rejection
from core.posthog import event_write_key, map_posthog_event
from core.profiles import merge_trait_sets, merge_traits, merge_traits_once

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _map(event: dict, sent_at: str | None = None):
    return map_posthog_event(json.dumps(event).encode(), event_id="e1", batch_sent_at=sent_at, received_at=NOW,
                             max_event_bytes=32 * 1024, max_future_s=86400, phone_region="US")


def test_identify_maps_distinct_id_to_anonymous_and_external_and_links_anon():
    event, key = _map({"event": "$identify", "distinct_id": "u1", "uuid": "k1",
                       "properties": {"$anon_distinct_id": "a1", "$set": {"email": "U@X.io"},
                                      "$identity_signature": "ab", "token": "wk"}})
    assert key == "k1" and event.event_type == "identify"
    assert event.identifiers == [("anonymous_id", "u1"), ("external_id", "u1"), ("anonymous_id", "a1"),
                                 ("email", "u@x.io")]
    assert event.traits == {"email": "U@X.io"}
    assert not {"token", "$identity_signature", "$set"} & event.properties.keys()


def test_plain_event_is_anonymous_only_and_alias_links():
    event, _ = _map({"event": "clicked", "distinct_id": 42})
    assert event.identifiers == [("anonymous_id", "42")] and event.event_type == "track"
    alias, _ = _map({"event": "$create_alias", "distinct_id": "a", "properties": {"alias": "b"}})
    assert alias.identifiers == [("anonymous_id", "a"), ("anonymous_id", "b")] and alias.event_type == "alias"
    merge, _ = _map({"event": "$merge_dangerously", "distinct_id": "a", "properties": {"alias": "b"}})
    assert merge.identifiers == alias.identifiers and merge.event_type == "alias"


def test_skew_correction_and_offset():
    event, _ = _map({"event": "x", "distinct_id": "d", "timestamp": "2026-06-01T13:00:00+00:00"},
                    sent_at="2026-06-01T13:00:05+00:00")
    assert event.event_time == NOW - timedelta(seconds=5)
    event, _ = _map({"event": "x", "distinct_id": "d", "offset": 1500})
    assert event.event_time == NOW - timedelta(milliseconds=1500)


def test_rejections():
    assert isinstance(r := _map({"event": "x"}), Rejection) and r.code == "no_usable_identifier"
    assert _map({"event": "x", "distinct_id": "undefined"}).code == "no_usable_identifier"
    assert _map({"distinct_id": "d"}).code == "missing_field"
    assert _map({"event": "x", "distinct_id": "d", "uuid": "u" * 256}).code == "dedupe_key_too_long"
    assert _map({"event": "x", "distinct_id": "d", "timestamp": "2099-01-01T00:00:00Z"}).code == "event_in_future"


def test_write_key_of_an_event():
    assert event_write_key(b'{"properties": {"token": "t"}}') == "t"
    assert event_write_key(b'{"api_key": "k", "properties": {"token": "t"}}') == "k"
    assert event_write_key(b"not json") is None


def test_set_once_keeps_the_oldest_state_time_and_set_overrides():
    traits: dict = {}
    times: dict = {}
    t0 = NOW - timedelta(days=1)
    merge_traits_once(traits, times, {"src": "newer"}, NOW)
    merge_traits_once(traits, times, {"src": "older"}, t0)  # arrives later, happened earlier
    merge_traits_once(traits, times, {"src": "newest"}, NOW + timedelta(hours=1))
    assert traits == {"src": "older"}
    merge_traits(traits, times, {"src": "set"}, t0 - timedelta(days=1))  # $set beats any $set_once
    assert traits == {"src": "set"}
    merge_traits_once(traits, times, {"src": "once"}, t0 - timedelta(days=9))
    assert traits == {"src": "set"}


def test_merge_of_profiles_keeps_the_oldest_set_once_value():
    a, at = {}, {}
    b, bt = {}, {}
    merge_traits_once(a, at, {"src": "a-new"}, NOW)
    merge_traits_once(b, bt, {"src": "b-old"}, NOW - timedelta(days=3))
    merge_trait_sets(a, at, b, bt)
    assert a == {"src": "b-old"}
    c, ct = {}, {}
    merge_traits(c, ct, {"src": "plain"}, NOW - timedelta(days=30))
    merge_trait_sets(a, at, c, ct)
    assert a == {"src": "plain"}
