"""Keeping raw email and phone out of storage (CONTRACT section 6). Pure.

Two rules, applied at any depth of ``traits``, ``context`` (``context.traits`` included) and
``properties``, in objects and in arrays:

- by key: a key whose squashed name (lowercased, ``-``, ``_``, ``.`` and spaces removed)
  contains ``email`` or ``phone`` or is one of ``PHONE_KEY_NAMES``/``mail`` has its string
  and number values replaced by their hash under ``<key>_sha256`` (the identifier hash when
  the value normalizes as an email or phone, else SHA-256 of the trimmed text). Arrays are
  hashed element by element, objects scrubbed inside, booleans and null kept. Keys ending
  in ``sha256`` and values that already are 64-character hex are kept.
- by value: every email address inside any other string (keys too), plain or
  percent-encoded (``%40``, ``%2540``), becomes ``sha256:<hex>`` of its normalized form.

Scrubbing is idempotent: ``scrub(scrub(x)) == scrub(x)``. ``scrub_queued_event`` applies it to
a whole mapped event and carries its email and phone identifiers pre-hashed
(``sha256:<hex>``, read back by ``core.identifiers.normalize_identifier``), so a scrubbed
event can rest in a failed-job registry or a dead letter and still be replayed.

Hot path: strings are scanned only when they hold ``@`` or ``%``; the scan visits each
separator once and never backtracks, so its cost is linear in the string's length.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, overload
from urllib.parse import unquote

import msgspec

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import (
    PREHASHED_PREFIX,
    IdentifierType,
    hash_normalized,
    normalize_email,
    normalize_identifier,
    normalize_phone,
    sha256_hex,
)
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent
from core.segment import map_segment_event

PHONE_KEY_NAMES = frozenset({"mobile", "mobilenumber", "cell", "cellphone", "tel", "telephone", "msisdn", "sms"})
HASHED_KEY_SUFFIX = "_sha256"
# Fields that authenticate or sign a request: dropped from a scrubbed event (never stored).
_SECRET_KEYS = frozenset({"writekey", "identitysignature", "$identitysignature"})

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# "@", "%40" (percent-encoded) or "%2540" (encoded twice, as in a URL inside a URL)
_SEPARATOR = re.compile(r"@|%(?:25)?40")
_DOMAIN = re.compile(r"[\w-]++(?:\.[\w-]++)+")
# Percent-encoded characters a local part may hold: + . - _ (optionally encoded twice)
_LOCAL_ESCAPES = frozenset({"%2B", "%2E", "%2D", "%5F"})
_LOCAL_PUNCTUATION = frozenset("._+-")


def pii_key_kind(key: str) -> str | None:
    """``"email"``, ``"phone"`` or None: what a key's name says its value holds (the
    scrubber memoizes it per key, see ``_learn_key``)."""
    squashed = key.lower().replace("-", "").replace("_", "").replace(".", "").replace(" ", "")
    if squashed.endswith("sha256"):
        return None
    if "email" in squashed or squashed == "mail":
        return "email"
    if "phone" in squashed or squashed in PHONE_KEY_NAMES:
        return "phone"
    return None


def hash_pii_value(kind: str, value: str | int | float, phone_region: str | None) -> str:
    """The hash a value under an email or phone key is replaced by: the identifier hash when
    it normalizes as one, else SHA-256 of its trimmed text."""
    return _hash_text(kind, str(value), phone_region)


@lru_cache(maxsize=65_536)
def _hash_text(kind: str, text: str, phone_region: str | None) -> str:
    # memoized: the same addresses and numbers come back event after event
    try:
        if kind == "email":
            return hash_normalized(IdentifierType.EMAIL, normalize_email(text))
        return hash_normalized(IdentifierType.PHONE, normalize_phone(text, phone_region))
    except InvalidIdentifier:
        return sha256_hex(text.strip())


@lru_cache(maxsize=65_536)
def email_token(address: str) -> str:
    """``sha256:<hex>`` of an email address found in text (percent-decoded, trimmed, lowercased)."""
    if "%" in address:
        address = unquote(unquote(address))
    return PREHASHED_PREFIX + sha256_hex(address.strip().lower())


def _local_part_start(text: str, end: int, floor: int) -> int:
    """Where the local part of an address whose separator starts at ``end`` begins (``end``
    when there is none). Scans left, never past ``floor``; a percent escape counts as one
    character, part of the local part only when it encodes ``+ . - _``."""
    i = end
    while i > floor:
        c = text[i - 1]
        if c in _LOCAL_PUNCTUATION:
            i -= 1
        elif not c.isalnum():
            break
        elif i - 3 >= floor and text[i - 3] == "%" and text[i - 2:i].isalnum():
            if text[i - 3:i].upper() not in _LOCAL_ESCAPES:
                break
            i -= 3
        elif i - 5 >= floor and text[i - 5:i - 2] == "%25" and text[i - 2:i].isalnum():
            if "%" + text[i - 2:i].upper() not in _LOCAL_ESCAPES:
                break
            i -= 5
        else:
            i -= 1
    return i


def redact_emails(text: str) -> str:
    """``text`` with every email address in it (plain or percent-encoded) replaced by
    ``sha256:<hex>`` of its normalized form; ``text`` itself when it holds none."""
    if "@" not in text and "%" not in text:
        return text
    while True:
        parts: list[str] = []
        done = 0  # end of the text already copied into parts
        for sep in _SEPARATOR.finditer(text):
            if sep.start() < done:
                continue
            domain = _DOMAIN.match(text, sep.end())
            if domain is None:
                continue
            start = _local_part_start(text, sep.start(), done)
            if start == sep.start():
                continue
            parts.append(text[done:start])
            parts.append(email_token(text[start:domain.end()]))
            done = domain.end()
        if not parts:
            return text
        parts.append(text[done:])
        # Overlapping addresses ("a@b.c@d.com") can leave a new one behind: go again
        # until nothing changes, so that redacting twice equals redacting once.
        text = "".join(parts)


def _hash_under_key(kind: str, value: Any, phone_region: str | None) -> tuple[Any, bool]:
    """The value of a PII key, hashed; and whether anything was hashed (the key is renamed)."""
    if isinstance(value, str):
        if _HEX64.fullmatch(value):
            return value, False
        return hash_pii_value(kind, value, phone_region), True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return hash_pii_value(kind, value, phone_region), True
    if isinstance(value, list):
        out, hashed, changed = [], False, False
        for item in value:
            new, did = _hash_under_key(kind, item, phone_region)
            out.append(new)
            hashed = hashed or did
            changed = changed or new is not item
        return (out if changed else value), hashed
    return scrub_value(value, phone_region), False


def _scrub_list(items: list[Any], phone_region: str | None) -> list[Any]:
    out = None
    for i, item in enumerate(items):
        new = scrub_value(item, phone_region)
        if new is not item and out is None:
            out = items[:i]
        if out is not None:
            out.append(new)
    return items if out is None else out


def scrub_value(value: Any, phone_region: str | None) -> Any:
    """A value with every PII rule applied (itself when nothing changes)."""
    t = type(value)
    if t is str:
        return redact_emails(value) if "@" in value or "%" in value else value
    if t is dict:
        return scrub_object(value, phone_region) if value else value
    if t is list:
        return _scrub_list(value, phone_region) if value else value
    if isinstance(value, str):
        return redact_emails(value)
    if isinstance(value, dict):
        return scrub_object(value, phone_region)
    if isinstance(value, list):
        return _scrub_list(value, phone_region)
    return value


def scrub_object(obj: dict[str, Any], phone_region: str | None) -> dict[str, Any]:
    """A scrubbed copy of a JSON object, or ``obj`` itself when nothing changes."""
    if _is_clean(obj):
        return obj
    out: dict[str, Any] = {}
    changed = False
    for key, value in obj.items():
        kind = _KEY_KINDS.get(key, _UNSEEN)
        if kind is _UNSEEN:
            kind = _learn_key(key)
        new_key = redact_emails(key) if kind is not None and type(key) is str else key
        if kind is None or kind is _REDACT:
            t = type(value)
            if t is str:
                new_value = redact_emails(value) if "@" in value or "%" in value else value
            elif t is int or t is float or t is bool or value is None:
                new_value = value
            else:
                new_value = scrub_value(value, phone_region)
        else:
            new_value, hashed = _hash_under_key(kind, value, phone_region)
            if hashed:
                new_key += HASHED_KEY_SUFFIX
        out[new_key] = new_value
        changed = changed or new_key is not key or new_value is not value
    # (keys seen for the first time fail the quick check without changing anything)
    return out if changed else obj


def _is_clean(value: Any) -> bool:
    """True when no rule applies anywhere inside ``value`` (the common case, checked first).

    The per-event hot path: values are dispatched on their exact type and keys classified
    through a dictionary, so a clean object costs a few lookups per key.
    """
    t = type(value)
    if t is str:
        return "@" not in value and "%" not in value
    if t is dict:
        if not _PLAIN_KEYS.issuperset(value):
            return False  # a PII key, a key to redact, or one not classified yet
        for item in value.values():
            t = type(item)
            if t is str:
                if "@" in item or "%" in item:
                    return False
            elif (t is dict or t is list) and item and not _is_clean(item):
                return False
        return True
    if t is list:
        for item in value:
            t = type(item)
            if t is str:
                if "@" in item or "%" in item:
                    return False
            elif (t is dict or t is list) and item and not _is_clean(item):
                return False
        return True
    return t is int or t is float or t is bool or value is None


_UNSEEN = "\x00unseen"  # a sentinel no key kind can equal; compared with ``is``
_REDACT = "redact"  # a key whose text holds an email address
_KEY_KINDS: dict[Any, str | None] = {}
# The keys of _KEY_KINDS whose kind is None: one C-level superset test clears a whole object.
_PLAIN_KEYS: set[Any] = set()
_MAX_KNOWN_KEYS = 65_536


def _learn_key(key: object) -> str | None:
    """Classify a key not seen before and remember it (the memo is bounded: cleared when full).
    Keys holding an email address are not remembered (they are one-offs)."""
    kind = pii_key_kind(key) if isinstance(key, str) else None
    if type(key) is not str or "@" in key or "%" in key:
        return kind or _REDACT
    if len(_KEY_KINDS) >= _MAX_KNOWN_KEYS:
        _KEY_KINDS.clear()
        _PLAIN_KEYS.clear()
    _KEY_KINDS[key] = kind
    if kind is None:
        _PLAIN_KEYS.add(key)
    return kind


def scrub_pii(obj: dict[str, Any] | None, phone_region: str | None) -> dict[str, Any]:
    """``obj`` scrubbed at any depth (``{}`` for None); ``obj`` itself when nothing changes."""
    if not obj:
        return obj if obj is not None else {}
    return scrub_object(obj, phone_region)


def scrub_context(context: dict[str, Any] | None, phone_region: str | None) -> dict[str, Any]:
    """The same as ``scrub_pii``: ``context.traits`` is one of the objects scrubbed inside."""
    return scrub_pii(context, phone_region)


def scrub_document(raw: bytes, phone_region: str | None) -> str | None:
    """The scrubbed JSON text of a message kept as it came (a dead letter): write keys and
    identity signatures dropped from its top level, its ``context`` and its ``properties``,
    both rules applied to the whole document. None when ``raw`` is not JSON."""
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(doc, dict):
        doc = _without_secrets(doc)
        for name in ("context", "properties"):
            if isinstance(doc.get(name), dict):
                doc = {**doc, name: _without_secrets(doc[name])}
    try:
        return msgspec.json.encode(scrub_value(doc, phone_region)).decode()
    except RecursionError:
        return None


def scrub_batch(batch: QueuedBatch, extra_blocked: frozenset[str] = frozenset()) -> QueuedBatch:
    """A queued batch in its scrubbed, replayable form: Segment events mapped (batch context
    merged in) and every event put through ``scrub_queued_event``. Processing it stores what
    processing ``batch`` stores. ``extra_blocked``: the tenant's blocked values, as the
    worker would map with them. Raises what ``map_segment_event`` raises for a Segment event
    that cannot be mapped (callers keep nothing raw then)."""
    region = batch.phone_region
    events: list[QueuedEvent | QueuedSegmentEvent] = []
    for queued in batch.events:
        if isinstance(queued, QueuedSegmentEvent):
            queued = map_segment_event(
                queued.raw, event_type=queued.event_type, event_id=queued.event_id, dedupe_key=queued.dedupe_key,
                event_time=queued.event_time, received_at=batch.received_at, batch_context=batch.context,
                batch_integrations=batch.integrations, phone_region=region, extra_blocked=extra_blocked)
        events.append(scrub_queued_event(queued, region))
    return msgspec.structs.replace(batch, context=None, integrations=None, events=events)


def _without_secrets(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without write-key and signature keys (``obj`` itself when it has none)."""
    if _CLEAN_KEYS.issuperset(obj.keys()):
        return obj
    secret = False
    for k in obj:
        if pii_secret_key(k):
            secret = True
        elif k not in _CLEAN_KEYS:
            if len(_CLEAN_KEYS) >= _MAX_KNOWN_KEYS:
                _CLEAN_KEYS.clear()
            _CLEAN_KEYS.add(k)
    return {k: v for k, v in obj.items() if not pii_secret_key(k)} if secret else obj


