"""docs/EVENT_SPEC.md is what ``python -m stratum.event_spec`` generates from the msgspec
types, and its schemas accept the events the ingest API accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from stratum.event_spec import render_event_spec

DOC = Path(__file__).resolve().parent.parent / "docs" / "EVENT_SPEC.md"


def _schemas() -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)]


def test_event_spec_is_current():
    assert DOC.read_text() == render_event_spec(), (
        "docs/EVENT_SPEC.md is stale: run python -m stratum.event_spec > docs/EVENT_SPEC.md")


def test_native_schema_accepts_a_native_batch_and_refuses_a_broken_one():
    native, _ = _schemas()
    jsonschema.Draft202012Validator.check_schema(native)
    good = {"events": [{"event_name": "Order Completed", "event_time": "2026-11-30T10:00:00Z",
                        "identifiers": [{"type": "email", "value": "a@example.com"}],
                        "properties": {"revenue": 10}, "consent": {"ads": True}}]}
    jsonschema.validate(good, native)
    for broken in ({"events": []}, {"events": [{"event_name": "", "event_time": "2026-11-30T10:00:00Z",
                                                "identifiers": []}]},
                   {"events": [{**good["events"][0], "unknown_field": 1}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, native)


def test_segment_schema_accepts_what_analytics_sdks_send():
    _, segment = _schemas()
    jsonschema.Draft202012Validator.check_schema(segment)
    batch = {"batch": [{"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1",
                        "properties": {"plan": "pro"}, "context": {"library": {"name": "analytics-python"}},
                        "timestamp": "2026-11-30T10:00:00Z"},
                       {"type": "identify", "anonymousId": 42, "traits": {"email": "b@example.com"}}],
             "sentAt": "2026-11-30T10:00:01Z", "writeKey": "k"}
    jsonschema.validate(batch, segment)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"batch": [{"type": "track", "properties": []}]}, segment)
