"""Verified identity for public write keys (CONTRACT 6, "Verified identity"). Pure.

A website's backend signs the known identifiers it vouches for with the source's
``identity_secret``: ``signature = hex(HMAC-SHA256(identity_secret, "{type}:{value}"))`` over
the UTF-8 bytes of the value as the browser sends it (the decoded JSON string before any
trimming; a number as its JSON text). Segment routes carry one signature for ``userId`` in
``context.identity_signature`` (signing ``"external_id:{userId}"``).

A claim is verified when its signature matches the current secret or, for 24 h after a
rotation, the previous one. A missing, malformed or wrong signature leaves the claim
unverified with a warning; it never rejects the event. Signatures are compared in constant
time, accepted in either hex case, and never stored: callers drop them once checked.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import KNOWN_TYPES, normalize_identifier

SIGNATURE_HEX_CHARS = 64


def identity_signature(secret: str, id_type: str, value: str) -> str:
    """The lowercase hex signature of ``"{id_type}:{value}"`` under ``secret``."""
    return hmac.new(secret.encode("utf-8"), f"{id_type}:{value}".encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


def _digest_of(signature: object) -> bytes | None:
    """The 32 bytes a well-formed signature stands for (hex, either case), else None."""
    if not isinstance(signature, str) or len(signature) != SIGNATURE_HEX_CHARS:
        return None
    try:
        return bytes.fromhex(signature)
    except ValueError:
        return None


def signature_text(signature: object) -> str:
    """A signature as queued: the string as sent, at most one character past a valid
    signature's length (still malformed, but bounded); any other JSON value as ``"?"``."""
    if isinstance(signature, str):
        return signature[: SIGNATURE_HEX_CHARS + 1]
    return "?"


def signature_matches(secrets: Sequence[str], id_type: str, value: str, signature: object) -> bool:
    """True if ``signature`` signs ``"{id_type}:{value}"`` under one of ``secrets``.

    Every secret is tried (no early exit), and each comparison is constant-time.
    """
    digest = _digest_of(signature)
    if digest is None:
        return False
    message = f"{id_type}:{value}".encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, digest)
    return matched


@dataclass(frozen=True)
class SignedClaim:
    """A known identifier (``value`` before normalization) with its signature, which covers
    ``signed_text`` when given (the JSON text of a number), else ``value`` itself."""

    type: str
    value: str
    signature: str
    signed_text: str = ""


def check_claims(claims: Iterable[SignedClaim], secrets: Sequence[str], *, phone_region: str | None,
                 extra_blocked: frozenset[str] = frozenset()) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """Sort signed claims into verified and refused, keyed by (type, hash) of the
    normalized value: ``(verified, refused)`` where ``refused`` maps to why (a message that
    names neither the value nor the signature). ``secrets``: the source's valid identity
    secrets; none means nothing verifies. Claims whose value does not normalize are
    skipped (the event's own identifier handling reports them)."""
    verified: set[tuple[str, str]] = set()
    refused: dict[tuple[str, str], str] = {}
    for claim in claims:
        if claim.type not in KNOWN_TYPES:
            continue
        try:
            ident = normalize_identifier(claim.type, claim.value, default_region=phone_region,
                                         extra_blocked=extra_blocked)
        except (BlockedIdentifier, InvalidIdentifier):
            continue
        key = (ident.type, ident.hash)
        if signature_matches(secrets, claim.type, claim.signed_text or claim.value, claim.signature):
            verified.add(key)
            refused.pop(key, None)
        elif key not in verified:
            refused[key] = _refusal(claim.signature, bool(secrets))
    return verified, refused


def unverified_warnings(known: Iterable[tuple[str, str]], verified: set[tuple[str, str]],
                        refused: dict[tuple[str, str], str]) -> list[str]:
    """One warning per known identifier ((type, hash) pairs) of an event left unverified."""
    return [f"unverified {t} claim: {refused.get((t, h), 'no signature')}"
            for t, h in known if t in KNOWN_TYPES and (t, h) not in verified]


def _refusal(signature: str, have_secret: bool) -> str:
    if _digest_of(signature) is None:
        return f"signature is not {SIGNATURE_HEX_CHARS} hex characters"
    if not have_secret:
        return "the source has no usable identity secret"
    return "signature does not match"