_CLEAN_KEYS: set[Any] = set()


def pii_secret_key(key: object) -> bool:
    """True for keys that carry a write key or an identity signature."""
    return isinstance(key, str) and key.lower().replace("_", "").replace("-", "") in _SECRET_KEYS


def prehash_identifier(id_type: str, value: str, phone_region: str | None) -> str:
    """The form an identifier rests in once its event is scrubbed: email and phone (and any
    identifier holding an email address) as ``sha256:<hex>`` of the identifier hash, which
    ``normalize_identifier`` reads back as the same identifier; other values as they are."""
    if id_type not in _PREHASHED_TYPES and redact_emails(value) is value:
        return value
    if value.startswith(PREHASHED_PREFIX):
        return value
    try:
        return PREHASHED_PREFIX + normalize_identifier(id_type, value, default_region=phone_region).hash
    except (InvalidIdentifier, BlockedIdentifier):
        # Never identifies (the worker drops it); keep only a token that cannot be read back.
        return redact_emails(value) if id_type not in _PREHASHED_TYPES else ""


def scrub_payload(obj: dict[str, Any], phone_region: str | None) -> dict[str, Any]:
    """An event's ``properties`` or ``context`` as it rests: write keys and identity
    signatures dropped from its top level, both rules applied at any depth; ``obj`` itself
    when nothing changes (also when it is empty)."""
    if not obj:
        return obj
    if _CLEAN_KEYS.issuperset(obj) and _is_clean(obj):  # the common case, without the calls below
        return obj
    return scrub_object(_without_secrets(obj), phone_region)


