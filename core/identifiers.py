"""Identifier normalization and hashing (CONTRACT section 6).

Stored hash = SHA-256 hex of the normalized value; for phone, of the E.164 digits
without ``+``. These are the Meta CAPI ``em``/``ph`` rules, so stored hashes can be
sent to ad platforms unchanged.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

import phonenumbers

from core.errors import BlockedIdentifier, InvalidIdentifier


class IdentifierType(StrEnum):
    EXTERNAL_ID = "external_id"
    EMAIL = "email"
    PHONE = "phone"
    DEVICE_ID = "device_id"
    ANONYMOUS_ID = "anonymous_id"


# Lower number = stronger identifier. Used for merge survivors and limit decisions.
PRIORITY: dict[str, int] = {
    IdentifierType.EXTERNAL_ID: 0,
    IdentifierType.EMAIL: 1,
    IdentifierType.PHONE: 2,
    IdentifierType.DEVICE_ID: 3,
    IdentifierType.ANONYMOUS_ID: 4,
}
IDENTIFIER_TYPES = frozenset(PRIORITY)
# Types whose presence makes a profile "known" (and that website sources may not merge on).
KNOWN_TYPES = frozenset({IdentifierType.EXTERNAL_ID, IdentifierType.EMAIL, IdentifierType.PHONE})

MAX_IDENTIFIER_CHARS = 512
# An identifier already hashed: "sha256:" + the 64 lowercase hex digits of its stored hash.
# Scrubbed events (failed jobs, dead letters) carry email and phone in this form.
PREHASHED_PREFIX = "sha256:"
_PREHASHED = re.compile(r"sha256:[0-9a-f]{64}")

BLOCKED_VALUES = frozenset(
    {
        "null", "none", "nil", "undefined", "nan", "true", "false", "0", "-1",
        "anonymous", "guest", "unknown", "test", "[object object]",
    }
)
_WHITESPACE = re.compile(r"\s")


class Identifier(NamedTuple):
    """A normalized identifier: type, normalized value, SHA-256 hex of the hashed form."""

    type: str
    value: str
    hash: str


def is_blocked(value: str, extra_blocked: frozenset[str] = frozenset()) -> bool:
    """True when ``value`` (trimmed, case-insensitive) must never identify anyone."""
    v = value.strip().lower()
    return (
        v == ""
        or v in BLOCKED_VALUES
        or not v.strip("0-")  # only zeros and dashes (v has no surrounding whitespace)
        or (bool(extra_blocked) and v in extra_blocked)
    )


def normalize_email(raw: str) -> str:
    """Trim and lowercase; raise InvalidIdentifier unless it looks like ``local@domain.tld``."""
    value = raw.strip().lower()
    local, at, domain = value.partition("@")
    if (
        not at
        or not local
        or "@" in domain
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or _WHITESPACE.search(value)
    ):
        raise InvalidIdentifier("email must look like name@example.com")
    return value


@lru_cache(maxsize=65536)
def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """Return the E.164 form (``+16505551212``); raise InvalidIdentifier if not a valid number.

    National numbers need ``default_region`` (ISO 3166 alpha-2, e.g. ``US``); numbers in
    international form (leading ``+`` or ``00``) parse without it.
    """
    value = raw.strip()
    if value.startswith("00"):
        value = "+" + value[2:]
    region = default_region.upper() if default_region else None
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region or value.startswith("+") else " (national number without a default region; use +<country code>)"
        raise InvalidIdentifier(f"phone is not a valid number{hint}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidIdentifier("phone is not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def hash_normalized(id_type: str, normalized: str) -> str:
    """The stored hash of an already normalized value (phone: digits without ``+``)."""
    if id_type == IdentifierType.PHONE:
        return sha256_hex(normalized.lstrip("+"))
    return sha256_hex(normalized)


def normalize_identifier(
    id_type: str,
    raw: object,
    *,
    default_region: str | None = None,
    extra_blocked: frozenset[str] = frozenset(),
) -> Identifier:
    """Normalize and hash one identifier (see ``_normalize``); results are memoized, since
    the same anonymous ids and emails come back event after event."""
    if type(raw) is not str and type(raw) is not int:
        return _normalize(id_type, raw, default_region, extra_blocked)
    outcome = _normalize_memo(id_type, raw, default_region, extra_blocked)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@lru_cache(maxsize=200_000)
def _normalize_memo(id_type: str, raw: str | int, default_region: str | None,
                    extra_blocked: frozenset[str]) -> Identifier | InvalidIdentifier | BlockedIdentifier:
    try:
        return _normalize(id_type, raw, default_region, extra_blocked)
    except (InvalidIdentifier, BlockedIdentifier) as exc:
        exc.__traceback__ = None
        return exc


def _normalize(
    id_type: str,
    raw: object,
    default_region: str | None,
    extra_blocked: frozenset[str],
) -> Identifier:
    """Normalize and hash one identifier.

    Raises InvalidIdentifier for an unknown type or a value invalid for its type, and
    BlockedIdentifier for a value that must never identify (section 6 of the contract).
    Numbers are accepted as values (``userId: 42``) and read as their decimal text.
    A value ``sha256:<64 lowercase hex>`` is an identifier already hashed (a scrubbed
    event's form, see core/privacy.py): its hash is the hex as given; a tenant's blocked
    values are then compared by hash.
    """
    if id_type not in PRIORITY:
        raise InvalidIdentifier(
            # the submitted type is not echoed: error messages never repeat submitted values
            f"unknown identifier type; use one of {', '.join(PRIORITY)}",
            code="unknown_identifier_type",
        )
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidIdentifier(f"{id_type} must be a string")
    text = str(raw)
    if text.startswith(PREHASHED_PREFIX) and _PREHASHED.fullmatch(text):
        digest = text[len(PREHASHED_PREFIX):]
        if extra_blocked and digest in _blocked_hashes(id_type, default_region, extra_blocked):
            raise BlockedIdentifier(f"blocked value dropped: {id_type}")
        return Identifier(id_type, text, digest)
    if len(text) > MAX_IDENTIFIER_CHARS:
        raise InvalidIdentifier(f"{id_type} is longer than {MAX_IDENTIFIER_CHARS} characters")
    if is_blocked(text, extra_blocked):
        raise BlockedIdentifier(f"blocked value dropped: {id_type}")
    if id_type == IdentifierType.EMAIL:
        value = normalize_email(text)
    elif id_type == IdentifierType.PHONE:
        value = normalize_phone(text, default_region)
    else:
        value = text.strip()
        if "\x00" in value:
            raise InvalidIdentifier(f"{id_type} must not contain NUL characters")
    return Identifier(id_type, value, hash_normalized(id_type, value))


@lru_cache(maxsize=1024)
def _blocked_hashes(id_type: str, default_region: str | None, extra_blocked: frozenset[str]) -> frozenset[str]:
    """Hashes of a tenant's blocked values as identifiers of ``id_type`` (those that are valid)."""
    hashes = set()
    for value in extra_blocked:
        try:
            hashes.add(_normalize(id_type, value, default_region, frozenset()).hash)
        except (InvalidIdentifier, BlockedIdentifier):
            continue
    return frozenset(hashes)
