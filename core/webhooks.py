"""Webhook messages, as the Standard Webhooks specification defines them, and the pure
rules of delivery: signing, the retry schedule, the address check of the SSRF guard and
the consent gate (CONTRACT 7). No I/O here; workers/delivery.py does the sending.

Signature: ``v1,`` + base64 HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed with the
base64-decoded part of the secret after ``whsec_``, so the ``standardwebhooks`` libraries
verify it unchanged. During 24 h after a rotation both the new and the previous secret sign
(space-separated signatures), so receivers can switch keys without losing messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime

import msgspec

TOPICS = ("event.received", "profile.created", "profile.updated", "profile.merged", "consent.updated",
          "segment.entered", "segment.exited", "anomaly.detected")
CONSENT_TYPES = ("analytics", "ads", "email", "sms")
# Topics delivered whatever the profile's consent (CONTRACT 7).
UNGATED_TOPICS = frozenset({"consent.updated", "anomaly.detected"})
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
# After rotate-secret the previous secret keeps signing this long.
PREVIOUS_SECRET_GRACE_S = 24 * 3600

# Delay before retry n (1-based): 5 s, then x4 each time up to 12 h. 9 retries span 31.6 h
# before jitter; jitter only lengthens a delay (by up to 25 %), so the first retry comes
# within 6.25 s and the whole schedule always covers more than 24 h.
FIRST_RETRY_S = 5.0
RETRY_FACTOR = 4.0
MAX_RETRY_DELAY_S = 12 * 3600.0
MAX_RETRIES = 9
JITTER_FRACTION = 0.25
# Opt-in batching: a destination's ``batch_size`` is 1 (one message per request) up to this.
MAX_BATCH_SIZE = 1000
BATCH_TYPE = "batch"
# A Retry-After beyond this is capped (a receiver must not park a message for a week).
MAX_RETRY_AFTER_S = 24 * 3600.0

_json = msgspec.json.Encoder()


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message with one secret."""
    to_sign = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(message_id: str, timestamp: int, body: bytes, signing_secrets: Iterable[str]) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (``timestamp`` in Unix seconds)."""
    signature = " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature,
            "content-type": "application/json"}


def message_body(topic: str, created_at: datetime, data: Mapping) -> bytes:
    """The body of a message: ``{"type", "timestamp", "data"}``, identical on every attempt."""
    return _json.encode({"type": topic, "timestamp": created_at.isoformat(), "data": data})


def batch_body(messages: Iterable[tuple[str, bytes]], created_at: datetime) -> bytes:
    """The body of one batched request: ``{"type": "batch", "timestamp", "data": {"messages":
    [...]}}`` where each item is a message's own body object with its ``id`` (its
    ``webhook-id``) added first. ``messages`` are (message id, body) pairs; each body is a
    JSON object as ``message_body`` makes it, spliced in without decoding."""
    items = b",".join(b'{"id":' + _json.encode(mid) + (b"," + body[1:] if body != b"{}" else b"}")
                      for mid, body in messages)
    head = _json.encode({"type": BATCH_TYPE, "timestamp": created_at.isoformat()})[:-1]
    return head + b',"data":{"messages":[' + items + b"]}}"


def batch_message_id(message_ids: Iterable[str]) -> str:
    """``webhook-id`` of a batched request: derived from its messages' ids, so a retry of the
    same messages carries the same id. Receivers dedupe on each item's ``id``, since a retry
    may group messages differently."""
    digest = hashlib.sha256("\n".join(message_ids).encode()).hexdigest()
    return f"msg_batch_{digest[:32]}"


def event_message_id(event_id: str) -> str:
    """``webhook-id`` of an ``event.received`` message: stable across retries and replays."""
    return f"msg_{event_id}"


def retry_delay_s(retry_number: int, jitter: float, retry_after_s: float | None = None) -> float | None:
    """Seconds to wait before retry ``retry_number`` (1-based), or None when the retries are
    used up (the delivery is then dead). ``jitter`` in [0, 1) picks the delay's spread; a
    ``Retry-After`` from the receiver is honoured when longer than the schedule."""
    if retry_number > MAX_RETRIES:
        return None
    base = min(MAX_RETRY_DELAY_S, FIRST_RETRY_S * RETRY_FACTOR ** (retry_number - 1))
    delay = base * (1.0 + JITTER_FRACTION * jitter)
    if retry_after_s is not None and retry_after_s > delay:
        delay = min(retry_after_s, MAX_RETRY_AFTER_S)
    return delay


def address_allowed(address: str, allow_private: bool) -> bool:
    """True when a resolved address may be connected to: a global unicast address, or any
    address when private ones are allowed. IPv4-mapped IPv6 addresses are judged as IPv4."""
    if allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def consent_granted(states: Mapping[str, tuple[bool, datetime]], consent_type: str) -> bool:
    """Whether ``consent_type`` is granted: the newer of its own state and ``all`` decides;
    no recorded state means not granted. ``states`` maps a type to (granted, updated_at)."""
    own, every = states.get(consent_type), states.get("all")
    if every is None:
        return own is not None and own[0]
    if own is None:
        return every[0]
    return own[0] if own[1] >= every[1] else every[0]


def event_received_data(*, event_id: str, event_name: str, event_type: str, event_time: datetime,
                        received_at: datetime, source_id: str, profile_id: str | None, properties: Mapping,
                        context: Mapping, emq: int, identifiers: Iterable[tuple[str, str]]) -> dict:
    """``data`` of an ``event.received`` message: the stored event with its ``profile_id``
    (identifiers as type and hash only), the same for live messages and replays."""
    return {"event_id": event_id, "profile_id": profile_id, "event_name": event_name, "event_type": event_type,
            "event_time": event_time.isoformat(), "received_at": received_at.isoformat(), "source_id": source_id,
            "properties": properties, "context": context, "emq": emq,
            "identifiers": [{"type": t, "hash": h} for t, h in identifiers]}
