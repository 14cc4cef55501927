"""The one module that stores secrets the product must read back: identity secrets of
website sources and signing secrets of webhook destinations, encrypted with
``STRATUM_SECRET_KEY``.

They cannot be stored as hashes like API keys: checking an identity signature and signing a
webhook both need the secret itself. Stored forms:

- ``aesgcm:v1:<urlsafe base64 of 12-byte nonce + ciphertext + tag>``: AES-256-GCM (the
  ``cryptography`` package) under a key derived from ``STRATUM_SECRET_KEY`` with
  HKDF-SHA256; the associated data names the row and purpose (``context``, e.g.
  ``source:<id>:identity_secret``, ``destination:<id>:signing_secret``), so a ciphertext
  copied to another row or purpose does not decrypt. The current and the previous secret
  of a row share a context, so a rotation moves the ciphertext between columns as it is.
- ``plain:<secret>``: written only when ``STRATUM_SECRET_KEY`` is unset (every process
  warns at start; ``STRATUM_REQUIRE_SECRET_KEY=true`` makes them refuse to start instead,
  see stratum/settings.py).
- ``fernet:<token>``: read only. Webhook secrets were once sealed with Fernet under
  SHA-256 of the key; they still open, and ``reseal_secret`` (run by ``stratum migrate``
  and ``stratum secrets reseal``) rewrites them, and plain ones once a key is set, in the
  current form.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_ENCRYPTED = "aesgcm:v1:"
_PLAIN = "plain:"
_LEGACY_FERNET = "fernet:"
_NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """A stored secret that cannot be decrypted (no key, or another key)."""


def identity_secret_context(source_id: object) -> str:
    """What a website source's identity secret is bound to."""
    return f"source:{source_id}:identity_secret"


def destination_secret_context(destination_id: object) -> str:
    """What a destination's signing secrets (current and previous) are bound to."""
    return f"destination:{destination_id}:signing_secret"


@lru_cache(maxsize=8)
def _cipher(secret_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"stratum stored secrets v1").derive(secret_key.encode("utf-8"))
    return AESGCM(key)


def encrypt_secret(secret_key: str | None, secret: str, context: str) -> str:
    """The stored form of ``secret``; ``context`` names where it is stored and must be given
    again to decrypt."""
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
    if stored.startswith(_LEGACY_FERNET):
        return _open_legacy_fernet(secret_key, stored[len(_LEGACY_FERNET):])
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


def _open_legacy_fernet(secret_key: str | None, token: str) -> str:
    if not secret_key:
        raise SecretUnreadable("secret is encrypted and STRATUM_SECRET_KEY is not set")
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()))
    try:
        return fernet.decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("secret does not decrypt with STRATUM_SECRET_KEY (was the key changed?)") from None


def reseal_secret(secret_key: str | None, stored: str, context: str) -> str | None:
    """The current stored form of ``stored`` when it is in an older one (legacy Fernet, or
    plain while a key is set); None when it is current, or cannot be rewritten (plain with
    no key). Raises SecretUnreadable when it does not open with ``secret_key``."""
    if stored.startswith(_ENCRYPTED) or not secret_key:
        return None
    return encrypt_secret(secret_key, decrypt_secret(secret_key, stored, context), context)