@overload
def redact_text(value: str) -> str: ...
@overload
def redact_text(value: None) -> None: ...
def redact_text(value: str | None) -> str | None:
    """A text field of an event (name, dedupe key, previous id) with email addresses
    redacted; ``value`` itself when it holds none."""
    if value is not None and ("@" in value or "%" in value):
        return redact_emails(value)
    return value


def scrub_queued_event(event: QueuedEvent, phone_region: str | None) -> QueuedEvent:
    """The scrubbed, replayable form of a mapped event (CONTRACT 6).

    Properties, context and traits are scrubbed at any depth; the event name, dedupe key
    and previous id have email addresses redacted; email and phone identifiers are carried
    pre-hashed (``prehash_identifier``); write keys and identity signatures are dropped from
    the top level of context and properties, and signed claims (``claims``) are dropped.
    Processing the result stores exactly what processing ``event`` stores (the worker scrubs
    every event with this function), except that dropped signed claims count as unsigned;
    scrubbing twice equals scrubbing once. Returns ``event`` itself when nothing changes.
    """
    changes: dict[str, Any] = {}
    for id_type, value in event.identifiers:
        if id_type in _PREHASHED_TYPES or "@" in value or "%" in value:
            identifiers = [(t, prehash_identifier(t, v, phone_region)) for t, v in event.identifiers]
            identifiers = [(t, v) for t, v in identifiers if v]
            if identifiers != event.identifiers:
                changes["identifiers"] = identifiers
            break
    payloads: tuple[tuple[str, dict[str, Any]], ...] = (("properties", event.properties), ("context", event.context))
    for name, payload in payloads:
        if (scrubbed := scrub_payload(payload, phone_region)) is not payload:
            changes[name] = scrubbed
    if event.traits and (scrubbed := scrub_object(event.traits, phone_region)) is not event.traits:
        changes["traits"] = scrubbed
    texts: tuple[tuple[str, str | None], ...] = (
        ("event_name", event.event_name), ("dedupe_key", event.dedupe_key), ("previous_id", event.previous_id))
    for name, text in texts:
        if (redacted := redact_text(text)) is not text:
            changes[name] = redacted
    # Signed identity claims (raw values with their signatures) are checked by the worker
    # before it scrubs and are never kept: a scrubbed event rests without them, so a replay
    # of it treats those claims as unsigned.
    if event.claims:
        changes["claims"] = []
    return msgspec.structs.replace(event, **changes) if changes else event


_PREHASHED_TYPES = frozenset({IdentifierType.EMAIL, IdentifierType.PHONE})
