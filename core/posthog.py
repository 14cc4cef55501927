"""PostHog capture wire format (CONTRACT 4.3), mapped onto the one identity model. Pure.

Identity mapping:

- every ``distinct_id`` is an ``anonymous_id`` (PostHog's distinct ids are opaque; an id
  becomes "identified" only through ``$identify``);
- ``$identify``, and any event with ``properties.$is_identified: true``, also records its
  ``distinct_id`` as the ``external_id`` and links ``properties.$anon_distinct_id`` (an
  ``anonymous_id``) with it, so the anonymous history joins the identified person;
- ``$create_alias`` (and posthog-js's ``$merge_dangerously``) links ``properties.alias``
  (an ``anonymous_id``) with ``distinct_id``;
- ``$set.email`` / ``$set_once.email`` and ``.phone`` identify as Segment's traits do (an
  invalid one never rejects the event); ``properties.$device_id`` is a ``device_id``.

Traits: ``$set`` (top level or in ``properties``) are profile traits, newest state time
wins per key; ``$set_once`` (``QueuedEvent.traits_once``) keeps the value with the oldest
state time (``core.profiles.merge_traits_once``). ``$identify`` and ``$create_alias`` are
stored as events (``identify`` and ``alias`` types), like Segment's calls.

``uuid`` is the dedupe key (a missing one: the event id). ``timestamp`` is corrected for
client clock skew as Segment's (``receivedAt - (sent_at - timestamp)``); posthog-js's
``offset`` (milliseconds before sending) is read as ``receivedAt - offset``.

The door maps each event fully into a native ``QueuedEvent`` (``map_posthog_event``):
there is no tagged raw form in the queue for PostHog, so the queue format is unchanged.
The write key (``api_key``/``token``, also ``properties.token``) and
``properties.$identity_signature`` are removed from what is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from core.emq import emq_score
from core.event_time import EARLIEST_EVENT_TIME, check_event_time
from core.identity_signature import signature_text
from core.intake import Rejection, contains_nul
from core.schemas import QueuedEvent
from core.segment import normalize_candidates, parse_timestamp

MAX_DEDUPE_KEY_CHARS = 255
Id = str | int | float | None

# PostHog event names with a Stratum event type of their own (the rest are ``track``).
_EVENT_TYPES = {"$identify": "identify", "$create_alias": "alias", "$merge_dangerously": "alias",
                "$pageview": "page", "$screen": "screen",
                "$groupidentify": "group", "$set": "identify", "$set_once": "identify"}
# Events that link ``properties.alias`` with ``distinct_id``.
_ALIAS_EVENTS = frozenset({"$create_alias", "$merge_dangerously"})
# Properties not stored with the event: the write key and the identity signature are never
# stored (CONTRACT 4, 6); ``$set``/``$set_once`` become traits.
_NOT_STORED_PROPERTIES = frozenset({"token", "api_key", "$identity_signature", "$set", "$set_once"})


class PostHogEvent(msgspec.Struct):
    event: str | None = None
    distinct_id: Id = None
    properties: dict[str, Any] | None = None
    timestamp: str | None = None
    uuid: Id = None
    offset: int | float | None = None
    set: dict[str, Any] | None = msgspec.field(default=None, name="$set")
    set_once: dict[str, Any] | None = msgspec.field(default=None, name="$set_once")
    api_key: str | None = None
    token: str | None = None


class _TokenProps(msgspec.Struct):
    token: str | None = None


class _KeyHolder(msgspec.Struct):
    """Just the write key fields of an event (the first event of an array body)."""

    api_key: str | None = None
    token: str | None = None
    properties: _TokenProps | None = None


_event_decoder = msgspec.json.Decoder(PostHogEvent)
_key_decoder = msgspec.json.Decoder(_KeyHolder)


def event_write_key(raw: bytes) -> str | None:
    """The write key an event carries: ``api_key``, ``token`` or ``properties.token``."""
    try:
        held = _key_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    return held.api_key or held.token or (held.properties.token if held.properties else None)


def _id_text(value: Id) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else value
    text = str(value)
    return text if text.strip() else None


def posthog_event_time(msg: PostHogEvent, batch_sent_at: str | None, received_at: datetime) -> datetime:
    """The skew-corrected event time; raises ValueError or OverflowError when unreadable."""
    original = parse_timestamp(msg.timestamp)
    if original is None:
        if msg.offset is not None:
            return received_at - timedelta(milliseconds=float(msg.offset))
        return received_at
    sent = parse_timestamp(batch_sent_at)
    if sent is None:
        return original.astimezone(UTC)
    return (received_at - (sent - original)).astimezone(UTC)


def _identified(msg: PostHogEvent, props: dict[str, Any]) -> bool:
    return msg.event == "$identify" or props.get("$is_identified") is True


def posthog_identifiers(msg: PostHogEvent, props: dict[str, Any], phone_region: str | None,
                        extra_blocked: frozenset[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(type, normalized value) identifiers of an event and warnings for the ones dropped."""
    distinct = _id_text(msg.distinct_id) or _id_text(props.get("distinct_id"))
    candidates: list[tuple[str, Any]] = [("anonymous_id", distinct)]
    if _identified(msg, props):
        candidates += [("external_id", distinct), ("anonymous_id", _id_text(props.get("$anon_distinct_id")))]
    if msg.event in _ALIAS_EVENTS:
        candidates.append(("anonymous_id", _id_text(props.get("alias"))))
    for traits in (msg.set, msg.set_once, props.get("$set"), props.get("$set_once")):
        if isinstance(traits, dict):
            candidates += [("email", traits.get("email")), ("phone", traits.get("phone"))]
    if not isinstance(props.get("$device_id"), dict | list):
        candidates.append(("device_id", _id_text(props.get("$device_id"))))
    # Values that are not text are read as their text; booleans and objects never identify.
    return normalize_candidates(
        [(t, v if v is None or isinstance(v, str) else str(v)) for t, v in candidates
         if not isinstance(v, bool | dict | list)], phone_region, extra_blocked)


