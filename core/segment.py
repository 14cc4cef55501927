"""Segment/RudderStack wire format (CONTRACT 4.2). Pure.

Identity mapping: ``userId`` -> external_id, ``anonymousId`` -> anonymous_id,
``traits.email``/``context.traits.email`` -> email, ``traits.phone``/``context.traits.phone``
-> phone, ``context.device.id`` -> device_id; ``alias`` links ``previousId`` (read as an
anonymous_id) with ``userId``. ``null`` ids are absent ids. An invalid email or phone in
traits never rejects an event; it just does not identify.

Two steps, so the ingest API stays thin:

- ``screen_segment_event`` (ingest, per event, a few microseconds): is the event usable
  (size, JSON types, a usable identifier, a readable timestamp)? It returns the dedupe
  key and the skew-corrected event time; the event's raw JSON is queued as it came.
- ``map_segment_event`` (workers): the full mapping to a ``QueuedEvent``: identifiers,
  properties, context (batch-level context merged in), traits, EMQ. It never rejects an
  event that passed the screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from core.dedupe import dedupe_key_too_long
from core.emq import emq_score
from core.errors import BlockedIdentifier, InvalidIdentifier
from core.event_time import EARLIEST_EVENT_TIME, check_event_time
from core.identifiers import MAX_IDENTIFIER_CHARS, is_blocked, normalize_identifier
from core.identity_signature import signature_text
from core.intake import Accepted, Rejection, contains_nul
from core.schemas import QueuedEvent
from core.segment_screen import ScreenedEvent, ScreenMemo

SEGMENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
Id = str | int | float | None


class SegmentMessage(msgspec.Struct):
    type: str | None = None
    messageId: Id = None  # noqa: N815 - wire names
    userId: Id = None  # noqa: N815
    anonymousId: Id = None  # noqa: N815
    previousId: Id = None  # noqa: N815
    groupId: Id = None  # noqa: N815
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None  # noqa: N815
    sentAt: str | None = None  # noqa: N815


_full_decoder = msgspec.json.Decoder(SegmentMessage)


class _UserIdAsSent(msgspec.Struct):
    userId: msgspec.Raw = msgspec.Raw(b"")  # noqa: N815 - wire name


_user_id_decoder = msgspec.json.Decoder(_UserIdAsSent)
# Where a Segment event carries the signature of its userId (CONTRACT 6); dropped from the
# stored context once read.
SIGNATURE_CONTEXT_KEY = "identity_signature"


def _id_text(value: Id) -> str | None:
    """Ids may arrive as numbers; ``null`` and empty are absent."""
    if value is None:
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else value
    text = str(value)
    return text if text.strip() else None


@lru_cache(maxsize=4096)
def parse_timestamp(value: str | None) -> datetime | None:
    """ISO 8601; a timestamp without a zone is read as UTC. Raises ValueError if unparsable.

    Cached: within a batch, ``sentAt`` and often the timestamps repeat.
    """
    if value is None or value == "":
        return None
    ts = datetime.fromisoformat(value.strip())  # Python >= 3.11 reads "Z" and most ISO forms
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def corrected_time(msg: Any, batch_sent_at: str | None, received_at: datetime) -> datetime:
    """``timestamp = receivedAt - (sentAt - originalTimestamp)`` when the client said when it
    sent the batch; otherwise the client's timestamp; otherwise the receipt time."""
    # (absent fields skip the memo's call: this runs for every event at the door)
    original = parse_timestamp(msg.originalTimestamp) if msg.originalTimestamp else None
    if original is None and msg.timestamp:
        original = parse_timestamp(msg.timestamp)
    sent = parse_timestamp(msg.sentAt) if msg.sentAt else None
    if sent is None and batch_sent_at:
        sent = parse_timestamp(batch_sent_at)
    if original is None:
        return received_at
    if sent is None:
        return original.astimezone(UTC)
    return (received_at - (sent - original)).astimezone(UTC)


def _plain_id_usable(value: str | None, extra_blocked: frozenset[str]) -> bool:
    return (value is not None and len(value) <= MAX_IDENTIFIER_CHARS and "\x00" not in value
            and not is_blocked(value, extra_blocked))


