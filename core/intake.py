"""Turning one native API event (CONTRACT 4.1) into a queued event, or a precise rejection.

Pure: the caller passes the raw JSON bytes of the event, the receipt time and the
source's settings; nothing here touches the network or the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from core.dedupe import dedupe_key_too_long
from core.emq import emq_score
from core.errors import BlockedIdentifier, InvalidIdentifier
from core.event_time import EARLIEST_EVENT_TIME, check_event_time
from core.identifiers import KNOWN_TYPES, normalize_identifier
from core.identity_signature import signature_text
from core.schemas import NativeEvent, QueuedEvent, encode_event

_native_decoder = msgspec.json.Decoder(NativeEvent)
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


@dataclass(frozen=True)
class Rejection:
    code: str
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass
class Accepted:
    event: QueuedEvent
    client_dedupe_key: str | None
    warnings: list[str] = field(default_factory=list)
    blob: bytes = b""  # the event encoded for the queue (native events)


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>.*)`", re.DOTALL)
_PLAIN_NAME = re.compile(r"[A-Za-z_$][\w$.-]{0,63}")


def _field_of(message: str) -> tuple[str | None, str]:
    """Split msgspec's "Expected `str`, got `int` - at `$.identifiers[0].value`"."""
    m = _PATH.search(message)
    path, text = (m.group("path").lstrip(".") or None, message[: m.start()]) if m else (None, message)
    unknown = _UNKNOWN_FIELD.match(text)
    if unknown and not _PLAIN_NAME.fullmatch(unknown.group("name")):
        # an unknown "field" that is really data (an email, a number): never echo it
        text = "Object contains an unknown field"
    return path, text


def contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def intake_native_event(
    raw: bytes,
    *,
    event_id: str,
    received_at: datetime,
    phone_region: str | None,
    max_event_bytes: int,
    max_future_s: int,
    oldest_event_time: datetime = EARLIEST_EVENT_TIME,
    extra_blocked: frozenset[str] = frozenset(),
) -> Accepted | Rejection:
    """Validate one native event; return what to queue or why it was rejected.

    ``oldest_event_time`` is the retention cut-off (``core.event_time.oldest_event_time``)."""
    if len(raw) > max_event_bytes:
        return Rejection("event_too_large", None, f"event is {len(raw)} bytes; the limit is {max_event_bytes}")
    try:
        ev = _native_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        path, message = _field_of(str(exc))
        if message.startswith("Object missing required field"):
            name = message.split("`")[1]
            return Rejection("missing_field", f"{path}.{name}" if path else name, message)
        if path == "event_time":
            return Rejection("invalid_event_time", path, message + " (ISO 8601 with a timezone)")
        return Rejection("invalid_field", path, message)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection("invalid_json", None, str(exc))
    except RecursionError:
        return Rejection("invalid_event", None, "event is nested too deeply")
    try:
        if b"\\u0000" in raw and contains_nul(msgspec.json.decode(raw)):
            return Rejection("nul_character", None, "text must not contain \\u0000")
    except RecursionError:
        return Rejection("invalid_event", None, "event is nested too deeply")
    if (bad := check_event_time(ev.event_time, received_at, max_future_s, oldest_event_time)) is not None:
        return Rejection(bad.code, "event_time", bad.message)
    if ev.idempotency_key is not None and (too_long := dedupe_key_too_long(ev.idempotency_key)):
        return Rejection("dedupe_key_too_long", "idempotency_key", too_long)
    if not ev.identifiers:
        return Rejection("no_usable_identifier", "identifiers", "at least one identifier is required")

    warnings: list[str] = []
    identifiers: list[tuple[str, str]] = []
    claims: list[tuple[str, str, str, str]] = []
    for i, ident in enumerate(ev.identifiers):
        try:
            norm = normalize_identifier(ident.type, ident.value, default_region=phone_region, extra_blocked=extra_blocked)
        except BlockedIdentifier as exc:
            warnings.append(exc.message)
            continue
        except InvalidIdentifier as exc:
            fld = f"identifiers[{i}].type" if exc.code == "unknown_identifier_type" else f"identifiers[{i}].value"
            return Rejection(exc.code, fld, exc.message)
        identifiers.append((norm.type, norm.value))
        if ident.signature is not None and norm.type in KNOWN_TYPES:
            claims.append((norm.type, ident.value, signature_text(ident.signature), ""))
    if not identifiers:
        return Rejection("no_usable_identifier", "identifiers", "every identifier was blocked; send a real one")

    event_time = ev.event_time.astimezone(UTC)
    consent = ev.consent.as_dict() if ev.consent is not None else None
    score = emq_score((t for t, _ in identifiers), ev.properties, ev.context, event_time, received_at)
    queued = QueuedEvent(
        event_id=event_id,
        dedupe_key=ev.idempotency_key or event_id,
        event_type="track",
        event_name=ev.event_name,
        event_time=event_time,
        identifiers=identifiers,
        properties=ev.properties,
        context=ev.context,
        traits=ev.traits,
        consent=consent or None,
        emq=score,
        warnings=warnings,
        claims=claims,
    )
    try:
        blob = encode_event(queued)
    except OverflowError:
        return Rejection("number_out_of_range", "properties",
                         "integers must fit in 64 bits; send larger numbers as strings")
    return Accepted(queued, ev.idempotency_key, warnings, blob)
