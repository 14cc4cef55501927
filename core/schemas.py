"""Wire schemas (msgspec Structs) for the native API and the queue payload.

The queue payload is msgpack, never pickle, and carries ``QUEUE_FORMAT_VERSION`` so a
worker of the next release can read what this one queued.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

QUEUE_FORMAT_VERSION = 1

EventName = Annotated[str, Meta(min_length=1, max_length=255)]
# The 255-character cap is checked in core.intake, to answer ``dedupe_key_too_long``.
DedupeKey = Annotated[str, Meta(min_length=1)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class IdentifierIn(Struct, forbid_unknown_fields=True):
    type: str
    value: str
    # HMAC of "{type}:{value}" (core.identity_signature). Any JSON value: a malformed
    # signature leaves the claim unverified, it never rejects the event.
    signature: Any = None


class ConsentIn(Struct, forbid_unknown_fields=True, omit_defaults=True):
    analytics: bool | None = None
    ads: bool | None = None
    email: bool | None = None
    sms: bool | None = None
    all: bool | None = None

    def as_dict(self) -> dict[str, bool]:
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not None}


class NativeEvent(Struct, forbid_unknown_fields=True):
    """One event of ``POST /api/v1/cdp/events`` (CONTRACT 4.1)."""

    event_name: EventName
    event_time: AwareDatetime
    identifiers: list[IdentifierIn]
    idempotency_key: DedupeKey | None = None
    properties: dict[str, Any] = {}
    context: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    consent: ConsentIn | None = None


class QueuedEvent(Struct, array_like=True, tag="n"):
    """One accepted event as the workers receive it (native API, fully parsed at the door).

    ``identifiers`` are (type, value) pairs as the client sent them (for the native API,
    already validated); workers normalize and hash them before anything is stored.
    """

    event_id: str
    dedupe_key: str
    event_type: str
    event_name: str
    event_time: datetime
    identifiers: list[tuple[str, str]]
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any]
    consent: dict[str, bool] | None
    emq: int
    warnings: list[str]
    # alias: the previous id linked to the user id (both also appear in identifiers)
    previous_id: str | None = None
    # Known identifiers that came with a signature: (type, value, signature, signed text),
    # checked and dropped by workers (core.identity_signature), never stored. ``value`` is the
    # identifier as the event maps it; ``signed text`` the value as sent when that differs
    # (a Segment userId sent as a number), else "". Last and defaulted, so payloads queued
    # without it still decode (and older workers ignore it).
    claims: list[tuple[str, str, str, str]] = []
    # PostHog ``$set_once``: traits that keep the value with the oldest state time. A new
    # trailing field with a default: workers of either release read both payloads.
    traits_once: dict[str, Any] | None = None


class QueuedSegmentEvent(Struct, array_like=True, tag="s"):
    """A Segment/RudderStack event screened at the door and queued as the raw JSON it came
    in; workers map it (``core.segment.map_segment_event``), keeping the door thin."""

    event_id: str
    dedupe_key: str
    event_type: str
    event_time: datetime
    raw: bytes


class QueuedBatch(Struct, array_like=True):
    """The payload of one queue job. ``events`` must stay the last field: the ingest API
    appends the event list to an encoded header inside Redis (see stratum/queue/writer.py)."""

    version: int
    tenant_id: str
    source_id: str
    source_type: str
    phone_region: str | None
    received_at: datetime
    request_id: str
    # Segment batches: top-level context/integrations, merged into each event by workers
    context: dict[str, Any] | None
    integrations: dict[str, Any] | None
    events: list[QueuedEvent | QueuedSegmentEvent]


_event_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(QueuedBatch)


def encode_event(event: QueuedEvent | QueuedSegmentEvent) -> bytes:
    return _event_encoder.encode(event)


def encode_event_value(value: Any) -> bytes:
    """Encode any part of a payload the way the queue will (raises OverflowError for
    integers beyond 64 bits, which msgpack cannot carry)."""
    return _event_encoder.encode(value)


def encode_batch_header(batch: QueuedBatch) -> bytes:
    """Encode a batch without its events: the bytes end just before the events array."""
    if batch.events:
        raise ValueError("encode the header of a batch with no events")
    encoded = _event_encoder.encode(batch)
    assert encoded[-1] == 0x90, "events must be the last field"  # fixarray of length 0
    return encoded[:-1]


def msgpack_array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def assemble_batch(header: bytes, event_blobs: list[bytes]) -> bytes:
    """The Python twin of the assembly the enqueue script does in Redis."""
    return header + msgpack_array_header(len(event_blobs)) + b"".join(event_blobs)


def decode_batch(payload: bytes) -> QueuedBatch:
    batch = _batch_decoder.decode(payload)
    if batch.version != QUEUE_FORMAT_VERSION:
        raise ValueError(f"queue payload version {batch.version} is not supported by this worker")
    return batch
