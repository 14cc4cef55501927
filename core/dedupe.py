"""Dedupe scope and the hashed form of dedupe keys (CONTRACT 4.5). Pure.

An event's dedupe scope is its tenant for server-side sources and its source for
``website`` sources: website write keys are public, so a key sent from a browser must not
pre-empt (and turn into a ``duplicate``) the server's event with the same key.

Dedupe keys are stored, in Redis and Postgres, only as ``SHA-256(scope "\\n" key)``: the
scope (``t`` or ``s:<source id>``) contains no line break, so two different (scope, key)
pairs never hash the same input. The tenant is not part of the hash; every store keys by
tenant besides it. Migration 0003 computes the same digest in SQL
(``sha256(convert_to(scope || E'\\n' || key, 'UTF8'))``): change both together or neither.
"""

from __future__ import annotations

import hashlib

MAX_DEDUPE_KEY_CHARS = 255
TENANT_SCOPE = "t"


def dedupe_scope(source_type: str, source_id: str) -> str:
    """``t`` (the tenant) for server-side sources, ``s:<source id>`` for website sources."""
    return f"s:{source_id}" if source_type == "website" else TENANT_SCOPE


def dedupe_digest(scope: str, key: str) -> bytes:
    """The 32-byte SHA-256 under which a dedupe key is stored in ``scope``."""
    return hashlib.sha256(f"{scope}\n{key}".encode("utf-8", "surrogatepass")).digest()


def dedupe_key_too_long(key: str) -> str | None:
    """The rejection message for a key over the limit (never truncated), or None."""
    if len(key) > MAX_DEDUPE_KEY_CHARS:
        return f"dedupe key is {len(key)} characters; the limit is {MAX_DEDUPE_KEY_CHARS} (keys are never truncated)"
    return None
