"""Stored secrets (stratum/secret_storage.py): AES-GCM bound to a context, plain text only
without a key, legacy Fernet webhook secrets still opening and resealed in the current form."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.fernet import Fernet

from stratum.secret_storage import (
    SecretUnreadable,
    decrypt_secret,
    destination_secret_context,
    encrypt_secret,
    identity_secret_context,
    reseal_secret,
)

CONTEXT = destination_secret_context("d1")


def _legacy_fernet(secret: str, key: str) -> str:
    """The stored form webhook secrets had before (Fernet under SHA-256 of the key)."""
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))
    return "fernet:" + fernet.encrypt(secret.encode()).decode()


def test_encrypted_secrets_need_their_key_and_context():
    stored = encrypt_secret("k1", "whsec_abc", CONTEXT)
    assert stored.startswith("aesgcm:v1:") and "whsec_abc" not in stored
    assert decrypt_secret("k1", stored, CONTEXT) == "whsec_abc"
    for key, context in (("k2", CONTEXT), (None, CONTEXT), ("k1", destination_secret_context("d2")),
                         ("k1", identity_secret_context("d1"))):
        with pytest.raises(SecretUnreadable):
            decrypt_secret(key, stored, context)


def test_plain_only_without_a_key():
    stored = encrypt_secret(None, "whsec_abc", CONTEXT)
    assert stored == "plain:whsec_abc" and decrypt_secret("any", stored, CONTEXT) == "whsec_abc"
    with pytest.raises(SecretUnreadable):
        decrypt_secret("k1", "rot13:whsec_abc", CONTEXT)


def test_legacy_fernet_secrets_open_and_reseal_in_the_current_form():
    legacy = _legacy_fernet("whsec_old", "k1")
    assert decrypt_secret("k1", legacy, CONTEXT) == "whsec_old"
    with pytest.raises(SecretUnreadable):
        decrypt_secret("k2", legacy, CONTEXT)
    resealed = reseal_secret("k1", legacy, CONTEXT)
    assert resealed.startswith("aesgcm:v1:") and decrypt_secret("k1", resealed, CONTEXT) == "whsec_old"
    assert reseal_secret("k1", resealed, CONTEXT) is None  # already current
    plain = encrypt_secret(None, "whsec_p", CONTEXT)
    assert reseal_secret(None, plain, CONTEXT) is None  # no key: nothing to seal with
    assert decrypt_secret("k1", reseal_secret("k1", plain, CONTEXT), CONTEXT) == "whsec_p"
    with pytest.raises(SecretUnreadable):
        reseal_secret("k2", legacy, CONTEXT)