def screen_segment_event(
    raw: bytes,
    *,
    path_type: str | None,
    batch_sent_at: str | None,
    received_at: datetime,
    max_event_bytes: int,
    max_future_s: int,
    phone_region: str | None,
    oldest_event_time: datetime = EARLIEST_EVENT_TIME,
    shared_bytes: int = 0,
    extra_blocked: frozenset[str] = frozenset(),
    memo: ScreenMemo | None = None,
) -> ScreenedEvent | Rejection:
    """Decide at the door whether an event is usable. ``path_type`` is the type implied by a
    single-event path (``/v1/track``), None for batches; ``oldest_event_time`` is the
    retention cut-off (``core.event_time.oldest_event_time``), checked after skew correction;
    ``shared_bytes`` is the size of the batch-level context and integrations, which workers
    merge into the event and so count toward its limit. ``memo``: one per request, shared by
    its events (``core.segment_screen.ScreenMemo``); the verdicts are the same without it."""
    if len(raw) + shared_bytes > max_event_bytes:
        with_shared = f" with {shared_bytes} bytes of batch context" if shared_bytes else ""
        return Rejection("event_too_large", None,
                         f"event is {len(raw)} bytes{with_shared}; the limit is {max_event_bytes}")
    try:
        # A full typed decode (a few microseconds) also validates UTF-8, JSON types and
        # numbers (ints over 64 bits, |x| > 1e308), so a screened event always maps later.
        msg = _full_decoder.decode(raw)
        if b"\\u0000" in raw and contains_nul(msgspec.json.decode(raw)):
            return Rejection("nul_character", None, "text must not contain \\u0000")
    except msgspec.ValidationError as exc:
        path = exc.args[0].rsplit("at `$.", 1)[-1].rstrip("`") if "at `$." in str(exc) else None
        return Rejection("invalid_event", path, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection("invalid_json", None, str(exc))
    except RecursionError:
        return Rejection("invalid_event", None, "event is nested too deeply")
    etype = path_type or msg.type
    if etype not in SEGMENT_TYPES:
        return Rejection("invalid_type", "type", f"type must be one of {', '.join(sorted(SEGMENT_TYPES))}")
    if etype == "track" and not msg.event:
        return Rejection("missing_field", "event", "a track call needs an event name")
    if memo is None:
        memo = ScreenMemo()
    times_key = (msg.originalTimestamp, msg.timestamp, msg.sentAt)
    event_time = memo.times.get(times_key)
    if event_time is None:
        event_time = memo.times[times_key] = _screen_time(msg, batch_sent_at, received_at, max_future_s,
                                                          oldest_event_time)
    if isinstance(event_time, tuple):
        return Rejection(event_time[0], "timestamp", event_time[1])

    ids = memo.ids
    usable = False
    for value in (msg.userId, msg.anonymousId, msg.previousId if etype == "alias" else None):
        text = _id_text(value)
        if text is None:
            continue
        ok = ids.get(text)
        if ok is None:
            ok = ids[text] = _plain_id_usable(text, extra_blocked)
        if ok:
            usable = True
            break
    if not usable:
        # Rare path (SDKs always send userId or anonymousId): look at traits and device.
        identifiers, _ = segment_identifiers(msg, etype, msg.context or {}, phone_region, extra_blocked)
        if not identifiers:
            return Rejection("no_usable_identifier", "userId",
                             "event has no usable userId, anonymousId, email, phone or device id")
    message_id = _id_text(msg.messageId)
    if message_id is not None and (too_long := dedupe_key_too_long(message_id)):
        return Rejection("dedupe_key_too_long", "messageId", too_long)
    return ScreenedEvent(message_id, event_time, etype)


def _screen_time(msg: SegmentMessage, batch_sent_at: str | None, received_at: datetime, max_future_s: int,
                 oldest_event_time: datetime) -> datetime | tuple[str, str]:
    """The skew-corrected time of ``msg``, or the (code, message) of its rejection."""
    try:
        event_time = corrected_time(msg, batch_sent_at, received_at)
    except (ValueError, OverflowError):  # unparsable, or skew arithmetic past year 1..9999
        return "invalid_timestamp", "timestamp must be ISO 8601, e.g. 2024-05-01T12:00:00Z"
    # An event not after its receipt and within retention needs no further time check.
    if not (oldest_event_time <= event_time <= received_at and max_future_s >= 0) and (
            bad := check_event_time(event_time, received_at, max_future_s, oldest_event_time, name="timestamp")):
        return bad.code, bad.message
    return event_time


def segment_identifiers(msg: SegmentMessage, etype: str, context: dict[str, Any], phone_region: str | None,
                        extra_blocked: frozenset[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The (type, normalized value) identifiers of a message, and warnings for dropped ones."""
    return normalize_candidates(segment_candidates(msg, etype, context), phone_region, extra_blocked)


def segment_candidates(msg: SegmentMessage, etype: str, context: dict[str, Any]) -> list[tuple[str, Any]]:
    """The (type, value as sent) identifier candidates of a message, in priority order, before
    normalization: ``None`` for an absent id, numbers as their text."""
    traits = msg.traits if type(msg.traits) is dict else None
    ctx_traits = context.get("traits")
    if type(ctx_traits) is not dict:
        ctx_traits = None
    email = traits.get("email") if traits else None
    if email is None and ctx_traits:
        email = ctx_traits.get("email")
    phone = traits.get("phone") if traits else None
    if phone is None and ctx_traits:
        phone = ctx_traits.get("phone")
    # (ids are text in the common case: _id_text's answer is then the text itself, unless blank)
    user_id, anonymous_id = msg.userId, msg.anonymousId
    candidates: list[tuple[str, Any]] = [
        ("external_id", user_id if type(user_id) is str and user_id.strip() else _id_text(user_id)),
        ("anonymous_id", anonymous_id if type(anonymous_id) is str and anonymous_id.strip() else _id_text(anonymous_id)),
        ("email", str(email) if type(email) is float else email),
        ("phone", str(phone) if type(phone) is float else phone),
    ]
    device = context.get("device")
    if isinstance(device, dict) and not isinstance(device.get("id"), dict | list):
        candidates.append(("device_id", _id_text(device.get("id"))))
    if etype == "alias":
        candidates.append(("anonymous_id", _id_text(msg.previousId)))
    return candidates


def normalize_candidates(candidates: Iterable[tuple[str, Any]], phone_region: str | None,
                         extra_blocked: frozenset[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(type, value) candidates of an SDK event -> its (type, normalized value) identifiers,
    in order and without repeats, and a warning for each blocked or invalid one (an invalid
    email or phone never rejects the event, it just does not identify). ``None`` and ``""``
    are absent ids. Shared by the Segment and PostHog mappings."""
    identifiers: list[tuple[str, str]] = []
    warnings: list[str] = []
    for id_type, value in candidates:
        if value is None or value == "":
            continue
        try:
            norm = normalize_identifier(id_type, value, default_region=phone_region, extra_blocked=extra_blocked)
        except BlockedIdentifier as exc:
            warnings.append(exc.message)
            continue
        except InvalidIdentifier as exc:
            warnings.append(f"{id_type} ignored: {exc.message}")
            continue
        if (norm.type, norm.value) not in identifiers:
            identifiers.append((norm.type, norm.value))
    return identifiers, warnings


def map_segment_event(
    raw: bytes,
    *,
    event_type: str,
    event_id: str,
    dedupe_key: str,
    event_time: datetime,
    received_at: datetime,
    batch_context: dict[str, Any] | None,
    batch_integrations: dict[str, Any] | None,
    phone_region: str | None,
    extra_blocked: frozenset[str] = frozenset(),
) -> QueuedEvent:
    """The full mapping of a screened event (workers)."""
    parts = segment_parts(raw, event_type, batch_context, batch_integrations)
    identifiers, warnings = normalize_candidates(parts.candidates, phone_region, extra_blocked)
    score = emq_score((t for t, _ in identifiers), parts.properties, parts.context, event_time, received_at)
    return QueuedEvent(
        event_id=event_id, dedupe_key=dedupe_key, event_type=event_type, event_name=parts.name,
        event_time=event_time, identifiers=identifiers, properties=parts.properties, context=parts.context,
        traits=parts.traits, consent=None, emq=score, warnings=warnings, previous_id=parts.previous_id,
        claims=parts.claims,
    )


class SegmentParts(msgspec.Struct):
    """A screened Segment message taken apart: everything of its mapping except the
    normalization of its identifier candidates (``segment_candidates``) and the EMQ."""

    candidates: list[tuple[str, Any]]
    name: str
    properties: dict[str, Any]
    context: dict[str, Any]  # batch-level context and integrations merged in, signature dropped
    traits: dict[str, Any]
    previous_id: str | None
    claims: list[tuple[str, str, str, str]]


def segment_parts(raw: bytes, etype: str, batch_context: dict[str, Any] | None,
                  batch_integrations: dict[str, Any] | None) -> SegmentParts:
    """Decode a screened message (``etype``: its type as screened) and take it apart."""
    msg = _full_decoder.decode(raw)
    context = {**batch_context, **msg.context} if batch_context and msg.context else (msg.context or batch_context or {})
    if batch_integrations and "integrations" not in context:
        context = {**context, "integrations": {**batch_integrations, **(msg.integrations or {})}}
    elif msg.integrations:
        context = {**context, "integrations": msg.integrations}
    candidates = segment_candidates(msg, etype, context)
    claims: list[tuple[str, str, str, str]] = []
    if SIGNATURE_CONTEXT_KEY in context:
        context = dict(context)
        signature = context.pop(SIGNATURE_CONTEXT_KEY)
        signed = _user_id_as_sent(raw)
        user_id = _id_text(msg.userId)
        if signed is not None and user_id is not None:
            claims.append(("external_id", user_id, signature_text(signature), "" if signed == user_id else signed))

    properties = msg.properties or {}
    traits: dict[str, Any] = {}
    if etype == "identify":
        traits = msg.traits or {}
    elif etype == "group":
        properties = {**properties, "group_id": _id_text(msg.groupId), "group_traits": msg.traits or {}}
    if etype in ("page", "screen") and msg.category:
        properties = {**properties, "category": msg.category}
    name = msg.event if etype == "track" else (msg.name or etype) if etype in ("page", "screen") else etype
    return SegmentParts(candidates, (name or etype)[:255], properties, context, traits,
                        _id_text(msg.previousId) if etype == "alias" else None, claims)


def _user_id_as_sent(raw: bytes) -> str | None:
    """``userId`` as the client sent it, the text its signature covers: a string decoded
    but not trimmed, a number as its JSON text; None when absent or null."""
    text = bytes(_user_id_decoder.decode(raw).userId)
    if not text or text == b"null":
        return None
    if text.startswith(b'"'):
        return msgspec.json.decode(text)
    return text.decode() if text[:1] not in (b"{", b"[", b"t", b"f") else None


def intake_segment_message(
    raw: bytes,
    *,
    path_type: str | None,
    batch_context: dict[str, Any] | None,
    batch_integrations: dict[str, Any] | None,
    batch_sent_at: str | None,
    event_id: str,
    received_at: datetime,
    phone_region: str | None,
    max_event_bytes: int,
    max_future_s: int,
    oldest_event_time: datetime = EARLIEST_EVENT_TIME,
    extra_blocked: frozenset[str] = frozenset(),
) -> Accepted | Rejection:
    """Screen and map in one step: what the door and a worker together make of one message."""
    shared = sum(len(msgspec.json.encode(v)) for v in (batch_context, batch_integrations) if v)
    screened = screen_segment_event(raw, path_type=path_type, batch_sent_at=batch_sent_at, received_at=received_at,
                                    max_event_bytes=max_event_bytes, max_future_s=max_future_s,
                                    phone_region=phone_region, oldest_event_time=oldest_event_time,
                                    shared_bytes=shared, extra_blocked=extra_blocked)
    if isinstance(screened, Rejection):
        return screened
    event = map_segment_event(raw, event_type=screened.event_type, event_id=event_id,
                              dedupe_key=screened.dedupe_key or event_id, event_time=screened.event_time,
                              received_at=received_at, batch_context=batch_context,
                              batch_integrations=batch_integrations, phone_region=phone_region,
                              extra_blocked=extra_blocked)
    return Accepted(event, screened.dedupe_key, event.warnings)
