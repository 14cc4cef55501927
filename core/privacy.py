"""Keeping raw email and phone out of storage (CONTRACT section 6).

``email``/``phone`` keys inside traits, ``context.traits`` and properties are replaced by
``email_sha256``/``phone_sha256`` holding the same hash the identifier would get (or the
plain SHA-256 of the trimmed text when it is not a valid email or phone).
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidIdentifier
from core.identifiers import hash_normalized, normalize_email, normalize_phone, sha256_hex

PII_KEYS = ("email", "phone")


def hash_pii_value(kind: str, value: object, phone_region: str | None) -> str:
    text = str(value)
    try:
        normalized = normalize_email(text) if kind == "email" else normalize_phone(text, phone_region)
    except InvalidIdentifier:
        return sha256_hex(text.strip().lower() if kind == "email" else text.strip())
    return hash_normalized(kind, normalized)


def scrub_pii(obj: dict[str, Any] | None, phone_region: str | None) -> dict[str, Any]:
    """A copy of ``obj`` with top-level ``email``/``phone`` replaced by their hashes.

    Returns ``obj`` itself when there is nothing to replace (the common case, no copy).
    """
    if not obj:
        return obj if obj is not None else {}
    if not any(k in obj for k in PII_KEYS):
        return obj
    out = dict(obj)
    for kind in PII_KEYS:
        if kind in out:
            value = out.pop(kind)
            if value is not None and value != "":
                out[f"{kind}_sha256"] = hash_pii_value(kind, value, phone_region)
    return out


def scrub_context(context: dict[str, Any] | None, phone_region: str | None) -> dict[str, Any]:
    if not context:
        return context if context is not None else {}
    traits = context.get("traits")
    if isinstance(traits, dict) and any(k in traits for k in PII_KEYS):
        context = dict(context)
        context["traits"] = scrub_pii(traits, phone_region)
    return context
