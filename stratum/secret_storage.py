"""Secrets the product must be able to read back (identity secrets, later webhook secrets),
stored encrypted with ``STRATUM_SECRET_KEY``.

They cannot be stored as hashes like API keys: checking an HMAC signature needs the secret
itself. Stored forms:

- ``aesgcm:v1:<urlsafe base64 of 12-byte nonce + ciphertext + tag>``: AES-256-GCM (the
  ``cryptography`` package) under a key derived from ``STRATUM_SECRET_KEY`` with
  HKDF-SHA256; the associated data names the row and purpose (``context``), so a ciphertext
  copied to another row or column does not decrypt.
- ``plain:<secret>``: when ``STRATUM_SECRET_KEY`` is unset (every process warns at start,
  see stratum/settings.py). Setting the key later keeps these readable; rotating the secret
  stores it encrypted.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_ENCRYPTED = "aesgcm:v1:"
_PLAIN = "plain:"
_NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """A stored secret that cannot be decrypted (no key, or another key)."""


@lru_cache(maxsize=8)
def _cipher(secret_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"stratum stored secrets v1").derive(secret_key.encode("utf-8"))
    return AESGCM(key)


def encrypt_secret(secret_key: str | None, secret: str, context: str) -> str:
    """The stored form of ``secret``; ``context`` names where it is stored
    (e.g. ``source:<id>:identity_secret``) and must be given again to decrypt."""
    if not secret_key:
        return _PLAIN + secret
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(secret_key).encrypt(nonce, secret.encode("utf-8"), context.encode("utf-8"))
    return _ENCRYPTED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_secret(secret_key: str | None, stored: str, context: str) -> str:
    """The secret of a stored form; raises SecretUnreadable when it is encrypted and the key
    is missing or another one, or the stored form is not one of ours."""
    if stored.startswith(_PLAIN):
        return stored[len(_PLAIN):]
    if not stored.startswith(_ENCRYPTED):
        raise SecretUnreadable("unknown stored secret format")
    if not secret_key:
        raise SecretUnreadable("secret is encrypted and STRATUM_SECRET_KEY is not set")
    try:
        raw = base64.urlsafe_b64decode(stored[len(_ENCRYPTED):])
        plain = _cipher(secret_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
    except (InvalidTag, ValueError):
        raise SecretUnreadable("secret does not decrypt with STRATUM_SECRET_KEY (was the key changed?)") from None
    return plain.decode("utf-8")
