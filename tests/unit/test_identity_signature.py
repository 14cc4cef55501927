"""Verified identity, pure part: signatures over "{type}:{value}" as sent, constant-time
checks, the previous secret, and what is reported for claims left unverified."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.identifiers import normalize_identifier
from core.identity_signature import (
    SignedClaim,
    check_claims,
    identity_signature,
    signature_matches,
    unverified_warnings,
)

SECRET = "ids_current"
OLD = "ids_previous"


def _hash(id_type: str, value: str) -> str:
    return normalize_identifier(id_type, value, default_region="US").hash


def test_signature_is_hex_hmac_sha256_of_type_and_value():
    expected = hmac.new(SECRET.encode(), b"email:Ada@Example.com", hashlib.sha256).hexdigest()
    assert identity_signature(SECRET, "email", "Ada@Example.com") == expected


def test_either_hex_case_and_the_previous_secret_verify():
    sig = identity_signature(SECRET, "external_id", "user-1")
    assert signature_matches([SECRET], "external_id", "user-1", sig)
    assert signature_matches([SECRET], "external_id", "user-1", sig.upper())
    old_sig = identity_signature(OLD, "external_id", "user-1")
    assert signature_matches([SECRET, OLD], "external_id", "user-1", old_sig)
    assert not signature_matches([SECRET], "external_id", "user-1", old_sig)


@pytest.mark.parametrize("signature", [None, "", "abc", "g" * 64, "0" * 63, "0" * 65, 12345, ["x"], {"a": 1}])
def test_malformed_signatures_never_verify_and_never_raise(signature):
    assert not signature_matches([SECRET], "email", "a@example.com", signature)


def test_the_signature_covers_the_value_as_sent_and_the_type():
    sig = identity_signature(SECRET, "email", " Ada@Example.com ")
    assert signature_matches([SECRET], "email", " Ada@Example.com ", sig)
    assert not signature_matches([SECRET], "email", "ada@example.com", sig)  # normalized form is not what was signed
    assert not signature_matches([SECRET], "phone", " Ada@Example.com ", sig)  # nor is another type
    assert not signature_matches([], "email", " Ada@Example.com ", sig)  # no secret: nothing verifies


def test_check_claims_keys_verified_claims_by_normalized_hash():
    claims = [
        SignedClaim("email", " Ada@Example.com ", identity_signature(SECRET, "email", " Ada@Example.com ")),
        SignedClaim("phone", "(650) 555-1212", identity_signature(SECRET, "phone", "+1 650 555 1212")),  # wrong
        SignedClaim("external_id", "u-1", "not hex"),
        SignedClaim("anonymous_id", "a-1", identity_signature(SECRET, "anonymous_id", "a-1")),  # not a known type
    ]
    verified, refused = check_claims(claims, [SECRET], phone_region="US")
    assert verified == {("email", _hash("email", "ada@example.com"))}
    assert refused == {("phone", _hash("phone", "+16505551212")): "signature does not match",
                       ("external_id", _hash("external_id", "u-1")): "signature is not 64 hex characters"}


def test_warnings_name_the_type_and_reason_never_the_value():
    email, phone, ext, anon = (("email", _hash("email", "a@example.com")), ("phone", _hash("phone", "+16505551212")),
                               ("external_id", _hash("external_id", "u-1")), ("anonymous_id", "h"))
    warnings = unverified_warnings([email, phone, ext, anon], {email}, {phone: "signature does not match"})
    assert warnings == ["unverified phone claim: signature does not match", "unverified external_id claim: no signature"]
    assert not any("a@example.com" in w or "u-1" in w for w in warnings)