def _traits(top: dict[str, Any] | None, nested: Any) -> dict[str, Any]:
    if isinstance(nested, dict) and nested:
        return {**nested, **top} if top else dict(nested)
    return dict(top) if top else {}


def _context(props: dict[str, Any]) -> dict[str, Any]:
    """What EMQ and consumers read from ``context``: library, IP and user agent."""
    ctx: dict[str, Any] = {}
    if props.get("$lib"):
        ctx["library"] = {"name": props.get("$lib"), "version": props.get("$lib_version")}
    if props.get("$ip"):
        ctx["ip"] = props["$ip"]
    ua = props.get("$raw_user_agent") or props.get("$user_agent")
    if ua:
        ctx["user_agent"] = ua
    return ctx


def map_posthog_event(
    raw: bytes,
    *,
    event_id: str,
    batch_sent_at: str | None,
    received_at: datetime,
    max_event_bytes: int,
    max_future_s: int,
    phone_region: str | None,
    oldest_event_time: datetime = EARLIEST_EVENT_TIME,
    extra_blocked: frozenset[str] = frozenset(),
) -> tuple[QueuedEvent, str | None] | Rejection:
    """One PostHog event to (a queued native event, its client dedupe key), or a rejection."""
    if len(raw) > max_event_bytes:
        return Rejection("event_too_large", None, f"event is {len(raw)} bytes; the limit is {max_event_bytes}")
    try:
        msg = _event_decoder.decode(raw)
        if b"\\u0000" in raw and contains_nul(msgspec.json.decode(raw)):
            return Rejection("nul_character", None, "text must not contain \\u0000")
    except msgspec.ValidationError as exc:
        return Rejection("invalid_event", None, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection("invalid_json", None, str(exc))
    except RecursionError:
        return Rejection("invalid_event", None, "event is nested too deeply")
    if not msg.event:
        return Rejection("missing_field", "event", "an event needs its name in `event`")
    uuid = _id_text(msg.uuid)
    if uuid is not None and len(uuid) > MAX_DEDUPE_KEY_CHARS:
        return Rejection("dedupe_key_too_long", "uuid", f"uuid is over {MAX_DEDUPE_KEY_CHARS} characters")
    try:
        event_time = posthog_event_time(msg, batch_sent_at, received_at)
    except (ValueError, OverflowError):
        return Rejection("invalid_timestamp", "timestamp", "timestamp must be ISO 8601, e.g. 2024-05-01T12:00:00Z")
    if (bad := check_event_time(event_time, received_at, max_future_s, oldest_event_time, name="timestamp")):
        return Rejection(bad.code, "timestamp", bad.message)
    props = msg.properties or {}
    identifiers, warnings = posthog_identifiers(msg, props, phone_region, extra_blocked)
    if not identifiers:
        return Rejection("no_usable_identifier", "distinct_id", "event has no usable distinct_id, email or phone")
    # CONTRACT 6: properties.$identity_signature signs "external_id:{distinct_id}"; checked by
    # the workers against the source's identity secret, never stored.
    claims: list[tuple[str, str, str, str]] = []
    signature = props.get("$identity_signature")
    external = next((v for t, v in identifiers if t == "external_id"), None)
    if signature is not None and external is not None:
        sent = _id_text(msg.distinct_id) or external
        claims.append(("external_id", external, signature_text(signature), "" if sent == external else sent))
    traits = _traits(msg.set, props.get("$set"))
    traits_once = _traits(msg.set_once, props.get("$set_once"))
    properties = {k: v for k, v in props.items() if k not in _NOT_STORED_PROPERTIES}
    context = _context(props)
    etype = _EVENT_TYPES.get(msg.event, "track")
    score = emq_score((t for t, _ in identifiers), properties, context, event_time, received_at)
    event = QueuedEvent(
        event_id=event_id, dedupe_key=uuid or event_id, event_type=etype, event_name=msg.event[:255],
        event_time=event_time, identifiers=identifiers, properties=properties, context=context, traits=traits,
        consent=None, emq=score, warnings=warnings, claims=claims, traits_once=traits_once or None,
    )
    return event, uuid
