"""Pure webhook rules: signatures as standardwebhooks verifies them, the retry schedule,
the SSRF address check, the consent rule and batched bodies."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from core.webhooks import (
    MAX_RETRIES,
    address_allowed,
    batch_body,
    batch_message_id,
    consent_granted,
    message_body,
    new_secret,
    retry_delay_s,
    webhook_headers,
)


def test_signature_verifies_with_standardwebhooks():
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())
    body = b'{"type":"event.received","timestamp":"2026-01-01T00:00:00+00:00","data":{}}'
    headers = webhook_headers("msg_1", now, body, [secret])
    assert Webhook(secret).verify(body, headers) is not None
    with pytest.raises(Exception):  # noqa: B017 - another secret never verifies
        Webhook(new_secret()).verify(body, headers)


def test_retry_schedule_first_retry_soon_and_whole_span_over_a_day():
    rng = random.Random(7)
    for _ in range(200):
        delays = [retry_delay_s(n, rng.random()) for n in range(1, MAX_RETRIES + 1)]
        assert delays[0] <= 10
        assert sum(delays) >= 24 * 3600
    assert retry_delay_s(MAX_RETRIES + 1, 0.5) is None
    assert retry_delay_s(1, 0.0, retry_after_s=120) == 120
    assert retry_delay_s(1, 0.0, retry_after_s=1) == 5
    assert retry_delay_s(1, 0.0, retry_after_s=10 ** 9) == 24 * 3600


@pytest.mark.parametrize(("address", "allowed"), [
    ("93.184.215.14", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False), ("172.16.5.5", False),
    ("169.254.169.254", False), ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("100.64.0.1", False),
    ("224.0.0.1", False), ("not-an-ip", False),
])
def test_address_allowed(address, allowed):
    assert address_allowed(address, allow_private=False) is allowed
    assert address_allowed(address, allow_private=True) is True


def test_consent_rule():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(hours=1)
    assert consent_granted({}, "ads") is False
    assert consent_granted({"ads": (True, t0)}, "ads") is True
    assert consent_granted({"all": (True, t0)}, "ads") is True
    assert consent_granted({"ads": (True, t0), "all": (False, later)}, "ads") is False
    assert consent_granted({"ads": (True, later), "all": (False, t0)}, "ads") is True
    assert consent_granted({"email": (True, t0)}, "ads") is False


def test_batch_body_carries_each_message_with_its_id_and_verifies():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    one = message_body("event.received", at, {"event_id": "e1", "properties": {"a": "x\\y"}})
    two = b'{"data": {"event_id": "e2"}, "type": "event.received", "timestamp": "2026-01-01T00:00:00.000000+00:00"}'
    body = batch_body([("msg_e1", one), ("msg_e2", two)], at)
    parsed = json.loads(body)
    assert parsed["type"] == "batch" and parsed["timestamp"] == at.isoformat()
    items = parsed["data"]["messages"]
    assert [m["id"] for m in items] == ["msg_e1", "msg_e2"]
    assert {k: v for k, v in items[0].items() if k != "id"} == json.loads(one)
    assert items[1]["data"] == {"event_id": "e2"}
    secret = new_secret()
    batch_id = batch_message_id(["msg_e1", "msg_e2"])
    headers = webhook_headers(batch_id, int(datetime.now(UTC).timestamp()), body, [secret])
    assert Webhook(secret).verify(body, headers) == parsed
    # the same messages give the same request id; another grouping another one
    assert batch_id == batch_message_id(["msg_e1", "msg_e2"]) != batch_message_id(["msg_e1"])
